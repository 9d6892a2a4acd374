package storetest

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

// newestFirst sorts records by TimeQueued, then id, descending: the order
// of every listing.
func newestFirst[T any](v []*T, key func(*T) (time.Time, string)) {
	sort.Slice(v, func(a, b int) bool {
		ta, ia := key(v[a])
		tb, ib := key(v[b])
		if !ta.Equal(tb) {
			return ta.After(tb)
		}
		return ia > ib
	})
}

func jobKey(j *model.Job) (time.Time, string) { return j.TimeQueued, j.ID }

// paginate reads every page of a listing with page size size, checking that
// only the last page has no cursor and that no page is larger than size.
func paginate[T any](t *testing.T, what string, size int, list func(cursor string) ([]*T, string, error)) []*T {
	t.Helper()
	var all []*T
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("%s: more than 1000 pages", what)
		}
		got, next, err := list(cursor)
		mustOK(t, what, err)
		if len(got) > size {
			t.Fatalf("%s: page of %d, limit %d", what, len(got), size)
		}
		all = append(all, got...)
		if next == "" {
			return all
		}
		if len(got) == 0 {
			t.Fatalf("%s: empty page with a cursor", what)
		}
		cursor = next
	}
}

// listFixture is a store with jobs of every kind of state, source and worker,
// and some TimeQueued ties; it returns all jobs as stored.
func listFixture(t *testing.T, s store.Store) []*model.Job {
	var all []*model.Job
	_, a := seedPatchset(t, s, 1, at(0), "a", "b", "c", "d")
	_, b := seedPatchset(t, s, 2, at(10), "a", "b", "c", "d")
	_, c := seedPatchset(t, s, 3, at(10), "a", "b", "c") // ties with 2
	_, d := seedPatchset(t, s, 4, at(20), "a", "b")      // ended while queued
	post := &model.Postsubmit{ID: model.PostsubmitID("main", at(3)), Branch: "main", Revision: "r", TimeCommitted: at(3), TimeQueued: at(5)}
	var pj []*model.Job
	for _, typ := range []string{"a", "b"} {
		j := model.NewJob(at(5), post.Src(), typ, nil, false)
		pj = append(pj, j)
		post.JobIDs = append(post.JobIDs, j.ID)
	}
	mustOK(t, "CreatePostsubmit", s.CreatePostsubmit(t.Context(), post, pj))

	// States; drive starts at at(100), so restart some later for StartedBefore.
	plan := []struct {
		j     *model.Job
		state model.State
		w     string
	}{
		{a[0], model.Completed, "w1"},
		{a[1], model.Failed, "w2"},
		{a[2], model.Cancelled, ""},
		{a[3], model.BotDied, "w1"},
		{b[0], model.Started, "w1"},
		{b[1], model.Started, "w2"},
		{b[2], model.Queued, ""},
		{b[3], model.Queued, ""},
		{c[0], model.Started, "w2"},
		{c[1], model.Completed, "w1"},
		{c[2], model.Queued, ""},
		{pj[0], model.Started, "w1"},
		{pj[1], model.Queued, ""},
		{d[0], model.NoResource, ""},
		{d[1], model.Expired, ""},
	}
	for _, p := range plan {
		all = append(all, drive(t, s, p.j.ID, p.state, p.w))
	}
	// A late start, after at(150): b[1] is requeued and started again.
	update(t, s, b[1].ID, model.Transition{Kind: model.Release, Worker: "w2", State: model.Interrupted, Now: at(190)})
	all[5] = update(t, s, b[1].ID, model.Transition{Kind: model.Start, Worker: "w3", Now: at(200)})
	// A requeued job has no worker and no start time.
	update(t, s, c[0].ID, model.Transition{Kind: model.Release, Worker: "w2", State: model.BotDied, Now: at(190)})
	all[8] = getJob(t, s, c[0].ID)
	newestFirst(all, jobKey)
	return all
}

