// Package controller holds Tollgate's controller actions: the deferred work
// that watches Gerrit, queues jobs, cancels superseded ones, votes, runs
// postsubmits, reaps dead workers, expires logs and writes metrics.
//
// Every action is a method taking its decoded arguments, reached through
// Handle, which the runtime's Tasks backend calls for each delivery. Every
// action is idempotent: a duplicate or retried delivery leaves the same
// state as one delivery, because each state change is a Store transition
// that refuses to apply twice.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/gerrit"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// Action names: the task names deferred through Tasks and, on Google Cloud,
// the function and topic names.
const (
	Tick                = "tick"
	CheckNewCLs         = "check_new_cls"
	CheckNewCL          = "check_new_cl"
	CancelOlderJobs     = "cancel_older_jobs"
	CheckPendingCLs     = "check_pending_cls"
	CheckPendingCL      = "check_pending_cl"
	CommentAndVote      = "comment_and_vote"
	QueuePostsubmitJobs = "queue_postsubmit_jobs"
	CancelJob           = "cancel_job"
	DeleteStaleJobs     = "delete_stale_jobs"
	ReapDeadWorkers     = "reap_dead_workers"
	DeleteExpiredLogs   = "delete_expired_logs"
	DeleteJobLogs       = "delete_job_logs"
	UpdateCLMetrics     = "update_cl_metrics"
	UpdateJobMetrics    = "update_job_metrics"
	UpdateQueueMetrics  = "update_queue_metrics"
	CacheCleanup        = "cache_cleanup"
)

// Actions lists every action Handle accepts.
var Actions = []string{Tick, CheckNewCLs, CheckNewCL, CancelOlderJobs, CheckPendingCLs,
	CheckPendingCL, CommentAndVote, QueuePostsubmitJobs, CancelJob, DeleteStaleJobs,
	ReapDeadWorkers, DeleteExpiredLogs, DeleteJobLogs, UpdateCLMetrics, UpdateJobMetrics,
	UpdateQueueMetrics, CacheCleanup}

// GerritActions are the actions that call Gerrit: only they need a
// Gerrit client (Deps.Gerrit) and so Gerrit's credentials; on Google Cloud
// only their functions are given the secret.
var GerritActions = []string{CheckNewCLs, CheckNewCL, CommentAndVote, QueuePostsubmitJobs}

// FairSlot is the default Controller.FairSlot: a change's n-th job in a
// pool is ordered n minutes after it was queued, so a change queued up to
// n minutes later gets its first jobs in before it.
const FairSlot = time.Minute

// Deps are what the controller runs on. Config, Store and Tasks are
// required; without Gerrit, the GerritActions fail with FailedPrecondition.
type Deps struct {
	Config  *config.Config
	Store   store.Store
	Tasks   tasks.Tasks
	Gerrit  *gerrit.Client
	Metrics metrics.Metrics // default: discard
	Clock   clock.Clock     // default: real
	Log     *slog.Logger    // default: slog.Default()
	// Cache, if set, is cleaned by cache_cleanup every cache.cleanup_interval.
	Cache cache.Cache
}

// Controller runs the actions.
type Controller struct {
	cfg   *config.Config
	st    store.Store
	tq    tasks.Tasks
	gr    *gerrit.Client
	m     metrics.Metrics
	clock clock.Clock
	log   *slog.Logger
	cache cache.Cache

	// Settings tests may shorten.
	PageSize      int           // changes per Gerrit query page
	MaxPages      int           // bound on pages per poll
	Overlap       time.Duration // how far before the watermark a poll reaches back
	VoteLease     time.Duration // how long a comment_and_vote claim holds
	WorkerRemoval time.Duration // workers silent this long are deleted
	StaleEvery    time.Duration // period of delete_stale_jobs from tick
	LogsEvery     time.Duration // period of delete_expired_logs from tick
	// FairSlot is how far apart in the queue's order the jobs queued
	// together for one source are placed (model.Stagger).
	FairSlot time.Duration
}

// New returns a controller, or InvalidArgument if a required dependency is missing.
func New(d Deps) (*Controller, error) {
	if d.Config == nil || d.Store == nil || d.Tasks == nil {
		return nil, errs.E(errs.InvalidArgument, "controller.New", "Config, Store and Tasks are required")
	}
	if d.Metrics == nil {
		d.Metrics = metrics.Discard{}
	}
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	return &Controller{
		cfg: d.Config, st: d.Store, tq: d.Tasks, gr: d.Gerrit, m: d.Metrics, clock: d.Clock, log: d.Log, cache: d.Cache,
		PageSize: 100, MaxPages: 200, Overlap: 5 * time.Minute, VoteLease: 2 * time.Minute,
		WorkerRemoval: 12 * time.Hour, StaleEvery: 15 * time.Minute, LogsEvery: 15 * time.Minute, FairSlot: FairSlot,
	}, nil
}

