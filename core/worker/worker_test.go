//go:build unix

package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
)

// fakeFleet is an in-memory fleet.Backend: a queue of assignments, logs,
// artifacts and results, with hooks to inject errors. Like a real transport,
// every method fails once its ctx is done.
type fakeFleet struct {
	mu          sync.Mutex
	queue       []*fleet.Assignment
	calls       []string // "heartbeat", "claim"
	heartbeats  []fleet.Heartbeat
	denied      int // claims refused because of the quarantine
	logs        map[string][]byte
	appends     map[string]int // AppendLog calls per job
	gaps        int            // appends that were not contiguous
	artifacts   map[string]string
	results     map[string]fleet.Result
	finishes    []fleet.Result // every Finish call, refused ones included
	cancel      []string
	taken       map[string]bool // jobs no longer this worker's
	quarantined bool            // heartbeat replies say so
	denyClaims  bool            // Claim answers PermissionDenied
	replyHB     time.Duration   // the server-chosen intervals, if set
	replyPoll   time.Duration

	heartbeatErr func(n int) error
	claimErr     func(n int) error
	finishErr    func(n int) error
	// appendHook decides the fate of AppendLog call n (counting all jobs):
	// store the chunk or not, then return err.
	appendHook func(n int) (store bool, err error)
	nAppend    int
}

func newFake(as ...*fleet.Assignment) *fakeFleet {
	return &fakeFleet{queue: as, logs: map[string][]byte{}, appends: map[string]int{}, artifacts: map[string]string{},
		results: map[string]fleet.Result{}, taken: map[string]bool{}}
}

func ctxErr(ctx context.Context) error { return errs.Wrap(errs.Unavailable, "fake", ctx.Err()) }

func (f *fakeFleet) Heartbeat(ctx context.Context, hb fleet.Heartbeat) (*fleet.HeartbeatReply, error) {
	if ctx.Err() != nil {
		return nil, ctxErr(ctx)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "heartbeat")
	if f.heartbeatErr != nil {
		if err := f.heartbeatErr(len(f.heartbeats)); err != nil {
			f.heartbeats = append(f.heartbeats, fleet.Heartbeat{WorkerID: "(failed)"})
			return nil, err
		}
	}
	f.heartbeats = append(f.heartbeats, hb)
	r := &fleet.HeartbeatReply{Quarantined: f.quarantined, HeartbeatEvery: f.replyHB, PollEvery: f.replyPoll}
	if hb.CurrentJob != "" && slices.Contains(f.cancel, hb.CurrentJob) {
		r.Cancel = []string{hb.CurrentJob}
	}
	return r, nil
}

func (f *fakeFleet) Claim(ctx context.Context, workerID string) (*fleet.Assignment, error) {
	if ctx.Err() != nil {
		return nil, ctxErr(ctx)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "claim")
	if len(f.heartbeats) == 0 {
		return nil, errs.E(errs.FailedPrecondition, "fake.Claim", "no heartbeat yet")
	}
	if f.claimErr != nil {
		if err := f.claimErr(len(f.calls)); err != nil {
			return nil, err
		}
	}
	if f.denyClaims {
		f.denied++
		return nil, errs.E(errs.PermissionDenied, "fake.Claim", "quarantined")
	}
	if len(f.queue) == 0 {
		return nil, errs.E(errs.NotFound, "fake.Claim", "nothing queued")
	}
	a := f.queue[0]
	f.queue = f.queue[1:]
	return a, nil
}

func (f *fakeFleet) AppendLog(ctx context.Context, workerID, jobID string, off int64, data []byte) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.appends[jobID]++
	f.nAppend++
	if f.taken[jobID] {
		return errs.E(errs.FailedPrecondition, "fake.AppendLog", "job taken")
	}
	store, err := true, error(nil)
	if f.appendHook != nil {
		store, err = f.appendHook(f.nAppend)
	}
	if store {
		cur := f.logs[jobID]
		switch {
		case off == int64(len(cur)):
			f.logs[jobID] = append(cur, data...)
		case off+int64(len(data)) <= int64(len(cur)) && bytes.Equal(cur[off:off+int64(len(data))], data):
			// the same chunk again: a no-op
		default:
			f.gaps++
			return errs.E(errs.FailedPrecondition, "fake.AppendLog", "chunk at %d, log has %d bytes", off, len(cur))
		}
	}
	return err
}

