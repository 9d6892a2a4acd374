package ui_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/fsblob"
	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/api/apitest"
	"github.com/tollgate-ci/tollgate/functions/auth"
	"github.com/tollgate-ci/tollgate/functions/ui"
)

// The identities of the tests: IAP emails (the config trusts IAP), the
// local user on a loopback host, and nobody.
const (
	admin      = "ada@example.com"
	privileged = "pat@example.com"
	user       = "uma@example.com"
	outsider   = "eve@example.com"
	anonymous  = ""
)

type env struct {
	t   *testing.T
	ui  *ui.UI
	st  *sqlite.Store
	f   *apitest.Fixture
	clk *clock.Fake
}

func newEnv(t *testing.T, mod func(*config.Config)) *env {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := fsblob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, f: apitest.Seed(t, st), clk: clock.NewFake(apitest.Now)}
	if _, err := blobs.Put(t.Context(), e.f.ArtifactJob+"/out/hello.bin", strings.NewReader("binary"), "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
	cfg := apitest.Config(t)
	cfg.UI = config.UI{Admins: []string{admin, "local@localhost"}, Privileged: []string{privileged}, Users: []string{user}, LocalUser: "local@localhost", TrustIAP: true}
	if mod != nil {
		mod(cfg)
	}
	e.ui, err = ui.New(ui.Options{Config: cfg, Store: st, Blobs: blobs, Actions: apitest.Controller(t, st, e.clk), Clock: e.clk,
		Log: slog.New(slog.DiscardHandler), Local: true})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// do serves one request as who: an email (through IAP's header), "local"
// (no header, loopback host) or anonymous.
func (e *env) do(method, path, who string, form url.Values) *httptest.ResponseRecorder {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, "http://ci.example.com"+path, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	switch who {
	case anonymous:
	case "local":
		r.Host = "127.0.0.1:8080"
	default:
		r.Header.Set(auth.HeaderIAPEmail, "accounts.google.com:"+who)
	}
	w := httptest.NewRecorder()
	e.ui.ServeHTTP(w, r)
	return w
}

// xsrf returns who's XSRF token, as /api/v1/whoami gives it (pages carry
// the same in their forms).
func (e *env) xsrf(who, page string) string {
	e.t.Helper()
	w := e.do("GET", "/api/v1/whoami", who, nil)
	m := regexp.MustCompile(`"xsrf_token": "([^"]+)"`).FindStringSubmatch(w.Body.String())
	if m == nil {
		e.t.Fatalf("no XSRF token for %q: %d %s", who, w.Code, w.Body)
	}
	if page != "" && (who == admin || who == privileged) {
		if p := e.do("GET", page, who, nil).Body.String(); strings.Contains(p, `name="xsrf"`) && !strings.Contains(p, `name="xsrf" value="`+m[1]+`"`) {
			e.t.Fatalf("the forms on %s do not carry %s's token", page, who)
		}
	}
	return m[1]
}

func TestPagesByRole(t *testing.T) {
	e := newEnv(t, nil)
	f := e.f
	pages := []struct {
		path string
		want []string // on the page for anyone who may read it
	}{
		{"/", []string{"in the queue", "workers alive", "Add Esperanto &lt;translation&gt; &amp; &#34;quotes&#34;", "Running now", "Land the greeting"}},
		{"/cls", []string{"Patchsets", "/cls/" + f.Failed, "alice@example.com"}},
		{"/cls?owner=bob%40example.com&state=ended", []string{"Fix a typo"}},
		{"/cls/" + f.Failed, []string{"Add a greeting", "Code-Review-1", "FAIL: test (exit code 1)", "exit 1", "non-voting"}},
		{"/jobs", []string{"jobs queued in the last 24 h", "/jobs/" + f.RunningJob, `<span class="count">2</span>`}},
		{"/jobs?state=FAILED&order=ended", []string{"/jobs/" + f.FailedJob, "selected>ended"}},
		{"/jobs/" + f.RunningJob, []string{`data-job="` + f.RunningJob + `"`, "w-busy", "Raw log"}},
		{"/jobs/" + f.ArtifactJob, []string{"out/hello.bin", "Artifacts (1)"}},
		{"/workers", []string{"3 alive", "1 dead", "1 quarantined", "w-quarantined"}},
		{"/workers?sort=last_seen", []string{"w-dead"}},
		{"/workers/" + f.WorkerBusy, []string{"vm-1", "os=linux", "running", "Recent jobs"}},
		{"/branches", []string{"Land the greeting", "abababababab"}},
		{"/stats", []string{"<svg", "Queue length", "Pass rate", "build", "Patchset completion"}},
		{"/stats?window=7d", []string{"7 days"}},
	}
	readers := []string{admin, privileged, user, "local"}
	for _, p := range pages {
		for _, who := range readers {
			w := e.do("GET", p.path, who, nil)
			body := w.Body.String()
			if w.Code != 200 {
				t.Errorf("%s GET %s: %d\n%.500s", who, p.path, w.Code, body)
				continue
			}
			for _, s := range p.want {
				if !strings.Contains(body, s) {
					t.Errorf("%s GET %s: page lacks %q", who, p.path, s)
				}
			}
			if !strings.Contains(w.Header().Get("Content-Security-Policy"), "script-src 'self'") || w.Header().Get("X-Frame-Options") != "DENY" {
				t.Errorf("GET %s: security headers %v", p.path, w.Header())
			}
			if strings.Contains(body, "<script>alert") {
				t.Errorf("GET %s: unescaped markup", p.path)
			}
			// Action buttons appear for those who may use them, only.
			canAct := who == admin || who == privileged || who == "local"
			if strings.HasPrefix(p.path, "/jobs/"+f.RunningJob) && strings.Contains(body, `id="cancel"`) != canAct {
				t.Errorf("%s GET %s: cancel button shown = %v", who, p.path, !canAct)
			}
			if p.path == "/workers/"+f.WorkerBusy && strings.Contains(body, `id="quarantine"`) != (who == admin || who == "local") {
				t.Errorf("%s GET %s: quarantine button shown wrongly", who, p.path)
			}
		}
		for _, who := range []string{outsider, anonymous} {
			if w := e.do("GET", p.path, who, nil); w.Code != 403 || !strings.Contains(w.Body.String(), "lacks the user role") {
				t.Errorf("%q GET %s: %d, want 403", who, p.path, w.Code)
			}
		}
	}
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/cls/9-9", 404}, {"/cls/nope", 400}, {"/jobs/20261124090000--cls-9-9--build", 404}, {"/jobs/nope", 400},
		{"/workers/nobody", 404}, {"/nothing/here", 404}, {"/jobs?order=sideways", 400}, {"/stats?window=1y", 400},
	} {
		if w := e.do("GET", tc.path, user, nil); w.Code != tc.code || !strings.Contains(w.Body.String(), "<h1>") {
			t.Errorf("GET %s: %d, want an error page with %d", tc.path, w.Code, tc.code)
		}
	}
	// Public: health, assets, and the API's own answer for refusals.
	if w := e.do("GET", "/healthz", anonymous, nil); w.Code != 200 {
		t.Errorf("healthz: %d", w.Code)
	}
	for _, a := range []string{"/static/app.css", "/static/app.js", "/static/favicon.svg"} {
		if w := e.do("GET", a, anonymous, nil); w.Code != 200 || w.Body.Len() == 0 {
			t.Errorf("GET %s: %d", a, w.Code)
		}
	}
	if w := e.do("GET", "/api/v1/overview", anonymous, nil); w.Code != 403 || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Errorf("anonymous API read: %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	if w := e.do("GET", "/api/v1/overview", user, nil); w.Code != 200 {
		t.Errorf("user API read through the UI: %d", w.Code)
	}
}

