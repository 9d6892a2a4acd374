package events

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// cloudEvent makes the CloudEvent functions-framework-go delivers for a
// message published at published.
func cloudEvent(t *testing.T, data string, attrs map[string]string, published time.Time) event.Event {
	t.Helper()
	msg := map[string]any{"data": base64.StdEncoding.EncodeToString([]byte(data)), "attributes": attrs,
		"messageId": "m1", "@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage"}
	if !published.IsZero() {
		msg["publishTime"] = published.Format(time.RFC3339Nano)
	}
	b, _ := json.Marshal(map[string]any{"message": msg})
	e := event.New()
	e.SetID("m1")
	e.SetSource("//pubsub.googleapis.com/projects/p/topics/tollgate-tick")
	e.SetType("google.cloud.pubsub.topic.v1.messagePublished")
	if err := e.SetData("application/json", b); err != nil {
		t.Fatal(err)
	}
	return e
}

func taskAttrs(action string) map[string]string {
	return map[string]string{"action": action, "schema": "1", "task_id": "id-" + action, "created": now.Add(-time.Minute).Format(time.RFC3339)}
}

// fakeSettler records what it was asked; it settles like *pubsub.Tasks.
type fakeSettler struct {
	mu      sync.Mutex
	buried  []string // "action attempts lastErr"
	buryErr error
}

func (f *fakeSettler) Settle(ctx context.Context, t tasks.Task, herr error, max int) (pubsub.Outcome, error) {
	switch {
	case herr == nil:
		return pubsub.Acked, nil
	case errs.Is(herr, errs.InvalidArgument), max > 0 && t.Attempt >= max:
		if err := f.Bury(ctx, t, t.Attempt, herr.Error()); err != nil {
			return pubsub.Retry, err
		}
		return pubsub.DeadLettered, nil
	}
	return pubsub.Retry, herr
}

func (f *fakeSettler) Bury(_ context.Context, t tasks.Task, attempts int, lastErr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.buryErr != nil {
		return f.buryErr
	}
	f.buried = append(f.buried, t.Action+" "+string(rune('0'+attempts))+" "+lastErr)
	return nil
}

// countingMetrics counts Add calls by name and action.
type countingMetrics struct {
	metrics.Discard
	mu sync.Mutex
	n  map[string]int
}

func (m *countingMetrics) Add(_ context.Context, name string, l map[string]string, v float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == nil {
		m.n = map[string]int{}
	}
	m.n[name+"/"+l["action"]] += int(v)
	return nil
}

