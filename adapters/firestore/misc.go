package firestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	fs "cloud.google.com/go/firestore"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
)

const (
	// maxChunkDoc is the most log bytes one chunk document holds: a
	// document is at most 1 MiB with its name and fields, and a worker may
	// send 1 MiB at once, so an append is split over several chunks.
	maxChunkDoc = 512 << 10
	// maxAppend bounds one append: all its chunks go in one commit, and a
	// request is at most 10 MiB.
	maxAppend = 8 << 20
	// chunkTTLMargin is how much later than its log a chunk expires under
	// the TTL policy. Chunks written early in a job's life carry an earlier
	// expiry than the log's final one; the margin (longer than any job)
	// keeps TTL from deleting the start of a log that is still live, and
	// still removes chunks orphaned by a TTL deletion of their log.
	chunkTTLMargin = 7 * 24 * time.Hour
	// deleteBatch is how many chunks one delete commit removes.
	deleteBatch = 400
)

func (s *Store) workerRef(id string) *fs.DocumentRef { return s.col(cWorkers).Doc(docID(id)) }
func (s *Store) logRef(jobID string) *fs.DocumentRef { return s.col(cLogs).Doc(spreadID(jobID)) }
func (s *Store) chunkRef(log *fs.DocumentRef, off int64) *fs.DocumentRef {
	return log.Collection(s.prefix + cChunks).Doc(fmt.Sprintf("%020d", off))
}

func workerFields(w *model.Worker) (map[string]any, error) {
	data, err := encode(w)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		fID:       w.ID,
		fState:    string(w.State),
		fLastSeen: ts(w.LastSeen),
		fData:     data,
	}, nil
}

