package controller_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
)

func TestTrustedUploadGetsOneJobPerType(t *testing.T) {
	for _, twice := range []bool{false, true} {
		t.Run(fmt.Sprintf("twice=%v", twice), func(t *testing.T) {
			e := newEnv(t, baseConfig)
			e.twice = twice
			good := e.upload(trusted, "Fix the frobnicator")
			bad := e.upload(stranger, "Totally harmless")
			e.poll()
			e.poll() // a second poll changes nothing

			ps, jobs := e.patchset(good.Change, 1)
			if ps.Uploader != trusted || ps.Revision != good.Revision || ps.Ref != good.Ref || ps.WantsVote {
				t.Errorf("patchset = %+v", ps)
			}
			if len(jobs) != 3 {
				t.Fatalf("got %d jobs, want one per type (3)", len(jobs))
			}
			for _, j := range jobs {
				if j.State != model.Queued || j.Env["TOLLGATE_GIT_REF"] != good.Ref || j.Src != "cls/"+ps.ID {
					t.Errorf("job %+v", j)
				}
				if _, err := model.ParseJobID(j.ID); err != nil {
					t.Errorf("job id %q: %v", j.ID, err)
				}
			}
			if _, _, err := e.st.GetPatchsetWithJobs(e.ctx, model.PatchsetID(bad.Change, 1)); !errs.Is(err, errs.NotFound) {
				t.Errorf("untrusted upload got a patchset: %v", err)
			}
			all, _, _ := e.st.ListJobs(e.ctx, store.JobQuery{})
			if len(all) != 3 {
				t.Errorf("store holds %d jobs, want 3", len(all))
			}
		})
	}
}

func TestReadyLabelByTrustedReviewerQueuesAndWantsVote(t *testing.T) {
	e := newEnv(t, baseConfig)
	ch := e.upload(stranger, "Outside contribution")
	e.poll()
	if _, err := e.st.GetPatchset(e.ctx, model.PatchsetID(ch.Change, 1)); !errs.Is(err, errs.NotFound) {
		t.Fatalf("untrusted upload queued before the label: %v", err)
	}
	// A label from an untrusted account does nothing.
	e.clock.Advance(time.Second)
	if err := e.gerrit.SetVote(ch.Change, stranger, "Presubmit-Ready", 1); err != nil {
		t.Fatal(err)
	}
	e.poll()
	if _, err := e.st.GetPatchset(e.ctx, model.PatchsetID(ch.Change, 1)); !errs.Is(err, errs.NotFound) {
		t.Fatalf("self-approved ready label queued jobs: %v", err)
	}
	e.clock.Advance(time.Second)
	if err := e.gerrit.SetVote(ch.Change, reviewer, "Presubmit-Ready", 1); err != nil {
		t.Fatal(err)
	}
	e.poll()
	ps, jobs := e.patchset(ch.Change, 1)
	if !ps.WantsVote || len(jobs) != 3 {
		t.Fatalf("after trusted label: wants_vote=%v jobs=%d", ps.WantsVote, len(jobs))
	}
	e.finishAll()
	e.run(controller.CheckPendingCLs, nil)
	e.drain()
	reviews := e.gerrit.Reviews(ch.Change)
	if len(reviews) != 1 || reviews[0].Labels["Code-Review"] != 1 {
		t.Fatalf("reviews = %+v, want one +1", reviews)
	}
}