func (f *fakeFleet) PutArtifact(ctx context.Context, workerID, jobID, name string, r io.Reader) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	if err := blob.ValidName(name); err != nil {
		return err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.taken[jobID] {
		return errs.E(errs.FailedPrecondition, "fake.PutArtifact", "job taken")
	}
	f.artifacts[jobID+"/"+name] = string(b)
	return nil
}

func (f *fakeFleet) Finish(ctx context.Context, r fleet.Result) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finishes = append(f.finishes, r)
	if f.finishErr != nil {
		if err := f.finishErr(len(f.finishes)); err != nil {
			return err
		}
	}
	if f.taken[r.JobID] {
		return errs.E(errs.FailedPrecondition, "fake.Finish", "job taken")
	}
	if old, ok := f.results[r.JobID]; ok && old.State != r.State {
		return errs.E(errs.FailedPrecondition, "fake.Finish", "already %s", old.State)
	}
	f.results[r.JobID] = r
	return nil
}

func (f *fakeFleet) result(id string) (fleet.Result, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.results[id]
	return r, ok
}

func (f *fakeFleet) log(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.logs[id])
}

func (f *fakeFleet) do(fn func(f *fakeFleet)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// assign returns an assignment running `sh -c script`.
func assign(typ, script string, timeout time.Duration) *fleet.Assignment {
	j := model.NewJob(t0, "cls/1234-5", typ, nil, false)
	j.State, j.Worker = model.Started, "w1"
	return &fleet.Assignment{Job: j, Command: []string{"sh", "-c", script}, Timeout: timeout,
		Env: map[string]string{"TOLLGATE_JOB_ID": j.ID, "JOB_VAR": "from the config"}}
}

// start runs a worker on f with test-sized intervals until the test ends.
// It returns the cancel of Run's ctx and a channel with Run's result.
func start(t *testing.T, f *fakeFleet, mod func(*Options)) (*Worker, context.CancelFunc, <-chan error) {
	t.Helper()
	o := Options{Backend: f, ID: "w1", Host: "host1", Version: "v1", Labels: map[string]string{"pool": "x"},
		WorkDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		KillGrace: 300 * time.Millisecond, LogFlushEvery: 20 * time.Millisecond,
		HeartbeatEvery: 50 * time.Millisecond, PollEvery: 10 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	w, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx)
		close(done) // a second receive (the cleanup's) does not block
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its ctx was cancelled")
		}
	})
	return w, cancel, done
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitResult(t *testing.T, f *fakeFleet, id string, d time.Duration) fleet.Result {
	t.Helper()
	var r fleet.Result
	eventually(t, d, func() bool { var ok bool; r, ok = f.result(id); return ok }, "the result of "+id)
	return r
}

// pidIn returns the number printed as "name=N" in the job's log, waiting for it.
func pidIn(t *testing.T, f *fakeFleet, id, name string) int {
	t.Helper()
	re := regexp.MustCompile(name + `=(\d+)\n`)
	var m []string
	eventually(t, 5*time.Second, func() bool { m = re.FindStringSubmatch(f.log(id)); return m != nil }, name+" in the log")
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// alive reports whether pid runs; a zombie (dead, not reaped yet) does not.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		f := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])
		return f[0][0] != 'Z' && f[0][0] != 'X'
	}
	if _, err := os.Stat("/proc/self/stat"); err == nil {
		return false
	}
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func code(r fleet.Result) string {
	if r.ExitCode == nil {
		return "nil"
	}
	return strconv.Itoa(*r.ExitCode)
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	ok := Options{Backend: newFake(), ID: "w1", WorkDir: t.TempDir()}
	for name, mod := range map[string]func(*Options){
		"no backend":  func(o *Options) { o.Backend = nil },
		"bad id":      func(o *Options) { o.ID = "../w" },
		"no work dir": func(o *Options) { o.WorkDir = "" },
	} {
		o := ok
		mod(&o)
		if _, err := New(o); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s: New = %v, want InvalidArgument", name, err)
		}
	}
	if _, err := New(ok); err != nil {
		t.Errorf("New(valid) = %v", err)
	}
}

