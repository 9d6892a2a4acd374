// Package events turns Pub/Sub CloudEvents into task deliveries: the entry
// point of every deferred action on Cloud Run functions. It is
// platform-neutral (a func(context.Context, event.Event) error, the
// signature functions-framework-go registers) and decodes only the
// message (data and attributes), which Eventarc and a raw push converted by
// functions-framework-go both carry.
//
// The returned error is the acknowledgement: nil acknowledges, an error
// answers 500 so Pub/Sub redelivers. So a message that can never succeed
// must return nil: a malformed message, a task the handler refuses as
// InvalidArgument, a task dead-lettered after its last attempt, and an event
// older than MaxAge, which bounds retries whatever the subscription says.
package events

import (
	"context"
	"log/slog"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// DefaultMaxAge is how long an event is retried before it is dropped.
const DefaultMaxAge = time.Hour

// Settler decides the fate of a failed delivery and keeps the dead letter;
// *pubsub.Tasks implements it.
type Settler interface {
	Settle(ctx context.Context, t tasks.Task, herr error, maxAttempts int) (pubsub.Outcome, error)
	Bury(ctx context.Context, t tasks.Task, attempts int, lastErr string) error
}

// Options configure the handler. Handler is required.
type Options struct {
	// Handler runs the task: the controller's Handle.
	Handler tasks.Handler
	// Settler, if set, dead-letters tasks that failed permanently or on
	// their last attempt, and records dropped ones. Without it such tasks
	// are only logged and acknowledged, and other failures are retried.
	Settler Settler
	// MaxAttempts is the number of deliveries after which a failing task is
	// dead-lettered, when the attempt is known (0: leave it to Pub/Sub's
	// dead-letter policy).
	MaxAttempts int
	// Attempts, if set, numbers deliveries Pub/Sub does not number (behind
	// functions-framework-go it never does); it never overcounts.
	Attempts *pubsub.Attempts
	// MaxAge drops events published longer ago than this (default 1 h).
	MaxAge time.Duration
	// Metrics counts retries and dead letters per action (default discard).
	Metrics metrics.Metrics
	Clock   clock.Clock  // default real
	Log     *slog.Logger // default slog.Default()
}

// Outcomes logged besides pubsub's.
const (
	outcomeMalformed = "malformed" // not a task: acknowledged
	outcomeTooOld    = "too_old"   // past MaxAge: acknowledged
	outcomeRefused   = "refused"   // InvalidArgument without a Settler: acknowledged
)

// New returns the CloudEvent handler. It panics without a Handler (a
// composition error).
func New(o Options) func(ctx context.Context, e event.Event) error {
	if o.Handler == nil {
		panic("events.New: Handler is required")
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Metrics == nil {
		o.Metrics = metrics.Discard{}
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return func(ctx context.Context, e event.Event) error { return o.handle(ctx, e) }
}

func (o *Options) handle(ctx context.Context, e event.Event) error {
	start := time.Now()
	log := o.Log.With("event", e.ID(), "source", e.Source())
	d, err := pubsub.ParseEventData(e.Data())
	if err != nil {
		log.ErrorContext(ctx, "delivery", "outcome", outcomeMalformed, "err", err.Error())
		return nil
	}
	t := d.Task
	published := d.PublishTime
	if published.IsZero() {
		published = e.Time()
	}
	if published.IsZero() {
		published = t.Created
	}
	age := o.Clock.Now().Sub(published)
	if o.Attempts != nil {
		t.Attempt = o.Attempts.Observe(d)
	}
	log = log.With("action", t.Action, "task", t.ID, "attempt", t.Attempt, "message", d.MessageID,
		"age_s", int64(age.Seconds()))

	if age > o.MaxAge {
		msg := "dropped: published " + age.Round(time.Second).String() + " ago, over the maximum age " + o.MaxAge.String()
		if o.Settler != nil {
			if err := o.Settler.Bury(ctx, t, t.Attempt, msg); err != nil {
				log.ErrorContext(ctx, "cannot record the dropped task in the dead letter", "err", err.Error())
			}
		}
		o.count(ctx, metrics.TaskDeadLetters, t.Action)
		o.done(t)
		log.WarnContext(ctx, "delivery", "outcome", outcomeTooOld, "err", msg)
		return nil
	}

	herr := o.Handler(ctx, t)
	var outcome string
	var ret error
	switch {
	case o.Settler != nil:
		var oc pubsub.Outcome
		oc, ret = o.Settler.Settle(context.WithoutCancel(ctx), t, herr, o.MaxAttempts)
		outcome = string(oc)
	case herr == nil:
		outcome = string(pubsub.Acked)
	case errs.Is(herr, errs.InvalidArgument):
		outcome = outcomeRefused
	default:
		outcome, ret = string(pubsub.Retry), herr
	}
	switch outcome {
	case string(pubsub.Retry):
		o.count(ctx, metrics.TaskRetries, t.Action)
	case string(pubsub.DeadLettered), outcomeRefused:
		o.count(ctx, metrics.TaskDeadLetters, t.Action)
	}
	if outcome != string(pubsub.Retry) {
		o.done(t)
	}
	lvl := slog.LevelInfo
	if herr != nil {
		lvl = slog.LevelWarn
		if outcome != string(pubsub.Retry) {
			lvl = slog.LevelError
		}
	}
	log.Log(ctx, lvl, "delivery", "outcome", outcome, "ms", time.Since(start).Milliseconds(), "err", errText(ret, herr))
	return ret
}

func (o *Options) done(t tasks.Task) {
	if o.Attempts != nil {
		o.Attempts.Done(t.ID)
	}
}

func (o *Options) count(ctx context.Context, name, action string) {
	_ = o.Metrics.Add(ctx, name, map[string]string{"action": action}, 1)
}

func errText(es ...error) string {
	for _, e := range es {
		if e != nil {
			return e.Error()
		}
	}
	return ""
}
