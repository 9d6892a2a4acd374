// Package gcsfake serves fake-gcs-server (github.com/fsouza/fake-gcs-server)
// closer to Cloud Storage: with the object preconditions the real service
// enforces on deletes and metadata updates, which the fake ignores. The
// cache's cleanup depends on them (an object used during a cleanup is
// kept), so the tests and the emulated topology both serve the fake
// through Wrap.
package gcsfake

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// Preconditions is an http.Handler in front of a fake-gcs-server that adds
// what the fake lacks: it ignores ifGenerationMatch and
// ifMetagenerationMatch on deletes and metadata updates, and never changes
// an object's metageneration. Preconditions keeps a metageneration per
// object generation (1 at upload, +1 per metadata update), enforces both
// preconditions on PATCH and DELETE as Cloud Storage documents them (412
// conditionNotMet), and reports its metagenerations in the fake's JSON
// answers. Create it with Wrap.
type Preconditions struct {
	srv  *fakestorage.Server
	next http.Handler
	// mu makes each checked request atomic with its check.
	mu sync.Mutex
	// meta: "bucket/name#generation" → metageneration, if above 1.
	meta    map[string]int64
	refused atomic.Int64 // requests answered 412 by the handler
	patched atomic.Int64 // metadata updates done
}

// Patches counts the metadata updates done.
func (p *Preconditions) Patches() int64 { return p.patched.Load() }

// Refused counts the requests answered 412.
func (p *Preconditions) Refused() int64 { return p.refused.Load() }

// Wrap returns the handler serving srv (created with NoListener) with
// preconditions enforced.
func Wrap(srv *fakestorage.Server) *Preconditions {
	return &Preconditions{srv: srv, next: srv.HTTPHandler(), meta: map[string]int64{}}
}

const objPrefix = "/storage/v1/b/"

// objectPath splits a JSON API path into bucket and object (object "" for
// the list endpoint); ok is false for other paths.
func objectPath(r *http.Request) (bucket, object string, ok bool) {
	p, found := strings.CutPrefix(r.URL.EscapedPath(), objPrefix)
	if !found {
		return "", "", false
	}
	b, rest, found := strings.Cut(p, "/o")
	if !found {
		return "", "", false
	}
	bucket, _ = url.PathUnescape(b)
	if rest == "" || rest == "/" {
		return bucket, "", true
	}
	if !strings.HasPrefix(rest, "/") {
		return "", "", false
	}
	object, err := url.PathUnescape(rest[1:])
	return bucket, object, err == nil
}

func (p *Preconditions) key(bucket, name string, gen int64) string {
	return bucket + "/" + name + "#" + strconv.FormatInt(gen, 10)
}

func (p *Preconditions) metagen(bucket, name string, gen int64) int64 {
	if m, ok := p.meta[p.key(bucket, name, gen)]; ok {
		return m
	}
	return 1
}

func (p *Preconditions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bucket, object, ok := objectPath(r)
	if !ok {
		p.next.ServeHTTP(w, r) // uploads, downloads
		return
	}
	if r.Method == http.MethodGet && r.URL.Query().Get("alt") == "media" {
		p.next.ServeHTTP(w, r)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var gen int64
	if object != "" && (r.Method == http.MethodPatch || r.Method == http.MethodDelete) {
		cur, err := p.srv.GetObject(bucket, object)
		if err == nil {
			gen = cur.Generation
			q := r.URL.Query()
			if !match(q.Get("ifGenerationMatch"), gen) || !match(q.Get("ifMetagenerationMatch"), p.metagen(bucket, object, gen)) {
				p.refused.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusPreconditionFailed)
				io.WriteString(w, `{"error":{"code":412,"message":"At least one of the pre-conditions you specified did not hold.","errors":[{"reason":"conditionNotMet"}]}}`)
				return
			}
		}
	}
	rec := httptest.NewRecorder()
	p.next.ServeHTTP(rec, r)
	if rec.Code/100 == 2 && gen != 0 {
		k := p.key(bucket, object, gen)
		if r.Method == http.MethodPatch {
			p.patched.Add(1)
			p.meta[k] = p.metagen(bucket, object, gen) + 1
		} else {
			delete(p.meta, k)
		}
	}
	body := rec.Body.Bytes()
	if rec.Code/100 == 2 && strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		body = p.rewrite(body)
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.Code)
	w.Write(body)
}

func match(cond string, v int64) bool {
	if cond == "" {
		return true
	}
	n, err := strconv.ParseInt(cond, 10, 64)
	return err == nil && n == v
}

// rewrite puts the handler's metagenerations into an object or list answer.
func (p *Preconditions) rewrite(body []byte) []byte {
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return body
	}
	fix := func(o map[string]any) {
		b, _ := o["bucket"].(string)
		n, _ := o["name"].(string)
		gs, _ := o["generation"].(string)
		g, err := strconv.ParseInt(gs, 10, 64)
		if n == "" || err != nil {
			return
		}
		o["metageneration"] = strconv.FormatInt(p.metagen(b, n, g), 10)
	}
	if items, ok := m["items"].([]any); ok {
		for _, it := range items {
			if o, ok := it.(map[string]any); ok {
				fix(o)
			}
		}
	} else {
		fix(m)
	}
	out, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return bytes.TrimSpace(out)
}
