package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

func exit(c int) *int { return &c }

// UpdateJob must store exactly what model.Job.Apply makes of the record, and
// nothing when Apply refuses.
func testUpdateJob(t *testing.T, s store.Store) {
	tests := []struct {
		name  string
		from  model.State
		tr    model.Transition
		want  errs.Code // Unknown: success
		state model.State
	}{
		{"start", model.Queued, model.Transition{Kind: model.Start, Worker: "w1", Now: at(200)}, errs.Unknown, model.Started},
		{"start without worker", model.Queued, model.Transition{Kind: model.Start, Now: at(200)}, errs.InvalidArgument, model.Queued},
		{"start started", model.Started, model.Transition{Kind: model.Start, Worker: "w2", Now: at(200)}, errs.FailedPrecondition, model.Started},
		{"finish completed", model.Started, model.Transition{Kind: model.Finish, Worker: "w1", State: model.Completed, ExitCode: exit(0), Now: at(200)}, errs.Unknown, model.Completed},
		{"finish failed without worker", model.Started, model.Transition{Kind: model.Finish, State: model.Failed, ExitCode: exit(3), Reason: "tests failed", Now: at(200)}, errs.Unknown, model.Failed},
		{"finish timed out", model.Started, model.Transition{Kind: model.Finish, Worker: "w1", State: model.TimedOut, Now: at(200)}, errs.Unknown, model.TimedOut},
		{"finish by another worker", model.Started, model.Transition{Kind: model.Finish, Worker: "w2", State: model.Completed, Now: at(200)}, errs.FailedPrecondition, model.Started},
		{"finish queued", model.Queued, model.Transition{Kind: model.Finish, Worker: "w1", State: model.Completed, Now: at(200)}, errs.FailedPrecondition, model.Queued},
		{"finish non-terminal", model.Started, model.Transition{Kind: model.Finish, Worker: "w1", State: model.Queued, Now: at(200)}, errs.InvalidArgument, model.Started},
		{"finish interrupted requeues", model.Started, model.Transition{Kind: model.Finish, Worker: "w1", State: model.Interrupted, Now: at(200)}, errs.Unknown, model.Queued},
		{"cancel queued", model.Queued, model.Transition{Kind: model.Cancel, Reason: "superseded", Now: at(200)}, errs.Unknown, model.Cancelled},
		{"cancel started", model.Started, model.Transition{Kind: model.Cancel, Reason: "by user", Now: at(200)}, errs.Unknown, model.Cancelled},
		{"release queued", model.Queued, model.Transition{Kind: model.Release, State: model.BotDied, Now: at(200)}, errs.FailedPrecondition, model.Queued},
		{"release by another worker", model.Started, model.Transition{Kind: model.Release, Worker: "w2", State: model.BotDied, Now: at(200)}, errs.FailedPrecondition, model.Started},
		{"release as failed", model.Started, model.Transition{Kind: model.Release, Worker: "w1", State: model.Failed, Now: at(200)}, errs.InvalidArgument, model.Started},
		{"mark metrics of a running job", model.Started, model.Transition{Kind: model.MarkMetrics, Now: at(200)}, errs.FailedPrecondition, model.Started},
		{"expire queued", model.Queued, model.Transition{Kind: model.Expire, State: model.Expired, Reason: "too old", Now: at(200)}, errs.Unknown, model.Expired},
		{"no resource for queued", model.Queued, model.Transition{Kind: model.Expire, State: model.NoResource, Reason: "no mac", Now: at(200)}, errs.Unknown, model.NoResource},
		{"expire started", model.Started, model.Transition{Kind: model.Expire, State: model.Expired, Now: at(200)}, errs.FailedPrecondition, model.Started},
		{"expire as failed", model.Queued, model.Transition{Kind: model.Expire, State: model.Failed, Now: at(200)}, errs.InvalidArgument, model.Queued},
		{"unknown kind", model.Queued, model.Transition{Kind: 99, Now: at(200)}, errs.InvalidArgument, model.Queued},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, jobs := seedPatchset(t, s, 100+i, at(i), "linux", "mac")
			id := jobs[0].ID
			before := drive(t, s, id, tc.from, "w1")
			got, err := s.UpdateJob(t.Context(), id, tc.tr)
			want := clone(t, before)
			if tc.want != errs.Unknown {
				wantCode(t, "UpdateJob", err, tc.want)
			} else {
				mustOK(t, "UpdateJob", err)
				mustOK(t, "model Apply", want.Apply(tc.tr))
				wantSame(t, "UpdateJob result", got, want)
			}
			stored := getJob(t, s, id)
			wantSame(t, "stored job", stored, want)
			if stored.State != tc.state {
				t.Fatalf("state = %s, want %s", stored.State, tc.state)
			}
			wantSame(t, "the other job of the patchset", getJob(t, s, jobs[1].ID), jobs[1])
		})
	}
}

