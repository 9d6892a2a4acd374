package fleet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// Options configure a Service. Config, Store, Tasks and Blobs are required.
type Options struct {
	Config *config.Config
	Store  store.Store
	Tasks  tasks.Tasks
	Blobs  blob.Bucket
	Clock  clock.Clock  // default: real
	Log    *slog.Logger // default: slog.Default()
	// HeartbeatEvery is how often workers heartbeat (default 10s): a
	// cancellation reaches a worker within one interval.
	HeartbeatEvery time.Duration
	// PollEvery is how often an idle worker asks for work (default 2s).
	PollEvery time.Duration
	// MaxLogChunk bounds one log append (default 1 MiB).
	MaxLogChunk int
	// MaxArtifactBytes bounds one artifact (default 1 GiB).
	MaxArtifactBytes int64
}

// Service implements Backend on the ports.
type Service struct {
	o Options
}

var _ Backend = (*Service)(nil)

// NewService returns a Service, or InvalidArgument if a dependency is missing.
func NewService(o Options) (*Service, error) {
	if o.Config == nil || o.Store == nil || o.Tasks == nil || o.Blobs == nil {
		return nil, errs.E(errs.InvalidArgument, "fleet.NewService", "Config, Store, Tasks and Blobs are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.HeartbeatEvery <= 0 {
		o.HeartbeatEvery = 10 * time.Second
	}
	if o.PollEvery <= 0 {
		o.PollEvery = 2 * time.Second
	}
	if o.MaxLogChunk <= 0 {
		o.MaxLogChunk = 1 << 20
	}
	if o.MaxArtifactBytes <= 0 {
		o.MaxArtifactBytes = 1 << 30
	}
	return &Service{o: o}, nil
}

var workerIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// ValidWorkerID reports nil if id may name a worker.
func ValidWorkerID(id string) error {
	if !workerIDRE.MatchString(id) {
		return errs.E(errs.InvalidArgument, "fleet", "worker id %q: want 1-128 of [A-Za-z0-9._:-], starting with a letter or digit", id)
	}
	return nil
}

// Heartbeat records the worker and answers with the jobs it must stop.
// A job the worker no longer reports but still holds as STARTED (it
// restarted and forgot it) is released as INTERRUPTED, so it runs again.
func (s *Service) Heartbeat(ctx context.Context, hb Heartbeat) (*HeartbeatReply, error) {
	if err := ValidWorkerID(hb.WorkerID); err != nil {
		return nil, err
	}
	if hb.CurrentJob != "" {
		if err := validJobID(hb.CurrentJob); err != nil {
			return nil, err
		}
	}
	now := s.o.Clock.Now()
	w := &model.Worker{ID: hb.WorkerID, Host: hb.Host, Version: hb.Version, Labels: hb.Labels,
		State: model.WorkerIdle, CurrentJob: hb.CurrentJob, LastSeen: now, FirstSeen: now}
	if hb.CurrentJob != "" {
		w.State = model.WorkerBusy
	}
	if old, err := s.o.Store.GetWorker(ctx, hb.WorkerID); err == nil {
		w.FirstSeen = old.FirstSeen
	} else if !errs.Is(err, errs.NotFound) {
		return nil, err
	}
	stored, err := s.o.Store.PutWorker(ctx, w)
	if err != nil {
		return nil, err
	}
	reply := &HeartbeatReply{Quarantined: stored.State == model.WorkerQuarantined,
		HeartbeatEvery: s.o.HeartbeatEvery, PollEvery: s.o.PollEvery}
	if hb.CurrentJob != "" {
		j, err := s.o.Store.GetJob(ctx, hb.CurrentJob)
		switch {
		case errs.Is(err, errs.NotFound):
			reply.Cancel = append(reply.Cancel, hb.CurrentJob)
		case err != nil:
			return nil, err
		case j.State != model.Started || j.Worker != hb.WorkerID:
			reply.Cancel = append(reply.Cancel, hb.CurrentJob)
		}
	}
	// Jobs started well before this heartbeat (so not a claim racing it)
	// that the worker does not report are orphans of a restart.
	held, _, err := s.o.Store.ListJobs(ctx, store.JobQuery{States: []model.State{model.Started}, Worker: hb.WorkerID,
		StartedBefore: now.Add(-2 * s.o.HeartbeatEvery)})
	if err != nil {
		return nil, err
	}
	for _, j := range held {
		if j.ID == hb.CurrentJob {
			continue
		}
		if err := s.finish(ctx, Result{WorkerID: hb.WorkerID, JobID: j.ID, State: model.Interrupted,
			Reason: "the worker restarted and no longer runs it"}); err != nil && !errs.Is(err, errs.FailedPrecondition) {
			return nil, err
		}
	}
	return reply, nil
}

// Claim hands the worker the first queued job it may run: one whose
// required labels (recorded when it was queued) the worker's labels meet.
// The Store offers the pools of the configured job types the worker's
// labels meet, and picks by priority and fair order. A job whose type left
// the config since it was queued ends FAILED with that reason, and the
// next is tried.
func (s *Service) Claim(ctx context.Context, workerID string) (*Assignment, error) {
	if err := ValidWorkerID(workerID); err != nil {
		return nil, err
	}
	w, err := s.o.Store.GetWorker(ctx, workerID)
	if errs.Is(err, errs.NotFound) {
		return nil, errs.E(errs.FailedPrecondition, "fleet.Claim", "worker %s has not sent a heartbeat", workerID)
	}
	if err != nil {
		return nil, err
	}
	if w.State == model.WorkerQuarantined {
		return nil, errs.E(errs.PermissionDenied, "fleet.Claim", "worker %s is quarantined", workerID)
	}
	pools := s.o.Config.PoolsFor(w.Labels)
	if len(pools) == 0 {
		return nil, errs.E(errs.NotFound, "fleet.Claim", "the labels of worker %s meet the requirements of no configured job type", workerID)
	}
	for {
		now := s.o.Clock.Now()
		j, err := s.o.Store.ClaimJob(ctx, workerID, pools, now)
		if err != nil {
			return nil, err
		}
		jc, ok := s.o.Config.Jobs[j.Type]
		if !ok {
			reason := fmt.Sprintf("job type %q is no longer configured", j.Type)
			if err := s.finish(ctx, Result{WorkerID: workerID, JobID: j.ID, State: model.Failed, Reason: reason}); err != nil {
				return nil, err
			}
			continue
		}
		env := map[string]string{}
		for k, v := range j.Env {
			env[k] = v
		}
		env["TOLLGATE_JOB_ID"] = j.ID
		env["TOLLGATE_JOB_TYPE"] = j.Type
		env["TOLLGATE_ATTEMPT"] = strconv.Itoa(j.Attempt)
		if cl, ps, ok := j.Change(); ok {
			env["TOLLGATE_CHANGE"] = strconv.Itoa(cl)
			env["TOLLGATE_PATCHSET"] = strconv.Itoa(ps)
		}
		s.o.Log.InfoContext(ctx, "job claimed", "job", j.ID, "worker", workerID, "attempt", j.Attempt)
		a := &Assignment{Job: j, Command: append([]string(nil), jc.Command...), Env: env,
			Timeout: s.o.Config.JobTimeout(j.Type), Network: jc.Network}
		if co := j.Checkout; co != nil {
			base := strings.TrimSuffix(s.o.Config.Gerrit.URL, "/")
			a.Checkout = &Checkout{Checkout: *co, URL: base + "/" + co.Project, AuthURL: base + "/a/" + co.Project}
		}
		return a, nil
	}
}

// owned returns the job if workerID runs (or ran) it.
func (s *Service) owned(ctx context.Context, workerID, jobID string) (*model.Job, error) {
	if err := ValidWorkerID(workerID); err != nil {
		return nil, err
	}
	if err := validJobID(jobID); err != nil {
		return nil, err
	}
	j, err := s.o.Store.GetJob(ctx, jobID)
	if err != nil {
		return nil, err
	}
	if j.Worker != workerID {
		return nil, errs.E(errs.FailedPrecondition, "fleet", "job %s is not run by worker %s", jobID, workerID)
	}
	return j, nil
}

// AppendLog stores a log chunk of a job the worker runs (or just finished).
func (s *Service) AppendLog(ctx context.Context, workerID, jobID string, off int64, data []byte) error {
	if len(data) > s.o.MaxLogChunk {
		return errs.E(errs.InvalidArgument, "fleet.AppendLog", "chunk of %d bytes exceeds %d", len(data), s.o.MaxLogChunk)
	}
	if off < 0 {
		return errs.E(errs.InvalidArgument, "fleet.AppendLog", "negative offset")
	}
	if _, err := s.owned(ctx, workerID, jobID); err != nil {
		return err
	}
	return s.o.Store.AppendLog(ctx, jobID, off, data, s.o.Clock.Now().Add(s.o.Config.LogsTTL.D()))
}

// PutArtifact stores one artifact of a job the worker runs (or just finished).
func (s *Service) PutArtifact(ctx context.Context, workerID, jobID, name string, r io.Reader) error {
	if err := blob.ValidName(name); err != nil {
		return err
	}
	if _, err := s.owned(ctx, workerID, jobID); err != nil {
		return err
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	lr := &limitReader{r: r, left: s.o.MaxArtifactBytes}
	if _, err := s.o.Blobs.Put(ctx, ArtifactPrefix(jobID)+name, lr, ct); err != nil {
		if lr.over {
			return errs.E(errs.ResourceExhausted, "fleet.PutArtifact", "artifact %s of %s exceeds %d bytes", name, jobID, s.o.MaxArtifactBytes)
		}
		return err
	}
	return nil
}

// ArtifactPrefix is where a job's artifacts live in Blobs: "{job_id}/".
func ArtifactPrefix(jobID string) string { return jobID + "/" }

// limitReader fails once more than left bytes were read, so Put writes nothing.
type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.over = true
		return n, errs.E(errs.ResourceExhausted, "fleet", "artifact too large")
	}
	return n, err
}

