// Package worker is Tollgate's reference worker: it heartbeats, claims jobs
// and runs each one as a local process group, streaming the output as the
// job's log and uploading the files it leaves in its artifacts directory.
//
// The worker only talks to a fleet.Backend, so the same code runs in-process
// under `tollgate up` (fleet.Service directly) and on other machines over the
// HTTP worker API (whose client implements fleet.Backend again).
//
// A job never sees the worker's own environment, which may hold credentials:
// it gets Options.BaseEnv, the assignment's env and the TOLLGATE_* variables.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/sandbox"
)

// SandboxLabel is the label every worker advertises with its sandbox mode
// (bwrap or none), whatever Options.Labels says.
const SandboxLabel = "sandbox"

// Options configure a Worker. Backend, ID and WorkDir are required.
type Options struct {
	Backend fleet.Backend
	ID      string // the worker's id (fleet.ValidWorkerID)
	Host    string // default: os.Hostname()
	Version string
	Labels  map[string]string
	// WorkDir is the root of the per-job work directories
	// (WorkDir/{job_id}-a{attempt}).
	WorkDir string
	Log     *slog.Logger // default: slog.Default()
	// KillGrace is how long a stopped job's processes get between SIGTERM
	// and SIGKILL (default 10s).
	KillGrace time.Duration
	// LogFlushEvery is how often output is sent while a job runs (default
	// 1s); 64 KiB of output is sent at once.
	LogFlushEvery time.Duration
	// HeartbeatEvery and PollEvery (defaults 10s and 2s) apply until the
	// server's HeartbeatReply chooses other intervals.
	HeartbeatEvery time.Duration
	PollEvery      time.Duration
	// KeepWorkDirs keeps each job's work directory after it ends, for debugging.
	KeepWorkDirs bool
	// BaseEnv is the environment every job gets besides the assignment's
	// env and the TOLLGATE_* variables. Default: PATH=/usr/local/bin:/usr/bin:/bin,
	// HOME and TMPDIR inside the job's work directory, LANG=C.UTF-8.
	// A non-nil BaseEnv replaces the default entirely.
	BaseEnv []string
	// Cache, if set, is offered to each job through a local proxy whose
	// URL (with a per-job token) is in TOLLGATE_CACHE_URL: the cache
	// itself in-process, or the worker API client on another machine.
	Cache cache.Access
	// Sandbox isolates jobs (see package sandbox). Default: none, which
	// isolates only the environment; composition roots choose bwrap.
	Sandbox *sandbox.Sandbox
	// GitUser and GitPassword are Gerrit's HTTP credentials: with them
	// the checkout fetches from {gerrit.url}/a/{project}. Jobs never see them.
	GitUser, GitPassword string
	// FetchPatience is how long the checkout retries a failing fetch
	// (Gerrit down) before the attempt ends INTERRUPTED (default 5m).
	FetchPatience time.Duration
	// EgressAllow lists "ip:port" destinations the egress proxy lets jobs
	// reach even on loopback or link-local addresses (tests).
	EgressAllow []string
}

// Worker runs jobs from a fleet.Backend. Create it with New; Run it once.
type Worker struct {
	o       Options
	b       fleet.Backend
	log     *slog.Logger
	workDir string // absolute

	hbEvery     atomic.Int64 // time.Duration, updated from heartbeat replies
	pollEvery   atomic.Int64
	quarantined atomic.Bool
	hbNow       chan struct{} // asks the heartbeat loop for a heartbeat at once

	mu  sync.Mutex
	cur *job // the running job, nil when idle

	sb      *sandbox.Sandbox
	gitPath string     // "" when git is not installed: checkouts fail
	gitMu   sync.Mutex // one fetch into the mirrors at a time
}

const (
	// Backoff bounds for retrying the Backend.
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
	// callTimeout bounds one Backend call, so a hung connection cannot
	// stall heartbeats or a job's end forever.
	callTimeout = time.Minute
	// shutdownBudget is how long the final calls of an interrupted job
	// (log flush, Finish) may take once its processes are gone.
	shutdownBudget = 10 * time.Second
)