// Every action by every role, with and without its XSRF token: allowed ones
// act and redirect, refused ones answer 403 and change nothing.
func TestActionsByRole(t *testing.T) {
	type action struct {
		name, path, page string
		role             auth.Role
		redirect         string // prefix of the Location after success
		changed          func(e *env) bool
	}
	mk := func(e *env) []action {
		f := e.f
		job := func(id string) *model.Job { j, _ := e.st.GetJob(t.Context(), id); return j }
		worker := func(id string) *model.Worker { w, _ := e.st.GetWorker(t.Context(), id); return w }
		jobsOf := func(id string) int { p, _ := e.st.GetPatchset(t.Context(), id); return len(p.JobIDs) }
		return []action{
			{"cancel", "/jobs/" + f.RunningJob + "/cancel", "/jobs/" + f.RunningJob, auth.Privileged, "/jobs/" + f.RunningJob + "?done=cancelled",
				func(e *env) bool { return job(f.RunningJob).State == model.Cancelled }},
			{"retry", "/jobs/" + f.FailedJob + "/retry", "/jobs/" + f.FailedJob, auth.Privileged, "/jobs/",
				func(e *env) bool { return jobsOf(f.Failed) != 3 }},
			{"recheck", "/cls/" + f.Failed + "/recheck", "/cls/" + f.Failed, auth.Privileged, "/cls/" + f.Failed + "?done=rechecked",
				func(e *env) bool { return jobsOf(f.Failed) != 3 }},
			{"quarantine", "/workers/" + f.WorkerIdle + "/quarantine", "/workers/" + f.WorkerIdle, auth.Admin, "/workers/" + f.WorkerIdle,
				func(e *env) bool { return worker(f.WorkerIdle).State == model.WorkerQuarantined }},
			{"unquarantine", "/workers/" + f.WorkerQuar + "/unquarantine", "/workers/" + f.WorkerQuar, auth.Admin, "/workers/" + f.WorkerQuar,
				func(e *env) bool { return worker(f.WorkerQuar).State != model.WorkerQuarantined }},
			{"delete", "/workers/" + f.WorkerDead + "/delete", "/workers/" + f.WorkerDead, auth.Admin, "/workers?done=deleted",
				func(e *env) bool { return worker(f.WorkerDead) == nil }},
		}
	}
	roles := map[string][]auth.Role{
		admin: {auth.Admin, auth.Privileged}, privileged: {auth.Privileged}, user: nil, outsider: nil, anonymous: nil,
		"local": {auth.Admin, auth.Privileged},
	}
	for who, has := range roles {
		for i := range 6 { // the actions mk makes
			for _, tokenCase := range []string{"valid", "missing", "another user's", "garbage"} {
				var e *env
				if who == "local" {
					e = newEnv(t, func(c *config.Config) { c.UI = config.UI{LocalUser: "local@localhost"} })
				} else {
					e = newEnv(t, nil)
				}
				a := mk(e)[i]
				allowed := false
				for _, r := range has {
					allowed = allowed || r == a.role
				}
				form := url.Values{}
				switch tokenCase {
				case "valid":
					form.Set("xsrf", e.xsrf(who, a.page))
				case "another user's":
					form.Set("xsrf", e.xsrf(user, a.page))
				case "garbage":
					form.Set("xsrf", "v1.1.deadbeef")
				}
				w := e.do("POST", a.path, who, form)
				ok := allowed && tokenCase == "valid"
				if who == user && tokenCase == "another user's" {
					ok = false // the user's own token, but not the role
				}
				switch {
				case ok && (w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), a.redirect)):
					t.Errorf("%q %s (%s token): %d → %q\n%.300s", who, a.name, tokenCase, w.Code, w.Header().Get("Location"), w.Body.String())
				case ok && !a.changed(e):
					t.Errorf("%q %s: redirected but changed nothing", who, a.name)
				case !ok && w.Code != http.StatusForbidden:
					t.Errorf("%q %s (%s token): %d, want 403", who, a.name, tokenCase, w.Code)
				case !ok && a.changed(e):
					t.Errorf("%q %s (%s token): refused, yet it changed the store", who, a.name, tokenCase)
				}
			}
		}
	}
}