func testListJobs(t *testing.T, s store.Store) {
	all := listFixture(t, s)
	in := func(states ...model.State) func(*model.Job) bool {
		return func(j *model.Job) bool { return slices.Contains(states, j.State) }
	}
	startedBefore := func(tm time.Time) func(*model.Job) bool {
		return func(j *model.Job) bool { return !j.TimeStarted.IsZero() && j.TimeStarted.Before(tm) }
	}
	queuedBefore := func(tm time.Time) func(*model.Job) bool {
		return func(j *model.Job) bool { return j.TimeQueued.Before(tm) }
	}
	and := func(fs ...func(*model.Job) bool) func(*model.Job) bool {
		return func(j *model.Job) bool {
			for _, f := range fs {
				if !f(j) {
					return false
				}
			}
			return true
		}
	}
	tests := []struct {
		name string
		q    store.JobQuery
		keep func(*model.Job) bool
		min  int // the fixture must give at least this many, so the case means something
	}{
		{"all", store.JobQuery{}, func(*model.Job) bool { return true }, 13},
		{"queued", store.JobQuery{States: []model.State{model.Queued}}, in(model.Queued), 4},
		{"started or completed", store.JobQuery{States: []model.State{model.Started, model.Completed}}, in(model.Started, model.Completed), 5},
		{"timed out (none)", store.JobQuery{States: []model.State{model.TimedOut}}, in(model.TimedOut), 0},
		{"src", store.JobQuery{Src: "cls/2-1"}, func(j *model.Job) bool { return j.Src == "cls/2-1" }, 4},
		{"postsubmit src", store.JobQuery{Src: "branches/main-20250301120003"}, func(j *model.Job) bool { return j.Src == "branches/main-20250301120003" }, 2},
		{"worker", store.JobQuery{Worker: "w1"}, func(j *model.Job) bool { return j.Worker == "w1" }, 4},
		{"started before", store.JobQuery{StartedBefore: at(150)}, startedBefore(at(150)), 5},
		{"running and started before", store.JobQuery{States: []model.State{model.Started}, StartedBefore: at(150)},
			and(in(model.Started), startedBefore(at(150))), 2},
		{"running, started later", store.JobQuery{States: []model.State{model.Started}, StartedBefore: at(250)},
			and(in(model.Started), startedBefore(at(250))), 3},
		{"src and state", store.JobQuery{Src: "cls/3-1", States: []model.State{model.Queued}},
			and(in(model.Queued), func(j *model.Job) bool { return j.Src == "cls/3-1" }), 2},
		{"worker and state", store.JobQuery{Worker: "w2", States: []model.State{model.Started}},
			and(in(model.Started), func(j *model.Job) bool { return j.Worker == "w2" }), 0},
		{"worker and state (w1)", store.JobQuery{Worker: "w1", States: []model.State{model.Started}},
			and(in(model.Started), func(j *model.Job) bool { return j.Worker == "w1" }), 2},
		{"queued before", store.JobQuery{QueuedBefore: at(10)}, queuedBefore(at(10)), 6},
		{"queued and queued before", store.JobQuery{States: []model.State{model.Queued}, QueuedBefore: at(10)},
			and(in(model.Queued), queuedBefore(at(10))), 1},
		{"queued and queued before, later", store.JobQuery{States: []model.State{model.Queued}, QueuedBefore: at(11)},
			and(in(model.Queued), queuedBefore(at(11))), 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want []*model.Job
			for _, j := range all {
				if tc.keep(j) {
					want = append(want, j)
				}
			}
			if len(want) < tc.min {
				t.Fatalf("fixture gives %d jobs, want at least %d", len(want), tc.min)
			}
			q := tc.q
			q.Limit = 1000
			got, next, err := s.ListJobs(t.Context(), q)
			mustOK(t, "ListJobs", err)
			wantIDs(t, "ListJobs", jobIDs(got), jobIDs(want))
			wantSame(t, "ListJobs records", got, want)
			if next != "" {
				t.Fatalf("ListJobs returned a cursor %q for a complete page", next)
			}
			for _, size := range []int{1, 2, 3} {
				got := paginate(t, fmt.Sprintf("ListJobs pages of %d", size), size, func(c string) ([]*model.Job, string, error) {
					q := tc.q
					q.Limit, q.Cursor = size, c
					return s.ListJobs(t.Context(), q)
				})
				wantIDs(t, fmt.Sprintf("ListJobs pages of %d", size), jobIDs(got), jobIDs(want))
			}
		})
	}
}

