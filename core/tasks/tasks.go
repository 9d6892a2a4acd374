// Package tasks defines the Tasks port: deferred, at-least-once work.
//
// Defer hands an action and its arguments to the backend, which delivers
// them to the action's handler at least once, retrying failed deliveries with
// exponential backoff and moving a task that failed MaxAttempts times (or
// failed permanently) to a dead letter. Handlers must be idempotent:
// duplicates are normal, not errors.
package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
)

// Task is one delivery of a deferred action.
type Task struct {
	ID      string          // unique per Defer call; the same across redeliveries
	Action  string          // the handler's name, e.g. "check_new_cl"
	Args    json.RawMessage // JSON object; "{}" when there are none
	Attempt int             // 1 for the first delivery
	Created time.Time       // when Defer was called
}

// Handler runs one task. A nil error acknowledges it. An error with code
// InvalidArgument is permanent (the task is malformed; retrying cannot help)
// and sends the task to the dead letter at once; any other error is retried.
type Handler func(ctx context.Context, t Task) error

// Tasks is the deferral port.
type Tasks interface {
	// Defer schedules action with args (marshalled to JSON). When Defer
	// returns nil the task is durable: a crash of this process loses nothing.
	// Safe for concurrent use.
	Defer(ctx context.Context, action string, args any) error
}

// DeadLetters lists tasks that will not be delivered again. Backends that
// keep dead letters where Tollgate can read them implement it.
type DeadLetters interface {
	ListDead(ctx context.Context, limit int) ([]model.DeadTask, error)
}

// Marshal encodes args as a JSON object for a Task; nil gives "{}".
func Marshal(action string, args any) (json.RawMessage, error) {
	if args == nil {
		return json.RawMessage("{}"), nil
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, "tasks.Marshal "+action, err)
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, errs.E(errs.InvalidArgument, "tasks.Marshal "+action, "args must be a JSON object, got %s", b)
	}
	return b, nil
}

// Unmarshal decodes a task's args into v, refusing unknown fields, with
// InvalidArgument on any error (a malformed task is permanent).
func Unmarshal(t Task, v any) error {
	if len(t.Args) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(t.Args))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errs.Wrap(errs.InvalidArgument, "decode args of "+t.Action, err)
	}
	return nil
}

// Backoff returns the delay before delivery attempt n+1 after n failures:
// base·2^(n-1), capped at max, with up to 50% random jitter subtracted (rnd in [0,1)).
func Backoff(n int, base, max time.Duration, rnd float64) time.Duration {
	if n < 1 {
		n = 1
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d - time.Duration(float64(d)*0.5*rnd)
}
