package controller_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/model"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
)

func TestPostsubmitRunsOnlyWhenTheHeadMoves(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.twice = true
	e.run(controller.QueuePostsubmitJobs, controller.BranchArgs{Branch: "main"})
	e.run(controller.QueuePostsubmitJobs, controller.BranchArgs{Branch: "main"})
	runs, _, err := e.st.ListPostsubmits(e.ctx, "main", 0, "")
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs = %d, %v; want 1", len(runs), err)
	}
	head, _ := e.gerrit.BranchHead(project, "main")
	r := runs[0]
	if r.Revision != head || len(r.JobIDs) != 3 || r.Subject != "Initial commit" {
		t.Errorf("run = %+v", r)
	}
	jobs, _ := e.st.GetJobs(e.ctx, r.JobIDs)
	for _, j := range jobs {
		if j.Env["TOLLGATE_GIT_REF"] != "refs/heads/main" || j.Env["TOLLGATE_REVISION"] != head || j.State != model.Queued {
			t.Errorf("job %+v", j)
		}
	}
	e.clock.Advance(time.Hour)
	if _, err := e.gerrit.MoveBranch(project, "main", fakegerrit.CommitSpec{Subject: "Land a change", AuthorEmail: "dev@trusted.example"}); err != nil {
		t.Fatal(err)
	}
	e.run(controller.QueuePostsubmitJobs, controller.BranchArgs{Branch: "main"})
	e.run(controller.QueuePostsubmitJobs, controller.BranchArgs{Branch: "main"})
	runs, _, _ = e.st.ListPostsubmits(e.ctx, "main", 0, "")
	if len(runs) != 2 || runs[0].Subject != "Land a change" || runs[0].Author != "dev@trusted.example" {
		t.Fatalf("after the head moved: %+v", runs)
	}
	if err := e.deliver(controller.QueuePostsubmitJobs, controller.BranchArgs{Branch: "unwatched"}); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("unconfigured branch: %v", err)
	}
}

func TestCancelJobIsIdempotentAndEndsPatchset(t *testing.T) {
	e := newEnv(t, baseConfig)
	ch := e.readyChange("x")
	_, jobs := e.patchset(ch.Change, 1)
	for i := 0; i < 2; i++ {
		for _, j := range jobs {
			e.run(controller.CancelJob, controller.CancelJobArgs{JobID: j.ID, Reason: "admin"})
		}
	}
	e.run(controller.CancelJob, controller.CancelJobArgs{JobID: model.JobID(t0, "cls/1-1", "nope")}) // unknown: no error
	e.drain()
	ps, jobs := e.patchset(ch.Change, 1)
	if ps.Pending() {
		t.Error("patchset not ended right after its last job was cancelled")
	}
	for _, j := range jobs {
		if j.State != model.Cancelled || j.Reason != "admin" {
			t.Errorf("%s: %s %q", j.Type, j.State, j.Reason)
		}
	}
	// A cancel never overrides an ended job.
	ch2 := e.readyChange("y")
	e.finishAll()
	_, jobs2 := e.patchset(ch2.Change, 1)
	e.run(controller.CancelJob, controller.CancelJobArgs{JobID: jobs2[0].ID})
	if j, _ := e.st.GetJob(e.ctx, jobs2[0].ID); j.State != model.Completed {
		t.Errorf("cancel changed a COMPLETED job to %s", j.State)
	}
}

func TestDeleteStaleJobs(t *testing.T) {
	e := newEnv(t, baseConfig)
	ch := e.readyChange("x")
	j, _ := e.st.ClaimJob(e.ctx, "w1", []string{""}, e.clock.Now())
	e.clock.Advance(59 * time.Minute)
	e.run(controller.DeleteStaleJobs, nil)
	if got, _ := e.st.GetJob(e.ctx, j.ID); got.State != model.Started {
		t.Fatalf("cancelled before twice the timeout: %s", got.State)
	}
	e.clock.Advance(2 * time.Minute)
	e.run(controller.DeleteStaleJobs, nil)
	e.run(controller.DeleteStaleJobs, nil)
	got, _ := e.st.GetJob(e.ctx, j.ID)
	if got.State != model.Cancelled || !strings.Contains(got.Reason, "stale") {
		t.Fatalf("stale job: %s %q", got.State, got.Reason)
	}
	_, jobs := e.patchset(ch.Change, 1)
	for _, o := range jobs {
		if o.ID != j.ID && o.State != model.Queued {
			t.Errorf("queued job %s touched: %s", o.Type, o.State)
		}
	}
}

