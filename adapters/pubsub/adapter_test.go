package pubsub

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/emulators/gcloud"
	"github.com/tollgate-ci/tollgate/emulators/gcloud/gcloudtest"
)

// push builds a push body; attempt 0 leaves deliveryAttempt out.
func push(data string, attrs map[string]string, attempt int) []byte {
	m := map[string]any{
		"data": base64.StdEncoding.EncodeToString([]byte(data)), "attributes": attrs,
		"messageId": "42", "message_id": "42",
		"publishTime": "2026-11-24T06:26:04.028Z", "publish_time": "2026-11-24T06:26:04.028Z",
	}
	env := map[string]any{"message": m, "subscription": "projects/p/subscriptions/s"}
	if attempt > 0 {
		env["deliveryAttempt"] = attempt
	}
	b, _ := json.Marshal(env)
	return b
}

func attrs(kv ...string) map[string]string {
	m := map[string]string{AttrAction: "check_new_cl", AttrSchema: "1", AttrTaskID: "t1", AttrCreated: "2026-11-24T06:26:03.5Z"}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(m, kv[i])
		} else {
			m[kv[i]] = kv[i+1]
		}
	}
	return m
}

func TestParse(t *testing.T) {
	d, err := ParsePush(push(`{"change":7}`, attrs(), 3))
	if err != nil {
		t.Fatal(err)
	}
	want := tasks.Task{ID: "t1", Action: "check_new_cl", Args: json.RawMessage(`{"change":7}`), Attempt: 3,
		Created: time.Date(2026, 11, 24, 6, 26, 3, 5e8, time.UTC)}
	if d.Task.ID != want.ID || d.Task.Action != want.Action || string(d.Task.Args) != string(want.Args) ||
		d.Task.Attempt != 3 || !d.Task.Created.Equal(want.Created) || !d.AttemptKnown || d.MessageID != "42" ||
		!d.PublishTime.Equal(time.Date(2026, 11, 24, 6, 26, 4, 28e6, time.UTC)) {
		t.Errorf("ParsePush = %+v, want %+v, attempt known, message 42 and its publish time", d, want)
	}
	if d, err := ParsePush(push(`{}`, attrs(), 0)); err != nil || d.Task.Attempt != 1 || d.AttemptKnown {
		t.Errorf("without deliveryAttempt: %+v, %v; want attempt 1, unknown", d, err)
	}

	// The CloudEvent data functions-framework-go makes of a push: no
	// subscription, an @type, the attempt gone.
	ce := `{"message":{"@type":"type.googleapis.com/google.pubsub.v1.PubsubMessage","attributes":` +
		`{"action":"tick","schema":"1","task_id":"x","created":"2026-01-02T03:04:05Z"},"data":"e30=",` +
		`"messageId":"9","publishTime":"2026-01-02T03:04:06.5Z"}}`
	if d, err := ParseEventData([]byte(ce)); err != nil || d.Task.Action != "tick" || string(d.Task.Args) != "{}" ||
		d.Task.Attempt != 1 || d.PublishTime.IsZero() {
		t.Errorf("ParseEventData = %+v, %v", d, err)
	}
	if task, err := DecodeEventData([]byte(ce)); err != nil || task.ID != "x" {
		t.Errorf("DecodeEventData = %+v, %v", task, err)
	}
	if task, err := DecodePush(push(`{"a":1}`, attrs(), 2)); err != nil || task.Attempt != 2 {
		t.Errorf("DecodePush = %+v, %v", task, err)
	}

	// What Cloud Scheduler publishes: static attributes only. The message id
	// names the task and the publish time dates it.
	sched := push(`{}`, attrs(AttrTaskID, "", AttrCreated, ""), 1)
	if d, err := ParsePush(sched); err != nil || d.Task.ID != "msg-42" || !d.Task.Created.Equal(d.PublishTime) {
		t.Errorf("scheduler message: %+v, %v; want task msg-42 created at its publish time", d, err)
	}

	bad := map[string][]byte{
		"not json":              []byte(`{"message":`),
		"no message":            []byte(`{"subscription":"s"}`),
		"message not obj":       []byte(`{"message":"x"}`),
		"bad base64":            []byte(`{"message":{"data":"!!","attributes":{"action":"a","schema":"1","task_id":"t","created":"2026-01-02T03:04:05Z"}}}`),
		"no action":             push(`{}`, attrs(AttrAction, ""), 1),
		"no task or message id": []byte(`{"message":{"data":"e30=","attributes":{"action":"a","schema":"1","created":"2026-01-02T03:04:05Z"}}}`),
		"no schema":             push(`{}`, attrs(AttrSchema, ""), 1),
		"future schema":         push(`{}`, attrs(AttrSchema, "2"), 1),
		"bad created":           push(`{}`, attrs(AttrCreated, "yesterday"), 1),
		"array args":            push(`[1]`, attrs(), 1),
		"truncated args":        push(`{"a":`, attrs(), 1),
		"empty data":            push(``, attrs(), 1),
		"bad publish time":      []byte(strings.Replace(string(push(`{}`, attrs(), 1)), `"publishTime":"2026-11-24T06:26:04.028Z"`, `"publishTime":"soon"`, 1)),
		"attempt as string":     []byte(strings.Replace(string(push(`{}`, attrs(), 1)), `"deliveryAttempt":1`, `"deliveryAttempt":"1"`, 1)),
	}
	for name, body := range bad {
		if _, err := ParsePush(body); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s: ParsePush = %v, want InvalidArgument", name, err)
		}
	}
}