// A job in a terminal state never changes again, whatever is tried.
func testUpdateJobTerminal(t *testing.T, s store.Store) {
	terminal := []model.State{model.Completed, model.Failed, model.TimedOut, model.Cancelled, model.Interrupted, model.BotDied,
		model.NoResource, model.Expired}
	tries := []model.Transition{
		{Kind: model.Start, Worker: "w1", Now: at(500)},
		{Kind: model.Start, Worker: "w2", Now: at(500)},
		{Kind: model.Finish, Worker: "w1", State: model.Completed, ExitCode: exit(0), Now: at(500)},
		{Kind: model.Finish, State: model.Failed, ExitCode: exit(1), Now: at(500)},
		{Kind: model.Finish, State: model.TimedOut, Now: at(500)},
		{Kind: model.Finish, Worker: "w1", State: model.Cancelled, Now: at(500)},
		{Kind: model.Finish, Worker: "w1", State: model.Interrupted, Now: at(500)},
		{Kind: model.Finish, State: model.BotDied, Now: at(500)},
		{Kind: model.Cancel, Reason: "late", Now: at(500)},
		{Kind: model.Release, Worker: "w1", State: model.Interrupted, Now: at(500)},
		{Kind: model.Release, State: model.BotDied, Now: at(500)},
		{Kind: model.Expire, State: model.Expired, Now: at(500)},
		{Kind: model.Expire, State: model.NoResource, Now: at(500)},
	}
	for i, st := range terminal {
		t.Run(string(st), func(t *testing.T) {
			_, jobs := seedPatchset(t, s, 100+i, at(i), "linux")
			id := jobs[0].ID
			before := drive(t, s, id, st, "w1")
			if before.State != st {
				t.Fatalf("driving the job gave %s, want %s", before.State, st)
			}
			for _, tr := range tries {
				_, err := s.UpdateJob(t.Context(), id, tr)
				wantCode(t, fmt.Sprintf("%s: transition %d to %q by %q", st, tr.Kind, tr.State, tr.Worker), err, errs.FailedPrecondition)
				wantSame(t, "job after a refused transition", getJob(t, s, id), before)
			}
			// A terminal job is not in the queue either.
			if j, err := s.ClaimJob(t.Context(), "w9", unlabeled, at(600)); !errs.Is(err, errs.NotFound) {
				t.Fatalf("ClaimJob with only a %s job: got %v, %v; want NotFound", st, j, err)
			}
		})
	}
}

