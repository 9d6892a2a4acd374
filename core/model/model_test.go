package model

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
)

var t0 = time.Date(2026, 11, 24, 9, 30, 5, 0, time.UTC)

func TestJobIDRoundTrip(t *testing.T) {
	for _, tc := range []struct{ src, typ, want string }{
		{"cls/1000515-65", "linux-clang", "20261124093005--cls-1000515-65--linux-clang"},
		{"branches/main-20190626000853", "ui", "20261124093005--branches-main-20190626000853--ui"},
		{"branches/release/v1-20190626000853", "a.b_c", "20261124093005--branches-release-v1-20190626000853--a.b_c"},
	} {
		id := JobID(t0, tc.src, tc.typ)
		if id != tc.want {
			t.Errorf("JobID = %q, want %q", id, tc.want)
		}
		p, err := ParseJobID(id)
		if err != nil || p.Type != tc.typ || !p.Created.Equal(t0) || p.SrcSlug != strings.ReplaceAll(tc.src, "/", "-") {
			t.Errorf("ParseJobID(%q) = %+v, %v", id, p, err)
		}
	}
}

func TestParseJobIDRefusesGarbage(t *testing.T) {
	for _, id := range []string{"", "x", "20261124093005", "20261124093005--", "2026112409300X--cls-1-1--a",
		"20261124093005--cls-1-1--", "20261124093005----a", "20261124093005--../../etc--a",
		"20261124093005--cls-1-1--A", "20261124093005--other-1--a", "20261124093005--cls-1-1--a/b",
		"20261124093005--cls-1 1--a", strings.Repeat("9", 500)} {
		if _, err := ParseJobID(id); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("ParseJobID(%q) = %v, want InvalidArgument", id, err)
		}
	}
}

func FuzzParseJobID(f *testing.F) {
	f.Add("20261124093005--cls-1000515-65--linux-clang")
	f.Add("20261124093005--branches-main-20190626000853--ui")
	f.Add("20261124093005--cls-1-1----")
	f.Add("")
	f.Fuzz(func(t *testing.T, id string) {
		p, err := ParseJobID(id)
		if err != nil {
			return
		}
		// Whatever parses names a valid type and a source without path tricks,
		// and rebuilds to the same id.
		if !ValidJobType(p.Type) || strings.Contains(p.SrcSlug, "..") || strings.ContainsAny(p.SrcSlug, "/\\ \x00") {
			t.Fatalf("accepted %q as %+v", id, p)
		}
		if got := p.Created.Format(IDTimeLayout) + "--" + p.SrcSlug + "--" + p.Type; got != id {
			t.Fatalf("%q parsed to %+v, rebuilds as %q", id, p, got)
		}
	})
}

func TestParsePatchsetID(t *testing.T) {
	if cl, ps, err := ParsePatchsetID("1234-5"); err != nil || cl != 1234 || ps != 5 {
		t.Errorf("got %d %d %v", cl, ps, err)
	}
	for _, bad := range []string{"", "1", "1-", "-1", "0-1", "1-0", "01-1", "1-1-1", "a-1", "1-+2", "../1-1"} {
		if _, _, err := ParsePatchsetID(bad); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("ParsePatchsetID(%q) = %v", bad, err)
		}
	}
}

