package launcher

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
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
	chaos       *chaos // nil: deliver faithfully

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
	if b.chaos != nil {
		b.chaos.serve(w, r, be, b.name, b.log)
		return
	}
	be.proxy.ServeHTTP(w, r)
}

// chaos delivers requests to a backend unreliably (see Chaos).
type chaos struct {
	Chaos
	mu     sync.Mutex
	rng    *rand.Rand
	counts ChaosCounts
}

// ChaosCounts counts what the chaos did (Topology.ChaosCounts).
type ChaosCounts struct {
	Pushes       int // requests received
	Deliveries   int // requests forwarded to an instance (twice per push with Duplicate)
	FailedBefore int // answered 500 without forwarding
	FailedAfter  int // answered 500 after forwarding (the answer lost)
}

func (c *chaos) snapshot() ChaosCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts
}

func newChaos(c Chaos) *chaos {
	seed := c.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &chaos{Chaos: c, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// roll decides a request's fate: fail it, and if so before forwarding it.
func (c *chaos) roll() (fail, before bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts.Pushes++
	if c.rng.Float64() >= c.FailRate {
		return false, false
	}
	before = c.rng.IntN(2) == 0
	if before {
		c.counts.FailedBefore++
	} else {
		c.counts.FailedAfter++
	}
	return true, before
}

// maxChaosBody bounds a request the chaos holds in memory to send twice
// (a Pub/Sub push of a 10 MB message, base64-encoded, fits).
const maxChaosBody = 16 << 20

func (c *chaos) serve(w http.ResponseWriter, r *http.Request, be *backend, name string, log *slog.Logger) {
	fail, before := c.roll()
	if fail && before {
		log.Debug("balancer: chaos: failed before forwarding", "function", name)
		http.Error(w, "chaos: delivery failed", http.StatusInternalServerError)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxChaosBody))
	if err != nil {
		http.Error(w, "chaos: reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	n := 1
	if c.Duplicate {
		n = 2
	}
	c.mu.Lock()
	c.counts.Deliveries += n
	c.mu.Unlock()
	recs := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range recs {
		recs[i] = httptest.NewRecorder()
		req := r.Clone(r.Context())
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		wg.Go(func() { be.proxy.ServeHTTP(recs[i], req) })
	}
	wg.Wait()
	if fail {
		log.Debug("balancer: chaos: answer lost after forwarding", "function", name, "status", recs[0].Code)
		http.Error(w, "chaos: the answer was lost", http.StatusInternalServerError)
		return
	}
	out := recs[0]
	for _, rec := range recs {
		if rec.Code < 200 || rec.Code > 299 {
			out = rec
			break
		}
	}
	for k, v := range out.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(out.Code)
	_, _ = w.Write(out.Body.Bytes())
}