func testListJobsDefaultLimit(t *testing.T, s store.Store) {
	var all []*model.Job
	for i := range 3 {
		_, jobs := seedPatchset(t, s, 100+i, at(i), types(50)...)
		all = append(all, jobs...)
	}
	newestFirst(all, jobKey)
	got, next, err := s.ListJobs(t.Context(), store.JobQuery{})
	mustOK(t, "ListJobs", err)
	wantIDs(t, "first default page", jobIDs(got), jobIDs(all[:100]))
	if next == "" {
		t.Fatal("no cursor after the first of two pages")
	}
	got, next, err = s.ListJobs(t.Context(), store.JobQuery{Cursor: next})
	mustOK(t, "ListJobs", err)
	wantIDs(t, "second default page", jobIDs(got), jobIDs(all[100:]))
	if next != "" {
		t.Fatalf("cursor %q after the last page", next)
	}
	got, _, err = s.ListJobs(t.Context(), store.JobQuery{Limit: 5000})
	mustOK(t, "ListJobs", err)
	wantIDs(t, "page above the ceiling", jobIDs(got), jobIDs(all))
}

func testCountJobs(t *testing.T, s store.Store) {
	all := listFixture(t, s)
	want := map[model.State]int{}
	for _, j := range all {
		want[j.State]++
	}
	got, err := s.CountJobs(t.Context(), model.AllStates...)
	mustOK(t, "CountJobs", err)
	for _, st := range model.AllStates {
		if got[st] != want[st] {
			t.Errorf("CountJobs[%s] = %d, want %d", st, got[st], want[st])
		}
	}
	got, err = s.CountJobs(t.Context(), model.Queued, model.Started)
	mustOK(t, "CountJobs", err)
	if len(got) > 2 || got[model.Queued] != want[model.Queued] || got[model.Started] != want[model.Started] {
		t.Errorf("CountJobs(QUEUED, STARTED) = %v, want %d and %d", got, want[model.Queued], want[model.Started])
	}
}