func TestHandle(t *testing.T) {
	var logs bytes.Buffer
	var calls []tasks.Task
	set := &fakeSettler{}
	m := &countingMetrics{}
	h := New(Options{
		Handler: func(ctx context.Context, task tasks.Task) error {
			calls = append(calls, task)
			switch task.Action {
			case "transient":
				return errs.E(errs.Unavailable, "test", "gerrit is down")
			case "refuse":
				return errs.E(errs.InvalidArgument, "test", "bad args")
			}
			return nil
		},
		Settler:     set,
		MaxAttempts: 3,
		Attempts:    &pubsub.Attempts{},
		Metrics:     m,
		Clock:       clock.NewFake(now),
		Log:         slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	ctx := context.Background()
	fresh := now.Add(-10 * time.Second)

	if err := h(ctx, cloudEvent(t, `{"x":1}`, taskAttrs("ok"), fresh)); err != nil {
		t.Errorf("ok: %v, want nil", err)
	}
	if len(calls) != 1 || calls[0].ID != "id-ok" || string(calls[0].Args) != `{"x":1}` || calls[0].Attempt != 1 {
		t.Errorf("handler got %+v", calls)
	}

	// Malformed messages are acknowledged without reaching the handler.
	for name, e := range map[string]event.Event{
		"not a task":   cloudEvent(t, `{}`, map[string]string{"foo": "bar"}, fresh),
		"bad args":     cloudEvent(t, `[1]`, taskAttrs("ok"), fresh),
		"not json":     func() event.Event { e := event.New(); _ = e.SetData("application/json", []byte("{")); return e }(),
		"no data":      event.New(),
		"other schema": cloudEvent(t, `{}`, map[string]string{"action": "ok", "schema": "2", "task_id": "x", "created": now.Format(time.RFC3339)}, fresh),
	} {
		if err := h(ctx, e); err != nil {
			t.Errorf("%s: %v, want nil (acknowledged)", name, err)
		}
	}
	if len(calls) != 1 {
		t.Errorf("malformed messages reached the handler: %+v", calls[1:])
	}

	// A transient failure is retried until the last attempt, which is
	// dead-lettered and acknowledged.
	for attempt := 1; attempt <= 3; attempt++ {
		err := h(ctx, cloudEvent(t, `{}`, taskAttrs("transient"), fresh))
		if attempt < 3 && !errs.Is(err, errs.Unavailable) {
			t.Errorf("transient attempt %d: %v, want the Unavailable error", attempt, err)
		}
		if attempt == 3 && err != nil {
			t.Errorf("transient attempt 3: %v, want nil (dead-lettered)", err)
		}
	}
	// InvalidArgument is dead-lettered on the first attempt.
	if err := h(ctx, cloudEvent(t, `{}`, taskAttrs("refuse"), fresh)); err != nil {
		t.Errorf("refuse: %v, want nil", err)
	}
	// Too old: dropped before the handler runs, and recorded.
	before := len(calls)
	if err := h(ctx, cloudEvent(t, `{}`, taskAttrs("stale"), now.Add(-2*time.Hour))); err != nil {
		t.Errorf("stale: %v, want nil", err)
	}
	if len(calls) != before {
		t.Errorf("a too old event reached the handler")
	}
	// With no publish time, the event's time, then the task's creation, date it.
	e := cloudEvent(t, `{}`, taskAttrs("stale_by_event_time"), time.Time{})
	e.SetTime(now.Add(-90 * time.Minute))
	if err := h(ctx, e); err != nil || len(calls) != before {
		t.Errorf("stale by event time: %v, handler calls %d; want dropped", err, len(calls)-before)
	}
	if err := h(ctx, cloudEvent(t, `{}`, taskAttrs("ok"), time.Time{})); err != nil || len(calls) != before+1 {
		t.Errorf("dated by its creation a minute ago: %v; want delivered", err)
	}

	set.mu.Lock()
	buried := strings.Join(set.buried, "\n")
	set.mu.Unlock()
	for _, want := range []string{"transient 3 test: gerrit is down", "refuse 1 test: bad args", "stale 1 dropped: published 2h0m0s ago", "stale_by_event_time 1 dropped"} {
		if !strings.Contains(buried, want) {
			t.Errorf("dead letters:\n%s\nwant a line with %q", buried, want)
		}
	}
	if m.n[metrics.TaskRetries+"/transient"] != 2 || m.n[metrics.TaskDeadLetters+"/transient"] != 1 ||
		m.n[metrics.TaskDeadLetters+"/refuse"] != 1 || m.n[metrics.TaskDeadLetters+"/stale"] != 1 {
		t.Errorf("metrics = %v", m.n)
	}

	// One structured line per delivery, with its outcome.
	var outcomes []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec struct{ Msg, Outcome, Action string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg != "delivery" {
			t.Errorf("unexpected log line %s", line)
		}
		outcomes = append(outcomes, rec.Action+":"+rec.Outcome)
	}
	want := "ok:ok :malformed :malformed :malformed :malformed :malformed transient:retry transient:retry transient:dead refuse:dead stale:too_old stale_by_event_time:too_old ok:ok"
	if got := strings.Join(outcomes, " "); !sameWords(got, want) {
		t.Errorf("logged outcomes\n%s\nwant (in any order)\n%s", got, want)
	}
}

// sameWords compares space-separated words as multisets.
func sameWords(a, b string) bool {
	count := map[string]int{}
	for _, w := range strings.Fields(a) {
		count[w]++
	}
	for _, w := range strings.Fields(b) {
		count[w]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestWithoutSettler: failures are retried, refusals acknowledged.
func TestWithoutSettler(t *testing.T) {
	boom := errors.New("boom")
	h := New(Options{
		Handler: func(ctx context.Context, task tasks.Task) error {
			if task.Action == "refuse" {
				return errs.E(errs.InvalidArgument, "t", "no")
			}
			return boom
		},
		MaxAttempts: 1, // ignored without a Settler: nowhere to put the task
		Clock:       clock.NewFake(now),
		Log:         slog.New(slog.DiscardHandler),
	})
	if err := h(context.Background(), cloudEvent(t, `{}`, taskAttrs("fail"), now)); !errors.Is(err, boom) {
		t.Errorf("failure: %v, want boom", err)
	}
	if err := h(context.Background(), cloudEvent(t, `{}`, taskAttrs("refuse"), now)); err != nil {
		t.Errorf("refusal: %v, want nil", err)
	}
}

// TestBuryFails: when the dead letter cannot be written the delivery is
// retried, so the task is not lost.
func TestBuryFails(t *testing.T) {
	set := &fakeSettler{buryErr: errs.E(errs.Unavailable, "bury", "pubsub down")}
	h := New(Options{
		Handler: func(ctx context.Context, task tasks.Task) error { return errs.E(errs.InvalidArgument, "t", "no") },
		Settler: set, Clock: clock.NewFake(now), Log: slog.New(slog.DiscardHandler),
	})
	if err := h(context.Background(), cloudEvent(t, `{}`, taskAttrs("refuse"), now)); !errs.Is(err, errs.Unavailable) {
		t.Errorf("%v, want the Unavailable bury error", err)
	}
}

func TestNewPanicsWithoutHandler(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New without a handler did not panic")
		}
	}()
	New(Options{})
}
