package pubsub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// Delivery is one decoded delivery of a task message.
type Delivery struct {
	Task        tasks.Task
	MessageID   string
	PublishTime time.Time // zero if the envelope had none
	// AttemptKnown says Pub/Sub reported the delivery attempt. It does so
	// only for subscriptions with a dead-letter policy, and neither the
	// emulator nor functions-framework-go's conversion of a push to a
	// CloudEvent passes it on; otherwise Task.Attempt is 1.
	AttemptKnown bool
}

// envelope is a push request body and, equally, the data of the CloudEvent
// Eventarc or functions-framework-go makes of it. Only message.* and the
// delivery attempt are read.
type envelope struct {
	Message *struct {
		Data        []byte            `json:"data"`
		Attributes  map[string]string `json:"attributes"`
		MessageID   string            `json:"messageId"`
		PublishTime string            `json:"publishTime"`
		// Some producers put the attempt in the message.
		DeliveryAttempt *int `json:"deliveryAttempt"`
	} `json:"message"`
	DeliveryAttempt *int `json:"deliveryAttempt"`
}

// ParsePush decodes a Pub/Sub push request body. A message that is not a
// task of this schema is refused with InvalidArgument: redelivering it
// cannot help.
func ParsePush(body []byte) (Delivery, error) { return parse("pubsub.ParsePush", body) }

// ParseEventData decodes the data of a Pub/Sub CloudEvent,
// {"message": {...}, "subscription": ...}, as Eventarc delivers it and as
// functions-framework-go converts a push request.
func ParseEventData(data []byte) (Delivery, error) { return parse("pubsub.ParseEventData", data) }

// DecodePush is ParsePush's task.
func DecodePush(body []byte) (tasks.Task, error) {
	d, err := ParsePush(body)
	return d.Task, err
}

// DecodeEventData is ParseEventData's task.
func DecodeEventData(data []byte) (tasks.Task, error) {
	d, err := ParseEventData(data)
	return d.Task, err
}

func parse(op string, b []byte) (Delivery, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Delivery{}, errs.Wrap(errs.InvalidArgument, op, err)
	}
	m := env.Message
	if m == nil {
		return Delivery{}, errs.E(errs.InvalidArgument, op, "no message")
	}
	a := m.Attributes
	if s := a[AttrSchema]; s != Schema {
		return Delivery{}, errs.E(errs.InvalidArgument, op, "message %s: schema %q, want %q", m.MessageID, s, Schema)
	}
	d := Delivery{MessageID: m.MessageID, Task: tasks.Task{ID: a[AttrTaskID], Action: a[AttrAction], Attempt: 1}}
	// Messages from Cloud Scheduler (or a person) carry only static
	// attributes: the message id then names the task, and the publish time
	// dates it.
	if d.Task.ID == "" && m.MessageID != "" {
		d.Task.ID = "msg-" + m.MessageID
	}
	if d.Task.ID == "" || d.Task.Action == "" {
		return Delivery{}, errs.E(errs.InvalidArgument, op, "message %s: no %s or %s attribute", m.MessageID, AttrTaskID, AttrAction)
	}
	createdAttr := a[AttrCreated]
	if createdAttr == "" {
		createdAttr = m.PublishTime
	}
	created, err := time.Parse(time.RFC3339Nano, createdAttr)
	if err != nil {
		return Delivery{}, errs.E(errs.InvalidArgument, op, "message %s: bad %s attribute %q", m.MessageID, AttrCreated, a[AttrCreated])
	}
	d.Task.Created = created
	args := bytes.TrimSpace(m.Data)
	if len(args) == 0 || args[0] != '{' || !json.Valid(args) {
		return Delivery{}, errs.E(errs.InvalidArgument, op, "message %s: data is not a JSON object", m.MessageID)
	}
	d.Task.Args = json.RawMessage(m.Data)
	for _, n := range []*int{env.DeliveryAttempt, m.DeliveryAttempt} {
		if n != nil && *n >= 1 {
			d.Task.Attempt, d.AttemptKnown = *n, true
		}
	}
	if m.PublishTime != "" {
		if d.PublishTime, err = time.Parse(time.RFC3339Nano, m.PublishTime); err != nil {
			return Delivery{}, errs.E(errs.InvalidArgument, op, "message %s: bad publishTime %q", m.MessageID, m.PublishTime)
		}
	}
	return d, nil
}

// Attempts numbers the deliveries of each task that this process sees, for
// subscriptions that do not report the attempt (the emulator's, and
// functions behind functions-framework-go). It is exact only where one
// process receives every delivery of a subscription, as in tests and the
// emulated topology; elsewhere it undercounts, and Pub/Sub's dead-letter
// policy remains the bound. Safe for concurrent use.
type Attempts struct {
	mu sync.Mutex
	n  map[string]int
}

// maxTracked bounds the memory of Attempts: past it, counts start over,
// which costs extra deliveries, never lost ones.
const maxTracked = 10000