// An infrastructure failure requeues the job once, keeping the history of
// the lost attempt; the second one is final.
func testUpdateJobRelease(t *testing.T, s store.Store) {
	_, jobs := seedPatchset(t, s, 100, at(0), "linux")
	id := jobs[0].ID
	update(t, s, id, model.Transition{Kind: model.Start, Worker: "w1", Now: at(10)})
	j := update(t, s, id, model.Transition{Kind: model.Release, Worker: "w1", State: model.BotDied, Reason: "no heartbeat", Now: at(20)})
	if j.State != model.Queued || j.Attempt != 2 || j.Worker != "" || !j.TimeStarted.IsZero() || !j.TimeEnded.IsZero() {
		t.Fatalf("after the first release: %s, want QUEUED, attempt 2, no worker, no start or end time", js(t, j))
	}
	wantHist := []model.Attempt{{Attempt: 1, State: model.BotDied, Worker: "w1", Started: at(10), Ended: at(20)}}
	wantSame(t, "history after the first release", j.History, wantHist)
	wantSame(t, "stored after the first release", getJob(t, s, id), j)

	c, err := s.ClaimJob(t.Context(), "w2", unlabeled, at(30))
	mustOK(t, "ClaimJob of the requeued job", err)
	if c.ID != id || c.Worker != "w2" || c.Attempt != 2 {
		t.Fatalf("claimed %s, want %s by w2 at attempt 2", js(t, c), id)
	}
	j = update(t, s, id, model.Transition{Kind: model.Release, Worker: "w2", State: model.Interrupted, Reason: "shutdown", Now: at(40)})
	if j.State != model.Interrupted || j.Attempt != 2 || !j.TimeEnded.Equal(at(40)) || j.Reason != "shutdown" {
		t.Fatalf("after the second release: %s, want INTERRUPTED for good", js(t, j))
	}
	wantSame(t, "history after the second release", j.History, wantHist)
	wantSame(t, "stored after the second release", getJob(t, s, id), j)
	if _, err := s.ClaimJob(t.Context(), "w3", unlabeled, at(50)); !errs.Is(err, errs.NotFound) {
		t.Fatalf("ClaimJob after the final release: %v, want NotFound", err)
	}
}

func testUpdateJobMarkMetrics(t *testing.T, s store.Store) {
	_, jobs := seedPatchset(t, s, 100, at(0), "linux")
	id := jobs[0].ID
	done := drive(t, s, id, model.Completed, "w1")
	j := update(t, s, id, model.Transition{Kind: model.MarkMetrics, Now: at(300)})
	want := clone(t, done)
	want.MetricsDone = true
	wantSame(t, "after MarkMetrics", j, want)
	_, err := s.UpdateJob(t.Context(), id, model.Transition{Kind: model.MarkMetrics, Now: at(301)})
	wantCode(t, "second MarkMetrics", err, errs.FailedPrecondition)
	wantSame(t, "stored", getJob(t, s, id), want)
}

// Racing transitions on one job: exactly one wins, the rest see
// FailedPrecondition, and the record is the winner's.
func testUpdateJobConcurrent(t *testing.T, s store.Store) {
	const callers, jobsPerRace = 16, 8
	races := []struct {
		name string
		tr   func(i int) model.Transition
	}{
		{"cancel vs finish", func(i int) model.Transition {
			if i%2 == 0 {
				return model.Transition{Kind: model.Cancel, Reason: fmt.Sprint(i), Now: at(200 + i)}
			}
			return model.Transition{Kind: model.Finish, Worker: "w1", State: model.Completed, ExitCode: exit(i), Now: at(200 + i)}
		}},
		{"release", func(i int) model.Transition {
			return model.Transition{Kind: model.Release, Worker: "w1", State: model.BotDied, Reason: fmt.Sprint(i), Now: at(200 + i)}
		}},
		{"finish", func(i int) model.Transition {
			return model.Transition{Kind: model.Finish, Worker: "w1", State: model.Failed, ExitCode: exit(i), Now: at(200 + i)}
		}},
	}
	for r, rc := range races {
		t.Run(rc.name, func(t *testing.T) {
			_, jobs := seedPatchset(t, s, 100+r, at(0), types(jobsPerRace)...)
			before := make([]*model.Job, len(jobs))
			for k, j := range jobs {
				before[k] = drive(t, s, j.ID, model.Started, "w1")
			}
			results := make([][]*model.Job, len(jobs))
			for k := range results {
				results[k] = make([]*model.Job, callers)
			}
			winners := race(t, callers, len(jobs), func(i, k int) (err error) {
				results[k][i], err = s.UpdateJob(t.Context(), jobs[k].ID, rc.tr(i))
				return err
			})
			for k, j := range jobs {
				if len(winners[k]) != 1 {
					t.Fatalf("job %s: %d callers won (%v), want exactly 1", j.ID, len(winners[k]), winners[k])
				}
				w := winners[k][0]
				want := clone(t, before[k])
				mustOK(t, "model Apply", want.Apply(rc.tr(w)))
				wantSame(t, "winner's result", results[k][w], want)
				wantSame(t, "stored job", getJob(t, s, j.ID), want)
			}
		})
	}
}

