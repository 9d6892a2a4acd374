package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// CancelJob cancels a queued or running job and defers check_pending_cl
// for its patchset. An unknown or already ended job is left alone: the
// cancel has nothing to do, which is not an error.
func (c *Controller) CancelJob(ctx context.Context, id, reason string) error {
	if reason == "" {
		reason = "cancelled"
	}
	j, err := c.st.UpdateJob(ctx, id, model.Transition{Kind: model.Cancel, Reason: reason, Now: c.clock.Now()})
	switch {
	case errs.Is(err, errs.NotFound):
		c.log.InfoContext(ctx, "cancel of unknown job ignored", "job", id)
		return nil
	case errs.Is(err, errs.FailedPrecondition):
		return nil
	case err != nil:
		return err
	}
	return c.afterJobEnded(ctx, j)
}

func (c *Controller) afterJobEnded(ctx context.Context, j *model.Job) error {
	return JobEnded(ctx, c.tq, j)
}

// JobEnded defers what follows a job's end: check_pending_cl for its
// patchset (which ends it and votes once every job ended, so the vote does
// not wait for the next tick), or, for a postsubmit job, its metrics.
func JobEnded(ctx context.Context, tq tasks.Tasks, j *model.Job) error {
	var err error
	if cl, ps, ok := j.Change(); ok {
		err = tq.Defer(ctx, CheckPendingCL, PatchsetArgs{ID: model.PatchsetID(cl, ps)})
	} else {
		err = tq.Defer(ctx, UpdateJobMetrics, JobsArgs{JobIDs: []string{j.ID}})
	}
	if err != nil {
		return fmt.Errorf("after job %s ended: %w", j.ID, err)
	}
	return nil
}

// DeleteStaleJobs cancels jobs that have been STARTED for more than twice
// their timeout: a worker that keeps heartbeating while its job hangs past
// its own timeout is broken, and the job must not hold its patchset forever.
func (c *Controller) DeleteStaleJobs(ctx context.Context) error {
	now := c.clock.Now()
	// The shortest possible stale age bounds the query; each job is then
	// checked against its own type's timeout.
	shortest := c.cfg.Timeouts.Job.D()
	for name := range c.cfg.Jobs {
		shortest = min(shortest, c.cfg.JobTimeout(name))
	}
	jobs, err := c.listAll(ctx, store.JobQuery{States: []model.State{model.Started}, StartedBefore: now.Add(-2 * shortest)})
	if err != nil {
		return err
	}
	for _, j := range jobs {
		limit := 2 * c.cfg.JobTimeout(j.Type)
		if now.Sub(j.TimeStarted) <= limit {
			continue
		}
		if err := c.CancelJob(ctx, j.ID, fmt.Sprintf("stale: running for more than %s, twice its timeout", limit)); err != nil {
			return err
		}
	}
	return nil
}

// ReapDeadWorkers releases the jobs of workers silent for longer than
// timeouts.worker_death (and of workers with no record at all): each such
// job is queued again once, and ends as BOT_DIED the second time. Then it
// ends the queued jobs that wait in vain (see expireQueued). Workers
// silent for WorkerRemoval are deleted.
func (c *Controller) ReapDeadWorkers(ctx context.Context) error {
	now := c.clock.Now()
	death := c.cfg.Timeouts.WorkerDeath.D()
	all, err := c.st.ListWorkers(ctx, time.Time{})
	if err != nil {
		return err
	}
	alive := map[string]bool{}
	var silent []*model.Worker
	for _, w := range all {
		if w.Alive(now, death) {
			alive[w.ID] = true
		} else {
			silent = append(silent, w)
		}
	}
	jobs, err := c.listAll(ctx, store.JobQuery{States: []model.State{model.Started}, StartedBefore: now.Add(-death)})
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if alive[j.Worker] {
			continue
		}
		got, err := c.st.UpdateJob(ctx, j.ID, model.Transition{Kind: model.Release, State: model.BotDied, Worker: j.Worker,
			Reason: fmt.Sprintf("worker %s stopped heartbeating", j.Worker), Now: now})
		if errs.Is(err, errs.FailedPrecondition) || errs.Is(err, errs.NotFound) {
			continue // it ended meanwhile
		}
		if err != nil {
			return err
		}
		c.log.InfoContext(ctx, "released job of dead worker", "job", j.ID, "worker", j.Worker, "state", got.State, "attempt", got.Attempt)
		if got.State.Terminal() {
			if err := c.afterJobEnded(ctx, got); err != nil {
				return err
			}
		}
	}
	if err := c.expireQueued(ctx, now, all); err != nil {
		return err
	}
	for _, w := range silent {
		if now.Sub(w.LastSeen) >= c.WorkerRemoval {
			if err := c.st.DeleteWorker(ctx, w.ID); err != nil {
				return err
			}
			c.log.InfoContext(ctx, "removed silent worker", "worker", w.ID, "last_seen", w.LastSeen)
		}
	}
	return nil
}

