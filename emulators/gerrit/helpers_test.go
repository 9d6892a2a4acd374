package gerrit

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/clock"
)

const (
	testProject = "platform/external/perfetto"
	testUser    = "tollgate-bot"
	testPass    = "s3cret"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	t     *testing.T
	s     *Server
	clock *clock.Fake
	url   string
	hc    *http.Client
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	clk := clock.NewFake(t0)
	if opts.Clock == nil {
		opts.Clock = clk
	}
	if opts.User == "" && opts.Users == nil {
		opts.User, opts.Password = testUser, testPass
	}
	s := New(opts)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Close()
		srv.Close()
	})
	if _, err := s.CreateBranch(testProject, "main", CommitSpec{Subject: "Initial commit"}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, s: s, clock: clk, url: srv.URL, hc: srv.Client()}
}

// do sends a request; path starting with "/a/" is sent with the bot's
// credentials.
func (e *env) do(method, path, contentType string, body []byte) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if strings.HasPrefix(path, "/a/") {
		req.SetBasicAuth(testUser, testPass)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// getJSON GETs a REST path, checks 200 and the XSSI prefix, and decodes.
func (e *env) getJSON(path string, v any) {
	e.t.Helper()
	status, _, body := e.do(http.MethodGet, path, "", nil)
	if status != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, status, body)
	}
	decodeGerrit(e.t, body, v)
}

func decodeGerrit(t *testing.T, body []byte, v any) {
	t.Helper()
	rest, ok := bytes.CutPrefix(body, []byte(")]}'\n"))
	if !ok {
		t.Fatalf("missing XSSI prefix: %q", body)
	}
	if err := json.Unmarshal(rest, v); err != nil {
		t.Fatalf("decode %s: %v", rest, err)
	}
}

// review POSTs a ReviewInput and returns status and body.
func (e *env) review(id, rev string, in any) (int, []byte) {
	e.t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		e.t.Fatal(err)
	}
	status, _, body := e.do(http.MethodPost, "/a/changes/"+id+"/revisions/"+rev+"/review", "application/json; charset=UTF-8", b)
	return status, body
}

// change creates a change in testProject/main and advances the clock 1s.
func (e *env) change(subject, owner string) PatchSet {
	e.t.Helper()
	ps, err := e.s.CreateChange(ChangeSpec{Project: testProject, Branch: "main", Subject: subject, OwnerEmail: owner})
	if err != nil {
		e.t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	return ps
}

func numbers(cs []ChangeInfo) []int {
	out := make([]int, len(cs))
	for i, c := range cs {
		out[i] = c.Number
	}
	return out
}
