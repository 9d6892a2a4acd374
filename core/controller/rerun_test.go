package controller_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
)

// jobOfType returns the latest job of typ among jobs.
func jobOfType(t *testing.T, jobs []*model.Job, typ string) *model.Job {
	t.Helper()
	j, ok := model.Latest(jobs)[typ]
	if !ok {
		t.Fatalf("no %s job", typ)
	}
	return j
}

// A retried failure opens round 2: the patchset votes again, on the latest
// run of each type, and every round gets exactly one review.
func TestRetryOpensANewRoundThatVotesAgain(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.twice = true
	ch := e.readyChange("flaky")
	e.finishAll("test")
	e.endAndVote()
	if rv := e.gerrit.Reviews(ch.Change); len(rv) != 1 || rv[0].Labels["Code-Review"] != -1 {
		t.Fatalf("round 1: %+v", rv)
	}
	_, jobs := e.patchset(ch.Change, 1)
	failed := jobOfType(t, jobs, "test")

	e.clock.Advance(time.Minute)
	nj, err := e.c.RetryJob(e.ctx, failed.ID, "alice@trusted.example")
	if err != nil {
		t.Fatal(err)
	}
	if nj.ID == failed.ID || nj.Type != "test" || nj.State != model.Queued || nj.RetryOf != failed.ID ||
		nj.RequestedBy != "alice@trusted.example" || nj.Env["TOLLGATE_REVISION"] != ch.Revision {
		t.Fatalf("retry = %+v", nj)
	}
	ps, jobs := e.patchset(ch.Change, 1)
	if ps.Round != 2 || !ps.Pending() || ps.Voted || len(jobs) != 4 || jobs[3].ID != nj.ID {
		t.Fatalf("after the retry: round %d pending %v voted %v jobs %d", ps.Round, ps.Pending(), ps.Voted, len(jobs))
	}
	// Nothing votes while the retry runs.
	e.endAndVote()
	if n := len(e.gerrit.Reviews(ch.Change)); n != 1 {
		t.Fatalf("%d reviews while the retry is queued", n)
	}
	e.finishAll()
	e.endAndVote()
	rv := e.gerrit.Reviews(ch.Change)
	if len(rv) != 2 {
		t.Fatalf("got %d reviews, want one per round", len(rv))
	}
	r := rv[1]
	if r.Labels["Code-Review"] != 1 || !strings.HasPrefix(r.Message, "Tollgate (round 2, after a retry): all 3 jobs passed.") ||
		!strings.Contains(r.Message, "PASS: test: https://ci.example.com/jobs/"+nj.ID) || strings.Contains(r.Message, failed.ID) {
		t.Fatalf("round 2 review: %+v", r)
	}
	ps, _ = e.patchset(ch.Change, 1)
	if !ps.Voted || ps.Vote != 1 || ps.Pending() {
		t.Fatalf("after round 2: %+v", ps)
	}
}

// A recheck re-runs exactly the failed types, in one write, and the vote
// of round 2 counts the new runs with the passed ones of round 1.
func TestRecheckRerunsOnlyFailedJobs(t *testing.T) {
	e := newEnv(t, baseConfig)
	ch := e.readyChange("two failures")
	e.finishAll("test", "lint")
	e.endAndVote()
	id := model.PatchsetID(ch.Change, 1)
	_, before := e.patchset(ch.Change, 1)

	e.clock.Advance(time.Minute)
	got, err := e.c.Recheck(e.ctx, id, "rita@trusted.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Type != "lint" || got[1].Type != "test" {
		t.Fatalf("recheck queued %v, want lint and test", got)
	}
	for i, j := range got {
		if j.RetryOf != jobOfType(t, before, j.Type).ID || j.RequestedBy != "rita@trusted.example" {
			t.Errorf("new job %+v", j)
		}
		// Rechecked jobs are presubmit jobs, staggered like new ones.
		if j.Priority != model.PriorityPresubmit || !j.Order.Equal(e.clock.Now().Add(time.Duration(i)*controller.FairSlot)) {
			t.Errorf("rechecked %s: priority %d, order +%v", j.Type, j.Priority, j.Order.Sub(e.clock.Now()))
		}
	}
	// A second recheck right away has nothing failed to re-run: the new
	// runs are queued.
	if _, err := e.c.Recheck(e.ctx, id, "rita@trusted.example"); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("recheck with the failures queued again: %v", err)
	}
	e.finishAll("lint")
	e.endAndVote()
	rv := e.gerrit.Reviews(ch.Change)
	if len(rv) != 2 || rv[1].Labels["Code-Review"] != 1 || !strings.Contains(rv[1].Message, "all voting jobs passed; 1 non-voting job(s) failed") {
		t.Fatalf("reviews = %+v", rv)
	}
	_, jobs := e.patchset(ch.Change, 1)
	if len(jobs) != 5 {
		t.Fatalf("%d jobs after the recheck, want 5", len(jobs))
	}
}