// TestRunsJobs runs jobs that end in every ordinary way. PollEvery is an
// hour, so finishing them all proves the worker claims again at once after a job.
func TestRunsJobs(t *testing.T) {
	t.Parallel()
	notFound := assign("notfound", "", 0)
	notFound.Command = []string{"no-such-command-tollgate"}
	jobs := []struct {
		a          *fleet.Assignment
		state      model.State
		code, log  string
		logPattern string
	}{
		{a: assign("ok", "echo out1; echo err1 >&2; echo out2", 0), state: model.Completed, code: "0", log: "out1\nerr1\nout2\n"},
		{a: assign("fails", "echo failing; exit 3", 0), state: model.Failed, code: "3", log: "failing\n"},
		{a: notFound, state: model.Failed, code: "127", logPattern: `^\[tollgate\] cannot start the command: .*no-such-command-tollgate.* not found.*\n$`},
		{a: assign("signal", "kill -KILL $$", 0), state: model.Failed, code: "137"},
		{a: assign("midline", "printf 'no newline'; sleep 30 & exit 0", 0), state: model.Completed, code: "0",
			logPattern: `^no newline\n\[tollgate\] the command exited but left processes running: stopping them .*\n$`},
	}
	var as []*fleet.Assignment
	for _, j := range jobs {
		as = append(as, j.a)
	}
	f := newFake(as...)
	w, _, _ := start(t, f, func(o *Options) { o.PollEvery = time.Hour })
	for _, j := range jobs {
		id := j.a.Job.ID
		r := waitResult(t, f, id, 10*time.Second)
		if r.State != j.state || code(r) != j.code || r.WorkerID != "w1" {
			t.Errorf("%s: ended %s with exit code %s by %q, want %s with %s by w1", j.a.Job.Type, r.State, code(r), r.WorkerID, j.state, j.code)
		}
		got := f.log(id)
		if j.log != "" && got != j.log {
			t.Errorf("%s: log %q, want %q", j.a.Job.Type, got, j.log)
		}
		if j.logPattern != "" && !regexp.MustCompile(j.logPattern).MatchString(got) {
			t.Errorf("%s: log %q does not match %q", j.a.Job.Type, got, j.logPattern)
		}
	}
	f.do(func(f *fakeFleet) {
		if f.calls[0] != "heartbeat" {
			t.Errorf("first call %q, want heartbeat", f.calls[0])
		}
		hb := f.heartbeats[0]
		if hb.WorkerID != "w1" || hb.Host != "host1" || hb.Version != "v1" || hb.Labels["pool"] != "x" || hb.Labels[SandboxLabel] != "none" {
			t.Errorf("heartbeat %+v lacks the worker's id, host, version or labels", hb)
		}
	})
	eventually(t, 5*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.cur == nil }, "the worker to be idle")
	if left, _ := os.ReadDir(w.workDir); len(left) != 0 {
		t.Errorf("work dirs left behind: %v", left)
	}
}

