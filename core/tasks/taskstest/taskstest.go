// Package taskstest is the conformance suite of the Tasks port. Every Tasks
// adapter runs RunConformance, so delivery semantics are tested once, here.
//
// Delivery is driven by the backend (a dispatcher pool, a push subscription),
// so the suite talks to an adapter through a Harness that starts delivery to a
// handler the test chooses.
package taskstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// Options configure the backend under test. Adapters must also make their
// retry backoff small (milliseconds) so the suite runs fast.
type Options struct {
	// MaxAttempts is the number of deliveries after which a failing task is
	// dead-lettered.
	MaxAttempts int
}

// Harness is one backend under test, on its own storage.
type Harness struct {
	// Tasks is the port under test. Defer must work before Start.
	Tasks tasks.Tasks
	// Start begins delivering tasks to h and returns a function that stops
	// delivery and waits for in-flight handlers. The suite calls Start at most
	// once per Harness and always calls stop.
	Start func(h tasks.Handler) (stop func())
	// Dead reads the dead letter; nil if the backend keeps it elsewhere,
	// which skips the assertions that need it.
	Dead tasks.DeadLetters
	// Pending counts tasks deferred and not yet acknowledged (waiting,
	// being delivered or waiting for a retry); nil if the backend cannot
	// tell, which skips the checks that acknowledged tasks are gone.
	Pending func(ctx context.Context) (int, error)
	// Reopen abandons this harness as a crash would (no further deliveries
	// from it; it was never started or its stop was called) and returns a
	// new one on the same durable storage. Nil if the backend cannot, which
	// skips the durability test.
	Reopen func(t *testing.T) Harness
}

// RunConformance runs the suite. newHarness returns a harness on fresh
// storage configured with opts; it registers its own cleanup with t.
func RunConformance(t *testing.T, newHarness func(t *testing.T, opts Options) Harness) {
	t.Run("DeliverAll", func(t *testing.T) { testDeliverAll(t, newHarness) })
	t.Run("RetryThenSucceed", func(t *testing.T) { testRetry(t, newHarness) })
	t.Run("DeadAfterMaxAttempts", func(t *testing.T) { testDeadAfterMax(t, newHarness) })
	t.Run("InvalidArgumentIsPermanent", func(t *testing.T) { testPermanent(t, newHarness) })
	t.Run("DeferArgs", func(t *testing.T) { testDeferArgs(t, newHarness) })
	t.Run("DeferBeforeStart", func(t *testing.T) { testDeferBeforeStart(t, newHarness) })
	t.Run("StopWaitsForHandlers", func(t *testing.T) { testStopWaits(t, newHarness) })
	t.Run("Durable", func(t *testing.T) { testDurable(t, newHarness) })
}

// deadline bounds every wait; generous because CI machines are slow and -race
// is slower still, but a failing backend still fails well within it.
const deadline = 15 * time.Second

// waitFor polls cond until it holds or d passes, then fails the test with what.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// start starts h with handler and stops it when the test ends.
func start(t *testing.T, h Harness, handler tasks.Handler) {
	t.Helper()
	stop := h.Start(handler)
	t.Cleanup(stop)
}

// recorder keeps every delivery a handler saw.
type recorder struct {
	mu    sync.Mutex
	tasks []tasks.Task
}

func (r *recorder) add(t tasks.Task) {
	r.mu.Lock()
	r.tasks = append(r.tasks, t)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []tasks.Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tasks.Task(nil), r.tasks...)
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tasks)
}

// findDead returns the dead task with action, or false.
func findDead(t *testing.T, dl tasks.DeadLetters, action string) (model.DeadTask, bool) {
	t.Helper()
	dead, err := dl.ListDead(context.Background(), 100)
	if err != nil {
		t.Fatalf("ListDead: %v", err)
	}
	for _, d := range dead {
		if d.Action == action {
			return d, true
		}
	}
	return model.DeadTask{}, false
}

type numArgs struct {
	N    int    `json:"n"`
	Text string `json:"text"`
}

// text is part of every payload so that escaping bugs show up.
func text(n int) string { return fmt.Sprintf("héllo \"%d\" \\ <&> \u2603", n) }