// After an action, the page it leads to says what happened.
func TestActionNotices(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.xsrf(admin, "/jobs/"+e.f.QueuedJob)
	w := e.do("POST", "/jobs/"+e.f.QueuedJob+"/cancel", admin, url.Values{"xsrf": {tok}})
	if w.Code != 303 {
		t.Fatalf("cancel: %d", w.Code)
	}
	page := e.do("GET", w.Header().Get("Location"), admin, nil).Body.String()
	if !strings.Contains(page, "Job cancelled.") || !strings.Contains(page, "st-cancelled") || !strings.Contains(page, `id="retry"`) {
		t.Fatalf("job page after the cancel lacks the notice or the state:\n%.2000s", page)
	}
	// An unknown notice shows nothing.
	if page := e.do("GET", "/?done=%3Cb%3Ehacked", admin, nil).Body.String(); strings.Contains(page, "hacked") {
		t.Fatal("a made-up notice was shown")
	}
	// Cancelling it again is a no-op; cancelling a job that completed is refused.
	if w = e.do("POST", "/jobs/"+e.f.QueuedJob+"/cancel", admin, url.Values{"xsrf": {tok}}); w.Code != 303 {
		t.Fatalf("second cancel: %d", w.Code)
	}
	w = e.do("POST", "/jobs/"+e.f.PassedJob+"/cancel", admin, url.Values{"xsrf": {tok}})
	if w.Code != 409 || !strings.Contains(w.Body.String(), "already ended as COMPLETED") {
		t.Fatalf("cancel of a completed job: %d", w.Code)
	}
	// A retry leads to the new job.
	tok = e.xsrf(privileged, "/jobs/"+e.f.FailedJob)
	w = e.do("POST", "/jobs/"+e.f.FailedJob+"/retry", privileged, url.Values{"xsrf": {tok}})
	loc := w.Header().Get("Location")
	if w.Code != 303 || strings.Contains(loc, e.f.FailedJob) {
		t.Fatalf("retry: %d → %s", w.Code, loc)
	}
	page = e.do("GET", loc, privileged, nil).Body.String()
	if !strings.Contains(page, "Retry queued") || !strings.Contains(page, "requested by pat@example.com") {
		t.Fatalf("new job page:\n%.2000s", page)
	}
	e.clk.Advance(time.Second)
}

func TestStaticCaching(t *testing.T) {
	e := newEnv(t, nil)
	page := e.do("GET", "/", user, nil).Body.String()
	m := regexp.MustCompile(`/static/app\.css\?v=([0-9a-f]+)`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no versioned stylesheet link")
	}
	if w := e.do("GET", m[0], anonymous, nil); !strings.Contains(w.Header().Get("Cache-Control"), "immutable") {
		t.Errorf("versioned asset: Cache-Control %q", w.Header().Get("Cache-Control"))
	}
	if w := e.do("GET", "/static/app.css", anonymous, nil); w.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("unversioned asset: Cache-Control %q", w.Header().Get("Cache-Control"))
	}
}
