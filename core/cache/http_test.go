package cache_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/cache/cachetest"
	"github.com/tollgate-ci/tollgate/core/errs"
)

// server serves mem under /base/ and counts requests; fail, if set, may
// answer a request itself (returning true).
type server struct {
	mem      *cachetest.Mem
	srv      *httptest.Server
	requests atomic.Int64
	fail     atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

func (s *server) setFail(fn func(w http.ResponseWriter, r *http.Request) bool) { s.fail.Store(&fn) }

func newServer(t *testing.T) *server {
	s := &server{mem: cachetest.NewMem()}
	h := http.StripPrefix("/base", cache.NewHandler(s.mem, nil))
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if f := s.fail.Load(); f != nil && (*f)(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *server) client(t *testing.T) *cache.HTTPClient {
	c, err := cache.NewHTTPClient(s.srv.URL+"/base/", &cache.HTTPClientOptions{BackoffBase: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var ctx = context.Background()

func TestHTTPRoundTrip(t *testing.T) {
	s := newServer(t)
	c := s.client(t)
	a, b := []byte("object a"), []byte{}
	da, db := cache.DigestOf(a), cache.DigestOf(b)
	if m, err := c.FindMissing(ctx, []cache.Digest{da, db, da}); err != nil || !slices.Equal(m, []cache.Digest{da, db}) {
		t.Fatalf("FindMissing = %v, %v", m, err)
	}
	for _, o := range [][]byte{a, b} {
		if err := c.Put(ctx, cache.DigestOf(o), bytes.NewReader(o)); err != nil {
			t.Fatalf("Put(%q): %v", o, err)
		}
	}
	if m, err := c.FindMissing(ctx, []cache.Digest{da, db}); err != nil || len(m) != 0 {
		t.Fatalf("FindMissing after Put = %v, %v", m, err)
	}
	for _, o := range [][]byte{a, b} {
		rc, err := c.Get(ctx, cache.DigestOf(o))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, o) {
			t.Errorf("Get = %q, %v; want %q", got, err, o)
		}
	}
	if err := c.SetRef(ctx, "build/deps", da); err != nil {
		t.Fatal(err)
	}
	if d, err := c.ResolveRef(ctx, "build/deps"); err != nil || d != da {
		t.Errorf("ResolveRef = %v, %v", d, err)
	}

	// Large sets go in batches.
	many := make([]cache.Digest, cache.MaxFindMissing+5)
	for i := range many {
		many[i] = cache.DigestOf([]byte{byte(i), byte(i >> 8)})
	}
	before := s.requests.Load()
	if m, err := c.FindMissing(ctx, many); err != nil || len(m) != len(many) {
		t.Errorf("FindMissing(%d) = %d missing, %v", len(many), len(m), err)
	}
	if n := s.requests.Load() - before; n != 2 {
		t.Errorf("FindMissing(%d) took %d requests, want 2", len(many), n)
	}
}

func TestHTTPErrors(t *testing.T) {
	s := newServer(t)
	c := s.client(t)
	data := []byte("data")
	d := cache.DigestOf(data)
	absent := cache.DigestOf([]byte("absent"))
	big := cache.Digest{Hash: d.Hash, Size: 2 << 20}

	_, err := c.Get(ctx, absent)
	wantCode(t, "Get(absent)", err, errs.NotFound)
	_, err = c.ResolveRef(ctx, "nope")
	wantCode(t, "ResolveRef(unknown)", err, errs.NotFound)
	wantCode(t, "SetRef to an absent object", c.SetRef(ctx, "r", absent), errs.FailedPrecondition)
	wantCode(t, "Put(other content)", c.Put(ctx, d, strings.NewReader("DATA")), errs.InvalidArgument)
	// The client refuses content of the wrong length before the server stores it.
	wantCode(t, "Put(longer)", c.Put(ctx, d, strings.NewReader("data+")), errs.InvalidArgument)
	wantCode(t, "Put(shorter)", c.Put(ctx, d, strings.NewReader("dat")), errs.InvalidArgument)
	wantCode(t, "Put(content for an empty digest)", c.Put(ctx, cache.DigestOf(nil), strings.NewReader("x")), errs.InvalidArgument)
	var bigPuts atomic.Int64
	s.setFail(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, big.String()) {
			bigPuts.Add(1)
		}
		return false
	})
	wantCode(t, "Put(too large)", c.Put(ctx, big, bytes.NewReader(make([]byte, big.Size))), errs.ResourceExhausted)
	if n := bigPuts.Load(); n != 1 {
		t.Errorf("a refused Put was sent %d times, want once", n)
	}
	if n := s.mem.Stored(); n != 0 {
		t.Errorf("%d objects stored by refused Puts", n)
	}

	// Raw requests the client would not send.
	raw := []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/base/find_missing", "", http.StatusMethodNotAllowed},
		{"POST", "/base/find_missing", "{", http.StatusBadRequest},
		{"POST", "/base/find_missing", `{"digests":["nope"]}`, http.StatusBadRequest},
		{"POST", "/base/find_missing", `{"digests":[]} {}`, http.StatusBadRequest},
		{"GET", "/base/cas/" + d.Hash, "", http.StatusBadRequest},
		{"GET", "/base/cas/" + strings.ToUpper(d.Hash) + "/4", "", http.StatusBadRequest},
		{"DELETE", "/base/cas/" + d.String(), "", http.StatusMethodNotAllowed},
		{"PUT", "/base/refs/a/../b", `{"digest":"` + d.String() + `"}`, http.StatusBadRequest},
		{"PUT", "/base/refs/ok", `{}`, http.StatusBadRequest},
		{"GET", "/base/elsewhere", "", http.StatusNotFound},
	}
	for _, r := range raw {
		req, _ := http.NewRequest(r.method, s.srv.URL+r.path, strings.NewReader(r.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != r.status || !strings.Contains(string(body), `"code"`) {
			t.Errorf("%s %s = %d %s, want %d with a JSON error", r.method, r.path, resp.StatusCode, body, r.status)
		}
	}
}

func TestHTTPRetries(t *testing.T) {
	s := newServer(t)
	c := s.client(t)
	data := []byte("retried")
	d := cache.DigestOf(data)
	var failures atomic.Int64
	s.setFail(func(w http.ResponseWriter, r *http.Request) bool {
		if failures.Add(-1) >= 0 {
			io.Copy(io.Discard, r.Body)
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	failures.Store(2)
	if err := c.Put(ctx, d, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put of a seekable reader through 2 failures: %v", err)
	}
	failures.Store(2)
	if m, err := c.FindMissing(ctx, []cache.Digest{d}); err != nil || len(m) != 0 {
		t.Fatalf("FindMissing through 2 failures: %v, %v", m, err)
	}
	failures.Store(1)
	other := []byte("not seekable")
	err := c.Put(ctx, cache.DigestOf(other), io.MultiReader(bytes.NewReader(other)))
	wantCode(t, "Put of an unseekable reader through a failure", err, errs.Unavailable)
	failures.Store(10)
	_, err = c.ResolveRef(ctx, "r")
	wantCode(t, "ResolveRef through 10 failures", err, errs.Unavailable)
}

func TestHTTPCorruptDownload(t *testing.T) {
	s := newServer(t)
	c := s.client(t)
	data := []byte("the real content")
	d := cache.DigestOf(data)
	if err := c.Put(ctx, d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	s.setFail(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet {
			w.Write(bytes.ToUpper(data))
			return true
		}
		return false
	})
	rc, err := c.Get(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	wantCode(t, "reading a corrupt download", err, errs.Unavailable)
}

func wantCode(t *testing.T, what string, err error, c errs.Code) {
	t.Helper()
	if !errs.Is(err, c) {
		t.Errorf("%s: %v (%v), want %v", what, err, errs.CodeOf(err), c)
	}
}

func TestNewHTTPClient(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "http://", "127.0.0.1:80"} {
		if _, err := cache.NewHTTPClient(u, nil); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("NewHTTPClient(%q) = %v", u, err)
		}
	}
	_, err := cache.HTTPClientFromEnv(func(string) string { return "" })
	wantCode(t, "HTTPClientFromEnv without the variable", err, errs.FailedPrecondition)
}

func TestCommand(t *testing.T) {
	s := newServer(t)
	env := func(k string) string {
		if k == cache.EnvURL {
			return s.srv.URL + "/base"
		}
		return ""
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "deps.tar")
	content := []byte("a tarball, say")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	d := cache.DigestOf(content)
	absent := cache.DigestOf([]byte("absent"))
	out := filepath.Join(dir, "out", "got.tar")
	os.MkdirAll(filepath.Dir(out), 0o755)

	cases := []struct {
		args   []string
		stdin  string
		env    func(string) string
		code   int
		stdout string
	}{
		{[]string{"digest", file}, "", env, cache.ExitOK, d.String() + "\n"},
		{[]string{"find-missing", d.String()}, "", env, cache.ExitOK, d.String() + "\n"},
		{[]string{"get", d.String()}, "", env, cache.ExitNotFound, ""},
		{[]string{"put", "-ref", "deps/linux", file}, "", env, cache.ExitOK, d.String() + "\n"},
		{[]string{"put", file}, "", env, cache.ExitOK, d.String() + "\n"}, // present: not sent again
		{[]string{"find-missing", d.String(), absent.String()}, "", env, cache.ExitOK, absent.String() + "\n"},
		{[]string{"find-missing"}, d.String() + "\n" + absent.String() + "\n", env, cache.ExitOK, absent.String() + "\n"},
		{[]string{"get", d.String()}, "", env, cache.ExitOK, string(content)},
		{[]string{"get", "-ref", "deps/linux", "-o", out}, "", env, cache.ExitOK, ""},
		{[]string{"resolve-ref", "deps/linux"}, "", env, cache.ExitOK, d.String() + "\n"},
		{[]string{"set-ref", "deps/other", d.String()}, "", env, cache.ExitOK, ""},
		{[]string{"set-ref", "deps/bad", absent.String()}, "", env, cache.ExitError, ""},
		{[]string{"resolve-ref", "deps/none"}, "", env, cache.ExitNotFound, ""},
		{[]string{"get", "-ref", "deps/none", "-o", filepath.Join(dir, "none")}, "", env, cache.ExitNotFound, ""},
		{[]string{"find-missing", "nope"}, "", env, cache.ExitError, ""},
		{[]string{"put", file}, "", func(string) string { return "" }, cache.ExitError, ""},
		{[]string{}, "", env, cache.ExitUsage, ""},
		{[]string{"frobnicate"}, "", env, cache.ExitUsage, ""},
		{[]string{"get"}, "", env, cache.ExitUsage, ""},
		{[]string{"get", "-ref", "x", d.String()}, "", env, cache.ExitUsage, ""},
		{[]string{"put", "-nope", file}, "", env, cache.ExitUsage, ""},
		{[]string{"help"}, "", env, cache.ExitOK, ""},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := cache.RunCommand(ctx, tc.args, tc.env, strings.NewReader(tc.stdin), &stdout, &stderr)
		if code != tc.code || stdout.String() != tc.stdout {
			t.Errorf("tollgate cache %q = %d, stdout %q (stderr %q); want %d, %q", tc.args, code, stdout.String(), stderr.String(), tc.code, tc.stdout)
		}
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, content) {
		t.Errorf("get -o wrote %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "none")); !os.IsNotExist(err) {
		t.Errorf("a failed get left its output file: %v", err)
	}
	if n := s.mem.Stored(); n != 1 {
		t.Errorf("%d uploads, want 1 (the second put finds the object)", n)
	}
}