// Gerrit's "approved" names only one of the accounts that gave a label its
// maximum: an untrusted approval must not hide a trusted one. Here the
// reviewer's account is older, so "approved" names the stranger.
func TestTrustedReadyLabelAmongUntrustedOnes(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.gerrit.Account(reviewer, "")
	ch := e.upload(stranger, "Outside contribution, approved twice")
	e.clock.Advance(time.Second)
	if err := e.gerrit.SetVote(ch.Change, reviewer, "Presubmit-Ready", 1); err != nil {
		t.Fatal(err)
	}
	if err := e.gerrit.SetVote(ch.Change, stranger, "Presubmit-Ready", 1); err != nil {
		t.Fatal(err)
	}
	info, err := e.gerrit.Change(ch.Change, "LABELS", "DETAILED_ACCOUNTS")
	if err != nil {
		t.Fatal(err)
	}
	if a := info.Labels["Presubmit-Ready"].Approved; a == nil || a.Email != stranger {
		t.Fatalf("the fake's approved = %+v; this test needs it to name %s", a, stranger)
	}
	e.poll()
	ps, jobs := e.patchset(ch.Change, 1)
	if !ps.WantsVote || len(jobs) != 3 {
		t.Fatalf("wants_vote=%v jobs=%d, want the trusted approval to count", ps.WantsVote, len(jobs))
	}
}

func TestReadyLabelAfterJobsEndedVotesAtOnce(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.twice = true
	ch := e.upload(trusted, "Trusted, no label yet")
	e.poll()
	e.finishAll("test")
	e.run(controller.CheckPendingCLs, nil)
	e.drain()
	if ps, _ := e.patchset(ch.Change, 1); ps.Pending() || ps.Voted {
		t.Fatalf("ended=%v voted=%v: want ended, not voted (no label)", !ps.Pending(), ps.Voted)
	}
	if n := len(e.gerrit.Reviews(ch.Change)); n != 0 {
		t.Fatalf("%d reviews before the label", n)
	}
	e.clock.Advance(time.Second)
	if err := e.gerrit.SetVote(ch.Change, reviewer, "Presubmit-Ready", 1); err != nil {
		t.Fatal(err)
	}
	e.poll() // the label alone must lead to the vote, without check_pending_cls
	reviews := e.gerrit.Reviews(ch.Change)
	if len(reviews) != 1 || reviews[0].Labels["Code-Review"] != -1 {
		t.Fatalf("reviews = %+v, want exactly one -1", reviews)
	}
}