// Every transition from every state: terminal states never change again.
func TestJobStateMachine(t *testing.T) {
	code := 0
	kinds := []Transition{
		{Kind: Start, Worker: "w"},
		{Kind: Finish, Worker: "w", State: Completed, ExitCode: &code},
		{Kind: Finish, Worker: "w", State: Failed},
		{Kind: Cancel},
		{Kind: Release, Worker: "w", State: BotDied},
		{Kind: Release, Worker: "w", State: Interrupted},
	}
	allowed := map[State]map[TransitionKind]bool{
		Queued:  {Start: true, Cancel: true},
		Started: {Finish: true, Cancel: true, Release: true},
	}
	for _, from := range AllStates {
		for _, tr := range kinds {
			j := &Job{ID: "j", State: from, Worker: "w", Attempt: 1}
			tr.Now = t0
			before := *j
			err := j.Apply(tr)
			if allowed[from][tr.Kind] {
				if err != nil {
					t.Errorf("%s + %d: %v", from, tr.Kind, err)
				}
				continue
			}
			if !errs.Is(err, errs.FailedPrecondition) {
				t.Errorf("%s + %d: %v, want FailedPrecondition", from, tr.Kind, err)
			}
			if j.State != before.State || j.TimeEnded != before.TimeEnded {
				t.Errorf("%s + %d changed the job to %s", from, tr.Kind, j.State)
			}
		}
	}
}

