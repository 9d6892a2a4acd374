package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/sandbox"
	"github.com/tollgate-ci/tollgate/core/worker"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
)

// TestMain lets a test start this test binary as `tollgate` in a real child
// process: with TOLLGATE_TEST_MAIN=1 it runs main() instead of the tests.
func TestMain(m *testing.M) {
	sandbox.Init()
	if os.Getenv("TOLLGATE_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// startWorkerProcess runs `tollgate worker` as a real process against url.
func startWorkerProcess(t *testing.T, url, id string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "worker", "--server", url, "--enroll-secret-env", "TG_PROC_SECRET",
		"--id", id, "--work-dir", t.TempDir(), "--grace", "1s")
	cmd.Env = append(os.Environ(), "TOLLGATE_TEST_MAIN=1", "TG_PROC_SECRET=s3cret")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// procEnv is a server on the embedded runtime with no built-in workers, a
// fake Gerrit with one approved change, and one job type that hangs on its
// first attempt on a patchset and passes otherwise (postsubmit jobs pass).
type procEnv struct {
	rt      *embedded
	g       *fakegerrit.Server
	change  int
	pidFile string
}

func newProcEnv(t *testing.T) *procEnv {
	t.Helper()
	g := fakegerrit.New(fakegerrit.Options{User: "bot", Password: "pw"})
	gurl, err := g.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	g.CreateBranch("p", "main", fakegerrit.CommitSpec{})
	ps, _ := g.CreateChange(fakegerrit.ChangeSpec{Project: "p", Branch: "main", Subject: "x", OwnerEmail: "dev@example.com"})
	g.SetVote(ps.Change, "lead@example.com", "Presubmit-Ready", 1)
	pidFile := filepath.Join(t.TempDir(), "job.pid")
	t.Setenv("TG_PROC_USER", "bot")
	t.Setenv("TG_PROC_PW", "pw")
	cfg, err := config.Parse(fmt.Appendf(nil, `
gerrit: {url: %s, project: p, user_env: TG_PROC_USER, password_env: TG_PROC_PW, poll_interval: 1s, full_reconcile_interval: 1h, max_qps: 100}
trust: {trusted_emails: '.*@example\.com'}
jobs:
  flaky:
    command: [sh, -c, 'if [ "$TOLLGATE_ATTEMPT" = 1 ] && [ -n "$TOLLGATE_CHANGE" ]; then echo $$ > %s; echo hanging; exec sleep 120; fi; echo "attempt $TOLLGATE_ATTEMPT passes"']
timeouts: {job: 10m, cl: 1h, worker_death: 10s}
`, gurl, pidFile))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := startEmbedded(context.Background(), embeddedOptions{Config: cfg, DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), EnrollSecret: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return &procEnv{rt: rt, g: g, change: ps.Change, pidFile: pidFile}
}

// job waits for the change's one job to satisfy cond and returns it.
func (e *procEnv) job(t *testing.T, d time.Duration, what string, cond func(*model.Job) bool) *model.Job {
	t.Helper()
	var j *model.Job
	deadline := time.Now().Add(d)
	for {
		_, jobs, err := e.rt.Store.GetPatchsetWithJobs(context.Background(), model.PatchsetID(e.change, 1))
		if err == nil && len(jobs) == 1 {
			j = jobs[0]
			if cond(j) {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job never %s within %s; last: %+v", what, d, j)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killJobProcess kills what the hanging first attempt left behind: when a
// worker's machine dies its jobs die with it, but here the job's process
// group would outlive the killed worker process.
func (e *procEnv) killJobProcess(t *testing.T) {
	b, err := os.ReadFile(e.pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	syscall.Kill(-pid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
}

// A worker process killed with SIGKILL mid-job: the job is BOT_DIED once,
// queued again, completed by another worker, and the vote still arrives.
func TestWorkerKilledMidJob(t *testing.T) {
	e := newProcEnv(t)
	url := "http://" + e.rt.Addr
	w1 := startWorkerProcess(t, url, "proc-1")
	e.job(t, 30*time.Second, "STARTED on proc-1 with its process up", func(j *model.Job) bool {
		_, err := os.Stat(e.pidFile)
		return j.State == model.Started && j.Worker == "proc-1" && err == nil
	})
	w1.Process.Signal(syscall.SIGKILL)
	w1.Wait()
	e.killJobProcess(t)
	// reap_dead_workers (every tick) notices after timeouts.worker_death.
	j := e.job(t, 40*time.Second, "queued again", func(j *model.Job) bool { return j.State == model.Queued && j.Attempt == 2 })
	if len(j.History) != 1 || j.History[0].State != model.BotDied || j.History[0].Worker != "proc-1" {
		t.Fatalf("history = %+v, want one BOT_DIED attempt on proc-1", j.History)
	}
	// Another worker (in-process this time) completes it.
	w, err := worker.New(worker.Options{Backend: e.rt.Fleet, ID: "local-2", WorkDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	e.job(t, 30*time.Second, "COMPLETED", func(j *model.Job) bool { return j.State == model.Completed && j.Worker == "local-2" })
	deadline := time.Now().Add(20 * time.Second)
	for len(e.g.Reviews(e.change)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no vote after the job completed on the second worker")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := e.g.Reviews(e.change); len(r) != 1 || r[0].Labels["Code-Review"] != 1 {
		t.Fatalf("reviews = %+v, want one +1", r)
	}
	log, _, _ := e.rt.Store.ReadLog(context.Background(), j.ID, 0, 1<<20)
	if !strings.Contains(string(log), "attempt 2 passes") {
		t.Errorf("log = %q", log)
	}
}

// SIGTERM to a worker process: its job ends INTERRUPTED after the grace
// period and is queued again; the process exits by itself.
func TestWorkerShutdownInterruptsAndRequeues(t *testing.T) {
	e := newProcEnv(t)
	w1 := startWorkerProcess(t, "http://"+e.rt.Addr, "proc-1")
	e.job(t, 30*time.Second, "STARTED on proc-1", func(j *model.Job) bool {
		_, err := os.Stat(e.pidFile)
		return j.State == model.Started && err == nil
	})
	b, _ := os.ReadFile(e.pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	w1.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- w1.Wait() }()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not exit within 20s of SIGTERM")
	}
	j := e.job(t, 10*time.Second, "queued again", func(j *model.Job) bool { return j.State == model.Queued && j.Attempt == 2 })
	if len(j.History) != 1 || j.History[0].State != model.Interrupted {
		t.Fatalf("history = %+v, want one INTERRUPTED attempt", j.History)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("the job's process %d survived the worker's shutdown", pid)
	}

}
