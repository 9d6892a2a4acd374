// Package pubsub implements the Tasks port on Google Cloud Pub/Sub (the v2
// client): one topic per action, named {prefix}-{action}, whose
// subscription pushes each task to that action's function.
//
// A task is one message: the JSON arguments as data, and the attributes
// action, schema ("1"), task_id (random, so it stays the same across
// redeliveries of the message) and created (RFC 3339). Defer waits for the
// server's acknowledgement of the publish, so a handler that returns has
// durably deferred its follow-ups.
//
// Retries, backoff and the dead letter are the subscription's: a push
// endpoint that answers non-2xx is retried with the subscription's retry
// policy, and after max_delivery_attempts Pub/Sub forwards the message to
// {prefix}-dead-letter. Pub/Sub allows no fewer than 5 attempts and reports
// the delivery attempt only to subscriptions with a dead-letter policy (the
// emulator never reports it), so the push side can also dead-letter a task
// itself (Settle): at once for a permanent failure (InvalidArgument), and on
// the last attempt when the attempt is known. Either way the dead letter is
// a message on {prefix}-dead-letter, which ListDead reads through the pull
// subscription {prefix}-dead-letter-view without acknowledging anything.
//
// The emulator (cloud-pubsub-emulator 0.8.20, measured) applies
// dead-letter policies (and refuses fewer than 5 attempts, as Pub/Sub
// does) but not the retry policy's backoff: redeliveries come about 1 s,
// then 3 s apart whatever the policy says. Its pushes never carry the
// delivery attempt, a pull without return_immediately waits about 90 s on
// an empty subscription, and nothing resets it, so tests use a fresh prefix.
//
// Topic names allow only [A-Za-z0-9-_.~+%], so other bytes of an action
// (and '-', which keeps {prefix}-dead-letter apart from every action) are
// percent-encoded: "a b" is topic {prefix}-a%20b.
package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// Message attributes of a task.
const (
	AttrAction  = "action"
	AttrSchema  = "schema"
	AttrTaskID  = "task_id"
	AttrCreated = "created"
	// Set on dead letters that Tollgate wrote itself (Bury).
	AttrAttempts  = "attempts"
	AttrLastError = "last_error"
	AttrDied      = "died"

	// Schema is the version of the message layout.
	Schema = "1"
)

// Attributes Pub/Sub adds to the messages its dead-letter policy forwards.
const (
	attrDLDeliveryCount = "CloudPubSubDeadLetterSourceDeliveryCount"
	attrDLSubscription  = "CloudPubSubDeadLetterSourceSubscription"
)

// Pub/Sub's bounds on subscription settings.
const (
	MinMaxAttempts = 5
	MaxMaxAttempts = 100
	backoffLimit   = 600 * time.Second
	// pushAckDeadline is also the HTTP timeout of each push: the maximum, so
	// that a handler is not redelivered while it still runs (event functions
	// run for at most 540 s).
	pushAckDeadline = 600
	// maxAttrValue is Pub/Sub's limit on an attribute value, in bytes.
	maxAttrValue = 1024
)

// Tasks defers tasks as Pub/Sub messages. Its methods are safe for
// concurrent use.
type Tasks struct {
	client  *pubsub.Client
	project string
	prefix  string
	now     func() time.Time

	mu     sync.Mutex
	pubs   map[string]*pubsub.Publisher
	closed bool
}

var _ tasks.Tasks = (*Tasks)(nil)

// New returns Tasks publishing to the topics {prefix}-{action} of project.
// opts are passed to the Pub/Sub client (EmulatorOptions for the emulator;
// the client also honours PUBSUB_EMULATOR_HOST).
func New(ctx context.Context, project, prefix string, opts ...option.ClientOption) (*Tasks, error) {
	const op = "pubsub.New"
	if project == "" {
		return nil, errs.E(errs.InvalidArgument, op, "empty project")
	}
	if err := validPrefix(prefix); err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, op, err)
	}
	c, err := pubsub.NewClient(ctx, project, opts...)
	if err != nil {
		return nil, mapErr(op, err)
	}
	return &Tasks{client: c, project: project, prefix: prefix, now: time.Now, pubs: map[string]*pubsub.Publisher{}}, nil
}

