// Package store defines the Store port: all of Tollgate's CI state.
//
// The methods are shaped by what the controller and the workers do, not by a
// document model, and each one is atomic. Rules about which changes are
// allowed live in package model (Job.Apply, Patchset.Apply); an adapter reads
// the record, calls Apply, and writes it back only if nobody changed it in
// between (optimistic concurrency), retrying on a lost race. The conformance
// suite in package storetest states these contracts as tests; every adapter
// runs it.
//
// Errors carry errs codes: NotFound for a missing record, AlreadyExists for a
// duplicate create, FailedPrecondition when Apply refuses, InvalidArgument for
// malformed input, Unavailable when the backend cannot be reached. All methods
// are safe for concurrent use by many goroutines and processes.
package store

import (
	"context"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
)

// Store is the CI state.
type Store interface {
	// CreatePatchset writes ps and all of its jobs in one atomic write: after a
	// crash either all exist or none. ps.JobIDs must list exactly the ids of
	// jobs. If a patchset with ps.ID exists, nothing is written and the error
	// is AlreadyExists (so a duplicate delivery is recognised).
	CreatePatchset(ctx context.Context, ps *model.Patchset, jobs []*model.Job) error

	// GetPatchset returns one patchset, or NotFound.
	GetPatchset(ctx context.Context, id string) (*model.Patchset, error)

	// GetPatchsets returns the patchsets that exist among ids, in one round
	// trip, keyed by id. Missing ids are absent from the map, not an error.
	GetPatchsets(ctx context.Context, ids []string) (map[string]*model.Patchset, error)

	// GetPatchsetWithJobs returns a patchset and its jobs (in JobIDs order) in
	// one round trip where the backend allows it. NotFound if the patchset is missing.
	GetPatchsetWithJobs(ctx context.Context, id string) (*model.Patchset, []*model.Job, error)

	// UpdatePatchset applies u to the patchset atomically and returns the
	// result. NotFound if missing; FailedPrecondition (unchanged) if refused.
	UpdatePatchset(ctx context.Context, id string, u model.PatchsetUpdate) (*model.Patchset, error)

	// ListPatchsets lists patchsets, newest queued first, filtered by q.
	ListPatchsets(ctx context.Context, q PatchsetQuery) ([]*model.Patchset, string, error)

	// CreatePostsubmit writes a postsubmit run and its jobs atomically;
	// AlreadyExists if a run with p.ID exists.
	CreatePostsubmit(ctx context.Context, p *model.Postsubmit, jobs []*model.Job) error

	// LatestPostsubmit returns the run of branch with the newest TimeQueued,
	// or NotFound if the branch never had one.
	LatestPostsubmit(ctx context.Context, branch string) (*model.Postsubmit, error)

	// ListPostsubmits lists runs, newest first; branch "" means all branches.
	ListPostsubmits(ctx context.Context, branch string, limit int, cursor string) ([]*model.Postsubmit, string, error)

	// GetJob returns one job, or NotFound.
	GetJob(ctx context.Context, id string) (*model.Job, error)

	// GetJobs returns the jobs that exist among ids in one round trip, keyed by id.
	GetJobs(ctx context.Context, ids []string) (map[string]*model.Job, error)

	// UpdateJob applies t to the job atomically and returns the result.
	// NotFound if missing; FailedPrecondition (unchanged) if Apply refuses.
	UpdateJob(ctx context.Context, id string, t model.Transition) (*model.Job, error)

	// ClaimJob atomically moves the first QUEUED job whose Pool is one of
	// pools to STARTED for workerID at now and returns it. First is lowest
	// by (Priority, QueueOrder, ID): presubmit before postsubmit, then by
	// the fair order model.Stagger gives. Exactly one of many concurrent
	// claimers gets each job. NotFound when no job of those pools is queued
	// (so always when pools is empty). Any number of pools may be given.
	ClaimJob(ctx context.Context, workerID string, pools []string, now time.Time) (*model.Job, error)

	// AddJobs writes jobs (new jobs of source src, as model.Job.Rerun makes
	// them) and appends their ids to the JobIDs of src's record, in one
	// atomic write. src is a patchset ("cls/{cl}-{ps}") or a postsubmit run
	// ("branches/{id}"). A patchset is also reopened (model.Reopen at the
	// newest TimeQueued among jobs, with lease as the vote claim's lease), so
	// it ends and votes again once the new jobs end; AddJobs returns the
	// patchset as written, and nil for a postsubmit run.
	//
	// NotFound if src has no record; AlreadyExists if a job id is taken;
	// FailedPrecondition if Reopen refuses; InvalidArgument if jobs is empty,
	// lists a job twice, or holds a job of another source. On any error
	// nothing is written.
	AddJobs(ctx context.Context, src string, jobs []*model.Job, lease time.Duration) (*model.Patchset, error)

	// ListJobs lists jobs filtered by q, newest first in q.OrderBy's time,
	// with a cursor for the next page ("" when there is none). A cursor is
	// only good for the order that made it (InvalidArgument otherwise).
	ListJobs(ctx context.Context, q JobQuery) ([]*model.Job, string, error)

	// CountJobs counts jobs in each of states.
	CountJobs(ctx context.Context, states ...model.State) (map[model.State]int, error)

	// CountJobsSince counts the jobs queued at or after since, by their
	// state now; states without jobs are absent. It reads an index, not the
	// jobs: the cost grows with the number of jobs in the window.
	CountJobsSince(ctx context.Context, since time.Time) (map[model.State]int, error)

	// PutWorker creates or replaces a worker record (a heartbeat). A record
	// that is QUARANTINED stays so: the stored state wins over w.State.
	PutWorker(ctx context.Context, w *model.Worker) (*model.Worker, error)

	// GetWorker returns one worker, or NotFound.
	GetWorker(ctx context.Context, id string) (*model.Worker, error)

	// ListWorkers lists workers; with seenBefore non-zero, only those whose
	// LastSeen is older than it.
	ListWorkers(ctx context.Context, seenBefore time.Time) ([]*model.Worker, error)

	// SetWorkerQuarantined sets or clears quarantine; NotFound if missing.
	SetWorkerQuarantined(ctx context.Context, id string, quarantined bool) (*model.Worker, error)

	// DeleteWorker removes a worker record. Deleting a missing one is not an error.
	DeleteWorker(ctx context.Context, id string) error

	// AppendLog stores a chunk of a job's log at byte offset off. It is
	// idempotent: appending the same chunk at the same offset again is a
	// no-op. A chunk that does not start at the current end of the log
	// (a gap or an overlap with different bytes) is FailedPrecondition.
	// expires is when the log may be deleted.
	AppendLog(ctx context.Context, jobID string, off int64, data []byte, expires time.Time) error

	// ReadLog returns up to max bytes of the job's log starting at off, and
	// the log's current total size. An unknown job's log is empty, not an error.
	ReadLog(ctx context.Context, jobID string, off int64, max int) ([]byte, int64, error)

	// ListExpiredLogs returns the ids of up to limit jobs whose logs expired before now.
	ListExpiredLogs(ctx context.Context, now time.Time, limit int) ([]string, error)

	// DeleteJobLogs deletes every chunk of a job's log; idempotent.
	DeleteJobLogs(ctx context.Context, jobID string) error

	// AcquireLease takes the named lease for holder until now+ttl if it is
	// free, expired, or already held by holder. It reports whether holder has it.
	AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error)

	// PutSamples records one point of each named series at t, in one write.
	// A point of a series at the same t is replaced, so writers that round t
	// (to the minute, say) keep one point per period.
	PutSamples(ctx context.Context, t time.Time, values map[string]float64) error

	// ListSamples returns the points of series name at or after since,
	// oldest first: the newest MaxSamples of them when there are more.
	ListSamples(ctx context.Context, name string, since time.Time) ([]model.Sample, error)

	// DeleteSamples deletes up to limit points (of any series) older than
	// before and reports how many it deleted; callers repeat while it
	// deletes limit.
	DeleteSamples(ctx context.Context, before time.Time, limit int) (int, error)

	// GetMeta and SetMeta keep small controller settings (such as the Gerrit
	// poll watermark). GetMeta of a missing key returns "" and no error.
	GetMeta(ctx context.Context, key string) (string, error)
	SetMeta(ctx context.Context, key, value string) error

	// Close releases the store's resources.
	Close() error
}

