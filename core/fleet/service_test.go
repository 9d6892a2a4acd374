package fleet_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/fsblob"
	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/tasks/taskstest"
)

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

type env struct {
	ctx   context.Context
	st    *sqlite.Store
	blobs *fsblob.Bucket
	tq    *taskstest.Recorder
	clock *clock.Fake
	svc   *fleet.Service
	cfg   *config.Config
}

func newEnv(t *testing.T) *env { return newEnvB(t) }

func newEnvB(t testing.TB) *env {
	t.Helper()
	cfg, err := config.Parse([]byte(`
gerrit: {url: "http://gerrit.invalid", project: p}
trust: {trusted_emails: '.*'}
jobs:
  build: {command: [make, all], env: {CC: clang}, timeout: 20m}
  build2: {command: [make]}
  build3: {command: [make]}
  build4: {command: [make]}
  test: {command: [make, test]}
logs_ttl: 2d
`))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b, err := fsblob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{ctx: context.Background(), st: st, blobs: b, tq: &taskstest.Recorder{}, clock: clock.NewFake(t0), cfg: cfg}
	e.svc, err = fleet.NewService(fleet.Options{Config: cfg, Store: st, Tasks: e.tq, Blobs: b, Clock: e.clock, MaxArtifactBytes: 1 << 20,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func queueB(t testing.TB, e *env, cl int) {
	e.queue(t, cl, "build", "build2", "build3", "build4", "test")
}

// queue creates patchset cl-1 with one job per type.
func (e *env) queue(t testing.TB, cl int, types ...string) []*model.Job {
	t.Helper()
	if len(types) == 0 {
		types = []string{"build", "test"}
	}
	ps := &model.Patchset{ID: model.PatchsetID(cl, 1), Change: cl, Patchset: 1, TimeQueued: e.clock.Now()}
	var jobs []*model.Job
	for _, typ := range types {
		j := model.NewJob(e.clock.Now(), ps.Src(), typ, map[string]string{"TOLLGATE_GIT_REF": "refs/changes/01/1/1", "CC": "clang"}, false)
		jobs = append(jobs, j)
		ps.JobIDs = append(ps.JobIDs, j.ID)
	}
	if err := e.st.CreatePatchset(e.ctx, ps, jobs); err != nil {
		t.Fatal(err)
	}
	return jobs
}

func (e *env) hb(t *testing.T, id, current string) *fleet.HeartbeatReply {
	t.Helper()
	r, err := e.svc.Heartbeat(e.ctx, fleet.Heartbeat{WorkerID: id, Host: "host1", Version: "v1", CurrentJob: current})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestClaimRunFinish(t *testing.T) {
	e := newEnv(t)
	jobs := e.queue(t, 7)
	if _, err := e.svc.Claim(e.ctx, "w1"); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("claim before any heartbeat: %v", err)
	}
	e.hb(t, "w1", "")
	a, err := e.svc.Claim(e.ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Job.ID != jobs[0].ID || a.Job.State != model.Started || a.Timeout != 20*time.Minute ||
		strings.Join(a.Command, " ") != "make all" {
		t.Fatalf("assignment = %+v", a)
	}
	for k, v := range map[string]string{"CC": "clang", "TOLLGATE_JOB_ID": a.Job.ID, "TOLLGATE_CHANGE": "7",
		"TOLLGATE_PATCHSET": "1", "TOLLGATE_GIT_REF": "refs/changes/01/1/1", "TOLLGATE_ATTEMPT": "1"} {
		if a.Env[k] != v {
			t.Errorf("env %s = %q, want %q", k, a.Env[k], v)
		}
	}
	if err := e.svc.AppendLog(e.ctx, "w1", a.Job.ID, 0, []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.PutArtifact(e.ctx, "w1", a.Job.ID, "out/report.html", strings.NewReader("<p>ok</p>")); err != nil {
		t.Fatal(err)
	}
	code := 0
	res := fleet.Result{WorkerID: "w1", JobID: a.Job.ID, State: model.Completed, ExitCode: &code}
	for i := 0; i < 2; i++ { // a retried Finish is a no-op
		if err := e.svc.Finish(e.ctx, res); err != nil {
			t.Fatalf("finish #%d: %v", i+1, err)
		}
	}
	j, _ := e.st.GetJob(e.ctx, a.Job.ID)
	if j.State != model.Completed || *j.ExitCode != 0 {
		t.Fatalf("job = %+v", j)
	}
	if n := e.tq.Count(controller.CheckPendingCL); n != 1 {
		t.Errorf("check_pending_cl deferred %d times, want once at once", n)
	}
	data, size, _ := e.st.ReadLog(e.ctx, a.Job.ID, 0, 100)
	if string(data) != "hello\n" || size != 6 {
		t.Errorf("log = %q", data)
	}
	if b, err := blob.ReadAll(e.ctx, e.blobs, fleet.ArtifactPrefix(a.Job.ID)+"out/report.html"); err != nil || string(b) != "<p>ok</p>" {
		t.Errorf("artifact = %q, %v", b, err)
	}
	if expired, _ := e.st.ListExpiredLogs(e.ctx, t0.Add(49*time.Hour), 10); len(expired) != 1 {
		t.Errorf("log not expiring after logs_ttl: %v", expired)
	}
	// Another worker cannot finish, log or upload for it.
	e.hb(t, "w2", "")
	if err := e.svc.Finish(e.ctx, fleet.Result{WorkerID: "w2", JobID: a.Job.ID, State: model.Failed}); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("finish by another worker: %v", err)
	}
	if err := e.svc.AppendLog(e.ctx, "w2", a.Job.ID, 6, []byte("x")); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("log by another worker: %v", err)
	}
}

func TestBadInputIsRefusedAndWritesNothing(t *testing.T) {
	e := newEnv(t)
	e.queue(t, 1)
	e.hb(t, "w1", "")
	a, _ := e.svc.Claim(e.ctx, "w1")
	for _, name := range []string{"../escape", "/abs", "a//b", "a/../../b", ""} {
		if err := e.svc.PutArtifact(e.ctx, "w1", a.Job.ID, name, strings.NewReader("x")); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("artifact %q: %v", name, err)
		}
	}
	big := bytes.NewReader(make([]byte, 2<<20))
	if err := e.svc.PutArtifact(e.ctx, "w1", a.Job.ID, "big.bin", big); !errs.Is(err, errs.ResourceExhausted) {
		t.Errorf("oversized artifact: %v", err)
	}
	if list, _, _ := e.blobs.List(e.ctx, "", 100, ""); len(list) != 0 {
		t.Errorf("refused uploads left %d objects", len(list))
	}
	if err := e.svc.AppendLog(e.ctx, "w1", a.Job.ID, 0, make([]byte, 2<<20)); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("oversized log chunk: %v", err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"bad worker id", func() error { _, err := e.svc.Heartbeat(e.ctx, fleet.Heartbeat{WorkerID: "../w"}); return err }()},
		{"bad job id", e.svc.AppendLog(e.ctx, "w1", "../../etc/passwd", 0, []byte("x"))},
		{"unknown job", e.svc.Finish(e.ctx, fleet.Result{WorkerID: "w1", JobID: model.JobID(t0, "cls/9-9", "build"), State: model.Completed})},
		{"bad state", e.svc.Finish(e.ctx, fleet.Result{WorkerID: "w1", JobID: a.Job.ID, State: model.BotDied})},
	} {
		if code := errs.CodeOf(tc.err); code != errs.InvalidArgument && code != errs.NotFound {
			t.Errorf("%s: %v", tc.name, tc.err)
		}
	}
	if data, _, _ := e.st.ReadLog(e.ctx, a.Job.ID, 0, 10); len(data) != 0 {
		t.Errorf("refused log chunk written: %q", data)
	}
	if j, _ := e.st.GetJob(e.ctx, a.Job.ID); j.State != model.Started {
		t.Errorf("job changed by refused calls: %s", j.State)
	}
}

func TestHeartbeatCarriesCancellationAndQuarantine(t *testing.T) {
	e := newEnv(t)
	e.queue(t, 1)
	e.hb(t, "w1", "")
	a, _ := e.svc.Claim(e.ctx, "w1")
	if r := e.hb(t, "w1", a.Job.ID); len(r.Cancel) != 0 || r.HeartbeatEvery != 10*time.Second {
		t.Fatalf("reply = %+v", r)
	}
	if _, err := e.st.UpdateJob(e.ctx, a.Job.ID, model.Transition{Kind: model.Cancel, Reason: "new patchset", Now: t0}); err != nil {
		t.Fatal(err)
	}
	if r := e.hb(t, "w1", a.Job.ID); len(r.Cancel) != 1 || r.Cancel[0] != a.Job.ID {
		t.Fatalf("cancelled job not in the reply: %+v", r)
	}
	// The worker confirms the cancel: a no-op, not an error.
	if err := e.svc.Finish(e.ctx, fleet.Result{WorkerID: "w1", JobID: a.Job.ID, State: model.Cancelled}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.SetWorkerQuarantined(e.ctx, "w1", true); err != nil {
		t.Fatal(err)
	}
	if r := e.hb(t, "w1", ""); !r.Quarantined {
		t.Error("heartbeat lost the quarantine")
	}
	if _, err := e.svc.Claim(e.ctx, "w1"); !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("quarantined worker claimed: %v", err)
	}
}

func TestInterruptedIsRequeuedOnce(t *testing.T) {
	e := newEnv(t)
	e.queue(t, 1, "build")
	e.hb(t, "w1", "")
	a, _ := e.svc.Claim(e.ctx, "w1")
	if err := e.svc.Finish(e.ctx, fleet.Result{WorkerID: "w1", JobID: a.Job.ID, State: model.Interrupted}); err != nil {
		t.Fatal(err)
	}
	b, err := e.svc.Claim(e.ctx, "w1")
	if err != nil || b.Job.ID != a.Job.ID || b.Job.Attempt != 2 || b.Env["TOLLGATE_ATTEMPT"] != "2" {
		t.Fatalf("requeued claim = %+v, %v", b, err)
	}
	if e.tq.Count("") != 0 {
		t.Error("a requeued job must not trigger the patchset check")
	}
	e.svc.Finish(e.ctx, fleet.Result{WorkerID: "w1", JobID: a.Job.ID, State: model.Interrupted})
	if j, _ := e.st.GetJob(e.ctx, a.Job.ID); j.State != model.Interrupted {
		t.Fatalf("second interruption: %s, want final INTERRUPTED", j.State)
	}
}

func TestRestartedWorkerReleasesForgottenJob(t *testing.T) {
	e := newEnv(t)
	e.queue(t, 1, "build")
	e.hb(t, "w1", "")
	a, _ := e.svc.Claim(e.ctx, "w1")
	e.clock.Advance(5 * time.Second)
	e.hb(t, "w1", "") // a claim racing a heartbeat is not an orphan yet
	if j, _ := e.st.GetJob(e.ctx, a.Job.ID); j.State != model.Started {
		t.Fatalf("released a fresh claim: %s", j.State)
	}
	e.clock.Advance(time.Minute)
	e.hb(t, "w1", "") // the worker restarted and runs nothing
	if j, _ := e.st.GetJob(e.ctx, a.Job.ID); j.State != model.Queued || j.Attempt != 2 {
		t.Fatalf("forgotten job: %s attempt %d, want QUEUED again", j.State, j.Attempt)
	}
}

func TestRemovedJobTypeFailsAndNextIsClaimed(t *testing.T) {
	e := newEnv(t)
	jobs := e.queue(t, 1, "archived", "build")
	e.hb(t, "w1", "")
	a, err := e.svc.Claim(e.ctx, "w1")
	if err != nil || a.Job.Type != "build" {
		t.Fatalf("claim = %+v, %v", a, err)
	}
	if j, _ := e.st.GetJob(e.ctx, jobs[0].ID); j.State != model.Failed || !strings.Contains(j.Reason, "no longer configured") {
		t.Fatalf("job of a removed type: %s %q", j.State, j.Reason)
	}
}

// 32 workers drain 10,000 jobs: every job runs exactly once.
func TestContention(t *testing.T) {
	if testing.Short() {
		t.Skip("contention test skipped in -short")
	}
	e := newEnv(t)
	const changes, perChange, workers = 2000, 5, 32
	var types []string
	for i := 0; i < perChange; i++ {
		types = append(types, "build")
	}
	for cl := 1; cl <= changes; cl++ {
		ps := &model.Patchset{ID: model.PatchsetID(cl, 1), Change: cl, Patchset: 1, TimeQueued: t0}
		var jobs []*model.Job
		for i := 0; i < perChange; i++ {
			j := model.NewJob(t0, ps.Src(), fmt.Sprintf("build%d", i), nil, false)
			j.Type = "build"
			jobs = append(jobs, j)
			ps.JobIDs = append(ps.JobIDs, j.ID)
		}
		if err := e.st.CreatePatchset(e.ctx, ps, jobs); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	ran := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		id := fmt.Sprintf("w%02d", w)
		e.hb(t, id, "")
		wg.Go(func() {
			for {
				a, err := e.svc.Claim(e.ctx, id)
				if errs.Is(err, errs.NotFound) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ran[a.Job.ID]++
				mu.Unlock()
				code := 0
				if err := e.svc.Finish(e.ctx, fleet.Result{WorkerID: id, JobID: a.Job.ID, State: model.Completed, ExitCode: &code}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(ran) != changes*perChange {
		t.Fatalf("%d distinct jobs ran, want %d", len(ran), changes*perChange)
	}
	for id, n := range ran {
		if n != 1 {
			t.Fatalf("job %s ran %d times", id, n)
		}
	}
	if c, _ := e.st.CountJobs(e.ctx, model.Completed); c[model.Completed] != changes*perChange {
		t.Fatalf("completed = %d", c[model.Completed])
	}
}

func TestStaleCancelConfirmationCannotTouchAnotherWorkersJob(t *testing.T) {
	e := newEnv(t)
	e.queue(t, 1, "build")
	e.hb(t, "w1", "")
	e.hb(t, "w2", "")
	a, _ := e.svc.Claim(e.ctx, "w1")
	// w1 is shut down: the job is queued again and w2 takes it.
	if err := e.svc.Finish(e.ctx, fleet.Result{WorkerID: "w1", JobID: a.Job.ID, State: model.Interrupted}); err != nil {
		t.Fatal(err)
	}
	if b, err := e.svc.Claim(e.ctx, "w2"); err != nil || b.Job.ID != a.Job.ID {
		t.Fatalf("w2 claim: %+v %v", b, err)
	}
	if err := e.svc.Finish(e.ctx, fleet.Result{WorkerID: "w1", JobID: a.Job.ID, State: model.Cancelled}); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("w1 cancelling w2's job: %v", err)
	}
	if j, _ := e.st.GetJob(e.ctx, a.Job.ID); j.State != model.Started || j.Worker != "w2" {
		t.Fatalf("job = %s on %s, want STARTED on w2", j.State, j.Worker)
	}
}
