package launcher

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
)

// balancer spreads one function's requests over its instances, as
// App Engine's dev server balancer does: each request goes to the next
// free instance (round robin from the last one chosen), one that is up
// and has fewer than concurrency requests in flight; with none free it
// answers 503, like Cloud Run at its maximum instance count, and the
// caller (Pub/Sub) retries. Nothing is queued.
type balancer struct {
	name        string
	concurrency int
	log         *slog.Logger

	mu       sync.Mutex
	backends []*backend
	next     int
}

type backend struct {
	url      *url.URL
	proxy    *httputil.ReverseProxy
	up       bool
	inflight int
}

// newBalancer returns a balancer over the instance base URLs, all
// considered up until setUp says otherwise.
func newBalancer(name string, instances []string, concurrency int, log *slog.Logger) (*balancer, error) {
	if concurrency < 1 {
		concurrency = 1
	}
	b := &balancer{name: name, concurrency: concurrency, log: log}
	for _, s := range instances {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("launcher: balancer %s: instance URL %q: %w", name, s, err)
		}
		p := httputil.NewSingleHostReverseProxy(u)
		p.FlushInterval = -1 // long polls and streamed logs pass through at once
		p.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			b.log.Warn("balancer: instance unreachable", "function", name, "instance", u.Host, "err", err.Error())
			http.Error(w, "instance unreachable: "+err.Error(), http.StatusBadGateway)
		}
		b.backends = append(b.backends, &backend{url: u, proxy: p, up: true})
	}
	return b, nil
}

// setUp marks instance i up (serving) or down (exited, restarting).
func (b *balancer) setUp(i int, up bool) {
	b.mu.Lock()
	b.backends[i].up = up
	b.mu.Unlock()
}

// acquire picks the next free backend and counts the request on it; nil
// when every one is busy or down.
func (b *balancer) acquire() *backend {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.backends)
	for i := range n {
		idx := (b.next + i) % n
		be := b.backends[idx]
		if be.up && be.inflight < b.concurrency {
			be.inflight++
			b.next = (idx + 1) % n
			return be
		}
	}
	return nil
}

func (b *balancer) release(be *backend) {
	b.mu.Lock()
	be.inflight--
	b.mu.Unlock()
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	be := b.acquire()
	if be == nil {
		b.log.Debug("balancer: every instance busy; 503", "function", b.name, "path", r.URL.Path)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "all "+strconv.Itoa(len(b.backends))+" instances of "+b.name+" are busy", http.StatusServiceUnavailable)
		return
	}
	defer b.release(be)
	be.proxy.ServeHTTP(w, r)
}