// EmulatorOptions are the client options that reach the Pub/Sub emulator at
// host (host:port) without credentials.
func EmulatorOptions(host string) []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(host),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithoutAuthentication(),
		option.WithTelemetryDisabled(),
	}
}

// Close flushes and stops the publishers and closes the client.
func (t *Tasks) Close() error {
	t.mu.Lock()
	pubs := t.pubs
	t.pubs, t.closed = nil, true
	t.mu.Unlock()
	for _, p := range pubs {
		p.Stop()
	}
	return mapErr("pubsub.Close", t.client.Close())
}

// Project returns the project the topics live in.
func (t *Tasks) Project() string { return t.project }

// Prefix returns the topic prefix.
func (t *Tasks) Prefix() string { return t.prefix }

// TopicID returns the ID of action's topic: {prefix}-{escaped action}.
func (t *Tasks) TopicID(action string) string { return t.prefix + "-" + escape(action) }

// TopicName returns the full resource name of action's topic.
func (t *Tasks) TopicName(action string) string { return t.topicName(t.TopicID(action)) }

// SubscriptionID returns the ID of the push subscription that
// EnsurePushSubscription manages for action: {topic}-push.
func (t *Tasks) SubscriptionID(action string) string { return t.TopicID(action) + "-push" }

// DeadLetterTopicID returns {prefix}-dead-letter.
func (t *Tasks) DeadLetterTopicID() string { return t.prefix + "-dead-letter" }

// DeadLetterViewID returns {prefix}-dead-letter-view, the pull subscription
// ListDead reads.
func (t *Tasks) DeadLetterViewID() string { return t.prefix + "-dead-letter-view" }

func (t *Tasks) topicName(id string) string { return "projects/" + t.project + "/topics/" + id }
func (t *Tasks) subName(id string) string   { return "projects/" + t.project + "/subscriptions/" + id }

// Defer publishes the task and returns once Pub/Sub has stored it.
// InvalidArgument: empty action, args not a JSON object, or a name that
// makes no valid topic; NotFound: the action's topic does not exist
// (EnsureTopics creates it); ResourceExhausted: the message is too large.
func (t *Tasks) Defer(ctx context.Context, action string, args any) error {
	const op = "pubsub.Defer"
	if action == "" {
		return errs.E(errs.InvalidArgument, op, "empty action")
	}
	b, err := tasks.Marshal(action, args)
	if err != nil {
		return err
	}
	id := t.TopicID(action)
	if err := validTopicID(id); err != nil {
		return errs.Wrap(errs.InvalidArgument, op+" "+action, err)
	}
	p, err := t.publisher(id)
	if err != nil {
		return err
	}
	res := p.Publish(ctx, &pubsub.Message{Data: b, Attributes: map[string]string{
		AttrAction:  action,
		AttrSchema:  Schema,
		AttrTaskID:  newID(),
		AttrCreated: t.now().UTC().Format(time.RFC3339Nano),
	}})
	if _, err := res.Get(ctx); err != nil {
		return mapErr(op+" "+action, err)
	}
	return nil
}

// publisher returns the cached publisher of topic id.
func (t *Tasks) publisher(id string) (*pubsub.Publisher, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errs.E(errs.FailedPrecondition, "pubsub.Defer", "closed")
	}
	p := t.pubs[id]
	if p == nil {
		p = t.client.Publisher(id)
		// Batch concurrent Defers but keep a lone Defer (the common case in
		// a function) from waiting the default 10 ms.
		p.PublishSettings.DelayThreshold = time.Millisecond
		t.pubs[id] = p
	}
	return p, nil
}