// The queue is fair: the oldest QUEUED job by TimeQueued goes first, whatever
// its id or source, with the id breaking ties.
func testClaimJobOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.ClaimJob(ctx, "w1", unlabeled, at(0))
	wantCode(t, "ClaimJob of an empty store", err, errs.NotFound)

	// Job ids all carry the same creation second, so id order (cls-10 before
	// cls-9) is the reverse of queue order (cls-9 was queued first). Jobs
	// of one source share an Order here: the id decides among them.
	mk := func(cl int, queued int, typs ...string) []*model.Job {
		p, jobs := newPatchset(cl, 1, at(0), typs...)
		p.TimeQueued = at(queued)
		for _, j := range jobs {
			j.TimeQueued, j.Order = at(queued), at(queued)
		}
		create(t, s, p, jobs)
		return jobs
	}
	newer := mk(10, 20, "b", "a")
	older := mk(9, 10, "b", "a", "c")
	// A postsubmit job, queued before the newer patchset's, comes after
	// every presubmit job: its priority is lower.
	post := &model.Postsubmit{ID: model.PostsubmitID("main", at(0)), Branch: "main", Revision: "abc", TimeQueued: at(15), TimeCommitted: at(0)}
	pj := model.NewJob(at(15), post.Src(), "post", nil, false)
	post.JobIDs = []string{pj.ID}
	mustOK(t, "CreatePostsubmit", s.CreatePostsubmit(ctx, post, []*model.Job{pj}))
	// A cancelled job is no longer queued.
	cancelled := mk(8, 0, "x")
	update(t, s, cancelled[0].ID, model.Transition{Kind: model.Cancel, Now: at(1)})
	// An earlier Order goes first, whatever the queue time.
	early := mk(7, 30, "z")
	update(t, s, early[0].ID, model.Transition{Kind: model.Cancel, Now: at(31)})

	want := []string{older[1].ID, older[0].ID, older[2].ID, newer[1].ID, newer[0].ID, pj.ID}
	var got []string
	for i := range want {
		j, err := s.ClaimJob(ctx, fmt.Sprintf("w%d", i), unlabeled, at(100+i))
		mustOK(t, "ClaimJob", err)
		if j.State != model.Started || j.Worker != fmt.Sprintf("w%d", i) || !j.TimeStarted.Equal(at(100+i)) {
			t.Fatalf("claimed job %s, want STARTED by w%d at %v", js(t, j), i, at(100+i))
		}
		wantSame(t, "stored claimed job", getJob(t, s, j.ID), j)
		got = append(got, j.ID)
	}
	wantIDs(t, "claim order", got, want)
	_, err = s.ClaimJob(ctx, "w1", unlabeled, at(200))
	wantCode(t, "ClaimJob after the queue is drained", err, errs.NotFound)
	_, err = s.ClaimJob(ctx, "", unlabeled, at(200))
	wantCode(t, "ClaimJob without a worker", err, errs.InvalidArgument)
}

// A job requeued after an infrastructure failure is claimable again and, as
// it keeps its TimeQueued, goes before jobs queued after it.
func testClaimJobRequeued(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, old := seedPatchset(t, s, 100, at(0), "linux")
	c, err := s.ClaimJob(ctx, "w1", unlabeled, at(10))
	mustOK(t, "ClaimJob", err)
	if c.ID != old[0].ID {
		t.Fatalf("claimed %s, want %s", c.ID, old[0].ID)
	}
	_, err = s.ClaimJob(ctx, "w2", unlabeled, at(11))
	wantCode(t, "ClaimJob with the only job running", err, errs.NotFound)

	_, fresh := seedPatchset(t, s, 200, at(20), "linux")
	update(t, s, c.ID, model.Transition{Kind: model.Release, Worker: "w1", State: model.BotDied, Now: at(30)})
	c, err = s.ClaimJob(ctx, "w2", unlabeled, at(40))
	mustOK(t, "ClaimJob", err)
	if c.ID != old[0].ID || c.Attempt != 2 || c.Worker != "w2" {
		t.Fatalf("claimed %s, want the requeued %s at attempt 2 by w2", js(t, c), old[0].ID)
	}
	c, err = s.ClaimJob(ctx, "w3", unlabeled, at(41))
	mustOK(t, "ClaimJob", err)
	if c.ID != fresh[0].ID {
		t.Fatalf("claimed %s, want %s", c.ID, fresh[0].ID)
	}
}