// MaxSamples bounds one ListSamples answer: a week of one point a minute.
const MaxSamples = 7 * 24 * 60

// JobQuery filters ListJobs. Zero fields do not filter.
type JobQuery struct {
	States []model.State
	Src    string // exact job source
	Worker string
	// StartedBefore keeps only jobs started before it (for stale job checks).
	StartedBefore time.Time
	// QueuedBefore keeps only jobs queued before it (for queue expiry); it
	// combines only with States, in the default order.
	QueuedBefore time.Time
	// OrderBy is the time the listing sorts on, newest first (default
	// OrderQueued). OrderStarted lists only jobs that started (their latest
	// start), OrderEnded only jobs that ended; either combines with States
	// only, which keeps the indexes a backend needs few.
	OrderBy JobOrder
	Limit   int    // default 100, at most 1000
	Cursor  string // from a previous page of the same order
}

// JobOrder names the time a job listing sorts on.
type JobOrder string

const (
	OrderQueued  JobOrder = "queued"
	OrderStarted JobOrder = "started"
	OrderEnded   JobOrder = "ended"
)

// Check refuses a query that combines filters the Store does not index
// together (InvalidArgument). Adapters call it first.
func (q JobQuery) Check() error {
	if !q.QueuedBefore.IsZero() && (q.Src != "" || q.Worker != "" || !q.StartedBefore.IsZero() || (q.OrderBy != "" && q.OrderBy != OrderQueued)) {
		return errs.E(errs.InvalidArgument, "store.JobQuery", "queued_before combines only with a state filter")
	}
	switch q.OrderBy {
	case "", OrderQueued:
		return nil
	case OrderStarted, OrderEnded:
		if q.Src != "" || q.Worker != "" || !q.StartedBefore.IsZero() {
			return errs.E(errs.InvalidArgument, "store.JobQuery", "ordering by %s combines only with a state filter", q.OrderBy)
		}
		return nil
	}
	return errs.E(errs.InvalidArgument, "store.JobQuery", "unknown order %q: want queued, started or ended", q.OrderBy)
}