func TestNewPatchsetCancelsOlderJobs(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.twice = true
	ch := e.upload(trusted, "v1")
	e.clock.Advance(time.Second)
	e.gerrit.SetVote(ch.Change, reviewer, "Presubmit-Ready", 1)
	e.poll()
	// One job of patchset 1 is running.
	running, err := e.st.ClaimJob(e.ctx, "w1", []string{""}, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	if _, err := e.gerrit.UploadPatchset(ch.Change, fakegerrit.PatchSetSpec{UploaderEmail: trusted}); err != nil {
		t.Fatal(err)
	}
	e.poll()
	old, oldJobs := e.patchset(ch.Change, 1)
	for _, j := range oldJobs {
		if j.State != model.Cancelled {
			t.Errorf("patchset 1 job %s is %s, want CANCELLED (running one: %s)", j.Type, j.State, running.Type)
		}
	}
	if old.Pending() {
		t.Error("patchset 1 not ended after its jobs were cancelled")
	}
	_, newJobs := e.patchset(ch.Change, 2)
	for _, j := range newJobs {
		if j.State != model.Queued {
			t.Errorf("patchset 2 job %s is %s", j.Type, j.State)
		}
	}
	if n := len(e.gerrit.Reviews(ch.Change)); n != 0 {
		t.Errorf("%d reviews on a superseded patchset", n)
	}
	// Patchset 2 votes once the ready label is applied to it (Gerrit does
	// not copy Presubmit-Ready to a reworked patchset).
	e.clock.Advance(time.Second)
	if err := e.gerrit.SetVote(ch.Change, reviewer, "Presubmit-Ready", 1); err != nil {
		t.Fatal(err)
	}
	e.poll()
	e.finishAll()
	e.run(controller.CheckPendingCLs, nil)
	e.drain()
	rv := e.gerrit.Reviews(ch.Change)
	if len(rv) != 1 || rv[0].PatchSet != 2 || rv[0].Labels["Code-Review"] != 1 {
		t.Fatalf("reviews = %+v, want one +1 on patchset 2", rv)
	}
}

func TestStalePatchsetCreatedLateIsCancelled(t *testing.T) {
	// Deliveries are unordered: check_new_cl for patchset 1 may arrive after
	// patchset 2 was created. Patchset 1's jobs must not run.
	e := newEnv(t, baseConfig)
	ch := e.upload(trusted, "v1")
	ps2, _ := e.gerrit.UploadPatchset(ch.Change, fakegerrit.PatchSetSpec{UploaderEmail: trusted})
	e.poll()
	stale := controller.Candidate{Change: ch.Change, Patchset: 1, ChangeID: ch.ID, Revision: ch.Revision, Ref: ch.Ref,
		Project: project, Branch: "main", Owner: trusted, Uploader: trusted, Status: "NEW", Trusted: true}
	e.run(controller.CheckNewCL, controller.CheckNewCLArgs{Change: ch.Change, CL: &stale})
	e.drain()
	_, jobs := e.patchset(ch.Change, 1)
	for _, j := range jobs {
		if j.State != model.Cancelled {
			t.Errorf("late stale job %s is %s", j.Type, j.State)
		}
	}
	_, jobs2 := e.patchset(ch.Change, ps2.Number)
	for _, j := range jobs2 {
		if j.State != model.Queued {
			t.Errorf("current job %s is %s", j.Type, j.State)
		}
	}
}

func TestPollingPagesAndUsesWatermark(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.c.PageSize = 7
	var nums []int
	for i := 0; i < 30; i++ {
		nums = append(nums, e.upload(trusted, fmt.Sprintf("change %d", i)).Change)
	}
	e.poll()
	for _, n := range nums {
		if _, err := e.st.GetPatchset(e.ctx, model.PatchsetID(n, 1)); err != nil {
			t.Fatalf("change %d not ingested across pages: %v", n, err)
		}
	}
	if q := e.lastQuery(); strings.Contains(q, "after:") {
		t.Errorf("first poll %q: want a full reconcile", q)
	}
	// After the first (full) poll, polls ask only for changes updated since
	// the watermark, less the overlap: an idle poll defers nothing.
	wm, _ := e.st.GetMeta(e.ctx, "gerrit.watermark")
	wmTime, err := time.Parse(time.RFC3339Nano, wm)
	if err != nil {
		t.Fatalf("watermark %q: %v", wm, err)
	}
	before := e.tq.Count(controller.CheckNewCL)
	e.clock.Advance(time.Minute)
	e.poll()
	if got := e.tq.Count(controller.CheckNewCL); got != before {
		t.Errorf("idle poll deferred %d check_new_cl", got-before)
	}
	want := `after:"` + wmTime.Add(-5*time.Minute).Format("2006-01-02 15:04:05") + `"`
	if q := e.lastQuery(); !strings.Contains(q, want) {
		t.Errorf("incremental poll %q lacks %s", q, want)
	}
	late := e.upload(trusted, "late")
	e.poll()
	if _, err := e.st.GetPatchset(e.ctx, model.PatchsetID(late.Change, 1)); err != nil {
		t.Fatalf("change after the watermark missed: %v", err)
	}
	// Once full_reconcile_interval (1h) has passed, a poll lists everything again.
	e.clock.Advance(time.Hour)
	e.poll()
	if q := e.lastQuery(); strings.Contains(q, "after:") {
		t.Errorf("poll after the reconcile interval %q: want a full reconcile", q)
	}
}

func TestGerritOutageLosesNothing(t *testing.T) {
	e := newEnv(t, baseConfig)
	ch := e.upload(trusted, "during outage")
	e.gerrit.InjectFault(fakegerrit.Fault{Status: 500, Count: 1000})
	err := e.deliver(controller.CheckNewCLs, nil)
	if !errs.Transient(err) {
		t.Fatalf("poll during outage: %v, want a transient error (so it is retried)", err)
	}
	if w, _ := e.st.GetMeta(e.ctx, "gerrit.watermark"); w != "" {
		t.Fatalf("watermark moved during an outage: %q", w)
	}
	e.gerrit.ClearFaults()
	e.poll()
	if _, err := e.st.GetPatchset(e.ctx, model.PatchsetID(ch.Change, 1)); err != nil {
		t.Fatalf("change lost across the outage: %v", err)
	}
}

func TestWebhookStyleCheckReadsGerrit(t *testing.T) {
	e := newEnv(t, baseConfig)
	ch := e.upload(trusted, "via webhook")
	e.run(controller.CheckNewCL, controller.CheckNewCLArgs{Change: ch.Change})
	e.drain()
	if _, jobs := e.patchset(ch.Change, 1); len(jobs) != 3 {
		t.Fatalf("got %d jobs", len(jobs))
	}
	// Unknown change: nothing, no error.
	e.run(controller.CheckNewCL, controller.CheckNewCLArgs{Change: 99999})
}

func TestMalformedTasksArePermanentErrors(t *testing.T) {
	e := newEnv(t, baseConfig)
	for _, tc := range []struct {
		action string
		args   any
	}{
		{controller.CheckNewCL, map[string]any{"change": -1}},
		{controller.CheckNewCL, map[string]any{"change": "x"}},
		{controller.CheckPendingCL, map[string]any{"id": "../etc"}},
		{controller.CancelJob, map[string]any{"job_id": "nope"}},
		{controller.CheckNewCL, map[string]any{"change": 1, "surprise": true}},
		{"no_such_action", nil},
	} {
		err := e.deliver(tc.action, tc.args)
		if !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s %v: %v, want InvalidArgument", tc.action, tc.args, err)
		}
	}
}