// A claimer gets only jobs of the pools it names: none with no pools, and
// the right one among more pools than one backend query takes (Firestore's
// "in" takes 30 values).
func testClaimJobPools(t *testing.T, s store.Store) {
	ctx := t.Context()
	p, jobs := newPatchset(100, 1, at(0), "any", "linux", "large", "mac")
	jobs[1].SetRequire(map[string]string{"os": "linux"})
	jobs[2].SetRequire(map[string]string{"os": "linux", "pool": "large"})
	jobs[3].SetRequire(map[string]string{"os": "mac"})
	create(t, s, p, jobs)
	for i, j := range jobs {
		wantSame(t, "stored job "+j.Type, getJob(t, s, j.ID), jobs[i])
	}
	_, err := s.ClaimJob(ctx, "w0", nil, at(10))
	wantCode(t, "ClaimJob with no pools", err, errs.NotFound)
	_, err = s.ClaimJob(ctx, "w0", []string{"os=windows"}, at(10))
	wantCode(t, "ClaimJob of an empty pool", err, errs.NotFound)

	// 40 pools, the mac one among the last: found, and only it.
	many := []string{}
	for i := range 40 {
		many = append(many, fmt.Sprintf("zone=z%02d", i))
	}
	many = append(many[:35], append([]string{"os=mac", "os=mac"}, many[35:]...)...)
	c, err := s.ClaimJob(ctx, "w-mac", many, at(11))
	mustOK(t, "ClaimJob from 42 pools", err)
	if c.ID != jobs[3].ID || c.Worker != "w-mac" || c.Pool != "os=mac" {
		t.Fatalf("claimed %s, want %s", js(t, c), jobs[3].ID)
	}
	_, err = s.ClaimJob(ctx, "w-mac", many, at(12))
	wantCode(t, "ClaimJob of a drained pool", err, errs.NotFound)

	// A linux worker: the job requiring nothing and the plain linux one,
	// not the large one.
	linux := []string{"", "os=linux"}
	var got []string
	for range 2 {
		c, err := s.ClaimJob(ctx, "w-linux", linux, at(20))
		mustOK(t, "ClaimJob linux", err)
		got = append(got, c.ID)
	}
	wantIDs(t, "linux worker's claims", sorted(got), sorted([]string{jobs[0].ID, jobs[1].ID}))
	_, err = s.ClaimJob(ctx, "w-linux", linux, at(21))
	wantCode(t, "ClaimJob linux, drained", err, errs.NotFound)
	c, err = s.ClaimJob(ctx, "w-large", []string{"", "os=linux", "os=linux,pool=large"}, at(22))
	mustOK(t, "ClaimJob large", err)
	if c.ID != jobs[2].ID {
		t.Fatalf("large worker claimed %s, want %s", c.ID, jobs[2].ID)
	}
}

