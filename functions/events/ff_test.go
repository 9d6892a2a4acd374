package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/emulators/gcloud"
	"github.com/tollgate-ci/tollgate/emulators/gcloud/gcloudtest"
	"github.com/tollgate-ci/tollgate/functions/internal/fftest"
)

func TestMain(m *testing.M) { gcloudtest.Main(m, gcloud.PubSub) }

const project = "tollgate-test"

func uniquePrefix() string {
	var b [6]byte
	rand.Read(b[:])
	return "tg" + hex.EncodeToString(b[:])
}

// delivered is what the handler saw.
type delivered struct {
	mu    sync.Mutex
	tasks []tasks.Task
}

func (d *delivered) add(t tasks.Task) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tasks = append(d.tasks, t)
	return len(d.tasks)
}

func (d *delivered) snapshot() []tasks.Task {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]tasks.Task(nil), d.tasks...)
}

// TestThroughFunctionsFramework sends real pushes from the Pub/Sub emulator
// through functions-framework-go's conversion to a CloudEvent and this
// package's handler: a task deferred with the adapter reaches the handler
// intact, a transient failure is redelivered (the attempt counted here, as
// neither hop reports it), and a refused task lands in the dead letter.
func TestThroughFunctionsFramework(t *testing.T) {
	host := gcloudtest.Host(t, gcloud.PubSub)
	ctx := context.Background()
	tq, err := pubsub.New(ctx, project, uniquePrefix(), pubsub.EmulatorOptions(host)...)
	if err != nil {
		t.Fatal(err)
	}
	defer tq.Close()
	actions := []string{"check_new_cl", "cancel_job"}
	if err := tq.EnsureTopics(ctx, actions); err != nil {
		t.Fatal(err)
	}
	var got delivered
	handler := New(Options{
		Handler: func(ctx context.Context, task tasks.Task) error {
			n := got.add(task)
			switch {
			case task.Action == "cancel_job":
				return errs.E(errs.InvalidArgument, "test", "job_id is required")
			case n == 1:
				return errs.E(errs.Unavailable, "test", "gerrit is down")
			}
			return nil
		},
		Settler:     tq,
		MaxAttempts: 5,
		Attempts:    &pubsub.Attempts{},
		Log:         slog.New(slog.DiscardHandler),
	})
	for _, a := range actions {
		// The push path names the topic, so the framework takes the body
		// for a Pub/Sub message.
		endpoint := fftest.Route(t, tq.TopicName(a), handler)
		if err := tq.EnsurePushSubscription(ctx, a, endpoint, 5, tq.DeadLetterTopicID(), 0, 0); err != nil {
			t.Fatal(err)
		}
	}

	before := time.Now().Add(-time.Second)
	if err := tq.Defer(ctx, "check_new_cl", map[string]int{"change": 1234}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a successful second delivery", func() bool { return len(got.snapshot()) >= 2 })
	ts := got.snapshot()
	first, second := ts[0], ts[1]
	if first.Action != "check_new_cl" || string(first.Args) != `{"change":1234}` || first.ID == "" ||
		first.Attempt != 1 || first.Created.Before(before) || first.Created.After(time.Now()) {
		t.Errorf("first delivery = %+v", first)
	}
	if second.ID != first.ID || second.Attempt != 2 || !second.Created.Equal(first.Created) || string(second.Args) != string(first.Args) {
		t.Errorf("redelivery = %+v, want the same task as %+v at attempt 2", second, first)
	}

	if err := tq.Defer(ctx, "cancel_job", map[string]string{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the refused task in the dead letter", func() bool {
		dead, err := tq.ListDead(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range dead {
			if d.Action == "cancel_job" {
				if d.Attempts != 1 || !strings.Contains(d.LastError, "job_id is required") || d.Args != "{}" {
					t.Errorf("dead letter = %+v", d)
				}
				return true
			}
		}
		return false
	})
	n := 0
	for _, task := range got.snapshot() {
		if task.Action == "cancel_job" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the refused task was delivered %d times, want 1", n)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