func testListPatchsets(t *testing.T, s store.Store) {
	var all []*model.Patchset
	add := func(cl, ps, queued int, owner string, ended bool) {
		p, jobs := newPatchset(cl, ps, at(queued), "linux")
		p.Owner = owner
		create(t, s, p, jobs)
		if ended {
			var err error
			p, err = s.UpdatePatchset(t.Context(), p.ID, model.PatchsetUpdate{Kind: model.End, Now: at(queued + 100)})
			mustOK(t, "End", err)
		}
		all = append(all, p)
	}
	add(1, 1, 0, "a@x", true)
	add(1, 2, 10, "a@x", true)
	add(1, 3, 20, "a@x", false)
	add(2, 1, 20, "b@x", false) // ties with 1-3
	add(3, 1, 5, "b@x", true)
	add(11, 1, 30, "a@x", false) // change 11 is not change 1
	add(12, 1, 20, "c@x", false)
	psKey := func(p *model.Patchset) (time.Time, string) { return p.TimeQueued, p.ID }
	newestFirst(all, psKey)
	psIDs := func(v []*model.Patchset) []string { return ids(v, func(p *model.Patchset) string { return p.ID }) }

	tests := []struct {
		name string
		q    store.PatchsetQuery
		want []string // in order
	}{
		{"all", store.PatchsetQuery{}, psIDs(all)},
		{"change", store.PatchsetQuery{Change: 1}, []string{"1-3", "1-2", "1-1"}},
		{"owner", store.PatchsetQuery{Owner: "b@x"}, []string{"2-1", "3-1"}},
		{"pending", store.PatchsetQuery{Pending: true}, []string{"11-1", "2-1", "12-1", "1-3"}},
		{"pending change", store.PatchsetQuery{Pending: true, Change: 1}, []string{"1-3"}},
		{"pending owner", store.PatchsetQuery{Pending: true, Owner: "a@x"}, []string{"11-1", "1-3"}},
		{"ended", store.PatchsetQuery{Ended: true}, []string{"1-2", "3-1", "1-1"}},
		{"ended change", store.PatchsetQuery{Ended: true, Change: 1}, []string{"1-2", "1-1"}},
		{"ended owner", store.PatchsetQuery{Ended: true, Owner: "b@x"}, []string{"3-1"}},
		{"unknown change", store.PatchsetQuery{Change: 99}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.Limit = 1000
			got, next, err := s.ListPatchsets(t.Context(), q)
			mustOK(t, "ListPatchsets", err)
			wantIDs(t, "ListPatchsets", psIDs(got), tc.want)
			if next != "" {
				t.Fatalf("cursor %q on a complete page", next)
			}
			for _, size := range []int{1, 2} {
				got := paginate(t, "ListPatchsets", size, func(c string) ([]*model.Patchset, string, error) {
					q := tc.q
					q.Limit, q.Cursor = size, c
					return s.ListPatchsets(t.Context(), q)
				})
				wantIDs(t, fmt.Sprintf("ListPatchsets pages of %d", size), psIDs(got), tc.want)
			}
		})
	}
	got, _, err := s.ListPatchsets(t.Context(), store.PatchsetQuery{Limit: 1000})
	mustOK(t, "ListPatchsets", err)
	wantSame(t, "ListPatchsets records", got, all)
	_, _, err = s.ListPatchsets(t.Context(), store.PatchsetQuery{Pending: true, Ended: true})
	wantCode(t, "ListPatchsets pending and ended", err, errs.InvalidArgument)
}

// Listings by start and end time: only jobs that have the time, newest
// first, paged with cursors of their own order.
func testListJobsOrder(t *testing.T, s store.Store) {
	// The fixture's starts and ends do not follow its queue order: a job
	// restarted at at(200), ends from at(105) to at(130).
	all := listFixture(t, s)
	in := func(states ...model.State) func(*model.Job) bool {
		return func(j *model.Job) bool { return len(states) == 0 || slices.Contains(states, j.State) }
	}
	tests := []struct {
		name   string
		order  store.JobOrder
		states []model.State
		min    int
	}{
		{"started", store.OrderStarted, nil, 7},
		{"started, running", store.OrderStarted, []model.State{model.Started}, 3},
		{"ended", store.OrderEnded, nil, 5},
		{"ended, failed or completed", store.OrderEnded, []model.State{model.Failed, model.Completed}, 3},
		{"ended, queued (none)", store.OrderEnded, []model.State{model.Queued}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := func(j *model.Job) (time.Time, string) { return j.TimeStarted, j.ID }
			if tc.order == store.OrderEnded {
				key = func(j *model.Job) (time.Time, string) { return j.TimeEnded, j.ID }
			}
			var want []*model.Job
			for _, j := range all {
				if tm, _ := key(j); !tm.IsZero() && in(tc.states...)(j) {
					want = append(want, j)
				}
			}
			newestFirst(want, key)
			if len(want) < tc.min {
				t.Fatalf("fixture gives %d jobs, want at least %d", len(want), tc.min)
			}
			got, next, err := s.ListJobs(t.Context(), store.JobQuery{OrderBy: tc.order, States: tc.states, Limit: 1000})
			mustOK(t, "ListJobs", err)
			wantIDs(t, "ListJobs", jobIDs(got), jobIDs(want))
			wantSame(t, "ListJobs records", got, want)
			if next != "" {
				t.Fatalf("cursor %q on a complete page", next)
			}
			for _, size := range []int{1, 2, 3} {
				got := paginate(t, "ListJobs", size, func(c string) ([]*model.Job, string, error) {
					return s.ListJobs(t.Context(), store.JobQuery{OrderBy: tc.order, States: tc.states, Limit: size, Cursor: c})
				})
				wantIDs(t, fmt.Sprintf("ListJobs by %s in pages of %d", tc.order, size), jobIDs(got), jobIDs(want))
			}
		})
	}
	// A cursor belongs to its order.
	_, queuedCursor, err := s.ListJobs(t.Context(), store.JobQuery{Limit: 1})
	mustOK(t, "ListJobs", err)
	_, endedCursor, err := s.ListJobs(t.Context(), store.JobQuery{OrderBy: store.OrderEnded, Limit: 1})
	mustOK(t, "ListJobs", err)
	for _, q := range []store.JobQuery{
		{OrderBy: store.OrderEnded, Cursor: queuedCursor},
		{OrderBy: store.OrderStarted, Cursor: endedCursor},
		{Cursor: endedCursor},
		{OrderBy: "sideways"},
		{OrderBy: store.OrderEnded, Src: "cls/1-1"},
		{OrderBy: store.OrderStarted, Worker: "w1"},
		{QueuedBefore: at(10), Src: "cls/1-1"},
		{QueuedBefore: at(10), Worker: "w1"},
		{QueuedBefore: at(10), OrderBy: store.OrderEnded},
		{QueuedBefore: at(10), StartedBefore: at(10)},
	} {
		_, _, err := s.ListJobs(t.Context(), q)
		wantCode(t, fmt.Sprintf("ListJobs(%+v)", q), err, errs.InvalidArgument)
	}
}