// EnsureTopics creates the topics of actions that do not exist yet, the
// dead-letter topic and its view subscription. Safe to run on every start.
func (t *Tasks) EnsureTopics(ctx context.Context, actions []string) error {
	const op = "pubsub.EnsureTopics"
	ids := []string{t.DeadLetterTopicID()}
	for _, a := range actions {
		if a == "" {
			return errs.E(errs.InvalidArgument, op, "empty action")
		}
		ids = append(ids, t.TopicID(a))
	}
	for _, id := range ids {
		if err := validTopicID(id); err != nil {
			return errs.Wrap(errs.InvalidArgument, op, err)
		}
		_, err := t.client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: t.topicName(id)})
		if err != nil && status.Code(err) != codes.AlreadyExists {
			return mapErr(op+" "+id, err)
		}
	}
	// The view must exist before anything is dead-lettered: a topic keeps
	// no message for subscriptions created after it was published.
	_, err := t.client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:                     t.subName(t.DeadLetterViewID()),
		Topic:                    t.topicName(t.DeadLetterTopicID()),
		AckDeadlineSeconds:       60,
		MessageRetentionDuration: durationpb.New(7 * 24 * time.Hour), // Pub/Sub's maximum
		ExpirationPolicy:         &pubsubpb.ExpirationPolicy{},       // never expires, though rarely read
	})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return mapErr(op+" "+t.DeadLetterViewID(), err)
	}
	return nil
}

// EnsurePushSubscription creates or updates the subscription
// SubscriptionID(action) on action's topic, pushing to pushURL with the
// retry policy [minBackoff, maxBackoff] (each at most 600 s) and, if
// deadLetterTopic (an ID or a full name) is set, a dead-letter policy of
// maxAttempts deliveries, clamped to Pub/Sub's 5..100.
//
// An empty pushURL makes it a pull subscription nobody pulls: it holds
// messages until a later call sets an endpoint. The ack deadline, which is
// also each push's HTTP timeout, is Pub/Sub's maximum, 600 s.
//
// Deployed functions receive their messages through Eventarc's own
// subscriptions (configured by Terraform); this serves the emulated
// topology and tests, so it sets no push authentication.
func (t *Tasks) EnsurePushSubscription(ctx context.Context, action, pushURL string, maxAttempts int,
	deadLetterTopic string, minBackoff, maxBackoff time.Duration) error {
	op := "pubsub.EnsurePushSubscription " + action
	if action == "" {
		return errs.E(errs.InvalidArgument, op, "empty action")
	}
	if minBackoff < 0 || maxBackoff < minBackoff || maxBackoff > backoffLimit {
		return errs.E(errs.InvalidArgument, op, "backoff [%v, %v] outside 0..600s or inverted", minBackoff, maxBackoff)
	}
	sub := &pubsubpb.Subscription{
		Name:               t.subName(t.SubscriptionID(action)),
		Topic:              t.TopicName(action),
		PushConfig:         &pubsubpb.PushConfig{PushEndpoint: pushURL},
		AckDeadlineSeconds: pushAckDeadline,
		RetryPolicy: &pubsubpb.RetryPolicy{
			MinimumBackoff: durationpb.New(minBackoff),
			MaximumBackoff: durationpb.New(maxBackoff),
		},
		ExpirationPolicy: &pubsubpb.ExpirationPolicy{},
	}
	if deadLetterTopic != "" {
		if !strings.HasPrefix(deadLetterTopic, "projects/") {
			deadLetterTopic = t.topicName(deadLetterTopic)
		}
		sub.DeadLetterPolicy = &pubsubpb.DeadLetterPolicy{
			DeadLetterTopic:     deadLetterTopic,
			MaxDeliveryAttempts: int32(min(max(maxAttempts, MinMaxAttempts), MaxMaxAttempts)),
		}
	}
	_, err := t.client.SubscriptionAdminClient.CreateSubscription(ctx, sub)
	if status.Code(err) != codes.AlreadyExists {
		return mapErr(op, err)
	}
	// It exists: bring the settings that may change up to date. The push
	// config first, on its own, so the endpoint moves even if the emulator
	// refuses a field of the update.
	if err := t.client.SubscriptionAdminClient.ModifyPushConfig(ctx, &pubsubpb.ModifyPushConfigRequest{
		Subscription: sub.Name, PushConfig: sub.PushConfig,
	}); err != nil {
		return mapErr(op, err)
	}
	paths := []string{"ack_deadline_seconds", "retry_policy", "dead_letter_policy"}
	_, err = t.client.SubscriptionAdminClient.UpdateSubscription(ctx, &pubsubpb.UpdateSubscriptionRequest{
		Subscription: sub, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths},
	})
	return mapErr(op, err)
}