// New returns a Worker, or InvalidArgument if an option is bad.
func New(o Options) (*Worker, error) {
	const op = "worker.New"
	if o.Backend == nil {
		return nil, errs.E(errs.InvalidArgument, op, "Backend is required")
	}
	if err := fleet.ValidWorkerID(o.ID); err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, op, err)
	}
	if o.WorkDir == "" {
		return nil, errs.E(errs.InvalidArgument, op, "WorkDir is required")
	}
	abs, err := filepath.Abs(o.WorkDir)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, op, err)
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.KillGrace <= 0 {
		o.KillGrace = 10 * time.Second
	}
	if o.LogFlushEvery <= 0 {
		o.LogFlushEvery = time.Second
	}
	if o.HeartbeatEvery <= 0 {
		o.HeartbeatEvery = 10 * time.Second
	}
	if o.PollEvery <= 0 {
		o.PollEvery = 2 * time.Second
	}
	o.Labels = maps.Clone(o.Labels)
	o.BaseEnv = slices.Clone(o.BaseEnv)
	w := &Worker{o: o, b: o.Backend, log: o.Log.With("worker", o.ID), workDir: abs, hbNow: make(chan struct{}, 1), sb: o.Sandbox}
	if w.sb == nil {
		if w.sb, err = sandbox.New(sandbox.Options{Mode: sandbox.ModeNone, Root: abs}); err != nil {
			return nil, errs.Wrap(errs.InvalidArgument, op, err)
		}
	}
	// The sandbox is a fact about this worker that job types can require
	// (require: {sandbox: bwrap} keeps them off unsandboxed workers).
	if w.o.Labels == nil {
		w.o.Labels = map[string]string{}
	}
	w.o.Labels[SandboxLabel] = string(w.sb.Mode())
	w.gitPath, _ = exec.LookPath("git")
	w.hbEvery.Store(int64(o.HeartbeatEvery))
	w.pollEvery.Store(int64(o.PollEvery))
	return w, nil
}

// Run heartbeats, then claims and runs jobs one at a time until ctx is
// cancelled. A job running at that moment is stopped and reported
// INTERRUPTED (the fleet queues it again) before Run returns. Run retries
// transient Backend errors forever; it returns an error only when it cannot
// start: the work directory cannot be created, or the first heartbeat is
// refused for good (InvalidArgument, Unauthenticated, PermissionDenied).
// A cancelled ctx is a normal end and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	if err := os.MkdirAll(w.workDir, 0o755); err != nil {
		return fmt.Errorf("worker: work dir: %w", err)
	}
	if err := w.firstHeartbeat(ctx); err != nil {
		return err
	}
	uid, _ := w.sb.UID()
	w.log.InfoContext(ctx, "worker started", "host", w.o.Host, "version", w.o.Version, "work_dir", w.workDir,
		"sandbox", w.sb.Mode(), "job_uid", uid)
	if why := w.sb.Fallback(); why != "" {
		w.log.WarnContext(ctx, "jobs run WITHOUT a sandbox: they can read the worker's files and reach its network", "why", why)
	}
	if w.gitPath == "" {
		w.log.WarnContext(ctx, "git is not installed: jobs with a checkout will fail")
	}
	var wg sync.WaitGroup
	wg.Go(func() { w.heartbeatLoop(ctx) })
	w.claimLoop(ctx)
	wg.Wait()
	w.log.Info("worker stopped")
	return nil
}

// firstHeartbeat registers the worker before its first Claim, which the
// fleet refuses from a worker it has not heard from.
func (w *Worker) firstHeartbeat(ctx context.Context) error {
	bo := backoff{min: backoffMin, max: backoffMax}
	for {
		reply, err := w.heartbeat(ctx, nil)
		if err == nil {
			w.apply(reply, nil)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		switch errs.CodeOf(err) {
		case errs.InvalidArgument, errs.Unauthenticated, errs.PermissionDenied:
			return fmt.Errorf("worker: first heartbeat: %w", err)
		}
		w.log.WarnContext(ctx, "heartbeat failed; retrying", "err", err)
		if !sleep(ctx, bo.next()) {
			return nil
		}
	}
}

// heartbeatLoop heartbeats every interval (the server's, once it said so),
// retrying failures sooner, until ctx is cancelled.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	bo := backoff{min: backoffMin, max: backoffMax}
	wait := w.heartbeatEvery()
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.hbNow:
			t.Stop()
		case <-t.C:
		}
		w.mu.Lock()
		cur := w.cur
		w.mu.Unlock()
		reply, err := w.heartbeat(ctx, cur)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.WarnContext(ctx, "heartbeat failed; retrying", "err", err)
			wait = min(bo.next(), w.heartbeatEvery())
			continue
		}
		bo.reset()
		w.apply(reply, cur)
		wait = w.heartbeatEvery()
	}
}