func TestReapDeadWorkersRequeuesOnceThenBotDied(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.twice = true
	ch := e.readyChange("x")
	heartbeat := func(id string) {
		if _, err := e.st.PutWorker(e.ctx, &model.Worker{ID: id, Host: "h", State: model.WorkerBusy, LastSeen: e.clock.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	// Attempt 1 on w1, which dies.
	heartbeat("w1")
	j, _ := e.st.ClaimJob(e.ctx, "w1", []string{""}, e.clock.Now())
	e.clock.Advance(4 * time.Minute)
	e.run(controller.ReapDeadWorkers, nil)
	if got, _ := e.st.GetJob(e.ctx, j.ID); got.State != model.Started {
		t.Fatalf("reaped a worker within the death timeout: %s", got.State)
	}
	e.clock.Advance(2 * time.Minute)
	e.run(controller.ReapDeadWorkers, nil)
	e.run(controller.ReapDeadWorkers, nil)
	got, _ := e.st.GetJob(e.ctx, j.ID)
	if got.State != model.Queued || got.Attempt != 2 || len(got.History) != 1 || got.History[0].State != model.BotDied {
		t.Fatalf("after first death: %+v", got)
	}
	// Attempt 2 on w2, which dies too: final.
	heartbeat("w2")
	for {
		c, err := e.st.ClaimJob(e.ctx, "w2", []string{""}, e.clock.Now())
		if err != nil {
			t.Fatal("requeued job not claimable")
		}
		if c.ID == j.ID {
			break
		}
		e.st.UpdateJob(e.ctx, c.ID, model.Transition{Kind: model.Finish, Worker: "w2", State: model.Completed, ExitCode: new(int), Now: e.clock.Now()})
	}
	e.clock.Advance(6 * time.Minute)
	e.run(controller.ReapDeadWorkers, nil)
	e.drain()
	e.finishAll()
	e.endAndVote()
	got, _ = e.st.GetJob(e.ctx, j.ID)
	if got.State != model.BotDied || got.Attempt != 2 {
		t.Fatalf("after second death: %s attempt %d", got.State, got.Attempt)
	}
	rv := e.gerrit.Reviews(ch.Change)
	if len(rv) != 1 || rv[0].Labels["Code-Review"] != -1 || !strings.Contains(rv[0].Message, "infrastructure failure") {
		t.Fatalf("reviews = %+v, want one -1 naming an infrastructure failure", rv)
	}
	// Silent workers are removed after 12 h; live ones stay.
	e.clock.Advance(12 * time.Hour)
	heartbeat("w3")
	e.run(controller.ReapDeadWorkers, nil)
	ws, _ := e.st.ListWorkers(e.ctx, time.Time{})
	if len(ws) != 1 || ws[0].ID != "w3" {
		t.Fatalf("workers after 12h: %+v", ws)
	}
}

func TestExpiredLogsAreDeleted(t *testing.T) {
	e := newEnv(t, baseConfig)
	e.twice = true
	now := e.clock.Now()
	old := model.JobID(now, "cls/1-1", "build")
	fresh := model.JobID(now, "cls/2-1", "build")
	if err := e.st.AppendLog(e.ctx, old, 0, []byte("old line\n"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := e.st.AppendLog(e.ctx, fresh, 0, []byte("fresh line\n"), now.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	e.run(controller.DeleteExpiredLogs, nil)
	e.drain()
	if b, _, _ := e.st.ReadLog(e.ctx, old, 0, 100); len(b) != 0 {
		t.Errorf("expired log still there: %q", b)
	}
	if b, _, _ := e.st.ReadLog(e.ctx, fresh, 0, 100); string(b) != "fresh line\n" {
		t.Errorf("fresh log = %q", b)
	}
}

// recMetrics records metric writes.
type recMetrics struct {
	mu  sync.Mutex
	obs map[string][]float64
	set map[string]float64
}

func (r *recMetrics) Set(_ context.Context, name string, _ map[string]string, v float64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set[name] = v
	return nil
}
func (r *recMetrics) Observe(_ context.Context, name string, _ map[string]string, v float64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs[name] = append(r.obs[name], v)
	return nil
}
func (r *recMetrics) Add(context.Context, string, map[string]string, float64) error { return nil }

func TestMetricsAreWrittenOnce(t *testing.T) {
	e := newEnv(t, baseConfig)
	m := &recMetrics{obs: map[string][]float64{}, set: map[string]float64{}}
	e.c = e.withMetrics(m)
	e.twice = true
	e.readyChange("x")
	e.readyChange("y")
	e.run(controller.UpdateQueueMetrics, nil)
	if m.set[metrics.QueueLen] != 6 {
		t.Errorf("queue len = %v, want 6", m.set[metrics.QueueLen])
	}
	e.finishAll()
	e.endAndVote()
	e.endAndVote()
	if n := len(m.obs[metrics.CLCompletionTime]); n != 2 {
		t.Errorf("%d completion times for 2 patchsets", n)
	}
	if n := len(m.obs[metrics.RunTime]); n != 6 {
		t.Errorf("%d run times for 6 jobs", n)
	}
	for _, v := range m.obs[metrics.RunTime] {
		if v != 60 {
			t.Errorf("run time %v, want 60s", v)
		}
	}
	e.run(controller.UpdateQueueMetrics, nil)
	if m.set[metrics.QueueLen] != 0 {
		t.Errorf("queue len after = %v", m.set[metrics.QueueLen])
	}
}
