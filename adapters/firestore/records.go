package firestore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	fs "cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

func (s *Store) patchsetRef(id string) *fs.DocumentRef { return s.col(cPatchsets).Doc(docID(id)) }
func (s *Store) jobRef(id string) *fs.DocumentRef      { return s.col(cJobs).Doc(spreadID(id)) }
func (s *Store) postsubmitRef(id string) *fs.DocumentRef {
	return s.col(cPostsubmits).Doc(docID(id))
}

func patchsetFields(p *model.Patchset) (map[string]any, error) {
	data, err := encode(p)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		fID:         p.ID,
		fChange:     int64(p.Change),
		fOwner:      p.Owner,
		fTimeQueued: ts(p.TimeQueued),
		fEnded:      !p.TimeEnded.IsZero(),
		fData:       data,
	}, nil
}

func jobFields(j *model.Job) (map[string]any, error) {
	data, err := encode(j)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		fID:          j.ID,
		fSrc:         j.Src,
		fState:       string(j.State),
		fWorker:      j.Worker,
		fTimeQueued:  ts(j.TimeQueued),
		fTimeStarted: tsOrNil(j.TimeStarted),
		fTimeEnded:   tsOrNil(j.TimeEnded),
		fPool:        j.Pool,
		fPriority:    int64(j.Priority),
		fOrder:       ts(j.QueueOrder()),
		fData:        data,
	}, nil
}

func postsubmitFields(p *model.Postsubmit) (map[string]any, error) {
	data, err := encode(p)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		fID:         p.ID,
		fBranch:     p.Branch,
		fTimeQueued: ts(p.TimeQueued),
		fData:       data,
	}, nil
}

// checkJobs enforces the shared create contract (store.CheckJobs) and
// Firestore's bound on writes per commit.
func checkJobs(ids []string, jobs []*model.Job) error {
	if err := store.CheckJobs(ids, jobs); err != nil {
		return err
	}
	if len(jobs)+1 > maxWrites {
		return errs.E(errs.InvalidArgument, "", "%d jobs: one commit takes at most %d documents", len(jobs), maxWrites)
	}
	return nil
}

// createAll commits the creation of head and jobs in one atomic write: if
// any document exists, the commit fails with AlreadyExists and writes
// nothing.
func (s *Store) createAll(ctx context.Context, head *fs.DocumentRef, fields map[string]any, jobs []*model.Job) error {
	b := s.batch()
	b.Create(head, fields)
	for _, j := range jobs {
		f, err := jobFields(j)
		if err != nil {
			return err
		}
		b.Create(s.jobRef(j.ID), f)
	}
	_, err := b.Commit(ctx)
	return err
}

// CreatePatchset implements store.Store.
func (s *Store) CreatePatchset(ctx context.Context, ps *model.Patchset, jobs []*model.Job) error {
	const op = "firestore.CreatePatchset"
	if ps == nil || ps.ID == "" {
		return errs.E(errs.InvalidArgument, op, "patchset without id")
	}
	if err := checkJobs(ps.JobIDs, jobs); err != nil {
		return wrap(op, err)
	}
	f, err := patchsetFields(ps)
	if err != nil {
		return wrap(op, err)
	}
	return wrap(op, s.createAll(ctx, s.patchsetRef(ps.ID), f, jobs))
}

// CreatePostsubmit implements store.Store.
func (s *Store) CreatePostsubmit(ctx context.Context, p *model.Postsubmit, jobs []*model.Job) error {
	const op = "firestore.CreatePostsubmit"
	if p == nil || p.ID == "" {
		return errs.E(errs.InvalidArgument, op, "postsubmit without id")
	}
	if err := checkJobs(p.JobIDs, jobs); err != nil {
		return wrap(op, err)
	}
	f, err := postsubmitFields(p)
	if err != nil {
		return wrap(op, err)
	}
	return wrap(op, s.createAll(ctx, s.postsubmitRef(p.ID), f, jobs))
}

