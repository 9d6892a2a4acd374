package controller_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/gerrit"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/core/tasks/taskstest"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
)

// The controller's tests run the real actions against the real embedded
// store (SQLite in a temp file) and the fake Gerrit over real HTTP, with an
// injected clock. Deferred tasks go to a recorder the test drains, so each
// test decides when work happens, and can deliver every task twice.

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

const (
	project  = "tollgate/demo"
	trusted  = "alice@trusted.example"
	reviewer = "rita@trusted.example"
	stranger = "mallory@elsewhere.example"
)

// configHead is the start of the tests' configs: the fake Gerrit (%URL%)
// and its credentials in the environment.
const configHead = `
gerrit:
  url: %URL%
  project: tollgate/demo
  branches: [main]
  user_env: TG_TEST_GERRIT_USER
  password_env: TG_TEST_GERRIT_PASSWORD
`

// configTrust follows configHead in most tests' configs.
const configTrust = `trust:
  trusted_emails: '.*@trusted\.example'
vote:
  ui_url: https://ci.example.com
`

const baseConfig = configHead + `  poll_interval: 15s
` + configTrust + `jobs:
  build: {command: [make]}
  test: {command: [make, test]}
  lint: {command: [make, lint], skip_voting: true}
timeouts: {job: 30m, cl: 3h, worker_death: 5m}
`

type env struct {
	t      *testing.T
	ctx    context.Context
	clock  *clock.Fake
	gerrit *fakegerrit.Server
	st     store.Store
	tq     *taskstest.Recorder
	c      *controller.Controller
	cfg    *config.Config
	// twice makes drain deliver every task two times, as at-least-once
	// delivery may.
	twice bool

	mu      sync.Mutex
	queries []string // the q= of every change query Gerrit received
}

// lastQuery returns the newest change query Gerrit received.
func (e *env) lastQuery() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.queries) == 0 {
		return ""
	}
	return e.queries[len(e.queries)-1]
}

func newEnv(t *testing.T, cfgYAML string) *env {
	t.Helper()
	fc := clock.NewFake(t0)
	g := fakegerrit.New(fakegerrit.Options{User: "tollgate-bot", Password: "secret", Clock: fc})
	e := &env{t: t, ctx: context.Background(), clock: fc, gerrit: g, tq: &taskstest.Recorder{}}
	// The fake Gerrit behind a real HTTP server that notes each change query.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/a/changes/" {
			e.mu.Lock()
			e.queries = append(e.queries, r.URL.Query().Get("q"))
			e.mu.Unlock()
		}
		g.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { g.Close() })
	url := srv.URL
	if _, err := g.CreateBranch(project, "main", fakegerrit.CommitSpec{Subject: "Initial commit"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TG_TEST_GERRIT_USER", "tollgate-bot")
	t.Setenv("TG_TEST_GERRIT_PASSWORD", "secret")
	cfg, err := config.Parse([]byte(strings.ReplaceAll(cfgYAML, "%URL%", url)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st, e.cfg = st, cfg
	e.c = e.newController(st, nil)
	return e
}

// run delivers one task directly (outside the recorder) and fails the test on error.
func (e *env) run(action string, args any) {
	e.t.Helper()
	if err := e.deliver(action, args); err != nil {
		e.t.Fatalf("%s: %v", action, err)
	}
}

func (e *env) deliver(action string, args any) error {
	b, err := tasks.Marshal(action, args)
	if err != nil {
		return err
	}
	return e.c.Handle(e.ctx, tasks.Task{ID: "direct-" + action, Action: action, Args: b, Attempt: 1, Created: e.clock.Now()})
}

// drain delivers deferred tasks until none are left (twice each with e.twice).
func (e *env) drain() {
	e.t.Helper()
	times := 1
	if e.twice {
		times = 2
	}
	if t, err := e.tq.Drain(e.ctx, e.c.Handle, times, 20000); err != nil {
		e.t.Fatalf("task %s %s: %v", t.Action, t.Args, err)
	}
}

// poll runs check_new_cls and everything it defers.
func (e *env) poll() {
	e.t.Helper()
	e.run(controller.CheckNewCLs, nil)
	e.drain()
}

func (e *env) upload(owner, subject string) fakegerrit.PatchSet {
	e.t.Helper()
	e.clock.Advance(time.Second)
	ps, err := e.gerrit.CreateChange(fakegerrit.ChangeSpec{Project: project, Branch: "main", Subject: subject, OwnerEmail: owner})
	if err != nil {
		e.t.Fatal(err)
	}
	return ps
}

func (e *env) patchset(cl, ps int) (*model.Patchset, []*model.Job) {
	e.t.Helper()
	p, jobs, err := e.st.GetPatchsetWithJobs(e.ctx, model.PatchsetID(cl, ps))
	if err != nil {
		e.t.Fatalf("patchset %d-%d: %v", cl, ps, err)
	}
	return p, jobs
}

// finishAll claims every queued job as worker w and ends it: jobs whose
// type is in fail end FAILED with exit code 1, the others COMPLETED.
func (e *env) finishAll(fail ...string) {
	e.t.Helper()
	bad := map[string]bool{}
	for _, f := range fail {
		bad[f] = true
	}
	for {
		e.clock.Advance(time.Second)
		j, err := e.st.ClaimJob(e.ctx, "w1", []string{""}, e.clock.Now())
		if err != nil {
			return
		}
		e.clock.Advance(time.Minute)
		state, code := model.Completed, 0
		if bad[j.Type] {
			state, code = model.Failed, 1
		}
		if _, err := e.st.UpdateJob(e.ctx, j.ID, model.Transition{Kind: model.Finish, Worker: "w1", State: state, ExitCode: &code, Now: e.clock.Now()}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// withStore returns a controller like e.c but on st.
func (e *env) withStore(st store.Store) *controller.Controller { return e.newController(st, nil) }

// withMetrics returns a controller like e.c writing metrics to m.
func (e *env) withMetrics(m metrics.Metrics) *controller.Controller { return e.newController(e.st, m) }

func (e *env) newController(st store.Store, m metrics.Metrics) *controller.Controller {
	e.t.Helper()
	return e.newControllerWith(st, m, nil)
}

func (e *env) newControllerWith(st store.Store, m metrics.Metrics, cc cache.Cache) *controller.Controller {
	e.t.Helper()
	user, pw, err := e.cfg.Credentials()
	if err != nil {
		e.t.Fatal(err)
	}
	gc, err := gerrit.New(gerrit.Options{URL: e.cfg.Gerrit.URL, User: user, Password: pw, MaxQPS: 1000, BackoffBase: time.Millisecond, Retries: 1})
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := controller.New(controller.Deps{Config: e.cfg, Store: st, Tasks: e.tq, Gerrit: gc, Clock: e.clock, Metrics: m,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Cache: cc})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}
