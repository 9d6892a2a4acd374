package controller

import (
	"context"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/model"
)

// UpdateCLMetrics writes the completion time of an ended patchset, once:
// the MetricsDone flag is set first, so a duplicate delivery writes nothing.
func (c *Controller) UpdateCLMetrics(ctx context.Context, id string) error {
	ps, err := c.st.UpdatePatchset(ctx, id, model.PatchsetUpdate{Kind: model.MarkPatchsetMetrics, Now: c.clock.Now()})
	if errs.Is(err, errs.FailedPrecondition) || errs.Is(err, errs.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if ps.Pending() {
		return nil
	}
	return c.m.Observe(ctx, metrics.CLCompletionTime, nil, ps.TimeEnded.Sub(ps.RoundStart()).Seconds())
}

// UpdateJobMetrics writes the queue and run time of each ended job, once per job.
func (c *Controller) UpdateJobMetrics(ctx context.Context, ids []string) error {
	now := c.clock.Now()
	for _, id := range ids {
		j, err := c.st.UpdateJob(ctx, id, model.Transition{Kind: model.MarkMetrics, Now: now})
		if errs.Is(err, errs.FailedPrecondition) || errs.Is(err, errs.NotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if j.TimeStarted.IsZero() {
			continue // never ran (cancelled while queued)
		}
		labels := map[string]string{"job_type": j.Type}
		if err := c.m.Observe(ctx, metrics.QueueTime, labels, j.TimeStarted.Sub(j.TimeQueued).Seconds()); err != nil {
			return err
		}
		if !j.TimeEnded.IsZero() {
			if err := c.m.Observe(ctx, metrics.RunTime, labels, j.TimeEnded.Sub(j.TimeStarted).Seconds()); err != nil {
				return err
			}
		}
	}
	return nil
}

// UpdateQueueMetrics writes ci_job_queue_len (queued + running: what the
// autoscaler reads, written first so a later failure cannot starve it) and
// the worker gauges.
func (c *Controller) UpdateQueueMetrics(ctx context.Context) error {
	counts, err := c.st.CountJobs(ctx, model.Queued, model.Started)
	if err != nil {
		return err
	}
	q, r := counts[model.Queued], counts[model.Started]
	if err := c.m.Set(ctx, metrics.QueueLen, nil, float64(q+r)); err != nil {
		return err
	}
	_ = c.m.Set(ctx, metrics.JobsQueued, nil, float64(q))
	_ = c.m.Set(ctx, metrics.JobsRunning, nil, float64(r))
	workers, err := c.st.ListWorkers(ctx, zeroTime)
	if err != nil {
		return err
	}
	now := c.clock.Now()
	alive, busy := 0, 0
	for _, w := range workers {
		if w.Alive(now, c.cfg.Timeouts.WorkerDeath.D()) {
			alive++
			if w.State == model.WorkerBusy {
				busy++
			}
		}
	}
	_ = c.m.Set(ctx, metrics.WorkersAlive, nil, float64(alive))
	_ = c.m.Set(ctx, metrics.WorkersBusy, nil, float64(busy))
	return c.recordSamples(ctx, now, map[string]float64{
		SampleQueued: float64(q), SampleRunning: float64(r), SampleWorkersAlive: float64(alive), SampleWorkersBusy: float64(busy),
	})
}

// Series the stats page plots, one point a minute (the last tick's value),
// kept for SampleRetention.
const (
	SampleQueued       = "jobs_queued"
	SampleRunning      = "jobs_running"
	SampleWorkersAlive = "workers_alive"
	SampleWorkersBusy  = "workers_busy"
	SampleRetention    = 7 * 24 * time.Hour
)

// recordSamples stores the queue's point of this minute and deletes points
// past SampleRetention, a bounded batch per tick (ticks come every few
// seconds, so the deletes keep up with one new point a minute).
func (c *Controller) recordSamples(ctx context.Context, now time.Time, values map[string]float64) error {
	if err := c.st.PutSamples(ctx, now.Truncate(time.Minute), values); err != nil {
		return err
	}
	_, err := c.st.DeleteSamples(ctx, now.Add(-SampleRetention), 500)
	return err
}