func TestRetryAndRecheckRefusals(t *testing.T) {
	e := newEnv(t, baseConfig)
	ch := e.readyChange("x")
	id := model.PatchsetID(ch.Change, 1)
	_, jobs := e.patchset(ch.Change, 1)
	if _, err := e.c.RetryJob(e.ctx, jobs[0].ID, "a@x"); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("retry of a queued job: %v", err)
	}
	if _, err := e.c.Recheck(e.ctx, id, "a@x"); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("recheck with every job queued: %v", err)
	}
	if _, err := e.c.RetryJob(e.ctx, model.JobID(t0, "cls/99-1", "build"), "a@x"); !errs.Is(err, errs.NotFound) {
		t.Errorf("retry of an unknown job: %v", err)
	}
	if _, err := e.c.RetryJob(e.ctx, "not-a-job", "a@x"); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("retry of a malformed id: %v", err)
	}
	if _, err := e.c.Recheck(e.ctx, "99-1", "a@x"); !errs.Is(err, errs.NotFound) {
		t.Errorf("recheck of an unknown patchset: %v", err)
	}
	e.finishAll()
	e.endAndVote()
	if _, err := e.c.Recheck(e.ctx, id, "a@x"); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("recheck when everything passed: %v", err)
	}
	// Two retries of one job within a second would make the same job id.
	if _, err := e.c.RetryJob(e.ctx, jobs[0].ID, "a@x"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.RetryJob(e.ctx, jobs[0].ID, "a@x"); !errs.Is(err, errs.AlreadyExists) {
		t.Errorf("a second retry in the same second: %v", err)
	}
}

// A crash after posting round 2's review is recognised by counting tagged
// messages (two on the revision for round 2), and a claim that died before
// posting round 2 is not fooled by round 1's message.
func TestRound2CrashRecovery(t *testing.T) {
	for _, posted := range []bool{true, false} {
		name := map[bool]string{true: "crash after posting", false: "crash before posting"}[posted]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, baseConfig)
			ch := e.readyChange("x")
			e.finishAll("test")
			e.endAndVote()
			id := model.PatchsetID(ch.Change, 1)
			_, jobs := e.patchset(ch.Change, 1)
			e.clock.Advance(time.Minute)
			if _, err := e.c.RetryJob(e.ctx, jobOfType(t, jobs, "test").ID, "a@x"); err != nil {
				t.Fatal(err)
			}
			e.finishAll()
			e.run(controller.CheckPendingCL, controller.PatchsetArgs{ID: id})
			if posted {
				fs := &failingStore{Store: e.st, fail: true}
				if err := e.withStore(fs).CommentAndVote(e.ctx, id); err == nil {
					t.Fatal("want the injected crash")
				}
			} else if _, err := e.st.UpdatePatchset(e.ctx, id, model.PatchsetUpdate{Kind: model.ClaimVote, Now: e.clock.Now(), Lease: 2 * time.Minute}); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(3 * time.Minute)
			if err := e.c.CommentAndVote(e.ctx, id); err != nil {
				t.Fatal(err)
			}
			if rv := e.gerrit.Reviews(ch.Change); len(rv) != 2 || rv[1].Labels["Code-Review"] != 1 {
				t.Fatalf("reviews = %+v, want round 1's -1 and one +1 for round 2", rv)
			}
			if ps, _ := e.patchset(ch.Change, 1); !ps.Voted || ps.Round != 2 {
				t.Fatalf("patchset %+v", ps)
			}
		})
	}
}

