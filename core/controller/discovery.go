package controller

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/gerrit"
	"github.com/tollgate-ci/tollgate/core/model"
)

// Meta keys the controller keeps in the Store.
const (
	metaWatermark = "gerrit.watermark"      // newest `updated` seen by a poll (RFC 3339)
	metaLastFull  = "gerrit.last_reconcile" // time of the last full reconcile (RFC 3339)
)

// queryOptions are the o= options every change read uses. DETAILED_LABELS
// lists every vote (see approvedByTrusted).
var queryOptions = []string{"CURRENT_REVISION", "DETAILED_ACCOUNTS", "LABELS", "DETAILED_LABELS"}

// Tick fans out the periodic work. One tick runs per poll interval: the
// "tick" lease is taken for the interval by this task (holder is the task
// id, so a retry of the same delivery may go on), and a second tick within
// the interval does nothing. Work with longer periods is gated by a lease of
// its own per period.
func (c *Controller) Tick(ctx context.Context, taskID string) error {
	now := c.clock.Now()
	if taskID == "" {
		taskID = "tick-" + strconv.FormatInt(now.UnixNano(), 36)
	}
	ok, err := c.st.AcquireLease(ctx, "tick", taskID, now, c.cfg.Gerrit.PollInterval.D()*9/10)
	if err != nil {
		return err
	}
	if !ok {
		c.log.DebugContext(ctx, "tick skipped: another tick holds the lease")
		return nil
	}
	for _, a := range []string{CheckNewCLs, CheckPendingCLs, UpdateQueueMetrics, ReapDeadWorkers} {
		if err := c.deferTask(ctx, a, nil); err != nil {
			return err
		}
	}
	periodic := []struct {
		action string
		every  time.Duration
		args   any
	}{
		{DeleteStaleJobs, c.StaleEvery, nil},
		{DeleteExpiredLogs, c.LogsEvery, nil},
	}
	if c.cache != nil {
		periodic = append(periodic, struct {
			action string
			every  time.Duration
			args   any
		}{CacheCleanup, c.cfg.Cache.CleanupInterval.D(), nil})
	}
	for _, b := range c.cfg.Gerrit.Branches {
		periodic = append(periodic, struct {
			action string
			every  time.Duration
			args   any
		}{QueuePostsubmitJobs, c.cfg.Postsubmit.Interval.D(), BranchArgs{Branch: b}})
	}
	for _, p := range periodic {
		name := "periodic:" + p.action
		if b, ok := p.args.(BranchArgs); ok {
			name += ":" + b.Branch
		}
		due, err := c.st.AcquireLease(ctx, name, taskID, now, p.every)
		if err != nil {
			return err
		}
		if due {
			if err := c.deferTask(ctx, p.action, p.args); err != nil {
				return err
			}
		}
	}
	return nil
}

// Candidate is a change's current patchset as discovery sees it.
type Candidate struct {
	Change    int    `json:"change"`
	Patchset  int    `json:"patchset"`
	ChangeID  string `json:"change_id"`
	Revision  string `json:"revision"`
	Ref       string `json:"ref"`
	Project   string `json:"project"`
	Branch    string `json:"branch"`
	Subject   string `json:"subject,omitempty"`
	Owner     string `json:"owner"`
	Uploader  string `json:"uploader"`
	Status    string `json:"status"`
	WantsVote bool   `json:"wants_vote"` // the ready label is approved by a trusted account
	Trusted   bool   `json:"trusted"`    // the uploader is trusted, or WantsVote
}

// candidate reads a change as the trust rules see it; ok is false when the
// change lacks the current revision (it was not read with CURRENT_REVISION).
func (c *Controller) candidate(ch *gerrit.ChangeInfo) (Candidate, bool) {
	rev, ok := ch.Current()
	if !ok {
		return Candidate{}, false
	}
	uploader := ch.Owner.Email
	if rev.Uploader != nil {
		uploader = rev.Uploader.Email
	}
	cd := Candidate{
		Change: ch.Number, Patchset: rev.Number, ChangeID: ch.ID, Revision: ch.CurrentRevision,
		Ref: rev.Ref, Project: ch.Project, Branch: ch.Branch, Subject: ch.Subject,
		Owner: ch.Owner.Email, Uploader: uploader, Status: ch.Status,
	}
	if l, ok := ch.Labels[c.cfg.Trust.ReadyLabel]; ok && c.approvedByTrusted(l) {
		cd.WantsVote = true
	}
	cd.Trusted = cd.WantsVote || c.cfg.Trusted(uploader)
	return cd, true
}

// approvedByTrusted reports whether a trusted account gave the label its
// maximum value. Gerrit's "approved" names only one of the accounts that
// did, possibly an untrusted one, so every vote (DETAILED_LABELS) counts.
func (c *Controller) approvedByTrusted(l gerrit.LabelInfo) bool {
	if l.Approved != nil && c.cfg.Trusted(l.Approved.Email) {
		return true
	}
	top, ok := l.Max()
	if !ok || top <= 0 {
		return false
	}
	for _, a := range l.All {
		if a.Value == top && c.cfg.Trusted(a.Email) {
			return true
		}
	}
	return false
}