func TestReleaseRequeuesOnceThenIsFinal(t *testing.T) {
	j := NewJob(t0, "cls/1-1", "build", nil, false)
	if err := j.Apply(Transition{Kind: Start, Worker: "w1", Now: t0}); err != nil {
		t.Fatal(err)
	}
	if err := j.Apply(Transition{Kind: Release, Worker: "w1", State: BotDied, Now: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if j.State != Queued || j.Attempt != 2 || j.Worker != "" || len(j.History) != 1 || j.History[0].Worker != "w1" {
		t.Fatalf("after first death: %+v", j)
	}
	// The old worker cannot finish a job it lost.
	j.Apply(Transition{Kind: Start, Worker: "w2", Now: t0})
	if err := j.Apply(Transition{Kind: Finish, Worker: "w1", State: Completed, Now: t0}); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("finish by the wrong worker: %v", err)
	}
	if err := j.Apply(Transition{Kind: Finish, Worker: "w2", State: Interrupted, Now: t0}); err != nil {
		t.Fatal(err)
	}
	if j.State != Interrupted || !j.State.Terminal() || !j.State.Infra() {
		t.Fatalf("second infra failure: %s, want final INTERRUPTED", j.State)
	}
}

func TestPatchsetVoteClaim(t *testing.T) {
	p := &Patchset{ID: "1-1"}
	lease := time.Minute
	for _, k := range []PatchsetUpdateKind{ClaimVote, MarkVoted} {
		if err := p.Apply(PatchsetUpdate{Kind: k, Now: t0, Lease: lease}); !errs.Is(err, errs.FailedPrecondition) {
			t.Fatalf("%d before the patchset ended: %v", k, err)
		}
	}
	if err := p.Apply(PatchsetUpdate{Kind: End, Now: t0}); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(PatchsetUpdate{Kind: ClaimVote, Now: t0, Lease: lease}); err != nil || p.VoteAttempt != 1 {
		t.Fatal(err)
	}
	if err := p.Apply(PatchsetUpdate{Kind: ClaimVote, Now: t0.Add(30 * time.Second), Lease: lease}); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("claim within the lease: %v", err)
	}
	if err := p.Apply(PatchsetUpdate{Kind: ClaimVote, Now: t0.Add(2 * time.Minute), Lease: lease}); err != nil || p.VoteAttempt != 2 {
		t.Fatalf("takeover after the lease: %v attempt %d", err, p.VoteAttempt)
	}
	if err := p.Apply(PatchsetUpdate{Kind: MarkVoted, Vote: 1}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []PatchsetUpdateKind{ClaimVote, MarkVoted} {
		if err := p.Apply(PatchsetUpdate{Kind: k, Now: t0.Add(time.Hour), Lease: lease}); !errs.Is(err, errs.FailedPrecondition) {
			t.Errorf("%d after voting: %v", k, err)
		}
	}
}

func TestPatchsetReopen(t *testing.T) {
	lease := time.Minute
	p := &Patchset{ID: "1-1", Round: 1, TimeQueued: t0, WantsVote: true, JobIDs: []string{"a"}}
	steps := []struct {
		u       PatchsetUpdate
		wantErr bool
	}{
		// A pending patchset that has not voted gains jobs in the same round.
		{PatchsetUpdate{Kind: Reopen, Now: t0.Add(time.Minute), Lease: lease}, false},
		{PatchsetUpdate{Kind: End, Now: t0.Add(2 * time.Minute)}, false},
		{PatchsetUpdate{Kind: ClaimVote, Now: t0.Add(3 * time.Minute), Lease: lease}, false},
		// A live claim: the review is being posted.
		{PatchsetUpdate{Kind: Reopen, Now: t0.Add(3*time.Minute + 30*time.Second), Lease: lease}, true},
		{PatchsetUpdate{Kind: MarkVoted, Now: t0.Add(3 * time.Minute), Vote: -1, Message: "failed"}, false},
		{PatchsetUpdate{Kind: MarkPatchsetMetrics, Now: t0.Add(3 * time.Minute)}, false},
	}
	for i, st := range steps {
		err := p.Apply(st.u)
		if st.wantErr != (err != nil) || (err != nil && !errs.Is(err, errs.FailedPrecondition)) {
			t.Fatalf("step %d (%d): %v", i, st.u.Kind, err)
		}
	}
	if p.Round != 1 || !p.RoundStarted.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after reopening a pending round: round %d started %v", p.Round, p.RoundStarted)
	}
	reopened := t0.Add(time.Hour)
	if err := p.Apply(PatchsetUpdate{Kind: Reopen, Now: reopened, Lease: lease}); err != nil {
		t.Fatal(err)
	}
	want := Patchset{ID: "1-1", Round: 2, RoundStarted: reopened, TimeQueued: t0, WantsVote: true, JobIDs: []string{"a"}}
	if fmt.Sprintf("%+v", *p) != fmt.Sprintf("%+v", want) {
		t.Fatalf("after reopening a voted round:\n got %+v\nwant %+v", *p, want)
	}
	if !p.Pending() || !p.RoundStart().Equal(reopened) || p.CurrentRound() != 2 {
		t.Fatalf("reopened patchset: pending %v, round start %v", p.Pending(), p.RoundStart())
	}
	// A claim that outlived its lease does not block a reopen.
	p.Apply(PatchsetUpdate{Kind: End, Now: reopened})
	p.Apply(PatchsetUpdate{Kind: ClaimVote, Now: reopened, Lease: lease})
	if err := p.Apply(PatchsetUpdate{Kind: Reopen, Now: reopened.Add(2 * lease), Lease: lease}); err != nil || p.Round != 2 {
		t.Fatalf("reopen after a stale claim: %v, round %d", err, p.Round)
	}
	if (&Patchset{TimeQueued: t0}).RoundStart() != t0 || (&Patchset{}).CurrentRound() != 1 {
		t.Fatal("records from before rounds read as round 1, started at TimeQueued")
	}
}

func TestLatestAndRerun(t *testing.T) {
	a := NewJob(t0, "cls/1-1", "build", map[string]string{"K": "v"}, true)
	b := NewJob(t0, "cls/1-1", "test", nil, false)
	r := a.Rerun(t0.Add(time.Minute), "alice@example.com")
	if r.ID == a.ID || r.Type != "build" || r.Env["K"] != "v" || !r.SkipVoting || r.State != Queued || r.RetryOf != a.ID || r.RequestedBy != "alice@example.com" {
		t.Fatalf("Rerun = %+v", r)
	}
	r.Env["K"] = "changed"
	if a.Env["K"] != "v" {
		t.Fatal("Rerun shares the env map")
	}
	// Same queue time: the larger id wins, so the choice never depends on order.
	c := NewJob(t0, "cls/1-1", "test", nil, false)
	c.ID = b.ID + "x"
	for _, jobs := range [][]*Job{{a, b, r, c}, {c, r, b, a}} {
		got := Latest(jobs)
		if len(got) != 2 || got["build"] != r || got["test"] != c {
			t.Fatalf("Latest = %v", got)
		}
	}
}