// getOne reads and decodes one record, or NotFound.
func getOne[T any](ctx context.Context, ref *fs.DocumentRef, what, id string) (*T, *fs.DocumentSnapshot, error) {
	snap, err := get(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	if !snap.Exists() {
		return nil, nil, errs.E(errs.NotFound, "", "%s %q not found", what, id)
	}
	v, err := decode[T](snap)
	return v, snap, err
}

// getMany reads the records among ids that exist, in one round trip.
func getMany[T any](ctx context.Context, s *Store, ids []string, ref func(string) *fs.DocumentRef, key func(*T) string) (map[string]*T, error) {
	ids = uniq(ids)
	refs := make([]*fs.DocumentRef, len(ids))
	for i, id := range ids {
		refs[i] = ref(id)
	}
	snaps, err := s.getAll(ctx, refs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*T, len(ids))
	for _, snap := range snaps {
		if snap == nil || !snap.Exists() {
			continue
		}
		v, err := decode[T](snap)
		if err != nil {
			return nil, err
		}
		out[key(v)] = v
	}
	return out, nil
}

// GetPatchset implements store.Store.
func (s *Store) GetPatchset(ctx context.Context, id string) (*model.Patchset, error) {
	p, _, err := getOne[model.Patchset](ctx, s.patchsetRef(id), "patchset", id)
	return p, wrap("firestore.GetPatchset", err)
}

// GetPatchsets implements store.Store.
func (s *Store) GetPatchsets(ctx context.Context, ids []string) (map[string]*model.Patchset, error) {
	m, err := getMany(ctx, s, ids, s.patchsetRef, func(p *model.Patchset) string { return p.ID })
	return m, wrap("firestore.GetPatchsets", err)
}

// GetPatchsetWithJobs implements store.Store in two round trips: the
// patchset, then one batch get of the jobs it lists.
func (s *Store) GetPatchsetWithJobs(ctx context.Context, id string) (*model.Patchset, []*model.Job, error) {
	const op = "firestore.GetPatchsetWithJobs"
	p, _, err := getOne[model.Patchset](ctx, s.patchsetRef(id), "patchset", id)
	if err != nil {
		return nil, nil, wrap(op, err)
	}
	m, err := getMany(ctx, s, p.JobIDs, s.jobRef, func(j *model.Job) string { return j.ID })
	if err != nil {
		return nil, nil, wrap(op, err)
	}
	jobs := make([]*model.Job, 0, len(p.JobIDs))
	for _, jid := range p.JobIDs {
		if j := m[jid]; j != nil {
			jobs = append(jobs, j)
		}
	}
	return p, jobs, nil
}

// update is the optimistic read-modify-write of one existing record: read
// it, let apply change it (apply's error is returned as is), and write it
// back only if the document's update time is still the one read; on a lost
// race, start over.
func update[T any](ctx context.Context, s *Store, op string, ref *fs.DocumentRef, what, id string,
	apply func(*T) error, fields func(*T) (map[string]any, error)) (*T, error) {
	var out *T
	err := s.retry(ctx, op, func() error {
		v, snap, err := getOne[T](ctx, ref, what, id)
		if err != nil {
			return err
		}
		if err := apply(v); err != nil {
			return err
		}
		f, err := fields(v)
		if err != nil {
			return err
		}
		if _, err := ref.Update(ctx, updates(f), fs.LastUpdateTime(snap.UpdateTime)); err != nil {
			return commitErr(err)
		}
		out = v
		return nil
	})
	return out, err
}

// UpdatePatchset implements store.Store.
func (s *Store) UpdatePatchset(ctx context.Context, id string, u model.PatchsetUpdate) (*model.Patchset, error) {
	return update(ctx, s, "firestore.UpdatePatchset", s.patchsetRef(id), "patchset", id,
		func(p *model.Patchset) error { return p.Apply(u) }, patchsetFields)
}

// list runs a listing spec made by page and returns the page and the
// cursor of the next one, made by cursorOf from the page's last record.
func list[T any](ctx context.Context, s *Store, sp spec, cursorOf func(*T) string) ([]*T, string, error) {
	snaps, err := s.query(sp).Documents(ctx).GetAll()
	if err != nil {
		return nil, "", err
	}
	var out []*T // nil for an empty page, as the sqlite store returns
	for _, snap := range snaps {
		v, err := decode[T](snap)
		if err != nil {
			return nil, "", err
		}
		out = append(out, v)
	}
	next := ""
	if limit := sp.limit - 1; len(out) > limit {
		out = out[:limit]
		next = cursorOf(out[limit-1])
	}
	return out, next, nil
}

// ListPatchsets implements store.Store.
func (s *Store) ListPatchsets(ctx context.Context, q store.PatchsetQuery) ([]*model.Patchset, string, error) {
	const op = "firestore.ListPatchsets"
	sp, err := patchsetsSpec(q)
	if err != nil {
		return nil, "", wrap(op, err)
	}
	out, next, err := list(ctx, s, sp, func(p *model.Patchset) string { return makeCursor(p.TimeQueued, p.ID) })
	return out, next, wrap(op, err)
}

// LatestPostsubmit implements store.Store.
func (s *Store) LatestPostsubmit(ctx context.Context, branch string) (*model.Postsubmit, error) {
	const op = "firestore.LatestPostsubmit"
	snaps, err := s.query(latestPostsubmitSpec(branch)).Documents(ctx).GetAll()
	if err != nil {
		return nil, wrap(op, err)
	}
	if len(snaps) == 0 {
		return nil, errs.E(errs.NotFound, op, "no postsubmit on branch %q", branch)
	}
	p, err := decode[model.Postsubmit](snaps[0])
	return p, wrap(op, err)
}

// ListPostsubmits implements store.Store.
func (s *Store) ListPostsubmits(ctx context.Context, branch string, limit int, cursor string) ([]*model.Postsubmit, string, error) {
	const op = "firestore.ListPostsubmits"
	sp, err := postsubmitsSpec(branch, limit, cursor)
	if err != nil {
		return nil, "", wrap(op, err)
	}
	out, next, err := list(ctx, s, sp, func(p *model.Postsubmit) string { return makeCursor(p.TimeQueued, p.ID) })
	return out, next, wrap(op, err)
}

// GetJob implements store.Store.
func (s *Store) GetJob(ctx context.Context, id string) (*model.Job, error) {
	j, _, err := getOne[model.Job](ctx, s.jobRef(id), "job", id)
	return j, wrap("firestore.GetJob", err)
}

// GetJobs implements store.Store.
func (s *Store) GetJobs(ctx context.Context, ids []string) (map[string]*model.Job, error) {
	m, err := getMany(ctx, s, ids, s.jobRef, func(j *model.Job) string { return j.ID })
	return m, wrap("firestore.GetJobs", err)
}

// UpdateJob implements store.Store.
func (s *Store) UpdateJob(ctx context.Context, id string, t model.Transition) (*model.Job, error) {
	return update(ctx, s, "firestore.UpdateJob", s.jobRef(id), "job", id,
		func(j *model.Job) error { return j.Apply(t) }, jobFields)
}

// ClaimJob implements store.Store. It reads the claimBatch first queued
// jobs of the pools (no locks; one query per maxIn pools, merged in claim
// order) and starts the first it can, each with a precondition on the
// update time the query saw: a failed precondition means another claimer
// (or a cancel) got there first, so the job is no longer queued and the
// claimer moves on. A lone claimer takes the head of the queue; one that
// lost the head tries the rest in random order, so a crowd of claimers
// spreads over the batch instead of queueing on each job in turn. When the
// batch is used up, it queries again (see claimRounds).
func (s *Store) ClaimJob(ctx context.Context, workerID string, pools []string, now time.Time) (*model.Job, error) {
	const op = "firestore.ClaimJob"
	if workerID == "" {
		return nil, errs.E(errs.InvalidArgument, op, "claim names no worker")
	}
	pools = slices.Compact(slices.Sorted(slices.Values(pools)))
	if len(pools) == 0 {
		return nil, errs.E(errs.NotFound, op, "no pools to claim from")
	}
	start := model.Transition{Kind: model.Start, Worker: workerID, Now: now}
	var out *model.Job
	err := s.retryN(ctx, op, claimRounds*s.maxAttempts, claimPauseCap, func() error {
		type cand struct {
			snap *fs.DocumentSnapshot
			job  *model.Job
		}
		var cands []cand
		for chunk := range slices.Chunk(pools, maxIn) {
			snaps, err := s.query(claimSpec(chunk)).Documents(ctx).GetAll()
			if err != nil {
				return err
			}
			for _, snap := range snaps {
				j, err := decode[model.Job](snap)
				if err != nil {
					return err
				}
				cands = append(cands, cand{snap, j})
			}
		}
		if len(cands) == 0 {
			return errs.E(errs.NotFound, "", "no job of pools %q is queued", pools)
		}
		// The order of the index: priority, order at microseconds, id.
		slices.SortFunc(cands, func(a, b cand) int {
			return cmp.Or(cmp.Compare(a.job.Priority, b.job.Priority),
				ts(a.job.QueueOrder()).Compare(ts(b.job.QueueOrder())), strings.Compare(a.job.ID, b.job.ID))
		})
		cands = cands[:min(len(cands), claimBatch)]
		rest := cands[1:]
		rand.Shuffle(len(rest), func(a, b int) { rest[a], rest[b] = rest[b], rest[a] })
		for _, c := range cands {
			snap, j := c.snap, c.job
			if err := j.Apply(start); err != nil {
				if errs.Is(err, errs.FailedPrecondition) {
					continue // the index lagged the record; not ours to take
				}
				return err
			}
			f, err := jobFields(j)
			if err != nil {
				return err
			}
			_, err = snap.Ref.Update(ctx, updates(f), fs.LastUpdateTime(snap.UpdateTime))
			if err == nil {
				out = j
				return nil
			}
			if err = commitErr(err); !errors.Is(err, errConflict) {
				return err
			}
		}
		return errConflict
	})
	return out, err
}

// ListJobs implements store.Store.
func (s *Store) ListJobs(ctx context.Context, q store.JobQuery) ([]*model.Job, string, error) {
	const op = "firestore.ListJobs"
	sp, err := jobsSpec(q)
	if err != nil {
		return nil, "", wrap(op, err)
	}
	if q.OrderBy == "" {
		q.OrderBy = store.OrderQueued
	}
	order := jobOrders[q.OrderBy]
	out, next, err := list(ctx, s, sp, func(j *model.Job) string { return makeOrderCursor(order.prefix, order.time(j), j.ID) })
	return out, next, wrap(op, err)
}

// CountJobs implements store.Store with one count aggregation per state,
// run concurrently: one round trip. With no states it counts every state
// and reports those that have jobs.
func (s *Store) CountJobs(ctx context.Context, states ...model.State) (map[model.State]int, error) {
	const op = "firestore.CountJobs"
	all := len(states) == 0
	if all {
		states = model.AllStates
	}
	states = uniqStates(states)
	counts := make([]int64, len(states))
	errc := make(chan error, len(states))
	for i, st := range states {
		go func() {
			q := s.query(countSpec(st))
			res, err := q.NewAggregationQuery().WithCount("n").Get(ctx)
			if err == nil {
				n, ok := res.Data()["n"].(int64)
				if !ok {
					err = fmt.Errorf("count of %s: got %v", st, res.Data())
				}
				counts[i] = n
			}
			errc <- err
		}()
	}
	var ferr error
	for range states {
		ferr = cmpErr(ferr, <-errc)
	}
	if ferr != nil {
		return nil, wrap(op, ferr)
	}
	out := make(map[model.State]int, len(states))
	for i, st := range states {
		if !all || counts[i] > 0 {
			out[st] = int(counts[i])
		}
	}
	return out, nil
}

// CountJobsSince implements store.Store with one count aggregation per
// state over the (state, time_queued) index, run concurrently.
func (s *Store) CountJobsSince(ctx context.Context, since time.Time) (map[model.State]int, error) {
	const op = "firestore.CountJobsSince"
	states := model.AllStates
	counts := make([]int64, len(states))
	errc := make(chan error, len(states))
	for i, st := range states {
		go func() {
			q := s.query(countSinceSpec(st, since))
			res, err := q.NewAggregationQuery().WithCount("n").Get(ctx)
			if err == nil {
				n, ok := res.Data()["n"].(int64)
				if !ok {
					err = fmt.Errorf("count of %s: got %v", st, res.Data())
				}
				counts[i] = n
			}
			errc <- err
		}()
	}
	var ferr error
	for range states {
		ferr = cmpErr(ferr, <-errc)
	}
	if ferr != nil {
		return nil, wrap(op, ferr)
	}
	out := map[model.State]int{}
	for i, st := range states {
		if counts[i] > 0 {
			out[st] = int(counts[i])
		}
	}
	return out, nil
}

// AddJobs implements store.Store in one read round trip (the source's
// record and the new jobs' documents, which must not exist) and one
// commit: the job creates and the record's update under a precondition on
// the update time read, so a concurrent change to the record (another
// AddJobs, an End, a vote) sends it round again.
func (s *Store) AddJobs(ctx context.Context, src string, jobs []*model.Job, lease time.Duration) (*model.Patchset, error) {
	const op = "firestore.AddJobs"
	psID, postID, err := model.ParseSrc(src)
	if err != nil {
		return nil, wrap(op, err)
	}
	ids, now, err := store.CheckAddJobs(src, jobs)
	if err != nil {
		return nil, wrap(op, err)
	}
	if len(jobs)+1 > maxWrites {
		return nil, errs.E(errs.InvalidArgument, op, "%d jobs: one commit takes at most %d documents", len(jobs), maxWrites)
	}
	head := s.patchsetRef(psID)
	if postID != "" {
		head = s.postsubmitRef(postID)
	}
	refs := []*fs.DocumentRef{head}
	for _, j := range jobs {
		refs = append(refs, s.jobRef(j.ID))
	}
	var out *model.Patchset
	err = s.retry(ctx, op, func() error {
		snaps, err := s.getAll(ctx, refs)
		if err != nil {
			return err
		}
		for i, snap := range snaps[1:] {
			if snap != nil && snap.Exists() {
				return errs.E(errs.AlreadyExists, "", "job %s already exists", jobs[i].ID)
			}
		}
		if snaps[0] == nil || !snaps[0].Exists() {
			return errs.E(errs.NotFound, "", "%s has no record", src)
		}
		var fields map[string]any
		var p *model.Patchset
		if postID != "" {
			post, err := decode[model.Postsubmit](snaps[0])
			if err != nil {
				return err
			}
			post.JobIDs = append(post.JobIDs, ids...)
			if fields, err = postsubmitFields(post); err != nil {
				return err
			}
		} else {
			if p, err = decode[model.Patchset](snaps[0]); err != nil {
				return err
			}
			if err := p.Apply(model.PatchsetUpdate{Kind: model.Reopen, Now: now, Lease: lease}); err != nil {
				return err
			}
			p.JobIDs = append(p.JobIDs, ids...)
			if fields, err = patchsetFields(p); err != nil {
				return err
			}
		}
		b := s.batch()
		b.Update(head, updates(fields), fs.LastUpdateTime(snaps[0].UpdateTime))
		for _, j := range jobs {
			f, err := jobFields(j)
			if err != nil {
				return err
			}
			b.Create(s.jobRef(j.ID), f)
		}
		if _, err := b.Commit(ctx); err != nil {
			return commitErr(err)
		}
		out = p
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PutSamples implements store.Store: one commit of a Set per series.
func (s *Store) PutSamples(ctx context.Context, t time.Time, values map[string]float64) error {
	const op = "firestore.PutSamples"
	if len(values) == 0 {
		return nil
	}
	b := s.batch()
	for name, v := range values {
		if name == "" {
			return errs.E(errs.InvalidArgument, op, "sample without a series name")
		}
		id := docID(name + "@" + strconv.FormatInt(ts(t).UnixNano(), 10))
		b.Set(s.col(cSamples).Doc(id), map[string]any{fName: name, fT: ts(t), fValue: v})
	}
	_, err := b.Commit(ctx)
	return wrap(op, err)
}

// ListSamples implements store.Store.
func (s *Store) ListSamples(ctx context.Context, name string, since time.Time) ([]model.Sample, error) {
	const op = "firestore.ListSamples"
	var out []model.Sample
	err := drain(s.query(samplesSpec(name, since)).Documents(ctx), func(snap *fs.DocumentSnapshot) error {
		d := snap.Data()
		t, ok1 := d[fT].(time.Time)
		v, ok2 := number(d[fValue])
		if !ok1 || !ok2 {
			return fmt.Errorf("corrupt sample %s", snap.Ref.Path)
		}
		out = append(out, model.Sample{Time: t.UTC(), Value: v})
		return nil
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	slices.Reverse(out)
	return out, nil
}

// number reads a numeric field: Firestore returns whole doubles as int64
// when they were written as integers.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int64:
		return float64(n), true
	}
	return 0, false
}

// DeleteSamples implements store.Store: one query, one commit.
func (s *Store) DeleteSamples(ctx context.Context, before time.Time, limit int) (int, error) {
	const op = "firestore.DeleteSamples"
	snaps, err := s.query(oldSamplesSpec(before, store.Limit(limit))).Documents(ctx).GetAll()
	if err != nil || len(snaps) == 0 {
		return 0, wrap(op, err)
	}
	b := s.batch()
	for _, snap := range snaps {
		b.Delete(snap.Ref)
	}
	if _, err := b.Commit(ctx); err != nil {
		return 0, wrap(op, err)
	}
	return len(snaps), nil
}

func uniqStates(v []model.State) []model.State {
	var out []model.State
	for _, st := range v {
		if !slices.Contains(out, st) {
			out = append(out, st)
		}
	}
	return out
}

// drain reads every document of an iterator.
func drain(it *fs.DocumentIterator, fn func(*fs.DocumentSnapshot) error) error {
	defer it.Stop()
	for {
		snap, err := it.Next()
		if err == iterator.Done {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(snap); err != nil {
			return err
		}
	}
}