func testCountJobsSince(t *testing.T, s store.Store) {
	all := listFixture(t, s)
	for _, since := range []int{0, 5, 6, 10, 11} {
		want := map[model.State]int{}
		for _, j := range all {
			if !j.TimeQueued.Before(at(since)) {
				want[j.State]++
			}
		}
		got, err := s.CountJobsSince(t.Context(), at(since))
		mustOK(t, "CountJobsSince", err)
		if js(t, got) != js(t, want) {
			t.Errorf("CountJobsSince(at(%d)) = %v, want %v", since, got, want)
		}
	}
}

func testSamples(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i := range 10 {
		mustOK(t, "PutSamples", s.PutSamples(ctx, at(60*i), map[string]float64{"queued": float64(i), "running": float64(2 * i)}))
	}
	// A second point at the same time replaces the first.
	mustOK(t, "PutSamples again", s.PutSamples(ctx, at(60*9), map[string]float64{"queued": 99.5}))
	list := func(name string, since time.Time) []model.Sample {
		t.Helper()
		got, err := s.ListSamples(ctx, name, since)
		mustOK(t, "ListSamples", err)
		return got
	}
	want := []model.Sample{{Time: at(420), Value: 7}, {Time: at(480), Value: 8}, {Time: at(540), Value: 99.5}}
	wantSame(t, "ListSamples(queued, since 420)", list("queued", at(420)), want)
	if got := list("running", time.Time{}); len(got) != 10 || got[9].Value != 18 || !got[0].Time.Equal(at(0)) {
		t.Fatalf("ListSamples(running) = %s", js(t, got))
	}
	if got := list("nothing", time.Time{}); len(got) != 0 {
		t.Fatalf("ListSamples of an unknown series = %s", js(t, got))
	}
	n, err := s.DeleteSamples(ctx, at(180), 4)
	mustOK(t, "DeleteSamples", err)
	if n != 4 {
		t.Fatalf("DeleteSamples deleted %d, want its limit 4", n)
	}
	n, err = s.DeleteSamples(ctx, at(180), 4)
	mustOK(t, "DeleteSamples", err)
	if n != 2 {
		t.Fatalf("second DeleteSamples deleted %d, want the 2 left", n)
	}
	if got := list("queued", time.Time{}); len(got) != 7 || !got[0].Time.Equal(at(180)) {
		t.Fatalf("after DeleteSamples: %s", js(t, got))
	}
	wantCode(t, "PutSamples without a name", s.PutSamples(ctx, at(0), map[string]float64{"": 1}), errs.InvalidArgument)
}

