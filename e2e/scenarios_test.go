package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/controller"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
	"github.com/tollgate-ci/tollgate/emulators/launcher"
)

// Deadlines of the waits. Generous: they bound failures, not passes.
const (
	voteWait = 90 * time.Second
	// outage is how long Gerrit answers 500 in scenario 9 (the 30 s).
	outage = 30 * time.Second
	// latencyChanges and latencyInflight shape the latency batch: that many
	// changes, at most latencyInflight of them waiting for their vote.
	latencyChanges  = 50
	latencyInflight = 10
)

// Phases: the first scenarios run alone before the others (they hold the
// ticks back), the parallel ones together, then the latency batch alone,
// then the last ones alone (a Gerrit outage would disturb the others).
const (
	first = iota
	parallel
	last
)

type scenario struct {
	name  string
	phase int
	run   func(t *testing.T, e *env)
}

var scenarios = []scenario{
	{"1-trusted-upload-passes", parallel, trustedUploadPasses},
	{"2-failing-job-votes-minus-one", parallel, failingJobVotesMinusOne},
	{"3-new-patchset-cancels-older", parallel, newPatchsetCancelsOlder},
	{"4-untrusted-upload-waits-for-ready-label", parallel, untrustedWaitsForReadyLabel},
	{"5-ready-label-after-jobs-ended", parallel, readyLabelAfterJobsEnded},
	{"6-webhook-queues-without-tick", first, webhookQueuesWithoutTick},
	{"7-postsubmit-when-branch-moves", parallel, postsubmitWhenBranchMoves},
	{"8-worker-killed-mid-job", parallel, workerKilledMidJob},
	{"9-gerrit-down-30s-loses-nothing", last, gerritDownLosesNothing},
	{"10-logs-expire-after-ttl", parallel, logsExpireAfterTTL},
	{scenarioChaos, parallel, chaos},
}

// TestScenarios runs every scenario on each topology:
// TestScenarios/embedded/1-trusted-upload-passes and so on. Each topology
// starts once; the scenarios share it, each with changes of its own (and
// a few start a private instance: chaos, ticks held back).
func TestScenarios(t *testing.T) {
	exe := tollgate(t)
	t.Run("embedded", func(t *testing.T) {
		runTopology(t, exe, func(ctx context.Context, dir string, o options) (Topology, error) {
			return StartEmbedded(ctx, EmbeddedOptions{Tollgate: exe, Dir: dir, Workers: o.workers, Settings: o.settings, Chaos: o.chaos})
		})
	})
	t.Run("emulated", func(t *testing.T) {
		requireGcloud(t)
		runTopology(t, exe, func(ctx context.Context, dir string, o options) (Topology, error) {
			return StartEmulated(ctx, EmulatedOptions{Tollgate: exe, Dir: dir, Workers: o.workers, Settings: o.settings,
				HoldTicks: o.holdTicks, Log: testLog(t), Launcher: launcher.Options{Chaos: o.chaos}})
		})
	})
}

// workers is the number of worker processes per topology.
const workers = 6

// options of a topology's start.
type options struct {
	workers   int
	settings  Settings
	chaos     *launcher.Chaos
	holdTicks bool
}

type starter func(ctx context.Context, dir string, o options) (Topology, error)

// startEnv starts a topology in a directory of t's (or below E2E_KEEP, to
// keep it), stopped when t ends, its logs shown if t failed.
func startEnv(t *testing.T, start starter, o options) (*env, error) {
	t.Helper()
	dir := t.TempDir()
	if keep := os.Getenv("E2E_KEEP"); keep != "" { // a directory to keep, for debugging
		dir = filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "-"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, err := start(c, dir, o)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, topo.LogDir(), 15)
		}
		if err := topo.Stop(); err != nil {
			t.Error(err)
		}
	})
	e := newEnv(topo)
	e.start = start
	return e, nil
}

// private starts an instance of e's topology of t's own.
func (e *env) private(t *testing.T, o options) (*env, error) {
	t.Helper()
	if o.workers == 0 {
		o.workers = 4
	}
	pe, err := startEnv(t, e.start, o)
	if pe != nil {
		pe.exe, pe.parent = e.exe, e
	}
	return pe, err
}

