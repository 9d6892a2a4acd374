package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/emulators/gcloud"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
	"github.com/tollgate-ci/tollgate/emulators/proctree"
)

var (
	binDir    string
	buildOnce sync.Once
	bin       string
	buildErr  error
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "tollgate-launcher-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// requireGcloud skips the test without the gcloud CLI, unless CI=true:
// then its absence fails the test.
func requireGcloud(t *testing.T) {
	t.Helper()
	if gcloud.Available() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: " + gcloud.ErrNoCLI.Error())
	}
	t.Skip("skipping: " + gcloud.ErrNoCLI.Error())
}

// tollgate builds the tollgate command once per test binary.
func tollgate(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		bin, buildErr = BuildTollgate(ctx, binDir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig watches project p on the fake Gerrit, with two quick jobs.
const testConfig = `
gerrit:
  url: ${GERRIT_URL}
  project: p
  user_env: TG_LAUNCHER_GERRIT_USER
  password_env: TG_LAUNCHER_GERRIT_PASSWORD
  poll_interval: 1s
trust: {trusted_emails: '.*@example\.com'}
vote: {ui_url: '${API_URL}'}
jobs:
  build: {command: [sh, -c, "echo building $TOLLGATE_CHANGE"]}
  test: {command: [sh, -c, "echo testing"]}
tasks: {max_attempts: 3}
ui: {users: ["*"]}
`

// TestTopology starts the whole topology (two instances per function,
// one worker) and checks, in order: a trusted change marked ready is
// voted on through the production path (scheduler tick, Pub/Sub pushes
// through the balancers to the functions, Firestore, the worker, the
// review on the fake Gerrit); a function instance killed with SIGKILL is
// restarted and serves again; Stop leaves nothing listening and no
// process alive.
func TestTopology(t *testing.T) {
	requireGcloud(t)
	exe := tollgate(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(testConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	topo, err := New(Options{Tollgate: exe, Dir: dir, Config: cfg, NoSeed: true, Instances: 2, Workers: 1,
		Tick: time.Second, Grace: 3 * time.Second, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := topo.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("started in %s", time.Since(start).Round(time.Millisecond))
	stopped := false
	defer func() {
		if !stopped {
			topo.Stop()
		}
	}()
	if testing.Verbose() {
		topo.WriteTable(os.Stderr)
	}
	if got := topo.Config().Tasks.MaxAttempts; got != 3 {
		t.Errorf("config max_attempts %d", got)
	}

	t.Run("review", func(t *testing.T) {
		g := topo.Gerrit()
		if _, err := g.CreateBranch("p", "main", fakegerrit.CommitSpec{Subject: "Initial"}); err != nil {
			t.Fatal(err)
		}
		ps, err := g.CreateChange(fakegerrit.ChangeSpec{Project: "p", Branch: "main", Subject: "Fix", OwnerEmail: "dev@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.SetVote(ps.Change, "lead@example.com", "Presubmit-Ready", 1); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		var reviews []fakegerrit.Review
		for deadline := time.Now().Add(60 * time.Second); ; {
			if reviews = g.Reviews(ps.Change); len(reviews) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no review on change %d after 60s; worker log:\n%s", ps.Change, tail(filepath.Join(dir, "logs", "worker-1.log"), 20))
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("review %v after %s", reviews[0].Labels, time.Since(begin).Round(time.Millisecond))
		if reviews[0].Labels["Code-Review"] != 1 || !strings.Contains(reviews[0].Message, "PASS: build") {
			t.Errorf("review %+v, want Code-Review +1 with build passed", reviews[0])
		}
		resp, err := http.Get(topo.APIURL() + "/api/v1/cls/" + fmt.Sprintf("%d-1", ps.Change))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("API GET the patchset: %d", resp.StatusCode)
		}
	})

	t.Run("restart", func(t *testing.T) {
		victim := component(t, topo, "api#1")
		if err := syscall.Kill(victim.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); component(t, topo, "api#1").Pid == victim.Pid; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the launcher did not see api#1 exit")
			}
		}
		// The function keeps serving through its other instance...
		for range 5 {
			if code := status(t, topo.APIURL()+"/api/v1/cls"); code != 200 {
				t.Errorf("API while one instance is down: %d", code)
			}
		}
		// ...and the killed one comes back on its port and serves.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			c := component(t, topo, "api#1")
			if c.Pid != 0 && c.Pid != victim.Pid && c.Restarts == victim.Restarts+1 {
				if code := statusErr(c.URL + "/api/v1/cls"); code == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("api#1 not serving again: %+v; log:\n%s", c, tail(c.Log, 10))
			}
		}
	})

	t.Run("stop", func(t *testing.T) {
		comps := topo.Components()
		self := os.Getpid()
		var pids []int
		for _, c := range comps {
			if c.Pid != 0 && c.Pid != self {
				pids = append(pids, c.Pid)
				if c.Kind == KindEmulator {
					pids = append(pids, proctree.Descendants(c.Pid)...) // java
				}
			}
		}
		stopped = true
		begin := time.Now()
		if err := topo.Stop(); err != nil {
			t.Fatal(err)
		}
		t.Logf("stopped %d processes in %s", len(pids), time.Since(begin).Round(time.Millisecond))
		for _, p := range pids {
			if Alive(p) {
				t.Errorf("pid %d alive after Stop", p)
			}
		}
		for _, c := range comps {
			if c.Addr == "" {
				continue
			}
			conn, err := net.DialTimeout("tcp", c.Addr, time.Second)
			if err == nil {
				conn.Close()
				t.Errorf("%s still listening on %s after Stop", c.Name, c.Addr)
			} else if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial %s (%s) after Stop: %v, want connection refused", c.Name, c.Addr, err)
			}
		}
	})
}

// TestStartFailure: a child that exits at start fails Start with its
// name and the end of its log, and nothing is left running.
func TestStartFailure(t *testing.T) {
	requireGcloud(t)
	dir := t.TempDir()
	fake := filepath.Join(dir, "broken-tollgate")
	script := "#!/bin/sh\necho \"cannot serve $FUNCTION_TARGET: broken on purpose\" >&2\nexit 3\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	topo, err := New(Options{Tollgate: fake, Dir: dir, Grace: time.Second, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = topo.Start(context.Background())
	if err == nil {
		topo.Stop()
		t.Fatal("Start succeeded with a tollgate that exits")
	}
	msg := err.Error()
	if !strings.Contains(msg, "api (127.0.0.1:") || !strings.Contains(msg, "exited before it accepted connections") ||
		!strings.Contains(msg, "cannot serve api: broken on purpose") {
		t.Errorf("error %q does not name the child and show its log", msg)
	}
	for _, c := range topo.Components() {
		if c.Pid != 0 && c.Pid != os.Getpid() && Alive(c.Pid) {
			t.Errorf("%s (pid %d) alive after the failed Start", c.Name, c.Pid)
		}
		if c.Addr == "" {
			continue
		}
		if conn, err := net.DialTimeout("tcp", c.Addr, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still listening on %s", c.Name, c.Addr)
		}
	}
}

// TestPortInUse: with fixed ports, a busy one is refused by name before
// anything starts.
func TestPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	// The first port is the Firestore emulator's.
	topo, err := New(Options{Tollgate: "/nonexistent", Dir: t.TempDir(), MinPort: busy})
	if err != nil {
		t.Fatal(err)
	}
	err = topo.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("port %d (for firestore) is in use", busy)) {
		t.Errorf("Start = %v, want the busy port named", err)
	}
}

func component(t *testing.T, topo *Topology, name string) Component {
	t.Helper()
	for _, c := range topo.Components() {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no component %s", name)
	return Component{}
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func statusErr(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
