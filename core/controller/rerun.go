package controller

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
)

// RetryJob queues a new run of an ended job: a new job of the same source,
// type, env and skip_voting, created now (Swarming's retry: always
// scheduled, never deduplicated). For a patchset it starts a new review
// round, so the patchset votes again when the new job ends, judged on the
// latest run of each job type. by (an email) is recorded on the new job.
//
// Errors: NotFound for an unknown job or source; FailedPrecondition when
// the job is still queued or running (cancel it first) or the patchset's
// review is being posted at this moment; AlreadyExists when a run of the
// same type was created for the source within this second (a double click).
func (c *Controller) RetryJob(ctx context.Context, jobID, by string) (*model.Job, error) {
	const op = "controller.RetryJob"
	if err := validJobID(jobID); err != nil {
		return nil, err
	}
	j, err := c.st.GetJob(ctx, jobID)
	if err != nil {
		return nil, err
	}
	if !j.State.Terminal() {
		return nil, errs.E(errs.FailedPrecondition, op, "job %s is %s: only an ended job can be retried", j.ID, j.State)
	}
	now := c.clock.Now()
	nj := j.Rerun(now, by)
	if _, err := c.st.AddJobs(ctx, j.Src, []*model.Job{nj}, c.VoteLease); err != nil {
		return nil, fmt.Errorf("retry of %s: %w", j.ID, err)
	}
	c.log.InfoContext(ctx, "job retried", "job", j.ID, "new_job", nj.ID, "by", by)
	return nj, nil
}

// Recheck queues a new run of every job type of a patchset whose latest run
// ended without passing (failed, timed out, cancelled, or lost to an
// infrastructure failure), in one atomic write that starts a new review
// round. Jobs still queued or running are left alone. It returns the new
// jobs, in type order.
//
// Errors: NotFound for an unknown patchset; FailedPrecondition when no
// ended job failed (nothing to re-run) or the review is being posted at
// this moment; AlreadyExists as for RetryJob.
func (c *Controller) Recheck(ctx context.Context, patchsetID, by string) ([]*model.Job, error) {
	const op = "controller.Recheck"
	if _, _, err := parsePatchsetID(patchsetID); err != nil {
		return nil, err
	}
	ps, jobs, err := c.st.GetPatchsetWithJobs(ctx, patchsetID)
	if err != nil {
		return nil, err
	}
	now := c.clock.Now()
	var rerun []*model.Job
	for _, j := range model.Latest(jobs) {
		if j.State.Terminal() && j.State != model.Completed {
			rerun = append(rerun, j.Rerun(now, by))
		}
	}
	if len(rerun) == 0 {
		return nil, errs.E(errs.FailedPrecondition, op, "patchset %s has no failed job to re-run", ps.ID)
	}
	sort.Slice(rerun, func(a, b int) bool { return rerun[a].Type < rerun[b].Type })
	model.Stagger(rerun, c.FairSlot)
	if _, err := c.st.AddJobs(ctx, ps.Src(), rerun, c.VoteLease); err != nil {
		return nil, fmt.Errorf("recheck of %s: %w", ps.ID, err)
	}
	types := make([]string, len(rerun))
	for i, j := range rerun {
		types[i] = j.Type
	}
	c.log.InfoContext(ctx, "patchset rechecked", "patchset", ps.ID, "types", strings.Join(types, ","), "by", by)
	return rerun, nil
}