// TestEnv: the job gets BaseEnv, its own env and the TOLLGATE_* variables
// in a fresh work dir, and never the worker's environment.
func TestEnv(t *testing.T) {
	t.Setenv("TOLLGATE_WORKER_TOKEN", "secret")
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			a := assign("env", `env; echo "cwd=$(pwd)"; ls -a ..; echo kept > "$TOLLGATE_ARTIFACTS_DIR/../kept"`, 0)
			f := newFake(a)
			w, _, _ := start(t, f, func(o *Options) { o.KeepWorkDirs = keep })
			if r := waitResult(t, f, a.Job.ID, 10*time.Second); r.State != model.Completed {
				t.Fatalf("ended %s, log:\n%s", r.State, f.log(a.Job.ID))
			}
			dir := filepath.Join(w.workDir, a.Job.ID+"-a1")
			env := map[string]string{}
			for _, line := range strings.Split(f.log(a.Job.ID), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					env[k] = v
				}
			}
			want := map[string]string{
				"PATH":                   "/usr/local/bin:/usr/bin:/bin",
				"HOME":                   filepath.Join(dir, ".home"),
				"TMPDIR":                 filepath.Join(dir, ".tmp"),
				"LANG":                   "C.UTF-8",
				"TOLLGATE_JOB_ID":        a.Job.ID,
				"JOB_VAR":                "from the config",
				"TOLLGATE_WORK_DIR":      dir,
				"TOLLGATE_SRC_DIR":       filepath.Join(dir, "src"),
				"TOLLGATE_ARTIFACTS_DIR": filepath.Join(dir, "artifacts"),
				"cwd":                    filepath.Join(dir, "src"),
			}
			for k, v := range want {
				if env[k] != v {
					t.Errorf("%s=%q, want %q", k, env[k], v)
				}
			}
			if os.Getenv("TOLLGATE_WORKER_TOKEN") != "secret" {
				t.Fatal("the test's own environment is not set up")
			}
			if v, ok := env["TOLLGATE_WORKER_TOKEN"]; ok {
				t.Errorf("the worker's secret reached the job: TOLLGATE_WORKER_TOKEN=%q", v)
			}
			for k := range env {
				_, expected := want[k]
				if !expected && !slices.Contains([]string{"PWD", "OLDPWD", "SHLVL", "_"}, k) { // set by sh
					t.Errorf("unexpected variable %s=%q in the job's environment", k, env[k])
				}
			}
			if !strings.Contains(f.log(a.Job.ID), "\nartifacts\n") {
				t.Errorf("no artifacts dir in the work dir: %s", f.log(a.Job.ID))
			}
			eventually(t, 5*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.cur == nil }, "the worker to be idle")
			_, err := os.Stat(filepath.Join(dir, "kept"))
			if keep && err != nil {
				t.Errorf("KeepWorkDirs: %v", err)
			}
			if !keep && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("work dir not removed: stat = %v", err)
			}
		})
	}
}

// TestTimeoutKillsGroup: past its timeout a job's whole process group is
// stopped, with SIGKILL for processes that ignore SIGTERM.
func TestTimeoutKillsGroup(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, script string
		sigkill      bool
	}{
		{"exits on SIGTERM", `echo main=$$; sleep 30 & echo child=$!; wait`, false},
		{"ignores SIGTERM", `trap "" TERM; echo main=$$; sleep 30 & echo child=$!; wait`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := assign("timeout", tc.script, 300*time.Millisecond)
			f := newFake(a)
			start(t, f, nil)
			main, child := pidIn(t, f, a.Job.ID, "main"), pidIn(t, f, a.Job.ID, "child")
			r := waitResult(t, f, a.Job.ID, 10*time.Second)
			if r.State != model.TimedOut {
				t.Errorf("ended %s, want TIMED_OUT", r.State)
			}
			if alive(main) || alive(child) {
				t.Errorf("after the job ended: main %d alive %v, grandchild %d alive %v", main, alive(main), child, alive(child))
			}
			log := f.log(a.Job.ID)
			if !strings.Contains(log, "\n[tollgate] timed out after 300ms: stopping the job") {
				t.Errorf("log lacks the timeout line:\n%s", log)
			}
			if got := strings.Contains(log, "sent SIGKILL"); got != tc.sigkill {
				t.Errorf("SIGKILL sent: %v, want %v; log:\n%s", got, tc.sigkill, log)
			}
		})
	}
}

// TestCancelViaHeartbeat: a cancel in a heartbeat reply stops the job within
// about one heartbeat interval, the server's (50ms), not the worker's (1h).
func TestCancelViaHeartbeat(t *testing.T) {
	t.Parallel()
	a := assign("cancel", `echo main=$$; sleep 30 & echo child=$!; wait`, 0)
	f := newFake(a)
	f.replyHB = 50 * time.Millisecond
	start(t, f, func(o *Options) { o.HeartbeatEvery = time.Hour })
	main, child := pidIn(t, f, a.Job.ID, "main"), pidIn(t, f, a.Job.ID, "child")
	at := time.Now()
	f.do(func(f *fakeFleet) { f.cancel = append(f.cancel, a.Job.ID) })
	r := waitResult(t, f, a.Job.ID, 5*time.Second)
	if took := time.Since(at); took > 2*time.Second {
		t.Errorf("cancel took %v", took)
	}
	if r.State != model.Cancelled {
		t.Errorf("ended %s, want CANCELLED", r.State)
	}
	if alive(main) || alive(child) {
		t.Errorf("cancelled job still runs: main %v, grandchild %v", alive(main), alive(child))
	}
	if log := f.log(a.Job.ID); !strings.Contains(log, "[tollgate] cancelled by the server: stopping the job") {
		t.Errorf("log lacks the cancel line:\n%s", log)
	}
	f.do(func(f *fakeFleet) {
		if !slices.ContainsFunc(f.heartbeats, func(hb fleet.Heartbeat) bool { return hb.CurrentJob == a.Job.ID }) {
			t.Error("no heartbeat reported the running job")
		}
	})
}

