package webhook

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/core/tasks/taskstest"
	"github.com/tollgate-ci/tollgate/functions/api"
)

// Event bodies as the Gerrit webhooks plugin posts them (trimmed).
const (
	patchsetCreated = `{"uploader":{"name":"A","email":"a@example.com"},"patchSet":{"number":2,"revision":"0123abcd","ref":"refs/changes/34/1234/2"},` +
		`"change":{"project":"proj","branch":"main","id":"I0123","number":1234,"subject":"Fix","owner":{"email":"a@example.com"},"status":"NEW"},` +
		`"project":"proj","refName":"refs/heads/main","changeKey":{"id":"I0123"},"type":"patchset-created","eventCreatedOn":1795500000}`
	readyVote = `{"author":{"email":"r@example.com"},"approvals":[{"type":"Code-Review","value":"0"},{"type":"Presubmit-Ready","value":"1","oldValue":"0"}],` +
		`"comment":"Patch Set 2: Presubmit-Ready+1","patchSet":{"number":2},"change":{"project":"proj","branch":"refs/heads/main","number":"1234"},"type":"comment-added"}`
	plainComment = `{"author":{"email":"r@example.com"},"approvals":[{"type":"Presubmit-Ready","value":"1"}],"comment":"LGTM",` +
		`"patchSet":{"number":2},"change":{"project":"proj","branch":"main","number":1234},"type":"comment-added"}`
	restored   = `{"type":"change-restored","change":{"project":"proj","branch":"main","number":77},"patchSet":{"number":1}}`
	refUpdated = `{"type":"ref-updated","refUpdate":{"oldRev":"a","newRev":"b","refName":"main","project":"proj"}}`
	abandoned  = `{"type":"change-abandoned","change":{"project":"proj","branch":"main","number":1234}}`
	otherProj  = `{"type":"patchset-created","change":{"project":"elsewhere","branch":"main","number":5},"patchSet":{"number":1}}`
	otherBr    = `{"type":"patchset-created","change":{"project":"proj","branch":"dev","number":5},"patchSet":{"number":1}}`
)

func newHandler(rec *taskstest.Recorder) http.Handler {
	return New(Options{Tasks: rec, Token: "s3cret", Project: "proj", Branches: []string{"main"},
		ReadyLabel: "Presubmit-Ready", MaxBody: 4096, Log: slog.New(slog.DiscardHandler)})
}

func post(h http.Handler, target, body string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, target, strings.NewReader(body)))
	return w
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var b api.ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	return b.Error.Code
}

func TestAuth(t *testing.T) {
	rec := &taskstest.Recorder{}
	h := newHandler(rec)
	cases := []struct {
		name, target string
		status       int
		code         string
	}{
		{"no token", "/", 401, "Unauthenticated"},
		{"empty token", "/?token=", 401, "Unauthenticated"},
		{"wrong token", "/?token=guess", 403, "PermissionDenied"},
		{"prefix of the token", "/?token=s3cre", 403, "PermissionDenied"},
		{"token in another parameter", "/?tok=s3cret", 401, "Unauthenticated"},
	}
	for _, c := range cases {
		w := post(h, c.target, patchsetCreated)
		if w.Code != c.status || errorCode(t, w) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, w.Code, w.Body.String(), c.status, c.code)
		}
	}
	// No token configured: nothing gets in.
	open := New(Options{Tasks: rec, Log: slog.New(slog.DiscardHandler)})
	if w := post(open, "/?token=anything", patchsetCreated); w.Code != 403 {
		t.Errorf("unconfigured token: %d, want 403", w.Code)
	}
	if n := rec.Count(""); n != 0 {
		t.Errorf("refused requests deferred %d tasks", n)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/?token=s3cret", nil))
	if w.Code != 405 || w.Header().Get("Allow") != "POST" {
		t.Errorf("GET: %d, want 405 with Allow: POST", w.Code)
	}
}