// Finish records how a job ended and, if it ended for good, defers the
// check that ends its patchset at once, so the vote does not wait for a tick.
func (s *Service) Finish(ctx context.Context, r Result) error {
	if err := ValidWorkerID(r.WorkerID); err != nil {
		return err
	}
	if err := validJobID(r.JobID); err != nil {
		return err
	}
	switch r.State {
	case model.Completed, model.Failed, model.TimedOut, model.Cancelled, model.Interrupted:
	default:
		return errs.E(errs.InvalidArgument, "fleet.Finish", "a worker cannot end a job as %q", r.State)
	}
	return s.finish(ctx, r)
}

func (s *Service) finish(ctx context.Context, r Result) error {
	t := model.Transition{Kind: model.Finish, Worker: r.WorkerID, State: r.State, ExitCode: r.ExitCode, Reason: r.Reason, Now: s.o.Clock.Now()}
	if r.State == model.Cancelled {
		t = model.Transition{Kind: model.Cancel, Worker: r.WorkerID, Reason: r.Reason, Now: t.Now}
	}
	j, err := s.o.Store.UpdateJob(ctx, r.JobID, t)
	if errs.Is(err, errs.FailedPrecondition) {
		cur, gerr := s.o.Store.GetJob(ctx, r.JobID)
		if gerr != nil {
			return gerr
		}
		// A retried Finish, or a worker confirming the cancel of its own
		// job, is a no-op; a job given to another worker meanwhile is not.
		if cur.State == r.State && cur.Worker == r.WorkerID {
			return nil
		}
		return err
	}
	if err != nil {
		return err
	}
	s.o.Log.InfoContext(ctx, "job ended", "job", j.ID, "worker", r.WorkerID, "state", j.State, "attempt", j.Attempt)
	if !j.State.Terminal() {
		return nil // queued again after an interruption
	}
	return controller.JobEnded(ctx, s.o.Tasks, j)
}

func validJobID(id string) error { _, err := model.ParseJobID(id); return err }