// TestJobTakenAway: when AppendLog says the job is no longer the worker's,
// the worker stops it and goes on with the next job.
func TestJobTakenAway(t *testing.T) {
	t.Parallel()
	a := assign("taken", `echo main=$$; while :; do echo tick; sleep 0.02; done`, 0)
	next := assign("next", "echo next", 0)
	f := newFake(a, next)
	start(t, f, nil)
	main := pidIn(t, f, a.Job.ID, "main")
	f.do(func(f *fakeFleet) { f.taken[a.Job.ID] = true })
	if r := waitResult(t, f, next.Job.ID, 10*time.Second); r.State != model.Completed {
		t.Errorf("next job ended %s", r.State)
	}
	if alive(main) {
		t.Error("the taken job still runs")
	}
	f.do(func(f *fakeFleet) {
		if i := slices.IndexFunc(f.finishes, func(r fleet.Result) bool { return r.JobID == a.Job.ID }); i < 0 || f.finishes[i].State != model.Cancelled {
			t.Errorf("finishes %+v: want the taken job confirmed CANCELLED", f.finishes)
		}
	})
}

// TestShutdownInterrupts: cancelling Run's ctx stops the running job,
// reports it INTERRUPTED with its whole log (on a ctx that is not the
// cancelled one), and returns.
func TestShutdownInterrupts(t *testing.T) {
	t.Parallel()
	a := assign("shutdown", `trap 'echo got TERM; exit 1' TERM; echo main=$$; sleep 30 & echo child=$!; wait`, 0)
	f := newFake(a)
	_, cancel, done := start(t, f, nil)
	main, child := pidIn(t, f, a.Job.ID, "main"), pidIn(t, f, a.Job.ID, "child")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	r, ok := f.result(a.Job.ID)
	if !ok || r.State != model.Interrupted {
		t.Fatalf("result %+v (recorded %v), want INTERRUPTED", r, ok)
	}
	if alive(main) || alive(child) {
		t.Errorf("interrupted job still runs: main %v, grandchild %v", alive(main), alive(child))
	}
	log := f.log(a.Job.ID)
	if !strings.HasSuffix(log, "[tollgate] the worker is shutting down: stopping the job (SIGTERM, then SIGKILL after 300ms)\ngot TERM\n") {
		t.Errorf("log incomplete:\n%s", log)
	}
}

// TestTimeoutWhileLogBackedUp: with the Backend refusing every append and
// the job printing far more than the worker buffers, the timeout still stops
// the job; once appends work again, however late, the whole log arrives.
func TestTimeoutWhileLogBackedUp(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	a := assign("backedup", `echo $$ > "$PIDFILE"; exec yes`, time.Second)
	a.Env["PIDFILE"] = pidFile
	f := newFake(a)
	down := true
	f.appendHook = func(int) (bool, error) {
		if down {
			return false, errs.E(errs.Unavailable, "fake", "down")
		}
		return true, nil
	}
	start(t, f, nil)
	var pid int
	eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	}, "the pid file")
	eventually(t, 5*time.Second, func() bool { return !alive(pid) }, "the timed-out job to be stopped")
	// Stay down past the time after which a pipe held by a stray process
	// is given up: a backed-up log must not be mistaken for one.
	time.Sleep(pipeDrainTimeout + 500*time.Millisecond)
	f.do(func(f *fakeFleet) { down = false })
	r := waitResult(t, f, a.Job.ID, 15*time.Second)
	if r.State != model.TimedOut {
		t.Errorf("ended %s, want TIMED_OUT", r.State)
	}
	log := f.log(a.Job.ID)
	if len(log) < maxPending {
		t.Errorf("log of %d bytes, want at least the %d buffered", len(log), maxPending)
	}
	var worker []string
	for _, line := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		if line != "y" {
			worker = append(worker, line)
		}
	}
	if len(worker) != 1 || !strings.HasPrefix(worker[0], "[tollgate] timed out after 1s") {
		t.Errorf("lines other than the job's: %q, want only the timeout line", worker)
	}
	f.do(func(f *fakeFleet) {
		if f.gaps != 0 {
			t.Errorf("%d appends left a gap", f.gaps)
		}
	})
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintln(&b, i)
	}
	return b.String()
}

