package pubsub

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

var _ tasks.DeadLetters = (*Tasks)(nil)

// maxScan bounds how many dead letters one ListDead reads.
const maxScan = 1000

// Bury publishes task to the dead-letter topic with the number of attempts
// it had and the last error (clipped to Pub/Sub's 1 KiB attribute limit),
// so an operator sees why it died. Settle calls it; it is exported for
// handlers that give up on a task some other way.
func (t *Tasks) Bury(ctx context.Context, task tasks.Task, attempts int, lastErr string) error {
	const op = "pubsub.Bury"
	p, err := t.publisher(t.DeadLetterTopicID())
	if err != nil {
		return err
	}
	args := task.Args
	if len(args) == 0 {
		args = []byte("{}")
	}
	res := p.Publish(ctx, &pubsub.Message{Data: args, Attributes: map[string]string{
		AttrAction:    task.Action,
		AttrSchema:    Schema,
		AttrTaskID:    task.ID,
		AttrCreated:   task.Created.UTC().Format(time.RFC3339Nano),
		AttrAttempts:  strconv.Itoa(attempts),
		AttrLastError: clipUTF8(lastErr, maxAttrValue),
		AttrDied:      t.now().UTC().Format(time.RFC3339Nano),
	}})
	if _, err := res.Get(ctx); err != nil {
		return mapErr(op+" "+task.Action, err)
	}
	return nil
}

// ListDead returns up to limit (default 100) dead tasks, most recent first,
// each task once. It peeks: it pulls from the view subscription and hands
// every message back (ack deadline 0), so nothing is consumed. Consequences
// of reading a queue: a dead letter is kept for the view's retention (7
// days, Pub/Sub's maximum); one call reads at most 1000 of them (the newest
// win only among those); Pub/Sub's pull with return_immediately may answer
// with fewer messages than it holds; and two concurrent calls each see only
// the messages the other is not holding at that moment.
func (t *Tasks) ListDead(ctx context.Context, limit int) ([]model.DeadTask, error) {
	const op = "pubsub.ListDead"
	if limit <= 0 {
		limit = 100
	}
	sub := t.subName(t.DeadLetterViewID())
	var ackIDs []string
	defer func() {
		// Hand the messages back even if ctx is done.
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for ids := range slices.Chunk(ackIDs, 500) {
			_ = t.client.SubscriptionAdminClient.ModifyAckDeadline(nctx, &pubsubpb.ModifyAckDeadlineRequest{
				Subscription: sub, AckIds: ids, AckDeadlineSeconds: 0,
			})
		}
	}()
	byID := map[string]model.DeadTask{}
	for len(ackIDs) < maxScan {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		//lint:ignore SA1019 a peek must not wait for messages that may never come.
		resp, err := t.client.SubscriptionAdminClient.Pull(pctx, &pubsubpb.PullRequest{
			Subscription: sub, MaxMessages: int32(maxScan - len(ackIDs)), ReturnImmediately: true,
		})
		cancel()
		if err != nil {
			return nil, mapErr(op, err)
		}
		if len(resp.ReceivedMessages) == 0 {
			break
		}
		for _, rm := range resp.ReceivedMessages {
			ackIDs = append(ackIDs, rm.AckId)
			d := deadTask(rm.Message)
			if old, ok := byID[d.ID]; !ok || d.Time.After(old.Time) {
				byID[d.ID] = d
			}
		}
	}
	out := make([]model.DeadTask, 0, len(byID))
	for _, d := range byID {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b model.DeadTask) int { return b.Time.Compare(a.Time) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// deadTask reads a dead letter, whether Bury wrote it or Pub/Sub's
// dead-letter policy forwarded the original message.
func deadTask(m *pubsubpb.PubsubMessage) model.DeadTask {
	a := m.Attributes
	d := model.DeadTask{ID: a[AttrTaskID], Action: a[AttrAction], Args: string(m.Data), LastError: a[AttrLastError]}
	if d.ID == "" {
		d.ID = "message-" + m.MessageId
	}
	d.Attempts, _ = strconv.Atoi(a[AttrAttempts])
	if d.Attempts == 0 {
		d.Attempts, _ = strconv.Atoi(a[attrDLDeliveryCount])
	}
	if d.LastError == "" {
		d.LastError = fmt.Sprintf("Pub/Sub dead-lettered the message after %d delivery attempts to subscription %s",
			d.Attempts, a[attrDLSubscription])
	}
	if died, err := time.Parse(time.RFC3339Nano, a[AttrDied]); err == nil {
		d.Time = died
	} else if m.PublishTime != nil {
		d.Time = m.PublishTime.AsTime()
	}
	return d
}

// clipUTF8 makes s valid UTF-8 (protobuf strings must be) of at most n
// bytes, without splitting a character.
func clipUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
