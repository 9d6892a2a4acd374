package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/core/tasks/taskstest"
	"github.com/tollgate-ci/tollgate/emulators/gcloud"
	"github.com/tollgate-ci/tollgate/emulators/gcloud/gcloudtest"
)

func TestMain(m *testing.M) { gcloudtest.Main(m, gcloud.PubSub) }

const project = "tollgate-test"

var quiet = slog.New(slog.DiscardHandler)

// uniquePrefix keeps each test's topics apart: the emulator has no reset.
func uniquePrefix() string {
	var b [6]byte
	rand.Read(b[:])
	return "tg" + hex.EncodeToString(b[:])
}

// open returns Tasks on the emulator with prefix, its dead-letter topic and
// view created, closed when the test ends.
func open(t *testing.T, host, prefix string) *Tasks {
	t.Helper()
	ctx := context.Background()
	tq, err := New(ctx, project, prefix, EmulatorOptions(host)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tq.Close() })
	if err := tq.EnsureTopics(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return tq
}

// storage is what survives Reopen: the topics and subscriptions (named by
// the prefix) and the harness's count of tasks deferred and settled.
type storage struct {
	host, prefix string
	opts         taskstest.Options

	mu       sync.Mutex
	deferred int
	settled  map[string]bool // task IDs acknowledged or dead-lettered

	subMu   sync.Mutex // held while subscriptions change
	actions []string   // whose topic and subscription exist
}

// pending is deferred minus settled. Pub/Sub has no API that counts a
// subscription's unacknowledged messages (Cloud Monitoring does, minutes
// late), so this counts what the push endpoint acknowledged; it checks
// that every deferred task reached an acknowledgement.
func (s *storage) pending(context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deferred - len(s.settled), nil
}

// harness is one process's view of the storage: its own client and push
// endpoint.
type harness struct {
	st *storage
	tq *Tasks

	pushURL string // under st.subMu; "" until Start: subscriptions hold messages
}

// Defer creates the action's topic and subscription on first use (a
// deployment creates them all up front), then defers through the adapter.
func (h *harness) Defer(ctx context.Context, action string, args any) error {
	if err := h.ensure(ctx, action); err != nil {
		return err
	}
	err := h.tq.Defer(ctx, action, args)
	if err == nil {
		h.st.mu.Lock()
		h.st.deferred++
		h.st.mu.Unlock()
	}
	return err
}

func (h *harness) ensure(ctx context.Context, action string) error {
	h.st.subMu.Lock()
	defer h.st.subMu.Unlock()
	if slices.Contains(h.st.actions, action) {
		return nil
	}
	if err := h.tq.EnsureTopics(ctx, []string{action}); err != nil {
		return err
	}
	// Pub/Sub's dead-letter policy is the backstop; the push handler
	// dead-letters after opts.MaxAttempts itself, which may be below
	// Pub/Sub's minimum of 5.
	err := h.tq.EnsurePushSubscription(ctx, action, h.pushURL, h.st.opts.MaxAttempts,
		h.tq.DeadLetterTopicID(), 10*time.Millisecond, 100*time.Millisecond)
	if err != nil {
		return err
	}
	h.st.actions = append(h.st.actions, action)
	return nil
}

// setEndpoint points every known subscription at url ("" holds messages).
func (h *harness) setEndpoint(t *testing.T, url string) {
	h.st.subMu.Lock()
	defer h.st.subMu.Unlock()
	h.pushURL = url
	for _, a := range h.st.actions {
		if err := h.tq.SetPushEndpoint(context.Background(), a, url); err != nil {
			t.Errorf("SetPushEndpoint(%s): %v", a, err)
		}
	}
}

func (h *harness) start(t *testing.T, handler tasks.Handler) func() {
	srv := httptest.NewServer(PushHandler(PushOptions{
		Handler:     handler,
		Tasks:       h.tq,
		MaxAttempts: h.st.opts.MaxAttempts,
		// The emulator never reports the delivery attempt; this one process
		// sees every delivery, so counting here is exact.
		Attempts: &Attempts{},
		OnOutcome: func(task tasks.Task, o Outcome) {
			if o != Retry {
				h.st.mu.Lock()
				h.st.settled[task.ID] = true
				h.st.mu.Unlock()
			}
		},
		Log: quiet,
	}))
	h.setEndpoint(t, srv.URL+"/push")
	var once sync.Once
	return func() {
		once.Do(func() {
			// Stop the pushes, then wait for the handlers in flight: Close
			// returns when every request has been answered.
			h.setEndpoint(t, "")
			srv.Close()
		})
	}
}

func (st *storage) open(t *testing.T) taskstest.Harness {
	h := &harness{st: st, tq: open(t, st.host, st.prefix)}
	var stop func()
	return taskstest.Harness{
		Tasks: h,
		Dead:  h.tq,
		Start: func(handler tasks.Handler) func() {
			stop = h.start(t, handler)
			return stop
		},
		Pending: st.pending,
		Reopen: func(t *testing.T) taskstest.Harness {
			if stop != nil {
				stop()
			}
			h.tq.Close()
			return st.open(t)
		},
	}
}

func TestConformance(t *testing.T) {
	t.Parallel() // overlaps with the other slow tests: retries pace themselves at 1-3 s
	host := gcloudtest.Host(t, gcloud.PubSub)
	taskstest.RunConformance(t, func(t *testing.T, opts taskstest.Options) taskstest.Harness {
		st := &storage{host: host, prefix: uniquePrefix(), opts: opts, settled: map[string]bool{}}
		return st.open(t)
	})
}