// Handle runs one delivery of a task and logs one line with its outcome. It
// returns nil when the task is done (including "nothing to do"), an
// InvalidArgument error when the task is malformed (never retried), and any
// other error when a retry may succeed.
func (c *Controller) Handle(ctx context.Context, t tasks.Task) error {
	start := time.Now()
	err := c.dispatch(ctx, t)
	lvl, outcome := slog.LevelInfo, "ok"
	if err != nil {
		lvl, outcome = slog.LevelWarn, "retry"
		if errs.Is(err, errs.InvalidArgument) {
			lvl, outcome = slog.LevelError, "malformed"
		}
	}
	c.log.Log(ctx, lvl, "action", "action", t.Action, "task", t.ID, "attempt", t.Attempt,
		"outcome", outcome, "ms", time.Since(start).Milliseconds(), "args", clip(string(t.Args), 200), "err", errString(err))
	return err
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (c *Controller) dispatch(ctx context.Context, t tasks.Task) error {
	if c.gr == nil && slices.Contains(GerritActions, t.Action) {
		return errs.E(errs.FailedPrecondition, "controller.Handle", "%s calls Gerrit, and this instance has no Gerrit client (are %s and %s set?)",
			t.Action, c.cfg.Gerrit.UserEnv, c.cfg.Gerrit.PasswordEnv)
	}
	switch t.Action {
	case Tick:
		return c.Tick(ctx, t.ID)
	case CheckNewCLs:
		var a CheckNewCLsArgs
		return decodeThen(t, &a, func() error { return c.CheckNewCLs(ctx, a) })
	case CheckNewCL:
		var a CheckNewCLArgs
		return decodeThen(t, &a, func() error { return c.CheckNewCL(ctx, a) })
	case CancelOlderJobs:
		var a ChangeArgs
		return decodeThen(t, &a, func() error { return c.CancelOlderJobs(ctx, a.Change) })
	case CheckPendingCLs:
		return c.CheckPendingCLs(ctx)
	case CheckPendingCL:
		var a PatchsetArgs
		return decodeThen(t, &a, func() error { return c.CheckPendingCL(ctx, a.ID) })
	case CommentAndVote:
		var a PatchsetArgs
		return decodeThen(t, &a, func() error { return c.CommentAndVote(ctx, a.ID) })
	case QueuePostsubmitJobs:
		var a BranchArgs
		return decodeThen(t, &a, func() error { return c.QueuePostsubmitJobs(ctx, a.Branch) })
	case CancelJob:
		var a CancelJobArgs
		return decodeThen(t, &a, func() error { return c.CancelJob(ctx, a.JobID, a.Reason) })
	case DeleteStaleJobs:
		return c.DeleteStaleJobs(ctx)
	case ReapDeadWorkers:
		return c.ReapDeadWorkers(ctx)
	case DeleteExpiredLogs:
		return c.DeleteExpiredLogs(ctx)
	case DeleteJobLogs:
		var a JobArgs
		return decodeThen(t, &a, func() error { return c.DeleteJobLogs(ctx, a.JobID) })
	case UpdateCLMetrics:
		var a PatchsetArgs
		return decodeThen(t, &a, func() error { return c.UpdateCLMetrics(ctx, a.ID) })
	case UpdateJobMetrics:
		var a JobsArgs
		return decodeThen(t, &a, func() error { return c.UpdateJobMetrics(ctx, a.JobIDs) })
	case UpdateQueueMetrics:
		return c.UpdateQueueMetrics(ctx)
	case CacheCleanup:
		var a cache.CleanupOptions
		if err := tasks.Unmarshal(t, &a); err != nil {
			return err
		}
		return c.CacheCleanup(ctx, a)
	}
	return errs.E(errs.InvalidArgument, "controller.Handle", "unknown action %q", t.Action)
}

func decodeThen(t tasks.Task, v interface{ validate() error }, run func() error) error {
	if err := tasks.Unmarshal(t, v); err != nil {
		return err
	}
	if err := v.validate(); err != nil {
		return errs.Wrap(errs.InvalidArgument, "args of "+t.Action, err)
	}
	return run()
}

// Argument types of the actions.
type (
	// CheckNewCLsArgs: Full forces a full reconcile instead of a watermark poll.
	CheckNewCLsArgs struct {
		Full bool `json:"full,omitempty"`
	}
	// CheckNewCLArgs names a change; CL, if set, is what a poll saw, saving a
	// Gerrit read. Without it the change is read from Gerrit (webhooks).
	CheckNewCLArgs struct {
		Change int        `json:"change"`
		CL     *Candidate `json:"cl,omitempty"`
	}
	ChangeArgs struct {
		Change int `json:"change"`
	}
	PatchsetArgs struct {
		ID string `json:"id"`
	}
	BranchArgs struct {
		Branch string `json:"branch"`
	}
	CancelJobArgs struct {
		JobID  string `json:"job_id"`
		Reason string `json:"reason,omitempty"`
	}
	JobArgs struct {
		JobID string `json:"job_id"`
	}
	JobsArgs struct {
		JobIDs []string `json:"job_ids"`
	}
)

func (a *CheckNewCLsArgs) validate() error { return nil }
func (a *CheckNewCLArgs) validate() error {
	if a.Change <= 0 {
		return errors.New("change must be a positive change number")
	}
	if a.CL != nil && (a.CL.Change != a.Change || a.CL.Patchset <= 0 || a.CL.Revision == "") {
		return fmt.Errorf("cl snapshot does not describe change %d", a.Change)
	}
	return nil
}
func (a *ChangeArgs) validate() error {
	if a.Change <= 0 {
		return errors.New("change must be a positive change number")
	}
	return nil
}
func (a *PatchsetArgs) validate() error { _, _, err := parsePatchsetID(a.ID); return err }
func (a *BranchArgs) validate() error {
	if a.Branch == "" {
		return errors.New("branch is required")
	}
	return nil
}
func (a *CancelJobArgs) validate() error { return validJobID(a.JobID) }
func (a *JobArgs) validate() error       { return validJobID(a.JobID) }
func (a *JobsArgs) validate() error {
	for _, id := range a.JobIDs {
		if err := validJobID(id); err != nil {
			return err
		}
	}
	return nil
}

// deferTask defers action with args, wrapping the error with the action's name.
func (c *Controller) deferTask(ctx context.Context, action string, args any) error {
	if err := c.tq.Defer(ctx, action, args); err != nil {
		return fmt.Errorf("defer %s: %w", action, err)
	}
	return nil
}