func TestAttempts(t *testing.T) {
	var a Attempts
	d := Delivery{Task: tasks.Task{ID: "x", Attempt: 1}}
	for want := 1; want <= 3; want++ {
		if got := a.Observe(d); got != want {
			t.Fatalf("Observe #%d = %d", want, got)
		}
	}
	if got := a.Observe(Delivery{Task: tasks.Task{ID: "x", Attempt: 7}, AttemptKnown: true}); got != 7 {
		t.Errorf("a reported attempt ahead of the count: %d, want 7", got)
	}
	a.Done("x")
	if got := a.Observe(d); got != 1 {
		t.Errorf("after Done: %d, want 1", got)
	}
}

func TestNames(t *testing.T) {
	tq := &Tasks{project: "p", prefix: "tollgate"}
	for action, want := range map[string]string{
		"check_new_cl": "tollgate-check_new_cl",
		"a b":          "tollgate-a%20b",
		"dead-letter":  "tollgate-dead%2Dletter", // never the dead-letter topic
		"é":            "tollgate-%C3%A9",
	} {
		if got := tq.TopicID(action); got != want {
			t.Errorf("TopicID(%q) = %q, want %q", action, got, want)
		}
	}
	if got := tq.TopicName("tick"); got != "projects/p/topics/tollgate-tick" {
		t.Errorf("TopicName = %q", got)
	}
	for _, p := range []string{"", "1abc", "goog-x", "has space", "a/b", strings.Repeat("a", 101)} {
		if _, err := New(context.Background(), "p", p); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("New(prefix %q) = %v, want InvalidArgument", p, err)
		}
	}
	if _, err := New(context.Background(), "", "tollgate"); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("New without project = %v, want InvalidArgument", err)
	}
	if got := clipUTF8("aé\xffz", 3); got != "a" && got != "aé" {
		t.Errorf("clipUTF8 = %q", got)
	}
	if got := clipUTF8(strings.Repeat("é", 10), 5); got != "éé" {
		t.Errorf("clipUTF8 = %q, want two whole characters", got)
	}
}

