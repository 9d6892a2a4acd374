package controller

import (
	"context"
	"slices"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
)

// QueuePostsubmitJobs queues one job per job type on the head of branch,
// unless the head has not moved since the branch's last run (no compute is
// spent on a branch nobody pushed to). The run's id is the branch and the
// head's commit time, so a duplicate delivery finds it AlreadyExists.
func (c *Controller) QueuePostsubmitJobs(ctx context.Context, branch string) error {
	if !slices.Contains(c.cfg.Gerrit.Branches, branch) {
		return errs.E(errs.InvalidArgument, "queue_postsubmit_jobs", "branch %q is not in gerrit.branches", branch)
	}
	head, err := c.gr.GetBranch(ctx, c.cfg.Gerrit.Project, branch)
	if err != nil {
		return err
	}
	last, err := c.st.LatestPostsubmit(ctx, branch)
	switch {
	case err == nil && last.Revision == head.Revision:
		c.log.InfoContext(ctx, "postsubmit skipped: branch head has not moved", "branch", branch, "revision", head.Revision)
		return nil
	case err != nil && !errs.Is(err, errs.NotFound):
		return err
	}
	commit, err := c.gr.GetCommit(ctx, c.cfg.Gerrit.Project, head.Revision)
	if err != nil {
		return err
	}
	now := c.clock.Now()
	subject := commit.Subject
	if len(subject) > 200 {
		subject = subject[:200]
	}
	run := &model.Postsubmit{
		ID:            model.PostsubmitID(branch, commit.Committer.Date.Time),
		Branch:        branch,
		Revision:      head.Revision,
		Subject:       subject,
		Author:        commit.Author.Email,
		TimeCommitted: commit.Committer.Date.UTC(),
		TimeQueued:    now,
	}
	jobs := c.newJobs(now, run.Src(), &model.Checkout{Project: c.cfg.Gerrit.Project, Branch: branch, Ref: "refs/heads/" + branch, Revision: head.Revision})
	for _, j := range jobs {
		run.JobIDs = append(run.JobIDs, j.ID)
	}
	err = c.st.CreatePostsubmit(ctx, run, jobs)
	if errs.Is(err, errs.AlreadyExists) {
		return nil
	}
	if err != nil {
		return err
	}
	c.log.InfoContext(ctx, "queued postsubmit", "run", run.ID, "revision", run.Revision, "jobs", len(jobs))
	return nil
}
