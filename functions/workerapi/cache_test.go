package workerapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/tollgate-ci/tollgate/adapters/diskcache"
	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/functions/workerapi"
)

// newCacheEnv is newEnv with a disk cache behind the API.
func newCacheEnv(t *testing.T) (*env, *diskcache.Cache) {
	t.Helper()
	c, err := diskcache.Open(t.Context(), t.TempDir(), &diskcache.Options{Log: quiet(),
		FreeSpace: func() (diskcache.Space, error) { return diskcache.Space{Free: 1 << 40, Total: 1 << 41}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return newEnv(t, func(o *workerapi.Options) { o.Cache = c }), c
}

func readAll(t *testing.T, a cache.Access, d cache.Digest) []byte {
	t.Helper()
	rc, err := a.Get(t.Context(), d)
	if err != nil {
		t.Fatalf("Get(%v): %v", d, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%v): read: %v", d, err)
	}
	return b
}

func TestCacheRoundTrip(t *testing.T) {
	e, dc := newCacheEnv(t)
	ctx := t.Context()
	c := e.client("w1", viaProxy(e), func(o *workerapi.ClientOptions) { o.MemBuffer = 1024 })
	small, big := []byte("small object"), pattern(300<<10)
	ds, db := cache.DigestOf(small), cache.DigestOf(big)

	e.proxy.set("find_missing", "503")
	if m, err := c.FindMissing(ctx, []cache.Digest{ds, db}); err != nil || !slices.Equal(m, []cache.Digest{ds, db}) {
		t.Fatalf("FindMissing = %v, %v", m, err)
	}
	e.proxy.set(strconv.Itoa(len(small)), "503", "lost")
	if err := c.Put(ctx, ds, bytes.NewReader(small)); err != nil {
		t.Fatalf("Put through a 503 and a lost answer: %v", err)
	}
	// Larger than MemBuffer and unseekable: spooled to a file for retries.
	e.proxy.set(strconv.Itoa(len(big)), "503")
	if err := c.Put(ctx, db, onlyReader{bytes.NewReader(big)}); err != nil {
		t.Fatalf("Put(big): %v", err)
	}
	if m, err := dc.FindMissing(ctx, []cache.Digest{ds, db}); err != nil || len(m) != 0 {
		t.Fatalf("the server's cache misses %v, %v", m, err)
	}
	if got := readAll(t, c, db); !bytes.Equal(got, big) {
		t.Errorf("Get(big) = %d bytes", len(got))
	}
	if got := readAll(t, c, ds); !bytes.Equal(got, small) {
		t.Errorf("Get(small) = %q", got)
	}
	if err := c.SetRef(ctx, "build/deps", db); err != nil {
		t.Fatal(err)
	}
	if d, err := c.ResolveRef(ctx, "build/deps"); err != nil || d != db {
		t.Errorf("ResolveRef = %v, %v", d, err)
	}

	absent := cache.DigestOf([]byte("absent"))
	_, err := c.Get(ctx, absent)
	wantCode(t, "Get(absent)", err, errs.NotFound)
	_, err = c.ResolveRef(ctx, "nope")
	wantCode(t, "ResolveRef(unknown)", err, errs.NotFound)
	wantCode(t, "SetRef to an absent object", c.SetRef(ctx, "r", absent), errs.FailedPrecondition)
	wantCode(t, "Put(other content)", c.Put(ctx, absent, bytes.NewReader([]byte("ABSENT"))), errs.InvalidArgument)
	before := e.proxy.n("6")
	wantCode(t, "Put(longer content)", c.Put(ctx, absent, bytes.NewReader([]byte("absent!"))), errs.InvalidArgument)
	wantCode(t, "Put(shorter content)", c.Put(ctx, absent, bytes.NewReader([]byte("absen"))), errs.InvalidArgument)
	if n := e.proxy.n("6") - before; n != 0 {
		t.Errorf("content of the wrong length was sent %d times", n)
	}
	if m, _ := dc.FindMissing(ctx, []cache.Digest{absent}); len(m) != 1 {
		t.Errorf("a refused Put stored the object")
	}
}

func wantCode(t *testing.T, what string, err error, c errs.Code) {
	t.Helper()
	if !errs.Is(err, c) {
		t.Errorf("%s: %v (%v), want %v", what, err, errs.CodeOf(err), c)
	}
}

// TestCacheAuth checks that cache calls are authenticated like the others
// and that a refused one writes nothing.
func TestCacheAuth(t *testing.T) {
	e, dc := newCacheEnv(t)
	token := e.enroll("w1")
	data := []byte("payload")
	d := cache.DigestOf(data)
	put := "cache/cas/" + d.String()
	cases := []struct {
		name     string
		q        rawReq
		status   int
		code     string
		accepted bool
	}{
		{"no token", rawReq{op: put, method: "PUT", channel: ch, body: data}, http.StatusUnauthorized, "Unauthenticated", false},
		{"unknown token", rawReq{op: put, method: "PUT", token: "nope", channel: ch, body: data}, http.StatusForbidden, "PermissionDenied", false},
		{"no channel", rawReq{op: put, method: "PUT", token: token, body: data}, http.StatusForbidden, "PermissionDenied", false},
		{"wrong channel", rawReq{op: put, method: "PUT", token: token, channel: "7", body: data}, http.StatusForbidden, "PermissionDenied", false},
		{"bad digest", rawReq{op: "cache/cas/xyz/7", method: "PUT", token: token, channel: ch, body: data}, http.StatusBadRequest, "InvalidArgument", false},
		{"unknown endpoint", rawReq{op: "cache/nothing", token: token, channel: ch}, http.StatusNotFound, "NotFound", false},
		{"accepted", rawReq{op: put, method: "PUT", token: token, channel: ch, body: data}, http.StatusNoContent, "", true},
	}
	for _, tc := range cases {
		r := do(t, e.srv.URL, tc.q)
		if r.status != tc.status || r.code != tc.code {
			t.Errorf("%s: %d %q (%s), want %d %q", tc.name, r.status, r.code, r.body, tc.status, tc.code)
		}
		m, err := dc.FindMissing(t.Context(), []cache.Digest{d})
		if err != nil {
			t.Fatal(err)
		}
		if stored := len(m) == 0; stored != tc.accepted {
			t.Errorf("%s: stored = %v", tc.name, stored)
		}
	}
	body, _ := json.Marshal(cache.FindMissingRequest{Digests: []cache.Digest{d}})
	r := do(t, e.srv.URL, rawReq{op: "cache/find_missing", token: token, channel: ch, body: body})
	var reply cache.FindMissingReply
	if r.status != http.StatusOK || json.Unmarshal(r.body, &reply) != nil || len(reply.Missing) != 0 {
		t.Errorf("find_missing = %d %s", r.status, r.body)
	}
}

func TestCacheAbsent(t *testing.T) {
	e := newEnv(t)
	c := e.client("w1")
	_, err := c.FindMissing(t.Context(), []cache.Digest{cache.DigestOf(nil)})
	wantCode(t, "FindMissing on a server without a cache", err, errs.NotFound)
	r := do(t, e.srv.URL, rawReq{op: "cache/find_missing", token: e.enroll("w2"), channel: ch, body: []byte(`{"digests":[]}`)})
	if r.status != http.StatusNotFound || r.code != "NotFound" {
		t.Errorf("cache call without a cache = %d %q", r.status, r.code)
	}
}
