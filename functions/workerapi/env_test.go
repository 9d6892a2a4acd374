package workerapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/fsblob"
	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/workerapi"
)

// The tests run the real worker API over real HTTP (httptest) in front of a
// real fleet.Service on the embedded adapters (SQLite in a temp file, a
// temp directory bucket), with an injected clock and a recording Tasks.

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

const (
	secret  = "s3cret-enroll"
	channel = 42
)

const cfgYAML = `
gerrit:
  url: http://gerrit.invalid
  project: tollgate/demo
trust:
  trusted_emails: '.*@trusted\.example'
jobs:
  build: {command: [make]}
  test: {command: [make, test]}
timeouts: {job: 30m, cl: 3h, worker_death: 5m}
`

// recorder is a Tasks that records deferred tasks.
type recorder struct {
	mu  sync.Mutex
	all []deferred
}

type deferred struct {
	Action string
	Args   string
}

func (r *recorder) Defer(ctx context.Context, action string, args any) error {
	b, err := json.Marshal(args)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, deferred{action, string(b)})
	return nil
}

func (r *recorder) tasks() []deferred {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]deferred(nil), r.all...)
}

type env struct {
	t     *testing.T
	ctx   context.Context
	clock *clock.Fake
	st    *sqlite.Store
	blobs *fsblob.Bucket
	tq    *recorder
	svc   *fleet.Service
	opts  workerapi.Options
	h     *workerapi.Handler
	srv   *httptest.Server
	// proxy, in front of h, fails requests as planned.
	proxy *flaky
	psrv  *httptest.Server
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newEnv(t *testing.T, mod ...func(*workerapi.Options)) *env {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := fsblob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	fc := clock.NewFake(t0)
	tq := &recorder{}
	svc, err := fleet.NewService(fleet.Options{Config: cfg, Store: st, Tasks: tq, Blobs: blobs, Clock: fc, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	o := workerapi.Options{Backend: svc, Store: st, EnrollSecret: secret, Channel: channel, Clock: fc, Log: quiet()}
	for _, m := range mod {
		m(&o)
	}
	e := &env{t: t, ctx: context.Background(), clock: fc, st: st, blobs: blobs, tq: tq, svc: svc, opts: o}
	e.h = workerapi.NewHandler(o)
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(e.srv.Close)
	e.proxy = &flaky{h: e.h, plan: map[string][]string{}, count: map[string]int{}}
	e.psrv = httptest.NewServer(e.proxy)
	t.Cleanup(e.psrv.Close)
	return e
}

// queue creates patchset cl-ps with one QUEUED job per type and returns their ids.
func (e *env) queue(cl, ps int, types ...string) []string {
	e.t.Helper()
	e.clock.Advance(time.Second)
	now := e.clock.Now()
	p := &model.Patchset{ID: model.PatchsetID(cl, ps), Change: cl, Patchset: ps, Revision: "abc123",
		Ref: "refs/changes/00/" + strconv.Itoa(cl) + "/" + strconv.Itoa(ps), Project: "tollgate/demo",
		Branch: "main", Owner: "alice@trusted.example", Uploader: "alice@trusted.example", TimeQueued: now}
	var jobs []*model.Job
	for _, typ := range types {
		j := model.NewJob(now, p.Src(), typ, map[string]string{"TOLLGATE_REF": p.Ref}, false)
		jobs = append(jobs, j)
		p.JobIDs = append(p.JobIDs, j.ID)
	}
	if err := e.st.CreatePatchset(e.ctx, p, jobs); err != nil {
		e.t.Fatal(err)
	}
	return p.JobIDs
}

type clientMod func(*workerapi.ClientOptions)

// client returns a client of worker id talking to url (the server's by default).
func (e *env) client(id string, mods ...clientMod) *workerapi.Client {
	e.t.Helper()
	o := workerapi.ClientOptions{URL: e.srv.URL, EnrollSecret: secret, Channel: channel, WorkerID: id,
		Host: id + ".example", BackoffBase: time.Millisecond}
	for _, m := range mods {
		m(&o)
	}
	c, err := workerapi.NewClient(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func viaProxy(e *env) clientMod {
	return func(o *workerapi.ClientOptions) { o.URL = e.psrv.URL }
}

func (e *env) job(id string) *model.Job {
	e.t.Helper()
	j, err := e.st.GetJob(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func (e *env) log(jobID string) string {
	e.t.Helper()
	b, _, err := e.st.ReadLog(e.ctx, jobID, 0, 1<<30)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func (e *env) artifacts(jobID string) []string {
	e.t.Helper()
	attrs, _, err := e.blobs.List(e.ctx, fleet.ArtifactPrefix(jobID), 0, "")
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, a := range attrs {
		names = append(names, a.Name)
	}
	return names
}

func (e *env) workerExists(id string) bool {
	e.t.Helper()
	_, err := e.st.GetWorker(e.ctx, id)
	if err != nil && !errs.Is(err, errs.NotFound) {
		e.t.Fatal(err)
	}
	return err == nil
}

func tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "worker-token:" + hex.EncodeToString(sum[:])
}

// rawReq is one hand-made request.
type rawReq struct {
	op      string // "heartbeat", "log?job_id=...", ...
	token   string // "" sends no Authorization header
	channel string // "" sends no channel header
	body    []byte
	method  string // default POST
}

// rawResp is its answer.
type rawResp struct {
	status int
	code   string
	header http.Header
	body   []byte
}

func do(t *testing.T, base string, q rawReq) rawResp {
	t.Helper()
	m := q.method
	if m == "" {
		m = http.MethodPost
	}
	req, err := http.NewRequest(m, base+workerapi.Prefix+q.op, bytes.NewReader(q.body))
	if err != nil {
		t.Fatal(err)
	}
	if q.token != "" {
		req.Header.Set("Authorization", "Bearer "+q.token)
	}
	if q.channel != "" {
		req.Header.Set(workerapi.HeaderChannel, q.channel)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := rawResp{status: resp.StatusCode, header: resp.Header, body: b}
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	if json.Unmarshal(b, &eb) == nil {
		r.code = eb.Error.Code
	}
	return r
}

var ch = strconv.Itoa(channel)

// enroll enrolls id by hand and returns its token.
func (e *env) enroll(id string) string {
	e.t.Helper()
	body, _ := json.Marshal(workerapi.EnrollRequest{Secret: secret, WorkerID: id, Host: "h"})
	r := do(e.t, e.srv.URL, rawReq{op: "enroll", channel: ch, body: body})
	if r.status != http.StatusOK {
		e.t.Fatalf("enroll %s: %d %s", id, r.status, r.body)
	}
	var er workerapi.EnrollReply
	if err := json.Unmarshal(r.body, &er); err != nil || er.Token == "" || er.WorkerID != id {
		e.t.Fatalf("enroll %s: bad answer %s (%v)", id, r.body, err)
	}
	return er.Token
}

// flaky is a proxy in front of the handler that fails requests as planned:
// plan[op] lists the outcomes of op's next requests: "503" and "429" answer
// without forwarding; "lost" forwards (so the call takes effect) and then
// answers 502, as a proxy losing the answer would; "ok" passes the request.
// Once the plan is used up, requests pass.
type flaky struct {
	h     http.Handler
	mu    sync.Mutex
	plan  map[string][]string
	count map[string]int
}

func (f *flaky) set(op string, steps ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plan[op] = steps
}

func (f *flaky) n(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count[op]
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op := path.Base(r.URL.Path)
	f.mu.Lock()
	f.count[op]++
	var step string
	if p := f.plan[op]; len(p) > 0 {
		step, f.plan[op] = p[0], p[1:]
	}
	f.mu.Unlock()
	switch step {
	case "503", "429":
		io.Copy(io.Discard, r.Body)
		code, _ := strconv.Atoi(step)
		http.Error(w, "proxy says no", code)
	case "lost":
		f.h.ServeHTTP(httptest.NewRecorder(), r)
		http.Error(w, "bad gateway", http.StatusBadGateway)
	default:
		f.h.ServeHTTP(w, r)
	}
}