// The claim order across two changes with many jobs and a postsubmit run:
// the jobs of each change are staggered one slot apart (model.Stagger, as
// the controller queues them), so change B, queued after change A, gets
// its first job in right after A's first instead of after all of A's; the
// postsubmit run, queued before both, waits for every presubmit job; a
// job queued again after its worker died keeps its place.
func testClaimJobFairOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	const slot = time.Minute
	mk := func(cl int, queued time.Time, n int) []*model.Job {
		p, jobs := newPatchset(cl, 1, queued, types(n)...)
		model.Stagger(jobs, slot)
		create(t, s, p, jobs)
		return jobs
	}
	post := &model.Postsubmit{ID: model.PostsubmitID("main", at(0)), Branch: "main", Revision: "abc", TimeQueued: at(-600), TimeCommitted: at(-700)}
	var pj []*model.Job
	for _, typ := range types(3) {
		j := model.NewJob(at(-600), post.Src(), typ, nil, false)
		pj = append(pj, j)
		post.JobIDs = append(post.JobIDs, j.ID)
	}
	model.Stagger(pj, slot)
	mustOK(t, "CreatePostsubmit", s.CreatePostsubmit(ctx, post, pj))
	a := mk(1, at(0), 6)   // orders 0, 60, 120, ... 300 s
	b := mk(2, at(30), 3)  // orders 30, 90, 150 s
	c := mk(3, at(200), 2) // orders 200, 260 s

	claim := func(w string, now int) *model.Job {
		t.Helper()
		j, err := s.ClaimJob(ctx, w, unlabeled, at(now))
		mustOK(t, "ClaimJob", err)
		return j
	}
	// A's first job runs, and its worker dies: it is queued again with its
	// order, so it is the next claimed.
	first := claim("w-dies", 1000)
	if first.ID != a[0].ID {
		t.Fatalf("first claim %s, want %s", first.ID, a[0].ID)
	}
	update(t, s, first.ID, model.Transition{Kind: model.Release, Worker: "w-dies", State: model.BotDied, Now: at(1001)})

	want := []*model.Job{a[0], b[0], a[1], b[1], a[2], b[2], a[3], c[0], a[4], c[1], a[5], pj[0], pj[1], pj[2]}
	var got []string
	for i := range want {
		got = append(got, claim(fmt.Sprintf("w%d", i), 1010+i).ID)
	}
	wantIDs(t, "claim order", got, jobIDs(want))
	_, err := s.ClaimJob(ctx, "w", unlabeled, at(2000))
	wantCode(t, "ClaimJob of a drained queue", err, errs.NotFound)
}

// Many workers draining the queue at once: every job is claimed exactly once,
// by the worker that the store says has it.
func testClaimJobConcurrent(t *testing.T, s store.Store) {
	const workers, patchsets, perPatchset = 32, 10, 20
	var all []string
	for i := range patchsets {
		_, jobs := seedPatchset(t, s, 100+i, at(i), types(perPatchset)...)
		all = append(all, jobIDs(jobs)...)
	}
	var (
		mu      sync.Mutex
		claimed = map[string][]string{} // job id → workers that got it
	)
	go0 := start()
	var wg sync.WaitGroup
	for w := range workers {
		worker := fmt.Sprintf("w%02d", w)
		wg.Go(func() {
			<-go0
			for n := 0; ; n++ {
				j, err := s.ClaimJob(t.Context(), worker, unlabeled, at(1000+n))
				if errs.Is(err, errs.NotFound) {
					return
				}
				if err != nil {
					t.Errorf("%s: ClaimJob: %v", worker, err)
					return
				}
				mu.Lock()
				claimed[j.ID] = append(claimed[j.ID], worker)
				mu.Unlock()
				if j.Worker != worker || j.State != model.Started {
					t.Errorf("%s claimed %s", worker, js(t, j))
				}
			}
		})
	}
	close(go0)
	wg.Wait()
	if t.Failed() {
		return
	}
	wantIDs(t, "claimed jobs", sortedKeys(claimed), sorted(all))
	stored, err := s.GetJobs(t.Context(), all)
	mustOK(t, "GetJobs", err)
	for id, by := range claimed {
		if len(by) != 1 {
			t.Errorf("job %s claimed %d times, by %v", id, len(by), by)
			continue
		}
		if j := stored[id]; j.State != model.Started || j.Worker != by[0] {
			t.Errorf("job %s stored as %s by %q, but claimed by %s", id, j.State, j.Worker, by[0])
		}
	}
	n, err := s.CountJobs(t.Context(), model.Queued, model.Started)
	mustOK(t, "CountJobs", err)
	if n[model.Queued] != 0 || n[model.Started] != len(all) {
		t.Fatalf("CountJobs = %v, want 0 QUEUED and %d STARTED", n, len(all))
	}
}