func testDeliverAll(t *testing.T, newHarness func(*testing.T, Options) Harness) {
	const n, writers = 500, 10
	h := newHarness(t, Options{MaxAttempts: 5})
	ctx := context.Background()

	var mu sync.Mutex
	ids := map[int]string{} // n → task ID
	var deliveries int
	var bad []string
	start(t, h, func(_ context.Context, task tasks.Task) error {
		var a numArgs
		err := tasks.Unmarshal(task, &a)
		mu.Lock()
		defer mu.Unlock()
		deliveries++
		switch {
		case err != nil:
			bad = append(bad, err.Error())
		case task.Action != fmt.Sprintf("act_%d", a.N%3):
			bad = append(bad, fmt.Sprintf("task %d delivered to action %q", a.N, task.Action))
		case a.Text != text(a.N):
			bad = append(bad, fmt.Sprintf("task %d args text %q", a.N, a.Text))
		case task.ID == "" || task.Attempt < 1 || task.Created.IsZero():
			bad = append(bad, fmt.Sprintf("task %d: ID %q, Attempt %d, Created %v", a.N, task.ID, task.Attempt, task.Created))
		case ids[a.N] != "" && ids[a.N] != task.ID:
			bad = append(bad, fmt.Sprintf("task %d redelivered with ID %q, was %q", a.N, task.ID, ids[a.N]))
		default:
			ids[a.N] = task.ID
		}
		return nil
	})

	before := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				if err := h.Tasks.Defer(ctx, fmt.Sprintf("act_%d", i%3), numArgs{i, text(i)}); err != nil {
					errc <- err
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("Defer: %v", err)
	}
	waitFor(t, deadline, fmt.Sprintf("%d tasks delivered", n), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ids)+len(bad) >= n
	})
	mu.Lock()
	badN, firstBad, gotIDs, delivered := len(bad), "", maps.Clone(ids), deliveries
	if badN > 0 {
		firstBad = bad[0]
	}
	mu.Unlock()
	if badN > 0 {
		t.Fatalf("%d bad deliveries, first: %s", badN, firstBad)
	}
	seen := map[string]bool{}
	for i, id := range gotIDs {
		if seen[id] {
			t.Errorf("task %d shares ID %q with another Defer", i, id)
		}
		seen[id] = true
	}
	t.Logf("%d tasks, %d deliveries in %v", n, delivered, time.Since(before))
	waitAcked(t, h)
}

// waitAcked waits until the backend holds no unacknowledged task.
func waitAcked(t *testing.T, h Harness) {
	t.Helper()
	if h.Pending == nil {
		return
	}
	waitFor(t, deadline, "acknowledged tasks to be gone", func() bool {
		n, err := h.Pending(context.Background())
		if err != nil {
			t.Fatalf("Pending: %v", err)
		}
		return n == 0
	})
}

func testRetry(t *testing.T, newHarness func(*testing.T, Options) Harness) {
	const failures = 2
	h := newHarness(t, Options{MaxAttempts: 5})
	var rec recorder
	start(t, h, func(_ context.Context, task tasks.Task) error {
		rec.add(task)
		if task.Attempt <= failures {
			return errs.E(errs.Unavailable, "test", "transient failure %d", task.Attempt)
		}
		return nil
	})
	if err := h.Tasks.Defer(context.Background(), "flaky", map[string]int{"x": 1}); err != nil {
		t.Fatalf("Defer: %v", err)
	}
	waitFor(t, deadline, "a successful delivery", func() bool {
		got := rec.snapshot()
		return len(got) > 0 && got[len(got)-1].Attempt > failures
	})
	got := rec.snapshot()
	for i, task := range got {
		if task.ID != got[0].ID || task.Action != "flaky" || string(task.Args) != `{"x":1}` {
			t.Errorf("delivery %d = %+v, want the same task as the first", i, task)
		}
		if i > 0 && task.Attempt <= got[i-1].Attempt {
			t.Errorf("attempts %d then %d, want increasing", got[i-1].Attempt, task.Attempt)
		}
		if !task.Created.Equal(got[0].Created) {
			t.Errorf("delivery %d Created %v, first had %v", i, task.Created, got[0].Created)
		}
	}
	if got[0].Attempt != 1 {
		t.Errorf("first delivery has Attempt %d, want 1", got[0].Attempt)
	}
	waitAcked(t, h)
	if h.Dead != nil {
		if d, ok := findDead(t, h.Dead, "flaky"); ok {
			t.Errorf("a task that succeeded is in the dead letter: %+v", d)
		}
	}
}