// PatchsetQuery filters ListPatchsets. Zero fields do not filter.
type PatchsetQuery struct {
	Change  int
	Owner   string
	Pending bool // only those not ended
	Ended   bool // only those ended (not with Pending)
	Limit   int  // default 100, at most 1000
	Cursor  string
}

// Check refuses contradictory filters (InvalidArgument).
func (q PatchsetQuery) Check() error {
	if q.Pending && q.Ended {
		return errs.E(errs.InvalidArgument, "store.PatchsetQuery", "pending and ended exclude each other")
	}
	return nil
}

// Limit applies the default and the ceiling of a page size.
func Limit(n int) int {
	switch {
	case n <= 0:
		return 100
	case n > 1000:
		return 1000
	}
	return n
}

// CheckAddJobs checks the jobs given to AddJobs (InvalidArgument if there
// are none, one is listed twice, is not QUEUED or belongs to another
// source) and returns their ids in order and the newest TimeQueued among
// them, the time of the reopen.
func CheckAddJobs(src string, jobs []*model.Job) ([]string, time.Time, error) {
	const op = "store.AddJobs"
	if len(jobs) == 0 {
		return nil, time.Time{}, errs.E(errs.InvalidArgument, op, "no jobs to add to %s", src)
	}
	ids := make([]string, 0, len(jobs))
	seen := make(map[string]bool, len(jobs))
	var newest time.Time
	for _, j := range jobs {
		switch {
		case j == nil || j.ID == "":
			return nil, time.Time{}, errs.E(errs.InvalidArgument, op, "job without id")
		case seen[j.ID]:
			return nil, time.Time{}, errs.E(errs.InvalidArgument, op, "job %s given twice", j.ID)
		case j.Src != src:
			return nil, time.Time{}, errs.E(errs.InvalidArgument, op, "job %s belongs to %s, not %s", j.ID, j.Src, src)
		case j.State != model.Queued:
			return nil, time.Time{}, errs.E(errs.InvalidArgument, op, "new job %s is %s, not QUEUED", j.ID, j.State)
		}
		seen[j.ID] = true
		ids = append(ids, j.ID)
		if j.TimeQueued.After(newest) {
			newest = j.TimeQueued
		}
	}
	return ids, newest, nil
}

// CheckJobs enforces the create contract shared by every adapter: ids lists
// exactly the ids of jobs, once each, and every job has an id and a known
// state. It returns InvalidArgument otherwise.
func CheckJobs(ids []string, jobs []*model.Job) error {
	if len(ids) != len(jobs) {
		return errs.E(errs.InvalidArgument, "", "%d job ids for %d jobs", len(ids), len(jobs))
	}
	byID := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		switch {
		case j == nil || j.ID == "":
			return errs.E(errs.InvalidArgument, "", "job without id")
		case byID[j.ID]:
			return errs.E(errs.InvalidArgument, "", "job %s given twice", j.ID)
		case !j.State.Valid():
			return errs.E(errs.InvalidArgument, "", "job %s has unknown state %q", j.ID, j.State)
		}
		byID[j.ID] = true
	}
	listed := make(map[string]bool, len(ids))
	for _, id := range ids {
		if !byID[id] || listed[id] {
			return errs.E(errs.InvalidArgument, "", "job ids %q do not match the jobs given", ids)
		}
		listed[id] = true
	}
	return nil
}