func runTopology(t *testing.T, exe string, start starter) {
	began := time.Now()
	e, err := startEnv(t, start, options{workers: workers, holdTicks: true})
	if err != nil {
		t.Fatal(err)
	}
	e.exe = exe
	name := e.topo.Name()
	report.add(name, result{scenario: "start", status: "PASS", dur: time.Since(began)})
	run := func(s scenario) {
		t.Run(s.name, func(t *testing.T) {
			began := time.Now()
			t.Cleanup(func() {
				status := "PASS"
				switch {
				case t.Failed():
					status = "FAIL"
					e.unblock(t) // free the workers its hanging jobs hold
				case t.Skipped():
					status = "SKIP"
				}
				report.add(name, result{scenario: s.name, status: status, dur: time.Since(began), note: e.noteOf(s.name)})
			})
			s.run(t, e)
		})
	}
	for _, s := range scenarios {
		if s.phase == first {
			run(s)
		}
	}
	e.topo.HoldTicks(false)
	var wg sync.WaitGroup
	for _, s := range scenarios {
		if s.phase == parallel {
			wg.Go(func() { run(s) })
		}
	}
	wg.Wait()
	t.Run("latency", func(t *testing.T) { latencyBatch(t, e) })
	for _, s := range scenarios {
		if s.phase == last {
			run(s)
		}
	}
	t.Run("one-review-per-patchset", func(t *testing.T) { oneReviewPerPatchset(t, e) })
}

