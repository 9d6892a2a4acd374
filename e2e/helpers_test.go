package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
)

// poll is how often waits look again.
const poll = 100 * time.Millisecond

// eventually waits until cond holds, failing the test after d with what
// and cond's last explanation.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, d, why)
		}
		time.Sleep(poll)
	}
}

// consistently checks that cond holds for d (an absence: nothing may
// happen), failing at the first time it does not.
func consistently(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if ok, why := cond(); !ok {
			t.Fatalf("%s: %s", what, why)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(poll)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// change creates a change on Project's Branch owned (and uploaded) by
// owner, then writes its jobs' rules.
func (e *env) change(t *testing.T, owner, subject string, rules ...Rule) fakegerrit.PatchSet {
	t.Helper()
	text, err := Behaviour(rules...)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := e.g.CreateChange(fakegerrit.ChangeSpec{Project: Project, Branch: Branch, Subject: subject, OwnerEmail: owner,
		Files: map[string]string{RulesPath: text}})
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.changes = append(e.changes, ps.Change)
	e.mu.Unlock()
	return ps
}

// approve has Reviewer approve the ready label on change's current patchset.
func (e *env) approve(t *testing.T, change int) {
	t.Helper()
	if err := e.g.SetVote(change, Reviewer, ReadyLabel, 1); err != nil {
		t.Fatal(err)
	}
}

// reviews returns Tollgate's reviews of change (tagged ReviewTag).
func (e *env) reviews(change int) []fakegerrit.Review {
	var out []fakegerrit.Review
	for _, r := range e.g.Reviews(change) {
		if r.Tag == ReviewTag {
			out = append(out, r)
		}
	}
	return out
}

// reviewsOf returns Tollgate's reviews of one patchset.
func (e *env) reviewsOf(change, patchset int) []fakegerrit.Review {
	var out []fakegerrit.Review
	for _, r := range e.reviews(change) {
		if r.PatchSet == patchset {
			out = append(out, r)
		}
	}
	return out
}

// waitReview waits for Tollgate's first review of change's patchset.
func (e *env) waitReview(t *testing.T, change, patchset int, d time.Duration) fakegerrit.Review {
	t.Helper()
	var got []fakegerrit.Review
	eventually(t, d, fmt.Sprintf("a review of %d-%d", change, patchset), func() (bool, string) {
		got = e.reviewsOf(change, patchset)
		return len(got) > 0, e.describe(change, patchset)
	})
	return got[0]
}

// describe is the patchset's state for failure messages.
func (e *env) describe(change, patchset int) string {
	p, err := e.api.Patchset(context.Background(), change, patchset)
	if err != nil {
		return fmt.Sprintf("patchset %d-%d: %v", change, patchset, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "patchset %d-%d wants_vote=%v voted=%v vote=%d jobs:", change, patchset,
		p.Patchset.WantsVote, p.Patchset.Voted, p.Patchset.Vote)
	for _, j := range p.Jobs {
		fmt.Fprintf(&b, " %s=%s(attempt %d on %s)", j.Type, j.State, j.Attempt, j.Worker)
	}
	fmt.Fprintf(&b, "; reviews %d", len(e.reviewsOf(change, patchset)))
	return b.String()
}

// patchset waits until Tollgate has patchset cl-ps satisfying cond.
func (e *env) patchset(t *testing.T, cl, ps int, d time.Duration, what string, cond func(*Patchset) bool) *Patchset {
	t.Helper()
	var p *Patchset
	eventually(t, d, fmt.Sprintf("patchset %d-%d %s", cl, ps, what), func() (bool, string) {
		var err error
		p, err = e.api.Patchset(context.Background(), cl, ps)
		if err != nil {
			return false, err.Error()
		}
		return cond(p), e.describe(cl, ps)
	})
	return p
}

// noPatchset checks Tollgate has no patchset cl-ps.
func (e *env) noPatchset(cl, ps int) (bool, string) {
	_, err := e.api.Patchset(context.Background(), cl, ps)
	switch {
	case errors.Is(err, ErrNotFound):
		return true, ""
	case err != nil:
		return false, err.Error()
	}
	return false, fmt.Sprintf("Tollgate has patchset %d-%d: %s", cl, ps, e.describe(cl, ps))
}

// polls waits until the fake Gerrit has seen n more change queries than
// before: a poll that began after the caller's last change has ended its
// query (the decisions that follow take milliseconds).
func (e *env) polls(t *testing.T, before, n int) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%d polls of Gerrit", n), func() (bool, string) {
		c := e.g.RequestCount(fakegerrit.EndpointQueryChanges)
		return c >= before+n, fmt.Sprintf("%d queries, want %d", c, before+n)
	})
}

// expectVote checks a review: its label's value and that the message
// holds each of want.
func expectVote(t *testing.T, r fakegerrit.Review, vote int, want ...string) {
	t.Helper()
	got, ok := r.Labels[VoteLabel]
	if vote == 0 {
		if ok && got != 0 {
			t.Errorf("review of %d-%d votes %s %+d, want no vote; message:\n%s", r.Change, r.PatchSet, VoteLabel, got, r.Message)
		}
	} else if !ok || got != vote {
		t.Errorf("review of %d-%d: labels %v, want %s %+d; message:\n%s", r.Change, r.PatchSet, r.Labels, VoteLabel, vote, r.Message)
	}
	for _, w := range want {
		if !strings.Contains(r.Message, w) {
			t.Errorf("review of %d-%d: message lacks %q:\n%s", r.Change, r.PatchSet, w, r.Message)
		}
	}
}

// webhook posts a Gerrit event to the topology's webhook.
func (e *env) webhook(t *testing.T, body string) {
	t.Helper()
	resp, err := http.Post(e.topo.WebhookURL(), "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook answered %d, want 202", resp.StatusCode)
	}
}