// TestLogs: the log arrives complete and in order, in contiguous chunks,
// even when appends fail before or after storing their chunk.
func TestLogs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		n    int // lines of seq output
		hook func(n int) (bool, error)
	}{
		{"1 MiB", 200000, nil}, // 1.2 MB
		{"transient failures", 50000, func(n int) (bool, error) {
			switch n % 4 {
			case 1:
				return false, errs.E(errs.Unavailable, "fake", "lost on the way")
			case 2:
				return true, errors.New("connection reset after storing")
			}
			return true, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := assign("logs", fmt.Sprintf("seq 1 %d; echo done >&2", tc.n), 0)
			f := newFake(a)
			f.appendHook = tc.hook
			start(t, f, nil)
			if r := waitResult(t, f, a.Job.ID, 15*time.Second); r.State != model.Completed {
				t.Errorf("ended %s", r.State)
			}
			want := seqOutput(tc.n) + "done\n"
			if got := f.log(a.Job.ID); got != want {
				i := 0
				for i < len(got) && i < len(want) && got[i] == want[i] {
					i++
				}
				t.Errorf("log of %d bytes, want %d; first difference at byte %d", len(got), len(want), i)
			}
			f.do(func(f *fakeFleet) {
				if f.gaps != 0 {
					t.Errorf("%d appends left a gap or overlapped", f.gaps)
				}
				if min := len(want) / maxChunk; f.appends[a.Job.ID] <= min {
					t.Errorf("%d appends for %d bytes", f.appends[a.Job.ID], len(want))
				}
			})
		})
	}
}

// TestArtifacts: regular files are uploaded under their relative paths;
// symlinks leaving the directory, non-regular files and invalid names are
// skipped with a log line.
func TestArtifacts(t *testing.T) {
	t.Parallel()
	a := assign("artifacts", `set -e
cd "$TOLLGATE_ARTIFACTS_DIR"
mkdir -p sub/dir
echo top > a.txt
echo nested > sub/dir/b.txt
ln -s a.txt inside
ln -s /etc/hostname escape
echo secret > ../secret
ln -s ../secret up
ln -s sub subdir-link
mkfifo fifo
echo x > 'back\slash'
`, 0)
	f := newFake(a)
	start(t, f, nil)
	if r := waitResult(t, f, a.Job.ID, 10*time.Second); r.State != model.Completed {
		t.Fatalf("ended %s; log:\n%s", r.State, f.log(a.Job.ID))
	}
	id := a.Job.ID
	want := map[string]string{id + "/a.txt": "top\n", id + "/sub/dir/b.txt": "nested\n", id + "/inside": "top\n"}
	f.do(func(f *fakeFleet) {
		if !maps.Equal(f.artifacts, want) {
			t.Errorf("artifacts %q, want %q", f.artifacts, want)
		}
	})
	log := f.log(id)
	for _, name := range []string{"escape", "up", "subdir-link", "fifo", `back\slash`} {
		if !strings.Contains(log, "[tollgate] artifact "+name+" skipped: ") {
			t.Errorf("no skip line for %s in the log:\n%s", name, log)
		}
	}
}

