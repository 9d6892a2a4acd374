package taskstest

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/tollgate-ci/tollgate/core/tasks"
)

// Recorder is a Tasks that keeps deferred tasks until a test takes them, so
// the test decides when deferred work runs. Safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	queue []tasks.Task
	all   []tasks.Task
	// Fail, if set, is called by Defer; a non-nil result fails the Defer
	// and records nothing.
	Fail func(action string) error
}

// Defer records the task.
func (r *Recorder) Defer(ctx context.Context, action string, args any) error {
	r.mu.Lock()
	fail := r.Fail
	r.mu.Unlock()
	if fail != nil {
		if err := fail(action); err != nil {
			return err
		}
	}
	b, err := tasks.Marshal(action, args)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t := tasks.Task{ID: "task-" + strconv.Itoa(len(r.all)+1), Action: action, Args: b, Attempt: 1, Created: time.Now().UTC()}
	r.queue = append(r.queue, t)
	r.all = append(r.all, t)
	return nil
}

// SetFail sets Fail under the lock.
func (r *Recorder) SetFail(f func(action string) error) {
	r.mu.Lock()
	r.Fail = f
	r.mu.Unlock()
}

// Take removes and returns the oldest task not yet taken.
func (r *Recorder) Take() (tasks.Task, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return tasks.Task{}, false
	}
	t := r.queue[0]
	r.queue = r.queue[1:]
	return t, true
}

// Count returns how many tasks of action were ever deferred ("" counts all).
func (r *Recorder) Count(action string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, t := range r.all {
		if action == "" || t.Action == action {
			n++
		}
	}
	return n
}

// All returns every task ever deferred, in order.
func (r *Recorder) All() []tasks.Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tasks.Task(nil), r.all...)
}

// Drain delivers taken tasks to h until none are left, each `times` times
// (at-least-once delivery may repeat any task). It stops at the first error
// and returns it with the task, and gives up after max deliveries.
func (r *Recorder) Drain(ctx context.Context, h tasks.Handler, times, max int) (tasks.Task, error) {
	for n := 0; n < max; {
		t, ok := r.Take()
		if !ok {
			return tasks.Task{}, nil
		}
		for k := 1; k <= times; k++ {
			t.Attempt = k
			n++
			if err := h(ctx, t); err != nil {
				return t, err
			}
		}
	}
	return tasks.Task{}, errDrainLimit
}

var errDrainLimit = drainLimit{}

type drainLimit struct{}

func (drainLimit) Error() string { return "taskstest.Recorder.Drain: tasks keep coming past the limit" }