// SetPushEndpoint points action's subscription at pushURL, or makes it hold
// messages if pushURL is empty; NotFound if EnsurePushSubscription never
// created it.
func (t *Tasks) SetPushEndpoint(ctx context.Context, action, pushURL string) error {
	err := t.client.SubscriptionAdminClient.ModifyPushConfig(ctx, &pubsubpb.ModifyPushConfigRequest{
		Subscription: t.subName(t.SubscriptionID(action)),
		PushConfig:   &pubsubpb.PushConfig{PushEndpoint: pushURL},
	})
	return mapErr("pubsub.SetPushEndpoint "+action, err)
}

// escape percent-encodes the bytes of action that are not allowed in a
// topic name, and '-'.
func escape(action string) string {
	var b strings.Builder
	for i := 0; i < len(action); i++ {
		c := action[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '~', c == '+':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// validPrefix checks that prefix starts a valid topic name and leaves room
// for action names.
func validPrefix(p string) error {
	if p == "" || !(('a' <= p[0] && p[0] <= 'z') || ('A' <= p[0] && p[0] <= 'Z')) {
		return fmt.Errorf("topic prefix %q must start with a letter", p)
	}
	if strings.HasPrefix(strings.ToLower(p), "goog") {
		return fmt.Errorf("topic prefix %q must not start with goog", p)
	}
	if len(p) > 100 {
		return fmt.Errorf("topic prefix %q longer than 100 bytes", p)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~+%", c) >= 0) {
			return fmt.Errorf("topic prefix %q has the invalid character %q", p, c)
		}
	}
	return nil
}

// validTopicID checks Pub/Sub's length limit; escape and validPrefix take
// care of the characters.
func validTopicID(id string) error {
	if len(id) < 3 || len(id) > 255 {
		return fmt.Errorf("topic name %q must be 3 to 255 bytes long", id)
	}
	return nil
}

// mapErr gives a Pub/Sub error its code: the one place this adapter does.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errs.CodeOf(err) != errs.Unknown {
		return errs.Wrap(errs.CodeOf(err), op, err)
	}
	if errors.Is(err, pubsub.ErrOversizedMessage) {
		return errs.Wrap(errs.ResourceExhausted, op, err)
	}
	var c errs.Code
	switch status.Code(err) {
	case codes.NotFound:
		c = errs.NotFound
	case codes.AlreadyExists:
		c = errs.AlreadyExists
	case codes.InvalidArgument, codes.OutOfRange:
		c = errs.InvalidArgument
	case codes.PermissionDenied:
		c = errs.PermissionDenied
	case codes.Unauthenticated:
		c = errs.Unauthenticated
	case codes.ResourceExhausted:
		c = errs.ResourceExhausted
	case codes.FailedPrecondition:
		c = errs.FailedPrecondition
	case codes.Aborted:
		c = errs.Aborted
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal:
		c = errs.Unavailable
	}
	return errs.Wrap(c, op, err)
}

// newID returns 128 random bits in hex.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