func TestDeferErrors(t *testing.T) {
	t.Parallel()
	tq := open(t, gcloudtest.Host(t, gcloud.PubSub), uniquePrefix())
	ctx := context.Background()
	if err := tq.Defer(ctx, "no_topic", nil); !errs.Is(err, errs.NotFound) {
		t.Errorf("Defer to a missing topic = %v, want NotFound", err)
	}
	if err := tq.Defer(ctx, "", nil); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("Defer without action = %v, want InvalidArgument", err)
	}
	if err := tq.Defer(ctx, strings.Repeat("x", 300), nil); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("Defer with an overlong action = %v, want InvalidArgument", err)
	}
	if err := tq.EnsurePushSubscription(ctx, "a", "", 5, "", time.Second, time.Millisecond); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("inverted backoff = %v, want InvalidArgument", err)
	}
	if err := tq.EnsurePushSubscription(ctx, "a", "", 5, "", 0, time.Hour); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("backoff over 600s = %v, want InvalidArgument", err)
	}
	tq.Close()
	if err := tq.Defer(ctx, "x", nil); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("Defer after Close = %v, want FailedPrecondition", err)
	}
}

// TestEnsurePushSubscription checks that a second call moves the endpoint
// and updates the policies of an existing subscription.
func TestEnsurePushSubscription(t *testing.T) {
	t.Parallel()
	tq := open(t, gcloudtest.Host(t, gcloud.PubSub), uniquePrefix())
	ctx := context.Background()
	if err := tq.EnsureTopics(ctx, []string{"act"}); err != nil {
		t.Fatal(err)
	}
	if err := tq.EnsureTopics(ctx, []string{"act"}); err != nil {
		t.Fatalf("EnsureTopics again: %v", err)
	}
	if err := tq.EnsurePushSubscription(ctx, "act", "http://127.0.0.1:1/a", 3, tq.DeadLetterTopicID(), time.Second, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := tq.EnsurePushSubscription(ctx, "act", "http://127.0.0.1:1/b", 200, tq.DeadLetterTopicID(), 2*time.Second, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	sub, err := tq.client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{
		Subscription: tq.subName(tq.SubscriptionID("act"))})
	if err != nil {
		t.Fatal(err)
	}
	if sub.PushConfig.GetPushEndpoint() != "http://127.0.0.1:1/b" || sub.DeadLetterPolicy.GetMaxDeliveryAttempts() != MaxMaxAttempts ||
		sub.RetryPolicy.GetMaximumBackoff().AsDuration() != 20*time.Second || sub.AckDeadlineSeconds != pushAckDeadline {
		t.Errorf("subscription after update = %v", sub)
	}
	if err := tq.SetPushEndpoint(ctx, "act", ""); err != nil {
		t.Fatal(err)
	}
	if err := tq.SetPushEndpoint(ctx, "nope", ""); !errs.Is(err, errs.NotFound) {
		t.Errorf("SetPushEndpoint of a missing subscription = %v, want NotFound", err)
	}
}

// TestListDeadPeeks checks that reading the dead letter consumes nothing,
// keeps each task once and puts the newest first.
func TestListDeadPeeks(t *testing.T) {
	t.Parallel()
	tq := open(t, gcloudtest.Host(t, gcloud.PubSub), uniquePrefix())
	ctx := context.Background()
	if dead, err := tq.ListDead(ctx, 10); err != nil || len(dead) != 0 {
		t.Fatalf("ListDead on nothing = %v, %v", dead, err)
	}
	created := time.Now().UTC().Truncate(time.Millisecond)
	var now atomic.Int64
	now.Store(created.UnixNano())
	tq.now = func() time.Time { return time.Unix(0, now.Add(int64(time.Second))) }
	for i, id := range []string{"a", "b", "a", "c"} {
		task := tasks.Task{ID: id, Action: "act_" + id, Args: json.RawMessage(`{"n":1}`), Created: created}
		if err := tq.Bury(ctx, task, i+1, "failure "+strings.Repeat("é", 600)); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 2 {
		dead, err := tq.ListDead(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 2 || dead[0].ID != "c" || dead[1].ID != "a" || dead[1].Attempts != 3 ||
			dead[0].Args != `{"n":1}` || !strings.HasPrefix(dead[0].LastError, "failure é") || len(dead[0].LastError) > maxAttrValue {
			t.Fatalf("round %d: ListDead(2) = %+v; want c then a (its later burial, 3 attempts)", round, dead)
		}
	}
	if dead, err := tq.ListDead(ctx, 0); err != nil || len(dead) != 3 {
		t.Errorf("ListDead(default) = %d tasks, %v; want 3", len(dead), err)
	}
}

// TestPubSubDeadLetterPolicy lets Pub/Sub's own policy dead-letter a task
// whose attempts the push side does not count, and checks ListDead reads
// the forwarded original.
func TestPubSubDeadLetterPolicy(t *testing.T) {
	t.Parallel()
	tq := open(t, gcloudtest.Host(t, gcloud.PubSub), uniquePrefix())
	ctx := context.Background()
	var calls atomic.Int32
	srv := httptest.NewServer(PushHandler(PushOptions{Tasks: tq, Log: quiet,
		Handler: func(ctx context.Context, task tasks.Task) error {
			calls.Add(1)
			return errors.New("always")
		}}))
	defer srv.Close()
	if err := tq.EnsureTopics(ctx, []string{"hopeless"}); err != nil {
		t.Fatal(err)
	}
	if err := tq.EnsurePushSubscription(ctx, "hopeless", srv.URL, 1, tq.DeadLetterTopicID(), 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := tq.Defer(ctx, "hopeless", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	var dead []model.DeadTask
	waitFor(t, 25*time.Second, "Pub/Sub to dead-letter the task", func() bool {
		var err error
		dead, err = tq.ListDead(ctx, 10)
		return err == nil && len(dead) == 1
	})
	d := dead[0]
	if d.Action != "hopeless" || d.Args != `{"n":1}` || d.Attempts != MinMaxAttempts ||
		!strings.Contains(d.LastError, "after 5 delivery attempts") || int(calls.Load()) < MinMaxAttempts {
		t.Errorf("dead = %+v after %d calls; want 5 attempts (Pub/Sub's minimum) and its explanation", d, calls.Load())
	}
}

// TestPushHandler covers what the conformance suite cannot reach: bodies
// that are not tasks, methods, and a dead letter that cannot be written.
func TestPushHandler(t *testing.T) {
	t.Parallel()
	tq := open(t, gcloudtest.Host(t, gcloud.PubSub), uniquePrefix())
	var mu sync.Mutex
	var outcomes []Outcome
	h := PushHandler(PushOptions{Tasks: tq, Log: quiet, MaxAttempts: 3, MaxBody: 1 << 10,
		Handler: func(ctx context.Context, task tasks.Task) error {
			if task.Action == "fail" {
				return errs.E(errs.Unavailable, "test", "try later")
			}
			return nil
		},
		OnOutcome: func(_ tasks.Task, o Outcome) { mu.Lock(); outcomes = append(outcomes, o); mu.Unlock() },
	})
	do := func(method string, body []byte) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "/push", strings.NewReader(string(body))))
		return rec.Code
	}
	cases := []struct {
		name   string
		method string
		body   []byte
		want   int
	}{
		{"ok", "POST", push(`{}`, attrs(), 1), 204},
		{"transient", "POST", push(`{}`, attrs(AttrAction, "fail"), 1), 500},
		{"malformed is acknowledged", "POST", []byte(`{"nope":1}`), 204},
		{"oversized is acknowledged", "POST", push(`{"x":"`+strings.Repeat("a", 2000)+`"}`, attrs(), 1), 204},
		{"GET", "GET", nil, 405},
	}
	for _, c := range cases {
		if got := do(c.method, c.body); got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
	}
	// The last attempt is dead-lettered; with the client closed that fails
	// and the delivery must be retried, not lost.
	if got := do("POST", push(`{}`, attrs(AttrAction, "fail"), 3)); got != 204 {
		t.Errorf("last attempt: status %d, want 204 (dead-lettered)", got)
	}
	tq.Close()
	if got := do("POST", push(`{}`, attrs(AttrAction, "fail"), 3)); got != 500 {
		t.Errorf("last attempt with no dead letter reachable: status %d, want 500", got)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []Outcome{Acked, Retry, DeadLettered, Retry}
	if len(outcomes) != len(want) {
		t.Fatalf("outcomes %v, want %v", outcomes, want)
	}
	for i := range want {
		if outcomes[i] != want[i] {
			t.Errorf("outcomes %v, want %v", outcomes, want)
			break
		}
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