// CheckNewCLs polls Gerrit for open changes updated since the watermark
// (minus an overlap window, for clock skew and Gerrit's second-granularity
// `after:`), or all open changes on a full reconcile, and defers
// check_new_cl for each trusted patchset that is new or whose ready label
// was newly approved. Known patchsets are found with one batched read per
// page. The watermark advances only after every page was handled, so a
// failure part-way loses nothing: the retry sees the same changes again.
func (c *Controller) CheckNewCLs(ctx context.Context, a CheckNewCLsArgs) error {
	now := c.clock.Now()
	wm, err := c.getTime(ctx, metaWatermark)
	if err != nil {
		return err
	}
	last, err := c.getTime(ctx, metaLastFull)
	if err != nil {
		return err
	}
	full := a.Full || wm.IsZero() || now.Sub(last) >= c.cfg.Gerrit.FullReconcileInterval.D()
	newest := wm
	var seen, deferred int
	for _, branch := range c.cfg.Gerrit.Branches {
		q := fmt.Sprintf("project:%s branch:%s is:open", c.cfg.Gerrit.Project, branch)
		if !full {
			q += fmt.Sprintf(` after:"%s"`, wm.Add(-c.Overlap).UTC().Format("2006-01-02 15:04:05"))
		}
		for page, start := 0, 0; page < c.MaxPages; page++ {
			changes, more, err := c.gr.QueryChanges(ctx, q, queryOptions, c.PageSize, start)
			if err != nil {
				return err
			}
			seen += len(changes)
			n, err := c.handlePage(ctx, changes)
			if err != nil {
				return err
			}
			deferred += n
			for _, ch := range changes {
				if ch.Updated.After(newest) {
					newest = ch.Updated.UTC()
				}
			}
			if !more || len(changes) == 0 {
				break
			}
			start += len(changes)
		}
	}
	if newest.After(wm) {
		if err := c.st.SetMeta(ctx, metaWatermark, newest.Format(time.RFC3339Nano)); err != nil {
			return err
		}
	}
	if full {
		if err := c.st.SetMeta(ctx, metaLastFull, now.Format(time.RFC3339Nano)); err != nil {
			return err
		}
	}
	c.log.InfoContext(ctx, "polled gerrit", "full", full, "changes", seen, "deferred", deferred, "watermark", newest)
	return nil
}

func (c *Controller) getTime(ctx context.Context, key string) (time.Time, error) {
	v, err := c.st.GetMeta(ctx, key)
	if err != nil || v == "" {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		// A corrupt value only costs a full reconcile.
		c.log.WarnContext(ctx, "ignoring bad meta value", "key", key, "value", v)
		return time.Time{}, nil
	}
	return t, nil
}