func testDeadAfterMax(t *testing.T, newHarness func(*testing.T, Options) Harness) {
	const maxAttempts = 3
	h := newHarness(t, Options{MaxAttempts: maxAttempts})
	if h.Dead == nil {
		t.Skip("backend keeps no readable dead letter")
	}
	var rec recorder
	start(t, h, func(_ context.Context, task tasks.Task) error {
		rec.add(task)
		return fmt.Errorf("boom on attempt %d", task.Attempt)
	})
	before := time.Now().Add(-time.Second) // tolerate coarse clocks
	if err := h.Tasks.Defer(context.Background(), "doomed", map[string]string{"k": "v"}); err != nil {
		t.Fatalf("Defer: %v", err)
	}
	var d model.DeadTask
	waitFor(t, deadline, "the task in the dead letter", func() bool {
		var ok bool
		d, ok = findDead(t, h.Dead, "doomed")
		return ok
	})
	if d.ID == "" || d.Args != `{"k":"v"}` || d.Attempts != maxAttempts ||
		!strings.Contains(d.LastError, fmt.Sprintf("boom on attempt %d", maxAttempts)) || d.Time.Before(before) {
		t.Errorf("dead task = %+v, want args {\"k\":\"v\"}, %d attempts, the last attempt's error, a recent time",
			d, maxAttempts)
	}
	waitAcked(t, h)
	got := rec.snapshot()
	if len(got) < maxAttempts {
		t.Errorf("dead-lettered after %d deliveries, want %d", len(got), maxAttempts)
	}
	for _, task := range got {
		if task.ID != d.ID {
			t.Errorf("delivered ID %q, dead letter has %q", task.ID, d.ID)
		}
	}
}

func testPermanent(t *testing.T, newHarness func(*testing.T, Options) Harness) {
	h := newHarness(t, Options{MaxAttempts: 5})
	if h.Dead == nil {
		t.Skip("backend keeps no readable dead letter")
	}
	var rec recorder
	start(t, h, func(_ context.Context, task tasks.Task) error {
		rec.add(task)
		var v struct{ Want int }
		return fmt.Errorf("handler: %w", tasks.Unmarshal(task, &v)) // unknown field: InvalidArgument
	})
	if err := h.Tasks.Defer(context.Background(), "malformed", map[string]int{"unknown": 1}); err != nil {
		t.Fatalf("Defer: %v", err)
	}
	var d model.DeadTask
	waitFor(t, deadline, "the task in the dead letter", func() bool {
		var ok bool
		d, ok = findDead(t, h.Dead, "malformed")
		return ok
	})
	if d.Attempts != 1 || !strings.Contains(d.LastError, "unknown") {
		t.Errorf("dead task = %+v, want 1 attempt and the decode error", d)
	}
	if n := rec.len(); n != 1 {
		t.Errorf("a permanent failure was delivered %d times, want 1", n)
	}
}