// 1. A trusted upload, marked ready: every job passes, one +1 listing them.
func trustedUploadPasses(t *testing.T, e *env) {
	ps := e.change(t, Trusted("alice"), "1: all jobs pass")
	e.approve(t, ps.Change)
	r := e.waitReview(t, ps.Change, 1, voteWait)
	expectVote(t, r, 1, "PASS: build", "PASS: lint", "PASS: test")
	p, err := e.api.Patchset(ctx(t), ps.Change, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Patchset.Voted || p.Patchset.Vote != 1 || !p.Patchset.WantsVote {
		t.Errorf("API: voted=%v vote=%d wants_vote=%v, want a +1", p.Patchset.Voted, p.Patchset.Vote, p.Patchset.WantsVote)
	}
	for typ, st := range p.States() {
		if st != "COMPLETED" {
			t.Errorf("API: job %s is %s, want COMPLETED", typ, st)
		}
	}
	if len(p.States()) != len(JobTypes) {
		t.Errorf("API: jobs %v, want one per type %v", p.States(), JobTypes)
	}
	if n := len(e.reviews(ps.Change)); n != 1 {
		t.Errorf("%d reviews, want 1", n)
	}
}

// 2. A failing voting job votes -1 and is listed; a failing skip_voting job
// (lint) is listed but leaves a +1.
func failingJobVotesMinusOne(t *testing.T, e *env) {
	bad := e.change(t, Trusted("bob"), "2: test fails", Rule{Type: "test", Action: Fail})
	lint := e.change(t, Trusted("bob"), "2: lint fails", Rule{Type: "lint", Action: Fail})
	e.approve(t, bad.Change)
	e.approve(t, lint.Change)
	r := e.waitReview(t, bad.Change, 1, voteWait)
	expectVote(t, r, -1, "FAIL: test", "PASS: build", "PASS: lint")
	r = e.waitReview(t, lint.Change, 1, voteWait)
	expectVote(t, r, 1, "FAIL: lint", "not voting", "PASS: build", "PASS: test")
	for _, c := range []struct {
		change int
		vote   int
		failed string
	}{{bad.Change, -1, "test"}, {lint.Change, 1, "lint"}} {
		p := e.patchset(t, c.change, 1, 10*time.Second, "voted", func(p *Patchset) bool { return p.Patchset.Voted })
		if p.Patchset.Vote != c.vote {
			t.Errorf("API: %d-1 vote %d, want %d", c.change, p.Patchset.Vote, c.vote)
		}
		if st := p.States()[c.failed]; st != "FAILED" {
			t.Errorf("API: %d-1 job %s is %s, want FAILED", c.change, c.failed, st)
		}
		if n := len(e.reviews(c.change)); n != 1 {
			t.Errorf("change %d: %d reviews, want 1", c.change, n)
		}
	}
}

// 3. A second patchset uploaded while the first one's jobs run: those jobs
// are CANCELLED and the first patchset gets no vote; the second one votes.
func newPatchsetCancelsOlder(t *testing.T, e *env) {
	ps := e.change(t, Trusted("carl"), "3: superseded", Rule{Patchset: 1, Action: Hang})
	e.approve(t, ps.Change)
	e.patchset(t, ps.Change, 1, voteWait, "with every job STARTED", func(p *Patchset) bool {
		for _, typ := range JobTypes {
			if j, ok := p.Job(typ); !ok || j.State != "STARTED" {
				return false
			}
		}
		return true
	})
	if _, err := e.g.UploadPatchset(ps.Change, fakegerrit.PatchSetSpec{Kind: fakegerrit.KindRework}); err != nil {
		t.Fatal(err)
	}
	e.approve(t, ps.Change) // the ready label is not copied to a rework
	p1 := e.patchset(t, ps.Change, 1, voteWait, "with every job CANCELLED", func(p *Patchset) bool {
		for _, typ := range JobTypes {
			if j, ok := p.Job(typ); !ok || j.State != "CANCELLED" {
				return false
			}
		}
		return true
	})
	r := e.waitReview(t, ps.Change, 2, voteWait)
	expectVote(t, r, 1, "PASS: build", "PASS: lint", "PASS: test")
	if p1.Patchset.Voted && p1.Patchset.Vote != 0 {
		t.Errorf("API: patchset 1 voted %+d", p1.Patchset.Vote)
	}
	for _, r := range e.reviewsOf(ps.Change, 1) {
		if v := r.Labels[VoteLabel]; v != 0 {
			t.Errorf("patchset 1 got a %s %+d", VoteLabel, v)
		}
	}
	if n := len(e.reviewsOf(ps.Change, 2)); n != 1 {
		t.Errorf("patchset 2: %d reviews, want 1", n)
	}
}

// 4. An untrusted upload gets no jobs; once a trusted reviewer approves
// the ready label its jobs run and the vote is posted.
func untrustedWaitsForReadyLabel(t *testing.T, e *env) {
	before := e.g.RequestCount(fakegerrit.EndpointQueryChanges)
	ps := e.change(t, Untrusted("mallory"), "4: untrusted")
	e.polls(t, before, 2)
	consistently(t, 2*time.Second, "an untrusted upload got jobs", func() (bool, string) { return e.noPatchset(ps.Change, 1) })
	// A vote by someone untrusted changes nothing either.
	if err := e.g.SetVote(ps.Change, Untrusted("friend"), ReadyLabel, 1); err != nil {
		t.Fatal(err)
	}
	before = e.g.RequestCount(fakegerrit.EndpointQueryChanges)
	e.polls(t, before, 2)
	consistently(t, 2*time.Second, "an untrusted approval gave jobs", func() (bool, string) { return e.noPatchset(ps.Change, 1) })
	e.approve(t, ps.Change)
	r := e.waitReview(t, ps.Change, 1, voteWait)
	expectVote(t, r, 1, "PASS: build", "PASS: test")
	p, err := e.api.Patchset(ctx(t), ps.Change, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Patchset.WantsVote || !p.Patchset.Voted {
		t.Errorf("API: wants_vote=%v voted=%v", p.Patchset.WantsVote, p.Patchset.Voted)
	}
}

// 5. A trusted upload without the ready label runs its jobs but gets no
// vote; approving the label after they ended posts the vote then.
func readyLabelAfterJobsEnded(t *testing.T, e *env) {
	ps := e.change(t, Trusted("dana"), "5: label comes late", Rule{Type: "test", Action: Fail})
	p := e.patchset(t, ps.Change, 1, voteWait, "with every job ended", (*Patchset).Ended)
	if p.Patchset.WantsVote {
		t.Fatal("API: wants_vote before the label")
	}
	consistently(t, 2*time.Second, "a vote without the ready label", func() (bool, string) {
		n := len(e.reviews(ps.Change))
		return n == 0, fmt.Sprintf("%d reviews", n)
	})
	approved := time.Now()
	e.approve(t, ps.Change)
	r := e.waitReview(t, ps.Change, 1, voteWait)
	expectVote(t, r, -1, "FAIL: test")
	if r.Time.Before(approved) {
		t.Errorf("review at %s, before the label at %s", r.Time, approved)
	}
	e.note("5-ready-label-after-jobs-ended", "label to vote %s", r.Time.Sub(approved).Round(time.Millisecond))
}

// 6. A Gerrit webhook queues the jobs of a new patchset without a tick: the
// ticks are held back, and Gerrit sees no change query meanwhile.
func webhookQueuesWithoutTick(t *testing.T, e *env) {
	if e.topo.WebhookURL() == "" {
		e.note("6-webhook-queues-without-tick", "tollgate up serves no webhook")
		t.Skip("this topology serves no Gerrit webhook (tollgate up serves one only with its token in " + EnvWebhookToken + ")")
	}
	if e.topo.HoldTicks(true) {
		defer e.topo.HoldTicks(false)
	} else {
		// Ticks come every poll interval: an instance of its own that
		// polls at start, then not for an hour.
		pe, err := e.private(t, options{settings: Settings{PollInterval: time.Hour}})
		if err != nil {
			t.Fatal(err)
		}
		e = pe
	}
	// The tick published at start polls once: wait for it, so that no poll
	// is on its way.
	e.polls(t, 0, 1)
	before := e.g.RequestCount(fakegerrit.EndpointQueryChanges)
	ps := e.change(t, Trusted("erin"), "6: announced by webhook")
	e.approve(t, ps.Change)
	sent := time.Now()
	e.webhook(t, fmt.Sprintf(`{"type":"patchset-created","change":{"project":%q,"branch":%q,"number":%d},"patchSet":{"number":1}}`,
		Project, Branch, ps.Change))
	p := e.patchset(t, ps.Change, 1, 20*time.Second, "queued", func(p *Patchset) bool { return len(p.Jobs) == len(JobTypes) })
	queued := p.Jobs[0].TimeQueued
	r := e.waitReview(t, ps.Change, 1, voteWait)
	expectVote(t, r, 1, "PASS: build")
	if n := e.g.RequestCount(fakegerrit.EndpointQueryChanges); n != before {
		t.Errorf("Gerrit was polled %d times meanwhile: the jobs may not come from the webhook", n-before)
	}
	e.note("6-webhook-queues-without-tick", "webhook to queued %s, to vote %s",
		queued.Sub(sent).Round(time.Millisecond), r.Time.Sub(sent).Round(time.Millisecond))
}

// 7. Postsubmit: a branch head that moved gets its jobs queued once, however
// often queue_postsubmit_jobs runs; one that did not move gets nothing.
func postsubmitWhenBranchMoves(t *testing.T, e *env) {
	branch := controller.BranchArgs{Branch: Branch}
	runsOf := func(rev string) ([]Postsubmit, []Postsubmit, string) {
		all, err := e.api.Postsubmits(context.Background(), Branch)
		if err != nil {
			return nil, nil, err.Error()
		}
		var of []Postsubmit
		for _, p := range all {
			if p.Revision == rev {
				of = append(of, p)
			}
		}
		return all, of, fmt.Sprintf("%d runs, %d of %.12s", len(all), len(of), rev)
	}
	// The head at start gets its run (from the first tick, or this trigger).
	head, err := e.g.BranchHead(Project, Branch)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.topo.Trigger(ctx(t), controller.QueuePostsubmitJobs, branch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a run of the initial head", func() (bool, string) {
		_, of, why := runsOf(head)
		return len(of) == 1, why
	})
	// The head moves: two deliveries, one run.
	// Committed in a later second than the head: a run's id is the branch
	// and the head's commit time in seconds, so two heads committed in the
	// same second collide and the second one gets no run (a known bug; see
	// the e2e report).
	moved, err := e.g.MoveBranch(Project, Branch, fakegerrit.CommitSpec{Subject: "7: a submitted change", AuthorEmail: Trusted("frank"),
		CommitTime: time.Now().Truncate(time.Second).Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	gb := e.g.RequestCount(fakegerrit.EndpointGetBranch)
	for range 2 {
		if err := e.topo.Trigger(ctx(t), controller.QueuePostsubmitJobs, branch); err != nil {
			t.Fatal(err)
		}
	}
	var run Postsubmit
	eventually(t, 30*time.Second, "a run of the moved head", func() (bool, string) {
		_, of, why := runsOf(moved)
		if len(of) == 1 {
			run = of[0]
		}
		return len(of) == 1, why
	})
	eventually(t, 30*time.Second, "both deliveries read the branch", func() (bool, string) {
		n := e.g.RequestCount(fakegerrit.EndpointGetBranch)
		return n >= gb+2, fmt.Sprintf("%d branch reads", n-gb)
	})
	if len(run.JobIDs) != len(JobTypes) {
		t.Errorf("run %s has jobs %v, want one per type", run.ID, run.JobIDs)
	}
	eventually(t, voteWait, "the run's jobs complete", func() (bool, string) {
		var states []string
		done := true
		for _, id := range run.JobIDs {
			j, err := e.api.Job(context.Background(), id)
			if err != nil {
				return false, err.Error()
			}
			states = append(states, j.Type+"="+j.State)
			done = done && j.State == "COMPLETED"
		}
		return done, strings.Join(states, " ")
	})
	// The head stays: nothing more.
	all, _, _ := runsOf(moved)
	gb, gc := e.g.RequestCount(fakegerrit.EndpointGetBranch), e.g.RequestCount(fakegerrit.EndpointGetCommit)
	if err := e.topo.Trigger(ctx(t), controller.QueuePostsubmitJobs, branch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the branch read", func() (bool, string) {
		n := e.g.RequestCount(fakegerrit.EndpointGetBranch)
		return n > gb, "no branch read yet"
	})
	consistently(t, 2*time.Second, "a run for a head that did not move", func() (bool, string) {
		now, of, why := runsOf(moved)
		if n := e.g.RequestCount(fakegerrit.EndpointGetCommit); n != gc {
			return false, fmt.Sprintf("the commit was read again (%d reads): a run is on its way", n-gc)
		}
		return len(now) == len(all) && len(of) == 1, why
	})
}

// 8. A worker killed (SIGKILL, its job with it) mid-job: after
// timeouts.worker_death its job is BOT_DIED, queued again, run by another
// worker, and the vote arrives.
func workerKilledMidJob(t *testing.T, e *env) {
	ps := e.change(t, Trusted("gina"), "8: its worker dies", Rule{Type: "test", Attempt: 1, Action: Hang})
	e.approve(t, ps.Change)
	pid := PidFile(e.ctl, ps.Change, "test", 1, 1)
	var victim string
	e.patchset(t, ps.Change, 1, voteWait, "with test STARTED and hanging", func(p *Patchset) bool {
		j, ok := p.Job("test")
		_, err := os.Stat(pid)
		victim = j.Worker
		return ok && j.State == "STARTED" && err == nil
	})
	killed := time.Now()
	if err := e.topo.KillWorker(victim); err != nil {
		t.Fatal(err)
	}
	if _, err := e.topo.AddWorker(); err != nil {
		t.Fatal(err)
	}
	p := e.patchset(t, ps.Change, 1, voteWait, "with test queued again after BOT_DIED", func(p *Patchset) bool {
		j, _ := p.Job("test")
		return j.Attempt == 2 && len(j.History) >= 1
	})
	j, _ := p.Job("test")
	if h := j.History[0]; h.State != "BOT_DIED" || h.Worker != victim {
		t.Errorf("first attempt ended %s on %s, want BOT_DIED on %s", h.State, h.Worker, victim)
	}
	r := e.waitReview(t, ps.Change, 1, voteWait)
	expectVote(t, r, 1, "PASS: test")
	p = e.patchset(t, ps.Change, 1, 10*time.Second, "voted", func(p *Patchset) bool { return p.Patchset.Voted })
	j, _ = p.Job("test")
	if j.State != "COMPLETED" || j.Worker == victim {
		t.Errorf("test ended %s on %s, want COMPLETED on another worker than %s", j.State, j.Worker, victim)
	}
	e.note("8-worker-killed-mid-job", "kill to vote %s (worker_death %s)", r.Time.Sub(killed).Round(100*time.Millisecond),
		Settings{}.withDefaults().WorkerDeath)
}

// 9. Gerrit answers 500 to everything for 30 s: a patchset whose vote falls
// in the outage, and changes uploaded during it, all get their one review
// once Gerrit is back.
func gerritDownLosesNothing(t *testing.T, e *env) {
	early := e.change(t, Trusted("hank"), "9: votes during the outage", Rule{Type: "test", Action: Wait})
	e.approve(t, early.Change)
	e.patchset(t, early.Change, 1, voteWait, "with test STARTED", func(p *Patchset) bool {
		j, ok := p.Job("test")
		return ok && j.State == "STARTED"
	})
	requests := func() int {
		n := 0
		for _, c := range e.g.RequestCounts() {
			n += c
		}
		return n
	}
	deadBefore, err := e.api.Dead(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	before := requests()
	down := time.Now() // no later than the fault's start: it ends by down+outage
	id, err := e.g.InjectFault(fakegerrit.Fault{Status: 500, Duration: outage})
	if err != nil {
		t.Fatal(err)
	}
	defer e.g.RemoveFault(id)
	pass := e.change(t, Trusted("hank"), "9: uploaded during the outage")
	fail := e.change(t, Trusted("hank"), "9: fails, uploaded during the outage", Rule{Type: "test", Action: Fail})
	e.approve(t, pass.Change)
	e.approve(t, fail.Change)
	if err := Release(e.ctl, early.Change); err != nil {
		t.Fatal(err)
	}
	e.patchset(t, early.Change, 1, voteWait, "with every job ended (during the outage)", (*Patchset).Ended)
	var lastVote time.Time
	for _, c := range []struct {
		change, vote int
	}{{early.Change, 1}, {pass.Change, 1}, {fail.Change, -1}} {
		r := e.waitReview(t, c.change, 1, outage+voteWait)
		if r.Time.After(lastVote) {
			lastVote = r.Time
		}
		expectVote(t, r, c.vote)
		if r.Time.Before(down.Add(outage)) {
			t.Errorf("change %d reviewed at %s, during the outage (%s to %s)", c.change, r.Time, down, down.Add(outage))
		}
	}
	refused := requests() - before
	if refused == 0 {
		t.Error("Gerrit received no request during the outage")
	}
	dead, err := e.api.Dead(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	e.note("9-gerrit-down-30s-loses-nothing", "last vote %s after Gerrit came back; %d requests meanwhile; %d dead-lettered tasks",
		lastVote.Sub(down.Add(outage)).Round(100*time.Millisecond), refused, len(dead)-len(deadBefore))
	for _, c := range []int{early.Change, pass.Change, fail.Change} {
		consistently(t, 0, "one review", func() (bool, string) {
			n := len(e.reviews(c))
			return n == 1, fmt.Sprintf("change %d has %d reviews", c, n)
		})
	}
}

// 10. Logs older than logs_ttl are deleted by delete_expired_logs; newer
// ones stay. The action is triggered every second (its period from the
// tick is 15 minutes).
func logsExpireAfterTTL(t *testing.T, e *env) {
	ttl := Settings{}.withDefaults().LogsTTL
	old := e.change(t, Trusted("iris"), "10: old logs")
	e.approve(t, old.Change)
	e.waitReview(t, old.Change, 1, voteWait)
	p, err := e.api.Patchset(ctx(t), old.Change, 1)
	if err != nil {
		t.Fatal(err)
	}
	oldJobs := p.Jobs
	// A log expires TTL after its last write, which is after the job
	// started and before it ended.
	var firstStart, lastEnd time.Time
	for _, j := range oldJobs {
		if firstStart.IsZero() || j.TimeStarted.Before(firstStart) {
			firstStart = j.TimeStarted
		}
		if j.TimeEnded.After(lastEnd) {
			lastEnd = j.TimeEnded
		}
		l, err := e.api.Log(ctx(t), j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if l.Size == 0 {
			t.Fatalf("job %s has no log right after it ended", j.ID)
		}
	}
	logged := func(jobs []Job) (n int, why string) {
		var s []string
		for _, j := range jobs {
			l, err := e.api.Log(context.Background(), j.ID)
			if err != nil {
				return -1, err.Error()
			}
			if l.Size > 0 {
				n++
			}
			s = append(s, fmt.Sprintf("%s:%d bytes", j.Type, l.Size))
		}
		return n, strings.Join(s, " ")
	}
	var newer fakegerrit.PatchSet
	eventually(t, ttl+voteWait, "the old logs deleted", func() (bool, string) {
		if newer.Change == 0 && time.Since(lastEnd) > ttl/2 {
			newer = e.change(t, Trusted("iris"), "10: new logs")
			e.approve(t, newer.Change)
		}
		if err := e.topo.Trigger(context.Background(), controller.DeleteExpiredLogs, nil); err != nil {
			return false, err.Error()
		}
		n, why := logged(oldJobs)
		if n < len(oldJobs) && time.Now().Before(firstStart.Add(ttl)) {
			t.Fatalf("a log was deleted %s before its TTL passed: %s", firstStart.Add(ttl).Sub(time.Now()), why)
		}
		return n == 0, why
	})
	if newer.Change == 0 {
		t.Fatal("the old logs were deleted before the newer change was uploaded")
	}
	p = e.patchset(t, newer.Change, 1, voteWait, "with every job ended", (*Patchset).Ended)
	newJobs := p.Jobs
	consistently(t, 2*time.Second, "newer logs kept", func() (bool, string) {
		if err := e.topo.Trigger(context.Background(), controller.DeleteExpiredLogs, nil); err != nil {
			return false, err.Error()
		}
		n, why := logged(newJobs)
		return n == len(newJobs), why
	})
	// The check means something only while the newer logs were not due.
	for _, j := range newJobs {
		if due := j.TimeStarted.Add(ttl); time.Now().After(due) {
			t.Fatalf("too slow: the newer log of %s was due at %s, before the check ended", j.ID, due)
		}
	}
	e.note("10-logs-expire-after-ttl", "logs_ttl %s; old logs gone %s after their jobs ended",
		ttl, time.Since(lastEnd).Round(100*time.Millisecond))
}

// latencyBatch uploads latencyChanges trusted changes marked ready, at most
// latencyInflight waiting at a time, and reports the upload-to-vote
// latency: from just before the upload to the review's time on the fake
// Gerrit.
func latencyBatch(t *testing.T, e *env) {
	began := time.Now()
	type upload struct {
		change int
		at     time.Time
	}
	var inflight []upload
	var lat []time.Duration
	deadline := time.Now().Add(5 * time.Minute)
	for n := 0; len(lat) < latencyChanges; {
		for len(inflight) < latencyInflight && n < latencyChanges {
			n++
			at := time.Now()
			ps := e.change(t, Trusted("lat"), fmt.Sprintf("latency %d", n))
			e.approve(t, ps.Change)
			inflight = append(inflight, upload{ps.Change, at})
		}
		inflight = slices.DeleteFunc(inflight, func(u upload) bool {
			rs := e.reviewsOf(u.change, 1)
			if len(rs) == 0 {
				return false
			}
			if v := rs[0].Labels[VoteLabel]; v != 1 {
				t.Errorf("change %d voted %+d, want +1:\n%s", u.change, v, rs[0].Message)
			}
			lat = append(lat, rs[0].Time.Sub(u.at))
			return true
		})
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d changes voted within 5m", len(lat), latencyChanges)
		}
		time.Sleep(10 * time.Millisecond)
	}
	total := time.Since(began)
	sort.Slice(lat, func(i, k int) bool { return lat[i] < lat[k] })
	l := latency{n: len(lat), inflight: latencyInflight, median: percentile(lat, 0.5), p90: percentile(lat, 0.9),
		max: lat[len(lat)-1], total: total}
	report.latency(e.topo.Name(), l)
	t.Logf("upload-to-vote latency over %d changes (%d in flight): median %s, p90 %s, max %s; batch %s",
		l.n, l.inflight, l.median, l.p90, l.max, l.total)
}

// oneReviewPerPatchset checks, at the end, that no patchset of any change
// the scenarios created got more than one review from Tollgate.
func oneReviewPerPatchset(t *testing.T, e *env) {
	e.mu.Lock()
	changes := slices.Clone(e.changes)
	e.mu.Unlock()
	for _, c := range changes {
		per := map[int]int{}
		for _, r := range e.reviews(c) {
			per[r.PatchSet]++
		}
		for ps, n := range per {
			if n > 1 {
				t.Errorf("patchset %d-%d got %d reviews", c, ps, n)
			}
		}
	}
}
