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
		{Kind: Expire, State: NoResource, Reason: "no worker"},
		{Kind: Expire, State: Expired, Reason: "too old"},
	}
	allowed := map[State]map[TransitionKind]bool{
		Queued:  {Start: true, Cancel: true, Expire: true},
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

func TestExpire(t *testing.T) {
	for _, st := range []State{NoResource, Expired} {
		if !st.Terminal() || !st.Infra() || !st.Valid() {
			t.Errorf("%s: terminal %v, infra %v, valid %v; want all true", st, st.Terminal(), st.Infra(), st.Valid())
		}
		j := NewJob(t0, "cls/1-1", "build", nil, false)
		if err := j.Apply(Transition{Kind: Expire, State: st, Reason: "why", Now: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if j.State != st || j.Reason != "why" || !j.TimeEnded.Equal(t0.Add(time.Hour)) || !j.TimeStarted.IsZero() {
			t.Errorf("expired as %s: %+v", st, j)
		}
		// Only a queued job expires: a worker cannot end its job so.
		r := NewJob(t0, "cls/1-1", "test", nil, false)
		r.Apply(Transition{Kind: Start, Worker: "w", Now: t0})
		if err := r.Apply(Transition{Kind: Finish, Worker: "w", State: st, Now: t0}); !errs.Is(err, errs.InvalidArgument) || r.State != Started {
			t.Errorf("finish as %s: %v, state %s", st, err, r.State)
		}
	}
	j := NewJob(t0, "cls/1-1", "build", nil, false)
	if err := j.Apply(Transition{Kind: Expire, State: Failed, Now: t0}); !errs.Is(err, errs.InvalidArgument) || j.State != Queued {
		t.Errorf("expire as FAILED: %v, state %s", err, j.State)
	}
}

func TestPoolsAndLabels(t *testing.T) {
	if got := PoolOf(map[string]string{"pool": "large", "os": "linux"}); got != "os=linux,pool=large" {
		t.Errorf("PoolOf = %q", got)
	}
	if PoolOf(nil) != "" || PoolOf(map[string]string{}) != "" {
		t.Error("no requirement is pool \"\"")
	}
	labels := map[string]string{"os": "linux", "pool": "large", "arch": "x86_64"}
	for _, tc := range []struct {
		req  map[string]string
		want bool
	}{
		{nil, true},
		{map[string]string{"os": "linux"}, true},
		{map[string]string{"os": "linux", "pool": "large"}, true},
		{map[string]string{"os": "mac"}, false},
		{map[string]string{"os": "linux", "gpu": "yes"}, false},
	} {
		if got := Meets(labels, tc.req); got != tc.want {
			t.Errorf("Meets(%v, %v) = %v", labels, tc.req, got)
		}
	}
	if Meets(nil, map[string]string{"os": "linux"}) || !Meets(nil, nil) {
		t.Error("a worker without labels meets only no requirement")
	}
	for _, ok := range []string{"os", "linux", "x86_64", "k8s.io/arch", "12.4", "a:b"} {
		if !ValidLabel(ok) {
			t.Errorf("ValidLabel(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "a,b", "a=b", " a", "-a", "a b", strings.Repeat("a", 64)} {
		if ValidLabel(bad) {
			t.Errorf("ValidLabel(%q) = true", bad)
		}
	}
	j := NewJob(t0, "cls/1-1", "build", nil, false)
	req := map[string]string{"os": "linux"}
	j.SetRequire(req)
	req["os"] = "changed"
	if j.Pool != "os=linux" || j.Require["os"] != "linux" {
		t.Errorf("SetRequire: pool %q, require %v (must not share the map)", j.Pool, j.Require)
	}
	if r := j.Rerun(t0.Add(time.Minute), "a@b"); r.Pool != "os=linux" || r.Require["os"] != "linux" || !r.Order.Equal(t0.Add(time.Minute)) {
		t.Errorf("Rerun: pool %q, require %v, order %v", r.Pool, r.Require, r.Order)
	}
}

func TestPriorityAndStagger(t *testing.T) {
	pre := NewJob(t0, "cls/1-1", "build", nil, false)
	post := NewJob(t0, "branches/main-20260101000000", "build", nil, false)
	if pre.Priority != PriorityPresubmit || post.Priority != PriorityPostsubmit || !pre.Order.Equal(t0) {
		t.Fatalf("priorities %d, %d; order %v", pre.Priority, post.Priority, pre.Order)
	}
	var jobs []*Job
	for _, typ := range []string{"a", "b", "mac", "c"} {
		j := NewJob(t0, "cls/1-1", typ, nil, false)
		if typ == "mac" {
			j.SetRequire(map[string]string{"os": "mac"})
		}
		jobs = append(jobs, j)
	}
	Stagger(jobs, time.Minute)
	// Ranks count within a pool: the only mac job is first in its pool.
	for i, want := range []time.Duration{0, time.Minute, 0, 2 * time.Minute} {
		if got := jobs[i].Order.Sub(t0); got != want {
			t.Errorf("job %s ordered at +%v, want +%v", jobs[i].Type, got, want)
		}
	}
	legacy := &Job{TimeQueued: t0}
	if !legacy.QueueOrder().Equal(t0) || !jobs[1].QueueOrder().Equal(t0.Add(time.Minute)) {
		t.Error("QueueOrder: Order, or TimeQueued for records without one")
	}
	// A job queued again keeps its place.
	j := jobs[3]
	j.Apply(Transition{Kind: Start, Worker: "w", Now: t0.Add(time.Hour)})
	j.Apply(Transition{Kind: Release, Worker: "w", State: BotDied, Now: t0.Add(2 * time.Hour)})
	if j.State != Queued || !j.Order.Equal(t0.Add(2*time.Minute)) || j.Priority != PriorityPresubmit {
		t.Errorf("requeued: %s, order %v", j.State, j.Order)
	}
}