func TestTickRunsOncePerInterval(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.run(controller.Tick, nil)
	first := e.tq.Count("")
	if e.tq.Count(controller.CheckNewCLs) != 1 || e.tq.Count(controller.QueuePostsubmitJobs) != 1 {
		t.Fatalf("tick deferred %+v", e.tq.All())
	}
	// A failsafe tick a second later is a no-op: no avalanche.
	e.clock.Advance(time.Second)
	if err := e.c.Tick(e.ctx, "another"); err != nil {
		t.Fatal(err)
	}
	if e.tq.Count("") != first {
		t.Fatalf("second tick within the interval deferred %d tasks", e.tq.Count("")-first)
	}
	// After the interval the poll runs again, but not the hourly postsubmit.
	e.clock.Advance(15 * time.Second)
	if err := e.c.Tick(e.ctx, "third"); err != nil {
		t.Fatal(err)
	}
	if e.tq.Count(controller.CheckNewCLs) != 2 || e.tq.Count(controller.QueuePostsubmitJobs) != 1 {
		t.Fatalf("after 16s: check_new_cls=%d postsubmit=%d, want 2 and 1",
			e.tq.Count(controller.CheckNewCLs), e.tq.Count(controller.QueuePostsubmitJobs))
	}
}

func TestDeferFailureIsRetried(t *testing.T) {
	e := newEnv(t, baseConfig)
	ch := e.upload(trusted, "x")
	e.tq.SetFail(func(action string) error {
		if action == controller.CancelOlderJobs {
			return errs.E(errs.Unavailable, "test", "queue down")
		}
		return nil
	})
	e.run(controller.CheckNewCLs, nil)
	task, _ := e.tq.Take()
	if err := e.c.Handle(e.ctx, task); err == nil || !errs.Transient(err) {
		t.Fatalf("check_new_cl with a failing Defer: %v, want a transient error", err)
	}
	e.tq.SetFail(nil)
	if err := e.c.Handle(e.ctx, task); err != nil { // the retry of the same delivery
		t.Fatal(err)
	}
	if e.tq.Count(controller.CancelOlderJobs) != 1 {
		t.Fatal("retry after AlreadyExists did not defer cancel_older_jobs")
	}
	if _, jobs := e.patchset(ch.Change, 1); len(jobs) != 3 {
		t.Fatal("jobs missing")
	}
}