// Observe returns the attempt number of d: Pub/Sub's if it reported one,
// otherwise one more than the deliveries of this task seen so far.
func (a *Attempts) Observe(d Delivery) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil || len(a.n) >= maxTracked {
		a.n = map[string]int{}
	}
	n := a.n[d.Task.ID] + 1
	if d.AttemptKnown {
		n = max(n, d.Task.Attempt)
	}
	a.n[d.Task.ID] = n
	return n
}

// Done forgets a task that will not be delivered again.
func (a *Attempts) Done(id string) {
	a.mu.Lock()
	delete(a.n, id)
	a.mu.Unlock()
}

// Outcome is what became of a delivery.
type Outcome string

const (
	Acked        Outcome = "ok"    // the handler succeeded
	Retry        Outcome = "retry" // Pub/Sub will redeliver
	DeadLettered Outcome = "dead"  // moved to the dead letter and acknowledged
)

// Settle decides the fate of a delivery whose handler returned herr. It
// moves the task to the dead letter (Bury) when herr is InvalidArgument,
// which retrying cannot fix, or when the task has had maxAttempts deliveries
// (maxAttempts <= 0 leaves that to Pub/Sub's dead-letter policy). A nil
// error means acknowledge; otherwise the error (herr, or why burying
// failed) means answer non-2xx so Pub/Sub redelivers.
func (t *Tasks) Settle(ctx context.Context, task tasks.Task, herr error, maxAttempts int) (Outcome, error) {
	switch {
	case herr == nil:
		return Acked, nil
	case errs.Is(herr, errs.InvalidArgument), maxAttempts > 0 && task.Attempt >= maxAttempts:
		if err := t.Bury(ctx, task, task.Attempt, herr.Error()); err != nil {
			// Unavailable, whatever herr was: redelivery may succeed in
			// dead-lettering it.
			return Retry, errs.Wrap(errs.Unavailable, "pubsub.Settle",
				fmt.Errorf("dead-lettering task %s after %q failed: %w", task.ID, herr.Error(), err))
		}
		return DeadLettered, nil
	}
	return Retry, herr
}

// PushOptions configure a PushHandler. Handler and Tasks are required.
type PushOptions struct {
	Handler tasks.Handler
	// Tasks settles deliveries (see Settle) and keeps the dead letter.
	Tasks *Tasks
	// MaxAttempts is the number of deliveries after which a failing task is
	// dead-lettered, when the attempt is known (0: Pub/Sub's policy only).
	MaxAttempts int
	// Attempts, if set, numbers deliveries that Pub/Sub does not.
	Attempts *Attempts
	// MaxBody bounds the request body (default 11 MiB: a 10 MB message,
	// base64-encoded, fits).
	MaxBody int64
	// OnOutcome, if set, is called after each delivery (metrics hooks).
	OnOutcome func(t tasks.Task, o Outcome)
	Log       *slog.Logger // default slog.Default()
}

// PushHandler is a Pub/Sub push endpoint: it decodes each push, runs the
// handler and answers 204 to acknowledge or 500 to have it redelivered. A
// malformed message is acknowledged (logged): redelivery cannot fix it.
// Functions use functions/events instead; this serves tests and runtimes
// without functions-framework-go.
func PushHandler(o PushOptions) http.Handler {
	if o.Handler == nil || o.Tasks == nil {
		panic("pubsub.PushHandler: Handler and Tasks are required")
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 11 << 20
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, o.MaxBody))
		if err != nil {
			// Too large (or cut off): a resend is no smaller; acknowledge.
			o.Log.Error("pubsub push: unreadable body; acknowledged", "err", err)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		d, err := ParsePush(body)
		if err != nil {
			o.Log.Error("pubsub push: malformed message; acknowledged", "err", err)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if o.Attempts != nil {
			d.Task.Attempt = o.Attempts.Observe(d)
		}
		start := time.Now()
		herr := o.Handler(r.Context(), d.Task)
		outcome, err := o.Tasks.Settle(context.WithoutCancel(r.Context()), d.Task, herr, o.MaxAttempts)
		if o.Attempts != nil && outcome != Retry {
			o.Attempts.Done(d.Task.ID)
		}
		if o.OnOutcome != nil {
			o.OnOutcome(d.Task, outcome)
		}
		lvl := slog.LevelInfo
		if outcome != Acked {
			lvl = slog.LevelWarn
		}
		o.Log.Log(r.Context(), lvl, "pubsub push", "action", d.Task.Action, "task", d.Task.ID,
			"attempt", d.Task.Attempt, "message", d.MessageID, "outcome", string(outcome),
			"ms", time.Since(start).Milliseconds(), "err", errText(err, herr))
		if err != nil {
			http.Error(w, "retry", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// errText is the first non-nil error's text, or "".
func errText(es ...error) string {
	for _, e := range es {
		if e != nil {
			return e.Error()
		}
	}
	return ""
}