// PutWorker implements store.Store.
func (s *Store) PutWorker(ctx context.Context, w *model.Worker) (*model.Worker, error) {
	const op = "firestore.PutWorker"
	if w == nil || w.ID == "" {
		return nil, errs.E(errs.InvalidArgument, op, "worker without id")
	}
	ref := s.workerRef(w.ID)
	out := *w
	err := s.retry(ctx, op, func() error {
		snap, err := get(ctx, ref)
		if err != nil {
			return err
		}
		out.State = w.State
		if snap.Exists() {
			old, err := decode[model.Worker](snap)
			if err != nil {
				return err
			}
			if old.State == model.WorkerQuarantined {
				out.State = model.WorkerQuarantined
			}
		}
		f, err := workerFields(&out)
		if err != nil {
			return err
		}
		if snap.Exists() {
			_, err = ref.Update(ctx, updates(f), fs.LastUpdateTime(snap.UpdateTime))
		} else {
			_, err = ref.Create(ctx, f)
		}
		return commitErr(err)
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetWorker implements store.Store.
func (s *Store) GetWorker(ctx context.Context, id string) (*model.Worker, error) {
	w, _, err := getOne[model.Worker](ctx, s.workerRef(id), "worker", id)
	return w, wrap("firestore.GetWorker", err)
}

// ListWorkers implements store.Store; workers come in id order.
func (s *Store) ListWorkers(ctx context.Context, seenBefore time.Time) ([]*model.Worker, error) {
	const op = "firestore.ListWorkers"
	snaps, err := s.query(workersSpec(seenBefore)).Documents(ctx).GetAll()
	if err != nil {
		return nil, wrap(op, err)
	}
	out := make([]*model.Worker, 0, len(snaps))
	for _, snap := range snaps {
		w, err := decode[model.Worker](snap)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b *model.Worker) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// SetWorkerQuarantined implements store.Store. Lifting a quarantine makes
// the worker BUSY if it still has a job, IDLE otherwise, until its next
// heartbeat says which.
func (s *Store) SetWorkerQuarantined(ctx context.Context, id string, quarantined bool) (*model.Worker, error) {
	return update(ctx, s, "firestore.SetWorkerQuarantined", s.workerRef(id), "worker", id,
		func(w *model.Worker) error {
			switch {
			case quarantined:
				w.State = model.WorkerQuarantined
			case w.State != model.WorkerQuarantined:
			case w.CurrentJob != "":
				w.State = model.WorkerBusy
			default:
				w.State = model.WorkerIdle
			}
			return nil
		}, workerFields)
}

// DeleteWorker implements store.Store.
func (s *Store) DeleteWorker(ctx context.Context, id string) error {
	_, err := s.workerRef(id).Delete(ctx)
	return wrap("firestore.DeleteWorker", err)
}

// logHead reads a log document's size and expiry (zero for a missing log).
func logHead(snap *fs.DocumentSnapshot) (int64, time.Time, error) {
	if !snap.Exists() {
		return 0, time.Time{}, nil
	}
	d := snap.Data()
	size, ok1 := d[fSize].(int64)
	exp, ok2 := d[fExpireAt].(time.Time)
	if !ok1 || !ok2 {
		return 0, time.Time{}, fmt.Errorf("corrupt log %s: %v", snap.Ref.Path, d)
	}
	return size, exp, nil
}

var errStop = errors.New("stop")

// readRange returns n bytes of a log from off, which the caller has
// checked lie within the log: one query for the chunks that overlap them.
func (s *Store) readRange(ctx context.Context, log *fs.DocumentRef, off, n int64) ([]byte, error) {
	if n == 0 {
		return []byte{}, nil
	}
	end := off + n
	type chunk struct {
		off  int64
		data []byte
	}
	var chunks []chunk // last first
	err := drain(s.query(chunksSpec(log, end)).Documents(ctx), func(snap *fs.DocumentSnapshot) error {
		d := snap.Data()
		co, ok1 := d[fOff].(int64)
		cd, ok2 := d[fData].([]byte)
		if !ok1 || !ok2 {
			return fmt.Errorf("corrupt log chunk %s", snap.Ref.Path)
		}
		chunks = append(chunks, chunk{co, cd})
		if co <= off {
			return errStop
		}
		return nil
	})
	if err != nil && err != errStop {
		return nil, err
	}
	out := make([]byte, 0, n)
	next := int64(-1)
	for i := len(chunks) - 1; i >= 0; i-- {
		c := chunks[i]
		if next >= 0 && c.off != next {
			break // a gap: reported below
		}
		next = c.off + int64(len(c.data))
		lo, hi := max(off, c.off)-c.off, min(end, next)-c.off
		if lo < hi {
			out = append(out, c.data[lo:hi]...)
		}
	}
	if int64(len(out)) != n {
		return nil, fmt.Errorf("log %s: read %d bytes at %d, want %d: chunks are not contiguous", log.ID, len(out), off, n)
	}
	return out, nil
}

// AppendLog implements store.Store. The log document holds the size; an
// append reads it, checks the chunk against it (and against the stored
// bytes it overlaps), and commits the new chunk documents together with
// the new size under a precondition on the log document's update time, so
// concurrent appends cannot both land at one offset. A chunk that overlaps
// the end of the log with matching bytes appends only its new tail, so a
// retried append after a partial success converges. The log expires at the
// latest expiry given.
func (s *Store) AppendLog(ctx context.Context, jobID string, off int64, data []byte, expires time.Time) error {
	const op = "firestore.AppendLog"
	if jobID == "" || off < 0 {
		return errs.E(errs.InvalidArgument, op, "append to log of job %q at offset %d", jobID, off)
	}
	if len(data) > maxAppend {
		return errs.E(errs.InvalidArgument, op, "chunk of %d bytes exceeds %d", len(data), maxAppend)
	}
	log := s.logRef(jobID)
	return s.retry(ctx, op, func() error {
		snap, err := get(ctx, log)
		if err != nil {
			return err
		}
		size, exp, err := logHead(snap)
		if err != nil {
			return err
		}
		if off > size {
			return errs.E(errs.FailedPrecondition, "", "log of job %s ends at %d: a chunk at %d leaves a gap", jobID, size, off)
		}
		tail := data
		if off < size {
			n := min(size-off, int64(len(data)))
			have, err := s.readRange(ctx, log, off, n)
			if err != nil {
				return err
			}
			if !bytes.Equal(have, data[:n]) {
				return errs.E(errs.FailedPrecondition, "", "log of job %s: the chunk at %d differs from the bytes stored there", jobID, off)
			}
			tail = data[n:]
		}
		if len(tail) == 0 {
			return nil
		}
		if e := ts(expires); e.After(exp) {
			exp = e
		}
		b := s.batch()
		head := map[string]any{fJobID: jobID, fSize: size + int64(len(tail)), fExpireAt: exp}
		if snap.Exists() {
			b.Update(log, updates(head), fs.LastUpdateTime(snap.UpdateTime))
		} else {
			b.Create(log, head)
		}
		for k := 0; k < len(tail); k += maxChunkDoc {
			at := size + int64(k)
			b.Set(s.chunkRef(log, at), map[string]any{
				fOff:      at,
				fData:     tail[k:min(k+maxChunkDoc, len(tail))],
				fExpireAt: exp.Add(chunkTTLMargin),
			})
		}
		_, err = b.Commit(ctx)
		return commitErr(err)
	})
}

// ReadLog implements store.Store: one read when there is nothing new past
// off, two otherwise.
func (s *Store) ReadLog(ctx context.Context, jobID string, off int64, maxBytes int) ([]byte, int64, error) {
	const op = "firestore.ReadLog"
	if off < 0 || maxBytes < 0 {
		return nil, 0, errs.E(errs.InvalidArgument, op, "read of log of job %q at %d, max %d", jobID, off, maxBytes)
	}
	log := s.logRef(jobID)
	snap, err := get(ctx, log)
	if err != nil {
		return nil, 0, wrap(op, err)
	}
	size, _, err := logHead(snap)
	if err != nil {
		return nil, 0, wrap(op, err)
	}
	if off >= size {
		return []byte{}, size, nil
	}
	out, err := s.readRange(ctx, log, off, min(int64(maxBytes), size-off))
	if err != nil {
		return nil, 0, wrap(op, err)
	}
	return out, size, nil
}

// ListExpiredLogs implements store.Store, soonest expired first.
func (s *Store) ListExpiredLogs(ctx context.Context, now time.Time, limit int) ([]string, error) {
	const op = "firestore.ListExpiredLogs"
	var ids []string
	err := drain(s.query(expiredLogsSpec(now, limit)).Documents(ctx), func(snap *fs.DocumentSnapshot) error {
		id, ok := snap.Data()[fJobID].(string)
		if !ok {
			return fmt.Errorf("corrupt log %s", snap.Ref.Path)
		}
		ids = append(ids, id)
		return nil
	})
	return ids, wrap(op, err)
}

// DeleteJobLogs implements store.Store: the chunks in batches, then the
// log document, under a precondition that no append came in meanwhile (an
// append that did is deleted on the next round).
func (s *Store) DeleteJobLogs(ctx context.Context, jobID string) error {
	const op = "firestore.DeleteJobLogs"
	log := s.logRef(jobID)
	return s.retry(ctx, op, func() error {
		snap, err := get(ctx, log)
		if err != nil {
			return err
		}
		for {
			chunks, err := s.query(allChunksSpec(log, deleteBatch)).Documents(ctx).GetAll()
			if err != nil {
				return err
			}
			if len(chunks) == 0 {
				break
			}
			b := s.batch()
			for _, c := range chunks {
				b.Delete(c.Ref)
			}
			if _, err := b.Commit(ctx); err != nil {
				return err
			}
			if len(chunks) < deleteBatch {
				break
			}
		}
		if !snap.Exists() {
			return nil
		}
		_, err = log.Delete(ctx, fs.LastUpdateTime(snap.UpdateTime))
		return commitErr(err)
	})
}

// AcquireLease implements store.Store. A lease is expired from the instant
// its expiry is reached.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	const op = "firestore.AcquireLease"
	if name == "" || holder == "" || ttl <= 0 {
		return false, errs.E(errs.InvalidArgument, op, "lease %q for %q with ttl %v", name, holder, ttl)
	}
	ref := s.col(cLeases).Doc(docID(name))
	var ok bool
	err := s.retry(ctx, op, func() error {
		ok = false
		snap, err := get(ctx, ref)
		if err != nil {
			return err
		}
		f := map[string]any{fID: name, fHolder: holder, fExpires: ts(now.Add(ttl))}
		if snap.Exists() {
			d := snap.Data()
			cur, _ := d[fHolder].(string)
			exp, _ := d[fExpires].(time.Time)
			if cur != holder && now.Before(exp) {
				return nil // held by another
			}
			_, err = ref.Update(ctx, updates(f), fs.LastUpdateTime(snap.UpdateTime))
		} else {
			_, err = ref.Create(ctx, f)
		}
		if err != nil {
			return commitErr(err)
		}
		ok = true
		return nil
	})
	return ok, err
}

// GetMeta implements store.Store.
func (s *Store) GetMeta(ctx context.Context, key string) (string, error) {
	const op = "firestore.GetMeta"
	snap, err := get(ctx, s.col(cMeta).Doc(docID(key)))
	if err != nil || !snap.Exists() {
		return "", wrap(op, err)
	}
	v, ok := snap.Data()[fValue].(string)
	if !ok {
		return "", errs.E(errs.Unknown, op, "corrupt meta %q", key)
	}
	return v, nil
}

// SetMeta implements store.Store.
func (s *Store) SetMeta(ctx context.Context, key, value string) error {
	const op = "firestore.SetMeta"
	if key == "" {
		return errs.E(errs.InvalidArgument, op, "empty meta key")
	}
	_, err := s.col(cMeta).Doc(docID(key)).Set(ctx, map[string]any{fValue: value})
	return wrap(op, err)
}
