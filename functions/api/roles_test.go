package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/api"
	"github.com/tollgate-ci/tollgate/functions/api/apitest"
	"github.com/tollgate-ci/tollgate/functions/auth"
)

// Bearer tokens of the test identities.
const (
	tokAdmin = "token-of-ada-the-admin"
	tokPriv  = "token-of-pat-privileged"
	tokUser  = "token-of-uma-the-user"
	tokOther = "token-of-someone-unlisted"
)

var uiConfig = config.UI{
	Admins:     []string{"ada@example.com"},
	Privileged: []string{"pat@example.com"},
	Users:      []string{"uma@example.com"},
	LocalUser:  "local@localhost",
}

var tokens = map[string]string{tokAdmin: "ada@example.com", tokPriv: "pat@example.com", tokUser: "uma@example.com", tokOther: "eve@example.com"}

type apiEnv struct {
	srv     *httptest.Server
	st      *sqlite.Store
	f       *apitest.Fixture
	a       *auth.Authenticator
	revoked []string
}

func newAPIEnv(t *testing.T, ui config.UI, local bool) *apiEnv {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &apiEnv{st: st, f: apitest.Seed(t, st)}
	clk := clock.NewFake(apitest.Now)
	e.a = auth.New(auth.Options{UI: ui, Tokens: tokens, Local: local, Clock: clk})
	h := api.New(api.Options{Store: st, Clock: clk, WorkerDeath: 5 * time.Minute, Auth: e.a,
		Actions: apitest.Controller(t, st, clk), Branches: []string{"main"}, Log: slog.New(slog.DiscardHandler),
		RevokeWorker: func(_ context.Context, id string) error { e.revoked = append(e.revoked, id); return nil }})
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// call makes a request as who: a bearer token, "local" (no header, from
// loopback), "local+xsrf" (with the local user's XSRF token), or "" (anonymous).
func (e *apiEnv) call(t *testing.T, method, path, who string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch who {
	case "", "local":
	case "local+xsrf":
		req.Header.Set(auth.HeaderXSRF, e.xsrf(t))
	default:
		req.Header.Set("Authorization", "Bearer "+who)
	}
	if who == "" {
		req.Host = "ci.example.com" // not loopback: anonymous even on a local server
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *apiEnv) xsrf(t *testing.T) string {
	t.Helper()
	st, b := e.call(t, "GET", "/api/v1/whoami", "local")
	var w api.Whoami
	if st != 200 || json.Unmarshal(b, &w) != nil || w.XSRFToken == "" {
		t.Fatalf("whoami: %d %s", st, b)
	}
	return w.XSRFToken
}

func TestReadsByRole(t *testing.T) {
	e := newAPIEnv(t, uiConfig, false)
	paths := []string{
		"/api/v1/overview", "/api/v1/cls", "/api/v1/cls/" + e.f.Failed, "/api/v1/jobs",
		"/api/v1/jobs?state=failed&order=ended", "/api/v1/jobs/" + e.f.RunningJob, "/api/v1/jobs/" + e.f.RunningJob + "/log",
		"/api/v1/jobs/" + e.f.RunningJob + "/artifacts", "/api/v1/workers?sort=last_seen", "/api/v1/workers/" + e.f.WorkerBusy,
		"/api/v1/branches", "/api/v1/stats", "/api/v1/tasks/dead",
	}
	for _, who := range []struct {
		name, tok string
		want      int
	}{
		{"admin", tokAdmin, 200}, {"privileged", tokPriv, 200}, {"user", tokUser, 200},
		{"unlisted", tokOther, 403}, {"worker token", "a-worker-api-token-0123", 403}, {"anonymous", "", 403},
	} {
		for _, p := range paths {
			st, b := e.call(t, "GET", p, who.tok)
			if st != who.want {
				t.Errorf("%s GET %s: %d %s, want %d", who.name, p, st, b, who.want)
			}
			if st == 403 && !strings.Contains(string(b), `"PermissionDenied"`) {
				t.Errorf("%s GET %s: 403 without the error code: %s", who.name, p, b)
			}
		}
	}
	if st, _ := e.call(t, "GET", "/healthz", ""); st != 200 {
		t.Errorf("healthz is public: %d", st)
	}
	// whoami is open, and says who the caller is and what they may do.
	for tok, want := range map[string]string{tokOther: `"email": "eve@example.com"`, "": `"roles": []`, tokPriv: `"privileged"`} {
		if st, b := e.call(t, "GET", "/api/v1/whoami", tok); st != 200 || !strings.Contains(string(b), want) {
			t.Errorf("whoami as %q: %d %s, want %s", tok, st, b, want)
		}
	}
	// users: ["*"] opens reading to anyone, and nothing more.
	open := uiConfig
	open.Users = []string{"*"}
	e2 := newAPIEnv(t, open, false)
	if st, b := e2.call(t, "GET", "/api/v1/overview", ""); st != 200 {
		t.Errorf("anonymous read with users [*]: %d %s", st, b)
	}
	if st, _ := e2.call(t, "POST", "/api/v1/jobs/"+e2.f.RunningJob+"/cancel", ""); st != 403 {
		t.Errorf("anonymous cancel with users [*]: %d", st)
	}
}

// Every action by every role: allowed ones act, refused ones answer 403
// and change nothing.
func TestActionsByRole(t *testing.T) {
	type action struct {
		name, method, path string
		role               auth.Role
		ok                 int
		changed            func(e *apiEnv) bool
	}
	actions := func(e *apiEnv) []action {
		job := func(id string) *model.Job { j, _ := e.st.GetJob(t.Context(), id); return j }
		worker := func(id string) *model.Worker { w, _ := e.st.GetWorker(t.Context(), id); return w }
		ps := func(id string) *model.Patchset { p, _ := e.st.GetPatchset(t.Context(), id); return p }
		return []action{
			{"cancel", "POST", "/api/v1/jobs/" + e.f.QueuedJob + "/cancel", auth.Privileged, 200,
				func(e *apiEnv) bool { return job(e.f.QueuedJob).State == model.Cancelled }},
			{"retry", "POST", "/api/v1/jobs/" + e.f.FailedJob + "/retry", auth.Privileged, 201,
				func(e *apiEnv) bool { return len(ps(e.f.Failed).JobIDs) != 3 }},
			{"recheck", "POST", "/api/v1/cls/" + e.f.Failed + "/recheck", auth.Privileged, 201,
				func(e *apiEnv) bool { return len(ps(e.f.Failed).JobIDs) != 3 }},
			{"quarantine", "POST", "/api/v1/workers/" + e.f.WorkerIdle + "/quarantine", auth.Admin, 200,
				func(e *apiEnv) bool { return worker(e.f.WorkerIdle).State == model.WorkerQuarantined }},
			{"unquarantine", "POST", "/api/v1/workers/" + e.f.WorkerQuar + "/unquarantine", auth.Admin, 200,
				func(e *apiEnv) bool { return worker(e.f.WorkerQuar).State != model.WorkerQuarantined }},
			{"delete", "DELETE", "/api/v1/workers/" + e.f.WorkerDead, auth.Admin, 204,
				func(e *apiEnv) bool { return worker(e.f.WorkerDead) == nil || len(e.revoked) > 0 }},
		}
	}
	callers := []struct {
		name string
		who  string
		has  []auth.Role
	}{
		{"admin", tokAdmin, []auth.Role{auth.Admin, auth.Privileged, auth.User}},
		{"privileged", tokPriv, []auth.Role{auth.Privileged, auth.User}},
		{"user", tokUser, []auth.Role{auth.User}},
		{"unlisted", tokOther, nil},
		{"anonymous", "", nil},
		{"local without XSRF", "local", nil}, // has every role, but no token: refused
		{"local with XSRF", "local+xsrf", []auth.Role{auth.Admin, auth.Privileged, auth.User}},
	}
	for _, c := range callers {
		for i := range 6 {
			e := newAPIEnv(t, config.UI{}, true) // no lists: the local user has every role
			if c.who != "local" && c.who != "local+xsrf" {
				e = newAPIEnv(t, uiConfig, true)
			}
			a := actions(e)[i]
			allowed := false
			for _, r := range c.has {
				allowed = allowed || r == a.role
			}
			st, b := e.call(t, a.method, a.path, c.who)
			switch {
			case allowed && st != a.ok:
				t.Errorf("%s %s: %d %s, want %d", c.name, a.name, st, b, a.ok)
			case allowed && !a.changed(e):
				t.Errorf("%s %s: answered %d but changed nothing", c.name, a.name, st)
			case !allowed && st != 403:
				t.Errorf("%s %s: %d %s, want 403", c.name, a.name, st, b)
			case !allowed && a.changed(e):
				t.Errorf("%s %s: refused, yet it changed the store", c.name, a.name)
			}
		}
	}
}

func TestActionErrors(t *testing.T) {
	e := newAPIEnv(t, uiConfig, false)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"POST", "/api/v1/jobs/" + e.f.PassedJob + "/cancel", 409, "FailedPrecondition"}, // already ended
		{"POST", "/api/v1/jobs/" + e.f.RunningJob + "/retry", 409, "FailedPrecondition"}, // still running
		{"POST", "/api/v1/cls/" + e.f.Running + "/recheck", 409, "FailedPrecondition"},   // nothing failed
		{"POST", "/api/v1/jobs/20261124090000--cls-9-9--build/cancel", 404, "NotFound"},
		{"POST", "/api/v1/jobs/nope/retry", 400, "InvalidArgument"},
		{"POST", "/api/v1/cls/9-9/recheck", 404, "NotFound"},
		{"POST", "/api/v1/workers/nobody/quarantine", 404, "NotFound"},
		{"DELETE", "/api/v1/workers/nobody", 404, "NotFound"},
		{"GET", "/api/v1/jobs?order=sideways", 400, "InvalidArgument"},
		{"GET", "/api/v1/jobs?order=ended&worker=w1", 400, "InvalidArgument"},
		{"GET", "/api/v1/cls?state=maybe", 400, "InvalidArgument"},
		{"GET", "/api/v1/workers?sort=height", 400, "InvalidArgument"},
		{"GET", "/api/v1/stats?window=1m", 400, "InvalidArgument"},
	} {
		st, b := e.call(t, tc.method, tc.path, tokAdmin)
		var body api.ErrorBody
		if st != tc.status || json.Unmarshal(b, &body) != nil || body.Error.Code != tc.code {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, st, b, tc.status, tc.code)
		}
	}
	// The cancel went through, and says who did it.
	st, b := e.call(t, "POST", "/api/v1/jobs/"+e.f.RunningJob+"/cancel", tokPriv)
	var r api.JobReply
	if st != 200 || json.Unmarshal(b, &r) != nil || r.Job.State != model.Cancelled || r.Job.Reason != "cancelled by pat@example.com" {
		t.Fatalf("cancel: %d %s", st, b)
	}
}

// Without Auth, the API reads and refuses to act.
func TestNoAuthIsReadOnly(t *testing.T) {
	srv, st := newServer(t)
	_ = st
	resp, err := http.Post(srv.URL+"/api/v1/jobs/20261124090100--cls-1-1--build/cancel", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("cancel without Auth: %d, want 403", resp.StatusCode)
	}
}
