package launcher

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBalancer: each request goes to the next free instance; with every
// instance busy (or down) the balancer answers 503 at once, and a freed
// instance takes the next request.
func TestBalancer(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan string, 4)
	backend := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/block" {
				entered <- name
				<-release
			}
			io.WriteString(w, name)
		}))
		t.Cleanup(s.Close)
		return s
	}
	a, b := backend("a"), backend("b")
	bal, err := newBalancer("fn", []string{a.URL, b.URL}, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(bal)
	defer front.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(front.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	idle := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			bal.mu.Lock()
			n := bal.backends[0].inflight + bal.backends[1].inflight
			bal.mu.Unlock()
			if n == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d requests still counted in flight", n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	// Free instances: round robin.
	if c1, n1 := get("/"); c1 != 200 || n1 != "a" {
		t.Fatalf("first request: %d %q, want 200 from a", c1, n1)
	}
	idle()
	if c2, n2 := get("/"); c2 != 200 || n2 != "b" {
		t.Fatalf("second request: %d %q, want 200 from b", c2, n2)
	}
	idle()

	// Both busy: 503, nothing queued.
	type result struct {
		code int
		body string
	}
	done := make(chan result, 2)
	for range 2 {
		go func() {
			resp, err := http.Get(front.URL + "/block")
			if err != nil {
				done <- result{0, err.Error()}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			done <- result{resp.StatusCode, string(body)}
		}()
	}
	busy := map[string]bool{<-entered: true, <-entered: true}
	if !busy["a"] || !busy["b"] {
		t.Fatalf("blocked requests went to %v, want one on each instance", busy)
	}
	if c, body := get("/"); c != http.StatusServiceUnavailable {
		t.Fatalf("all busy: %d %q, want 503", c, body)
	}

	// One freed: the next request is forwarded to it.
	release <- struct{}{}
	freed := <-done
	if freed.code != 200 {
		t.Fatalf("released request: %+v", freed)
	}
	idle1 := func() bool {
		bal.mu.Lock()
		defer bal.mu.Unlock()
		return bal.backends[0].inflight+bal.backends[1].inflight == 1
	}
	for deadline := time.Now().Add(5 * time.Second); !idle1(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the released request is still counted")
		}
	}
	if c, n := get("/"); c != 200 || n != freed.body {
		t.Errorf("one free: %d %q, want 200 from %s", c, n, freed.body)
	}
	close(release)
	<-done
	idle()

	// An instance that is down (exited, restarting) is skipped; when the
	// only one up is busy, 503.
	bal.setUp(0, false)
	for range 2 {
		if c, n := get("/"); c != 200 || n != "b" {
			t.Errorf("a down: %d %q, want 200 from b", c, n)
		}
		idle()
	}
	bal.setUp(1, false)
	if c, _ := get("/"); c != http.StatusServiceUnavailable {
		t.Errorf("all down: %d, want 503", c)
	}
}

// TestBalancerConcurrency: an instance takes up to Concurrency requests.
func TestBalancerConcurrency(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 3)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	defer s.Close()
	bal, err := newBalancer("fn", []string{s.URL}, 2, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(bal)
	defer front.Close()
	done := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := http.Get(front.URL)
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	<-entered
	<-entered
	resp, err := http.Get(front.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("third request on an instance of concurrency 2: %d, want 503", resp.StatusCode)
	}
	close(release)
	for range 2 {
		if c := <-done; c != 200 {
			t.Errorf("forwarded request: %d", c)
		}
	}
}

// TestBalancerChaos: with Duplicate every request reaches the instance
// twice, with the same body; FailRate answers about that fraction 500,
// half of them without reaching the instance; the same seed makes the same
// choices.
func TestBalancerChaos(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls[string(body)]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer inst.Close()
	var last *chaos
	run := func(c Chaos, n int) (codes map[int]int, perBody map[string]int) {
		t.Helper()
		mu.Lock()
		clear(calls)
		mu.Unlock()
		bal, err := newBalancer("fn", []string{inst.URL}, 1, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		bal.chaos = newChaos(c)
		last = bal.chaos
		front := httptest.NewServer(bal)
		defer front.Close()
		codes = map[int]int{}
		for i := range n {
			resp, err := http.Post(front.URL+"/push", "application/json", strings.NewReader(fmt.Sprint(i)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			codes[resp.StatusCode]++
		}
		mu.Lock()
		defer mu.Unlock()
		return codes, maps.Clone(calls)
	}

	codes, per := run(Chaos{Duplicate: true}, 20)
	if codes[http.StatusNoContent] != 20 {
		t.Errorf("duplicate only: answers %v, want 20 × 204", codes)
	}
	for i := range 20 {
		if n := per[fmt.Sprint(i)]; n != 2 {
			t.Errorf("duplicate only: request %d reached the instance %d times, want 2", i, n)
		}
	}
	if c := last.snapshot(); c != (ChaosCounts{Pushes: 20, Deliveries: 40}) {
		t.Errorf("duplicate only: counts %+v", c)
	}

	codes, per = run(Chaos{FailRate: 0.1, Seed: 7}, 1000)
	if f := codes[http.StatusInternalServerError]; f < 60 || f > 140 {
		t.Errorf("FailRate 0.1: %d of 1000 answered 500 (%v)", f, codes)
	}
	reached := 0
	for _, n := range per {
		reached += n
	}
	if lost := 1000 - reached; lost < 20 || lost > codes[http.StatusInternalServerError]-20 {
		t.Errorf("FailRate 0.1: %d requests never reached the instance, of %d failed: want about half", lost, codes[http.StatusInternalServerError])
	}
	if c := last.snapshot(); c.Pushes != 1000 || c.FailedBefore+c.FailedAfter != codes[http.StatusInternalServerError] ||
		c.Deliveries != reached || c.FailedBefore != 1000-reached {
		t.Errorf("FailRate 0.1: counts %+v; %d answered 500, %d reached the instance", c, codes[http.StatusInternalServerError], reached)
	}
	again, _ := run(Chaos{FailRate: 0.1, Seed: 7}, 1000)
	if !maps.Equal(codes, again) {
		t.Errorf("same seed, different answers: %v then %v", codes, again)
	}

	if _, err := New(Options{Chaos: &Chaos{FailRate: 1.5}}); err == nil {
		t.Error("New accepted Chaos.FailRate 1.5")
	}
	o := Options{Chaos: &Chaos{}, Instances: 1}
	if names := portNames(o); len(names) != 5+2*len(Functions()) {
		t.Errorf("with Chaos and one instance: %d ports, want a balancer and an instance per function", len(names))
	}
}