// TestQuarantined: a quarantined worker keeps heartbeating and claims
// nothing: not at all while heartbeat replies say it is quarantined, and
// at most once per heartbeat (not every poll) while only Claim refuses it.
func TestQuarantined(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		reply     bool // the heartbeat reply says quarantined
		maxClaims func(heartbeats int) int
	}{
		{"reported by heartbeat", true, func(int) int { return 0 }},
		{"claim refused", false, func(hbs int) int { return hbs }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := assign("quarantine", "echo ran", 0)
			f := newFake(a)
			f.quarantined, f.denyClaims = tc.reply, true
			start(t, f, func(o *Options) { o.PollEvery = time.Millisecond })
			eventually(t, 5*time.Second, func() bool { var n int; f.do(func(f *fakeFleet) { n = len(f.heartbeats) }); return n >= 6 }, "6 heartbeats")
			f.do(func(f *fakeFleet) {
				if max := tc.maxClaims(len(f.heartbeats)); f.denied > max {
					t.Errorf("%d claims during %d heartbeats, want at most %d", f.denied, len(f.heartbeats), max)
				}
				f.quarantined, f.denyClaims = false, false
			})
			if r := waitResult(t, f, a.Job.ID, 5*time.Second); r.State != model.Completed {
				t.Errorf("after the quarantine the job ended %s", r.State)
			}
		})
	}
}

// TestEscapedProcessHoldsPipe: a process that left the job's process group
// but holds its output open does not keep the job from ending.
func TestEscapedProcessHoldsPipe(t *testing.T) {
	t.Parallel()
	a := assign("escaped", `setsid sh -c 'touch escaped; exec sleep 30' & echo escaped=$!
while [ ! -e escaped ]; do sleep 0.01; done; echo bye`, 0)
	f := newFake(a)
	start(t, f, nil)
	pid := pidIn(t, f, a.Job.ID, "escaped")
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	r := waitResult(t, f, a.Job.ID, 10*time.Second)
	if r.State != model.Completed {
		t.Errorf("ended %s", r.State)
	}
	if log := f.log(a.Job.ID); !strings.HasSuffix(log, "bye\n[tollgate] the output is still held open by a process outside the job's process group: stopped reading it\n") {
		t.Errorf("log:\n%s", log)
	}
}

// TestTransientBackendErrors: failing heartbeats, claims and finishes are
// retried; the worker keeps going.
func TestTransientBackendErrors(t *testing.T) {
	t.Parallel()
	a := assign("flaky", "echo ok", 0)
	f := newFake(a)
	f.heartbeatErr = func(n int) error {
		if n < 3 {
			return errs.E(errs.Unavailable, "fake", "down")
		}
		return nil
	}
	f.claimErr = func(n int) error {
		if n < 8 {
			return errors.New("unknown trouble")
		}
		return nil
	}
	f.finishErr = func(n int) error {
		if n < 3 {
			return errs.E(errs.Unavailable, "fake", "down")
		}
		return nil
	}
	_, _, done := start(t, f, nil)
	if r := waitResult(t, f, a.Job.ID, 10*time.Second); r.State != model.Completed || f.log(a.Job.ID) != "ok\n" {
		t.Errorf("ended %s with log %q", r.State, f.log(a.Job.ID))
	}
	select {
	case err := <-done:
		t.Errorf("Run returned %v", err)
	default:
	}
}

// TestFirstHeartbeatRefused: a worker the server refuses for good does not start.
func TestFirstHeartbeatRefused(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.heartbeatErr = func(int) error { return errs.E(errs.InvalidArgument, "fake", "bad labels") }
	w, err := New(Options{Backend: f, ID: "w1", WorkDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Run(t.Context()); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("Run = %v, want InvalidArgument", err)
	}
}

func TestJitterAndBackoff(t *testing.T) {
	t.Parallel()
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := jitter(time.Second)
		if d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("jitter(1s) = %v, want within ±20%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("jitter gave only %d distinct values", len(seen))
	}
	bo := backoff{min: 100 * time.Millisecond, max: time.Second}
	var last time.Duration
	for range 10 {
		last = bo.next()
	}
	if last < 800*time.Millisecond || last > 1200*time.Millisecond {
		t.Errorf("backoff after 10 tries = %v, want about its max 1s", last)
	}
	bo.reset()
	if d := bo.next(); d > 120*time.Millisecond {
		t.Errorf("backoff after reset = %v, want about 100ms", d)
	}
}