func testDeferArgs(t *testing.T, newHarness func(*testing.T, Options) Harness) {
	h := newHarness(t, Options{MaxAttempts: 5})
	ctx := context.Background()
	refused := []struct {
		name string
		args any
	}{
		{"array", []int{1, 2}},
		{"string", "x"},
		{"number", 42},
		{"bool", true},
		{"null raw", json.RawMessage("null")},
		{"unmarshalable", func() {}},
		{"NaN", math.NaN()},
		{"channel in map", map[string]any{"c": make(chan int)}},
	}
	for _, tc := range refused {
		if err := h.Tasks.Defer(ctx, "refused", tc.args); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("Defer(%s) = %v, want InvalidArgument", tc.name, err)
		}
	}
	accepted := []struct {
		name, want string
		args       any
	}{
		{"nil", "{}", nil},
		{"struct", `{"n":7,"text":"t"}`, numArgs{7, "t"}},
		{"raw object", `{"a":[1,2]}`, json.RawMessage(`{"a":[1,2]}`)},
		{"empty map", "{}", map[string]int{}},
	}
	var rec recorder
	start(t, h, func(_ context.Context, task tasks.Task) error { rec.add(task); return nil })
	for _, tc := range accepted {
		if err := h.Tasks.Defer(ctx, "accepted_"+tc.name, tc.args); err != nil {
			t.Errorf("Defer(%s) = %v, want nil", tc.name, err)
		}
	}
	waitFor(t, deadline, "accepted tasks delivered", func() bool {
		seen := map[string]bool{}
		for _, task := range rec.snapshot() {
			seen[task.Action] = true
		}
		return len(seen) >= len(accepted)
	})
	got := map[string]string{}
	for _, task := range rec.snapshot() {
		got[task.Action] = string(task.Args)
	}
	if _, ok := got["refused"]; ok {
		t.Errorf("a refused Defer was delivered")
	}
	for _, tc := range accepted {
		if a := got["accepted_"+tc.name]; a != tc.want {
			t.Errorf("Defer(%s) delivered args %s, want %s", tc.name, a, tc.want)
		}
	}
}

func testDeferBeforeStart(t *testing.T, newHarness func(*testing.T, Options) Harness) {
	h := newHarness(t, Options{MaxAttempts: 5})
	const n = 5
	for i := range n {
		if err := h.Tasks.Defer(context.Background(), "early", numArgs{N: i}); err != nil {
			t.Fatalf("Defer: %v", err)
		}
	}
	var rec recorder
	start(t, h, func(_ context.Context, task tasks.Task) error { rec.add(task); return nil })
	waitFor(t, deadline, "tasks deferred before Start delivered", func() bool { return distinctN(rec.snapshot()) == n })
}

// distinctN counts the distinct numArgs.N values delivered.
func distinctN(ts []tasks.Task) int {
	seen := map[int]bool{}
	for _, task := range ts {
		var a numArgs
		if tasks.Unmarshal(task, &a) == nil {
			seen[a.N] = true
		}
	}
	return len(seen)
}

func testStopWaits(t *testing.T, newHarness func(*testing.T, Options) Harness) {
	h := newHarness(t, Options{MaxAttempts: 5})
	entered := make(chan struct{})
	release := make(chan struct{})
	var mu sync.Mutex
	finished := false
	stop := h.Start(func(ctx context.Context, task tasks.Task) error {
		if task.Action != "slow" {
			return nil
		}
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		mu.Lock()
		finished = true
		mu.Unlock()
		return nil
	})
	if err := h.Tasks.Defer(context.Background(), "slow", nil); err != nil {
		t.Fatalf("Defer: %v", err)
	}
	select {
	case <-entered:
	case <-time.After(deadline):
		t.Fatal("handler never ran")
	}
	stopped := make(chan bool)
	go func() {
		stop()
		mu.Lock()
		defer mu.Unlock()
		stopped <- finished
	}()
	// Give stop a moment to return early if it is going to; the assertion is
	// on the order of events, not on this delay.
	time.Sleep(20 * time.Millisecond)
	close(release)
	if !<-stopped {
		t.Error("stop returned before the in-flight handler did")
	}
}

func testDurable(t *testing.T, newHarness func(*testing.T, Options) Harness) {
	h := newHarness(t, Options{MaxAttempts: 5})
	if h.Reopen == nil {
		t.Skip("backend cannot reopen its storage")
	}
	const n = 20
	for i := range n {
		if err := h.Tasks.Defer(context.Background(), "durable", numArgs{N: i}); err != nil {
			t.Fatalf("Defer: %v", err)
		}
	}
	h2 := h.Reopen(t)
	var rec recorder
	start(t, h2, func(_ context.Context, task tasks.Task) error {
		if task.Action != "durable" {
			return errors.New("unexpected action " + task.Action)
		}
		rec.add(task)
		return nil
	})
	waitFor(t, deadline, "tasks delivered after reopening", func() bool { return distinctN(rec.snapshot()) == n })
}