func (w *Worker) heartbeat(ctx context.Context, cur *job) (*fleet.HeartbeatReply, error) {
	hb := fleet.Heartbeat{WorkerID: w.o.ID, Host: w.o.Host, Version: w.o.Version, Labels: w.o.Labels}
	if cur != nil {
		hb.CurrentJob = cur.id
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	reply, err := w.b.Heartbeat(cctx, hb)
	if err == nil && reply == nil {
		reply = &fleet.HeartbeatReply{}
	}
	return reply, err
}

// apply takes the intervals and quarantine state from a heartbeat reply and
// stops the job it reported (sent), if the reply cancels it. Comparing the
// job itself, not only its id, keeps a late reply from stopping a later run.
func (w *Worker) apply(reply *fleet.HeartbeatReply, sent *job) {
	if reply.HeartbeatEvery > 0 {
		w.hbEvery.Store(int64(reply.HeartbeatEvery))
	}
	if reply.PollEvery > 0 {
		w.pollEvery.Store(int64(reply.PollEvery))
	}
	if w.quarantined.Swap(reply.Quarantined) != reply.Quarantined {
		w.log.Warn("quarantine changed", "quarantined", reply.Quarantined)
	}
	if sent == nil || !slices.Contains(reply.Cancel, sent.id) {
		return
	}
	w.mu.Lock()
	still := w.cur == sent
	w.mu.Unlock()
	if still {
		sent.stop(model.Cancelled, "cancelled by the server")
	}
}

// claimLoop claims and runs jobs until ctx is cancelled: at once after a
// job, every PollEvery (±20%) while nothing is queued, once per heartbeat
// interval while quarantined, and with backoff after errors.
func (w *Worker) claimLoop(ctx context.Context) {
	bo := backoff{min: backoffMin, max: backoffMax}
	for ctx.Err() == nil {
		if w.quarantined.Load() {
			sleep(ctx, jitter(w.slowPoll()))
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		a, err := w.b.Claim(cctx, w.o.ID)
		cancel()
		switch {
		case err == nil:
			bo.reset()
			w.runJob(ctx, a)
		case ctx.Err() != nil:
			return
		case errs.Is(err, errs.NotFound):
			bo.reset()
			sleep(ctx, jitter(w.pollInterval()))
		case errs.Is(err, errs.PermissionDenied):
			// Quarantined between two heartbeats: the next reply says so.
			bo.reset()
			sleep(ctx, jitter(w.slowPoll()))
		case errs.Is(err, errs.FailedPrecondition):
			// The fleet does not know this worker (its state was reset):
			// register again before the next claim.
			w.log.WarnContext(ctx, "claim refused; heartbeating again", "err", err)
			select {
			case w.hbNow <- struct{}{}:
			default:
			}
			sleep(ctx, bo.next())
		default:
			w.log.WarnContext(ctx, "claim failed; retrying", "err", err)
			sleep(ctx, bo.next())
		}
	}
}

func (w *Worker) heartbeatEvery() time.Duration { return time.Duration(w.hbEvery.Load()) }
func (w *Worker) pollInterval() time.Duration   { return time.Duration(w.pollEvery.Load()) }
func (w *Worker) slowPoll() time.Duration       { return max(w.heartbeatEvery(), w.pollInterval()) }

// backoff is exponential with ±20% jitter, so a fleet of workers that lost
// the server together do not come back in lockstep.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return jitter(b.cur)
}

func (b *backoff) reset() { b.cur = 0 }

// jitter returns d ±20%.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