// handlePage defers check_new_cl for the changes of one query page that
// need it, and returns how many it deferred.
func (c *Controller) handlePage(ctx context.Context, changes []*gerrit.ChangeInfo) (int, error) {
	var cands []Candidate
	ids := make([]string, 0, len(changes))
	for _, ch := range changes {
		cd, ok := c.candidate(ch)
		if !ok || !cd.Trusted || !c.watched(cd) {
			continue
		}
		cands = append(cands, cd)
		ids = append(ids, model.PatchsetID(cd.Change, cd.Patchset))
	}
	if len(cands) == 0 {
		return 0, nil
	}
	known, err := c.st.GetPatchsets(ctx, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, cd := range cands {
		if ps, ok := known[ids[i]]; ok && (ps.WantsVote || !cd.WantsVote) {
			continue // nothing new about it
		}
		if err := c.deferTask(ctx, CheckNewCL, CheckNewCLArgs{Change: cd.Change, CL: &cd}); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// watched reports whether a change is in the configured project and branches.
func (c *Controller) watched(cd Candidate) bool {
	if cd.Project != c.cfg.Gerrit.Project || cd.Status != "NEW" {
		return false
	}
	for _, b := range c.cfg.Gerrit.Branches {
		if b == cd.Branch {
			return true
		}
	}
	return false
}

// CheckNewCL creates a trusted patchset with one QUEUED job per job type,
// in one atomic write, then defers cancel_older_jobs. If the patchset exists
// it only turns wants_vote on when the ready label was newly approved, and
// votes at once if its jobs already ended.
func (c *Controller) CheckNewCL(ctx context.Context, a CheckNewCLArgs) error {
	cd := a.CL
	if cd == nil {
		ch, err := c.gr.GetChange(ctx, strconv.Itoa(a.Change), queryOptions...)
		if errs.Is(err, errs.NotFound) {
			c.log.InfoContext(ctx, "change not found in gerrit", "change", a.Change)
			return nil
		}
		if err != nil {
			return err
		}
		got, ok := c.candidate(ch)
		if !ok {
			return fmt.Errorf("gerrit change %d: response has no current revision", a.Change)
		}
		cd = &got
	}
	if !cd.Trusted || !c.watched(*cd) {
		c.log.InfoContext(ctx, "change not eligible", "change", cd.Change, "trusted", cd.Trusted, "project", cd.Project, "branch", cd.Branch, "status", cd.Status)
		return nil
	}
	now := c.clock.Now()
	ps := &model.Patchset{
		ID: model.PatchsetID(cd.Change, cd.Patchset), Change: cd.Change, Patchset: cd.Patchset,
		ChangeID: cd.ChangeID, Revision: cd.Revision, Ref: cd.Ref, Project: cd.Project,
		Branch: cd.Branch, Subject: cd.Subject, Owner: cd.Owner, Uploader: cd.Uploader,
		TimeQueued: now, WantsVote: cd.WantsVote, Round: 1,
	}
	jobs := c.newJobs(now, ps.Src(), &model.Checkout{Project: cd.Project, Branch: cd.Branch, Ref: cd.Ref, Revision: cd.Revision, Merge: true})
	for _, j := range jobs {
		ps.JobIDs = append(ps.JobIDs, j.ID)
	}
	err := c.st.CreatePatchset(ctx, ps, jobs)
	switch {
	case err == nil:
		c.log.InfoContext(ctx, "queued patchset", "patchset", ps.ID, "jobs", len(jobs), "wants_vote", ps.WantsVote)
	case errs.Is(err, errs.AlreadyExists):
		if cd.WantsVote {
			got, err := c.st.UpdatePatchset(ctx, ps.ID, model.PatchsetUpdate{Kind: model.SetWantsVote, Now: now})
			switch {
			case err == nil:
				c.log.InfoContext(ctx, "ready label approved", "patchset", ps.ID)
				if !got.Pending() {
					// The jobs ended before the label came: vote now.
					if err := c.deferTask(ctx, CommentAndVote, PatchsetArgs{ID: ps.ID}); err != nil {
						return err
					}
				}
			case !errs.Is(err, errs.FailedPrecondition):
				return err
			}
		}
	default:
		return err
	}
	// Always (also on AlreadyExists): a retry after a crash must still cancel.
	return c.deferTask(ctx, CancelOlderJobs, ChangeArgs{Change: cd.Change})
}

// newJobs returns one QUEUED job per configured job type for src, each
// with the labels its type requires, staggered FairSlot apart in its pool
// (model.Stagger) so that src's jobs interleave with other sources'.
func (c *Controller) newJobs(now time.Time, src string, co *model.Checkout) []*model.Job {
	var jobs []*model.Job
	for _, name := range c.cfg.JobNames() {
		jc := c.cfg.Jobs[name]
		env := maps.Clone(jc.Env)
		if env == nil {
			env = map[string]string{}
		}
		env["TOLLGATE_GIT_REF"] = co.Ref
		env["TOLLGATE_REVISION"] = co.Revision
		j := model.NewJob(now, src, name, env, jc.SkipVoting)
		cc := *co
		j.Checkout = &cc
		j.SetRequire(jc.Require)
		jobs = append(jobs, j)
	}
	model.Stagger(jobs, c.FairSlot)
	return jobs
}

// CancelOlderJobs cancels the queued and running jobs of every patchset of
// change older than its newest known patchset, and defers check_pending_cl
// for each patchset it touched so it ends (and never gets a vote).
func (c *Controller) CancelOlderJobs(ctx context.Context, change int) error {
	var all []*model.Patchset
	for cursor := ""; ; {
		page, next, err := c.st.ListPatchsets(ctx, storePatchsetQuery(change, cursor))
		if err != nil {
			return err
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	newest := 0
	for _, ps := range all {
		newest = max(newest, ps.Patchset)
	}
	now := c.clock.Now()
	for _, ps := range all {
		if ps.Patchset == newest || !ps.Pending() {
			continue
		}
		reason := fmt.Sprintf("superseded by patchset %d", newest)
		if _, err := c.cancelJobs(ctx, ps.JobIDs, reason, now); err != nil {
			return err
		}
		if err := c.deferTask(ctx, CheckPendingCL, PatchsetArgs{ID: ps.ID}); err != nil {
			return err
		}
	}
	return nil
}

// cancelJobs cancels the non-terminal jobs among ids and returns the jobs as
// they are afterwards. Jobs that ended meanwhile are left as they are.
func (c *Controller) cancelJobs(ctx context.Context, ids []string, reason string, now time.Time) (map[string]*model.Job, error) {
	jobs, err := c.st.GetJobs(ctx, ids)
	if err != nil {
		return nil, err
	}
	for id, j := range jobs {
		if j.State.Terminal() {
			continue
		}
		got, err := c.st.UpdateJob(ctx, id, model.Transition{Kind: model.Cancel, Reason: reason, Now: now})
		switch {
		case err == nil:
			jobs[id] = got
			c.log.InfoContext(ctx, "cancelled job", "job", id, "reason", reason)
		case errs.Is(err, errs.FailedPrecondition):
			// It ended between the read and the cancel: the race is fine.
			if got, err := c.st.GetJob(ctx, id); err == nil {
				jobs[id] = got
			}
		default:
			return nil, err
		}
	}
	return jobs, nil
}
