//go:build unix

package worker

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/cache/cachetest"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
)

// TestCacheProxy runs a job that publishes its TOLLGATE_CACHE_URL and waits;
// the test uses the cache through that URL as the job would, then lets the
// job end and checks the URL is dead.
func TestCacheProxy(t *testing.T) {
	a := assign("cached", `echo "$TOLLGATE_CACHE_URL" > "$TOLLGATE_WORK_DIR/url"
while [ ! -e "$TOLLGATE_WORK_DIR/go" ]; do sleep 0.02; done`, 0)
	f := newFake(a)
	mem := cachetest.NewMem()
	w, _, _ := start(t, f, func(o *Options) { o.Cache = mem })
	dir := filepath.Join(w.workDir, a.Job.ID+"-a1")
	var url string
	eventually(t, 10*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "url"))
		url = strings.TrimSpace(string(b))
		return err == nil && strings.HasSuffix(string(b), "\n")
	}, "the job to publish its cache URL")
	if !strings.HasPrefix(url, "http://127.0.0.1:") || len(url) < len("http://127.0.0.1:1/")+64 {
		t.Fatalf("TOLLGATE_CACHE_URL = %q, want a loopback URL with a token", url)
	}

	ctx := t.Context()
	c, err := cache.NewHTTPClient(url, &cache.HTTPClientOptions{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("built once, used by every job")
	d := cache.DigestOf(data)
	if err := c.Put(ctx, d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRef(ctx, "deps/linux", d); err != nil {
		t.Fatal(err)
	}
	if got, err := c.ResolveRef(ctx, "deps/linux"); err != nil || got != d {
		t.Fatalf("ResolveRef = %v, %v", got, err)
	}
	rc, err := c.Get(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if mem.Stored() != 1 {
		t.Errorf("the worker's cache holds %d objects, want 1", mem.Stored())
	}

	// Another token, or none, is refused.
	base := url[:strings.LastIndexByte(url, '/')]
	for _, u := range []string{base + "/" + strings.Repeat("0", 64), base} {
		bad, _ := cache.NewHTTPClient(u, &cache.HTTPClientOptions{Retries: -1})
		if _, err := bad.FindMissing(ctx, []cache.Digest{d}); !errs.Is(err, errs.PermissionDenied) {
			t.Errorf("FindMissing via %s: %v, want PermissionDenied", u, err)
		}
	}
	resp, err := http.Get(base + "/")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET / = %d, want 403", resp.StatusCode)
		}
	}

	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := waitResult(t, f, a.Job.ID, 10*time.Second); r.State != model.Completed {
		t.Fatalf("ended %s, log:\n%s", r.State, f.log(a.Job.ID))
	}
	if _, err := c.FindMissing(ctx, []cache.Digest{d}); !errs.Is(err, errs.Unavailable) {
		t.Errorf("the cache URL still answers after the job ended: %v", err)
	}
}