// timeouts.cl counts from the round's start: a retry of an old patchset
// is not cancelled as soon as it is queued.
func TestRetryOfOldPatchsetIsNotTimedOut(t *testing.T) {
	e := newEnv(t, baseConfig)
	ch := e.readyChange("old")
	e.finishAll("test")
	e.endAndVote()
	_, jobs := e.patchset(ch.Change, 1)
	e.clock.Advance(4 * time.Hour)
	nj, err := e.c.RetryJob(e.ctx, jobOfType(t, jobs, "test").ID, "a@x")
	if err != nil {
		t.Fatal(err)
	}
	e.endAndVote()
	if j, err := e.st.GetJob(e.ctx, nj.ID); err != nil || j.State != model.Queued {
		t.Fatalf("retry of a 4h old patchset: %v, %v", j, err)
	}
	e.clock.Advance(3*time.Hour + time.Minute)
	e.endAndVote()
	if j, _ := e.st.GetJob(e.ctx, nj.ID); j.State != model.Cancelled {
		t.Fatalf("after timeouts.cl of the round: %s", j.State)
	}
}

func TestRetryPostsubmitJob(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.run(controller.QueuePostsubmitJobs, controller.BranchArgs{Branch: "main"})
	e.finishAll("build")
	runs, _, err := e.st.ListPostsubmits(e.ctx, "main", 0, "")
	if err != nil || len(runs) != 1 {
		t.Fatal(runs, err)
	}
	jobs, _ := e.st.GetJobs(e.ctx, runs[0].JobIDs)
	var build *model.Job
	for _, j := range jobs {
		if j.Type == "build" {
			build = j
		}
	}
	e.clock.Advance(time.Minute)
	nj, err := e.c.RetryJob(e.ctx, build.ID, "a@x")
	if err != nil {
		t.Fatal(err)
	}
	runs, _, _ = e.st.ListPostsubmits(e.ctx, "main", 0, "")
	if len(runs[0].JobIDs) != 4 || runs[0].JobIDs[3] != nj.ID || nj.Src != runs[0].Src() {
		t.Fatalf("run after the retry: %+v", runs[0])
	}
	if nj.Priority != model.PriorityPostsubmit || !nj.Order.Equal(e.clock.Now()) {
		t.Fatalf("retried postsubmit job: priority %d, order %v", nj.Priority, nj.Order)
	}
}

func TestQueueMetricsRecordSamples(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.readyChange("x")
	e.run(controller.UpdateQueueMetrics, nil)
	e.clock.Advance(time.Minute)
	if _, err := e.st.ClaimJob(e.ctx, "w1", []string{""}, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	e.run(controller.UpdateQueueMetrics, nil)
	e.run(controller.UpdateQueueMetrics, nil) // the same minute: one point
	q, err := e.st.ListSamples(e.ctx, controller.SampleQueued, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := e.st.ListSamples(e.ctx, controller.SampleRunning, time.Time{})
	if len(q) != 2 || q[0].Value != 3 || q[1].Value != 2 || len(r) != 2 || r[1].Value != 1 {
		t.Fatalf("samples: queued %v running %v", q, r)
	}
	// Points older than the retention go.
	e.clock.Advance(controller.SampleRetention + time.Minute)
	e.run(controller.UpdateQueueMetrics, nil)
	if q, _ = e.st.ListSamples(e.ctx, controller.SampleQueued, time.Time{}); len(q) != 1 {
		t.Fatalf("after the retention: %v", q)
	}
}