// expireQueued ends the QUEUED jobs that wait in vain, and defers what
// follows their end (check_pending_cl, so the patchset ends and votes):
//
//   - NO_RESOURCE: queued longer than timeouts.no_resource while no worker
//     that may claim it (not quarantined, its labels meeting the job's
//     requirements, which a configured job type still requires) has sent a
//     heartbeat within timeouts.no_resource;
//   - EXPIRED: queued longer than its job type's expiry.
//
// It reads only the jobs queued longer than the shorter of the two limits,
// so a queue that keeps moving costs one empty query. A job that was
// claimed or cancelled meanwhile is left alone: the transition applies
// only to a QUEUED job, which also makes a repeated run a no-op.
func (c *Controller) expireQueued(ctx context.Context, now time.Time, workers []*model.Worker) error {
	grace := c.cfg.Timeouts.NoResource.D()
	shortest := min(grace, c.cfg.Timeouts.Expiry.D())
	for name := range c.cfg.Jobs {
		shortest = min(shortest, c.cfg.JobExpiry(name))
	}
	jobs, err := c.listAll(ctx, store.JobQuery{States: []model.State{model.Queued}, QueuedBefore: now.Add(-shortest)})
	if err != nil || len(jobs) == 0 {
		return err
	}
	configured := map[string]bool{}
	for _, jc := range c.cfg.Jobs {
		configured[model.PoolOf(jc.Require)] = true
	}
	served := map[string]bool{} // pools some recently seen worker claims from
	for _, w := range workers {
		if w.State != model.WorkerQuarantined && now.Sub(w.LastSeen) <= grace {
			for _, p := range c.cfg.PoolsFor(w.Labels) {
				served[p] = true
			}
		}
	}
	for _, j := range jobs {
		waited := now.Sub(j.TimeQueued)
		t := model.Transition{Kind: model.Expire, Now: now}
		switch {
		case waited > grace && !served[j.Pool]:
			t.State = model.NoResource
			switch {
			case !configured[j.Pool] && j.Pool == "":
				t.Reason = "every configured job type requires worker labels now, so no worker claims a job that requires none"
			case !configured[j.Pool]:
				t.Reason = fmt.Sprintf("no configured job type requires its labels (%s) any more, so no worker claims it", j.Pool)
			case j.Pool == "":
				t.Reason = fmt.Sprintf("no worker has sent a heartbeat for timeouts.no_resource (%s)", grace)
			default:
				t.Reason = fmt.Sprintf("no worker with the labels it requires (%s) has sent a heartbeat for timeouts.no_resource (%s)", j.Pool, grace)
			}
		case waited > c.cfg.JobExpiry(j.Type):
			t.State = model.Expired
			t.Reason = fmt.Sprintf("queued for longer than its expiry (%s)", c.cfg.JobExpiry(j.Type))
		default:
			continue
		}
		got, err := c.st.UpdateJob(ctx, j.ID, t)
		if errs.Is(err, errs.FailedPrecondition) || errs.Is(err, errs.NotFound) {
			continue // claimed or ended meanwhile
		}
		if err != nil {
			return err
		}
		c.log.InfoContext(ctx, "queued job ended", "job", j.ID, "state", got.State, "pool", j.Pool, "reason", t.Reason)
		if err := c.afterJobEnded(ctx, got); err != nil {
			return err
		}
	}
	return nil
}

// DeleteExpiredLogs defers delete_job_logs for each job whose log expired.
func (c *Controller) DeleteExpiredLogs(ctx context.Context) error {
	ids, err := c.st.ListExpiredLogs(ctx, c.clock.Now(), 1000)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := c.deferTask(ctx, DeleteJobLogs, JobArgs{JobID: id}); err != nil {
			return err
		}
	}
	return nil
}

// DeleteJobLogs deletes one job's log.
func (c *Controller) DeleteJobLogs(ctx context.Context, id string) error {
	return c.st.DeleteJobLogs(ctx, id)
}

// listAll pages through ListJobs.
func (c *Controller) listAll(ctx context.Context, q store.JobQuery) ([]*model.Job, error) {
	var all []*model.Job
	q.Limit = 1000
	for {
		page, next, err := c.st.ListJobs(ctx, q)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		q.Cursor = next
	}
}

// CacheCleanup evicts least recently used artifact-cache objects until the
// cache has its head room back (or, in a dry run, reports what it would
// evict). Another cleanup holding the cache's lease makes this a no-op.
func (c *Controller) CacheCleanup(ctx context.Context, o cache.CleanupOptions) error {
	if c.cache == nil {
		c.log.InfoContext(ctx, "cache_cleanup: no cache configured")
		return nil
	}
	rep, err := c.cache.Cleanup(ctx, o)
	if err != nil {
		return err
	}
	c.log.InfoContext(ctx, "cache cleaned", "dry_run", rep.DryRun, "busy", rep.Busy, "evicted_objects", rep.EvictedObjects,
		"evicted_bytes", rep.EvictedBytes, "free_after", rep.FreeAfter, "objects", rep.Objects, "short", rep.Short)
	return nil
}