func TestEvents(t *testing.T) {
	cases := []struct {
		name   string
		body   string
		status string // of the 202
		change int
	}{
		{"patchset created", patchsetCreated, "deferred", 1234},
		{"ready label voted (string number, full branch ref)", readyVote, "deferred", 1234},
		{"comment without a vote change", plainComment, "ignored", 1234},
		{"restored", restored, "deferred", 77},
		{"ref updated", refUpdated, "ignored", 0},
		{"abandoned", abandoned, "ignored", 1234},
		{"other project", otherProj, "ignored", 5},
		{"other branch", otherBr, "ignored", 5},
	}
	for _, c := range cases {
		rec := &taskstest.Recorder{}
		w := post(newHandler(rec), "/gerrit_webhook?token=s3cret", c.body)
		var resp Response
		if w.Code != http.StatusAccepted || json.Unmarshal(w.Body.Bytes(), &resp) != nil || resp.Status != c.status || resp.Change != c.change {
			t.Errorf("%s: %d %s, want 202 %s for change %d", c.name, w.Code, w.Body.String(), c.status, c.change)
			continue
		}
		all := rec.All()
		if c.status == "ignored" {
			if len(all) != 0 {
				t.Errorf("%s: ignored event deferred %+v", c.name, all)
			}
			continue
		}
		if len(all) != 1 || all[0].Action != controller.CheckNewCL {
			t.Fatalf("%s: deferred %+v, want one check_new_cl", c.name, all)
		}
		var args controller.CheckNewCLArgs
		if err := tasks.Unmarshal(all[0], &args); err != nil || args.Change != c.change || args.CL != nil {
			t.Errorf("%s: args %s, want only the change number %d (re-read from Gerrit)", c.name, all[0].Args, c.change)
		}
	}
}

func TestBadRequests(t *testing.T) {
	rec := &taskstest.Recorder{}
	h := newHandler(rec)
	for name, body := range map[string]string{
		"empty":              "",
		"not json":           "patchset-created 1234",
		"array":              "[1]",
		"no type":            `{"change":{"number":1}}`,
		"change number zero": `{"type":"patchset-created","change":{"number":0,"project":"proj","branch":"main"}}`,
		"negative change":    `{"type":"patchset-created","change":{"number":-3}}`,
		"change not numeric": `{"type":"patchset-created","change":{"number":"12a"}}`,
		"no change":          `{"type":"patchset-created","patchSet":{"number":1}}`,
		"type not a string":  `{"type":7}`,
		"trailing garbage":   patchsetCreated + "}",
	} {
		if w := post(h, "/?token=s3cret", body); w.Code != 400 || errorCode(t, w) != "InvalidArgument" {
			t.Errorf("%s: %d %s, want 400 InvalidArgument", name, w.Code, w.Body.String())
		}
	}
	big := `{"type":"patchset-created","pad":"` + strings.Repeat("x", 5000) + `"}`
	if w := post(h, "/?token=s3cret", big); w.Code != http.StatusRequestEntityTooLarge || errorCode(t, w) != "ResourceExhausted" {
		t.Errorf("oversized body: %d %s, want 413", w.Code, w.Body.String())
	}
	if n := rec.Count(""); n != 0 {
		t.Errorf("bad requests deferred %d tasks", n)
	}
}

// TestDeferFails: a failure to defer answers 503 so the plugin may retry.
func TestDeferFails(t *testing.T) {
	rec := &taskstest.Recorder{}
	rec.SetFail(func(string) error { return errs.E(errs.NotFound, "pubsub.Defer", "topic missing") })
	w := post(newHandler(rec), "/?token=s3cret", patchsetCreated)
	if w.Code != http.StatusServiceUnavailable || errorCode(t, w) != "Unavailable" {
		t.Errorf("%d %s, want 503 Unavailable", w.Code, w.Body.String())
	}
}

func TestParseEvent(t *testing.T) {
	ev, err := ParseEvent([]byte(readyVote))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "comment-added" || ev.Change != 1234 || ev.Project != "proj" || ev.Branch != "main" || ev.Patchset != 2 ||
		len(ev.Approvals) != 2 || ev.Approvals[0].Changed || !ev.Approvals[1].Changed || ev.Approvals[1].Label != "Presubmit-Ready" {
		t.Errorf("ParseEvent = %+v", ev)
	}
	if ev, err := ParseEvent([]byte(refUpdated)); err != nil || ev.Change != 0 || ev.Type != "ref-updated" {
		t.Errorf("ref-updated = %+v, %v", ev, err)
	}
}

// FuzzParseEvent: the parser never panics, refuses only with
// InvalidArgument, and what it accepts has a type and, for the types that
// lead to a deferral, a positive change number.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{patchsetCreated, readyVote, plainComment, restored, refUpdated, abandoned, otherProj,
		"", "{}", "null", `{"type":""}`, `{"type":"patchset-created","change":{"number":"9999999999999999999999"}}`,
		`{"type":"comment-added","change":{"number":1},"approvals":[{"type":"L","value":"1","oldValue":null}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseEvent(b)
		if err != nil {
			if !errs.Is(err, errs.InvalidArgument) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		if ev.Type == "" || ev.Change < 0 {
			t.Fatalf("accepted %+v", ev)
		}
		for _, ct := range changeTypes {
			if ev.Type == ct && ev.Change <= 0 {
				t.Fatalf("accepted a %s event without a change: %+v", ct, ev)
			}
		}
	})
}