func testPostsubmits(t *testing.T, s store.Store) {
	ctx := t.Context()
	var all []*model.Postsubmit
	add := func(branch string, committed, queued int) *model.Postsubmit {
		p := &model.Postsubmit{
			ID: model.PostsubmitID(branch, at(committed)), Branch: branch, Revision: fmt.Sprintf("%040x", committed),
			Subject: "commit", Author: "dev@example.com", TimeCommitted: at(committed), TimeQueued: at(queued),
		}
		var jobs []*model.Job
		for _, typ := range []string{"linux", "mac"} {
			j := model.NewJob(at(queued), p.Src(), typ, nil, true)
			jobs = append(jobs, j)
			p.JobIDs = append(p.JobIDs, j.ID)
		}
		mustOK(t, "CreatePostsubmit "+p.ID, s.CreatePostsubmit(ctx, p, jobs))
		for _, j := range jobs {
			wantSame(t, "postsubmit job", getJob(t, s, j.ID), j)
		}
		all = append(all, p)
		return p
	}
	// Committed order and queued order disagree: the latest run is the last queued.
	add("main", 100, 1000)
	latestMain := add("main", 50, 2000)
	add("main-2", 300, 3000) // a branch whose name extends another
	add("release/1.0", 10, 1500)
	add("release/1.0", 20, 1500) // ties with the one before

	p, err := s.LatestPostsubmit(ctx, "main")
	mustOK(t, "LatestPostsubmit", err)
	wantSame(t, "LatestPostsubmit(main)", p, latestMain)
	p, err = s.LatestPostsubmit(ctx, "release/1.0")
	mustOK(t, "LatestPostsubmit", err)
	if p.Branch != "release/1.0" {
		t.Fatalf("LatestPostsubmit(release/1.0) = %s", js(t, p))
	}
	_, err = s.LatestPostsubmit(ctx, "mai")
	wantCode(t, "LatestPostsubmit of a branch prefix", err, errs.NotFound)

	dup := *latestMain
	dup.Subject = "other"
	dupJob := model.NewJob(at(9000), dup.Src(), "extra", nil, true)
	dup.JobIDs = []string{dupJob.ID}
	err = s.CreatePostsubmit(ctx, &dup, []*model.Job{dupJob})
	wantCode(t, "duplicate CreatePostsubmit", err, errs.AlreadyExists)
	_, err = s.GetJob(ctx, dupJob.ID)
	wantCode(t, "GetJob of the duplicate's job", err, errs.NotFound)
	stored, err := s.LatestPostsubmit(ctx, "main")
	mustOK(t, "LatestPostsubmit", err)
	wantSame(t, "postsubmit after the duplicate create", stored, latestMain)
	bad := *latestMain
	bad.ID = model.PostsubmitID("main", at(1))
	err = s.CreatePostsubmit(ctx, &bad, nil)
	wantCode(t, "CreatePostsubmit with job ids but no jobs", err, errs.InvalidArgument)

	key := func(p *model.Postsubmit) (time.Time, string) { return p.TimeQueued, p.ID }
	newestFirst(all, key)
	for _, branch := range []string{"", "main", "release/1.0", "nope"} {
		var want []*model.Postsubmit
		for _, p := range all {
			if branch == "" || p.Branch == branch {
				want = append(want, p)
			}
		}
		got, next, err := s.ListPostsubmits(ctx, branch, 1000, "")
		mustOK(t, "ListPostsubmits", err)
		wantSame(t, fmt.Sprintf("ListPostsubmits(%q)", branch), got, want)
		if next != "" {
			t.Fatalf("cursor %q on a complete page", next)
		}
		paged := paginate(t, "ListPostsubmits", 2, func(c string) ([]*model.Postsubmit, string, error) {
			return s.ListPostsubmits(ctx, branch, 2, c)
		})
		wantSame(t, fmt.Sprintf("ListPostsubmits(%q) in pages of 2", branch), paged, want)
	}
}
