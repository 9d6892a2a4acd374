package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

const lease = 2 * time.Minute

// voted takes a seeded patchset through its first round: every job
// completed, ended, claimed and voted.
func voted(t *testing.T, s store.Store, p *model.Patchset, jobs []*model.Job) *model.Patchset {
	t.Helper()
	for _, j := range jobs {
		drive(t, s, j.ID, model.Completed, "w1")
	}
	var err error
	for _, u := range []model.PatchsetUpdate{
		{Kind: model.End, Now: at(200)},
		{Kind: model.ClaimVote, Now: at(201), Lease: lease},
		{Kind: model.MarkVoted, Now: at(202), Vote: 1, Message: "all passed"},
		{Kind: model.MarkPatchsetMetrics, Now: at(203)},
	} {
		p, err = s.UpdatePatchset(t.Context(), p.ID, u)
		mustOK(t, fmt.Sprintf("UpdatePatchset kind %d", u.Kind), err)
	}
	return p
}

// Retrying a job of a voted patchset adds the job, lists it, and opens a
// second round: pending again, not voted, round 2.
func testAddJobsPatchset(t *testing.T, s store.Store) {
	ctx := t.Context()
	p, jobs := seedPatchset(t, s, 100, at(0), "linux", "mac")
	p = voted(t, s, p, jobs)
	seedPatchset(t, s, 101, at(0), "linux") // a neighbour that must not change

	retry := getJob(t, s, jobs[1].ID).Rerun(at(300), "alice@example.com")
	got, err := s.AddJobs(ctx, p.Src(), []*model.Job{retry}, lease)
	mustOK(t, "AddJobs", err)
	want := clone(t, p)
	mustOK(t, "model Reopen", want.Apply(model.PatchsetUpdate{Kind: model.Reopen, Now: at(300), Lease: lease}))
	want.JobIDs = append(want.JobIDs, retry.ID)
	wantSame(t, "AddJobs result", got, want)
	if got.Round != 2 || !got.Pending() || got.Voted || got.MetricsDone || !got.RoundStarted.Equal(at(300)) {
		t.Fatalf("reopened patchset: %s", js(t, got))
	}
	stored, storedJobs, err := s.GetPatchsetWithJobs(ctx, p.ID)
	mustOK(t, "GetPatchsetWithJobs", err)
	wantSame(t, "stored patchset", stored, want)
	wantIDs(t, "jobs of the patchset", jobIDs(storedJobs), want.JobIDs)
	wantSame(t, "the new job", storedJobs[2], retry)
	wantSame(t, "the new job by id", getJob(t, s, retry.ID), retry)
	if n, _, err := s.ListJobs(ctx, store.JobQuery{Src: p.Src(), States: []model.State{model.Queued}}); err != nil || len(n) != 1 || n[0].ID != retry.ID {
		t.Fatalf("queued jobs of the patchset: %v, %v", jobIDs(n), err)
	}

	// A pending round that has not voted gains jobs and stays round 2.
	second := getJob(t, s, jobs[0].ID).Rerun(at(400), "bob@example.com")
	third := clone(t, second)
	third.ID, third.Type = model.JobID(at(400), p.Src(), "extra"), "extra"
	got, err = s.AddJobs(ctx, p.Src(), []*model.Job{second, third}, lease)
	mustOK(t, "AddJobs to a pending round", err)
	want.JobIDs = append(want.JobIDs, second.ID, third.ID)
	want.RoundStarted = at(400)
	wantSame(t, "second AddJobs result", got, want)
}

func testAddJobsPostsubmit(t *testing.T, s store.Store) {
	ctx := t.Context()
	post := &model.Postsubmit{ID: model.PostsubmitID("release/1.0", at(3)), Branch: "release/1.0", Revision: "r", TimeCommitted: at(3), TimeQueued: at(5)}
	j := model.NewJob(at(5), post.Src(), "linux", nil, false)
	post.JobIDs = []string{j.ID}
	mustOK(t, "CreatePostsubmit", s.CreatePostsubmit(ctx, post, []*model.Job{j}))
	drive(t, s, j.ID, model.Failed, "w1")

	retry := getJob(t, s, j.ID).Rerun(at(50), "")
	got, err := s.AddJobs(ctx, post.Src(), []*model.Job{retry}, lease)
	mustOK(t, "AddJobs", err)
	if got != nil {
		t.Fatalf("AddJobs to a postsubmit run returned a patchset: %s", js(t, got))
	}
	latest, err := s.LatestPostsubmit(ctx, "release/1.0")
	mustOK(t, "LatestPostsubmit", err)
	wantIDs(t, "postsubmit job ids", latest.JobIDs, []string{j.ID, retry.ID})
	wantSame(t, "the new job", getJob(t, s, retry.ID), retry)
}

// A refused AddJobs writes nothing: not the jobs, not the ids, not the reopen.
func testAddJobsRefused(t *testing.T, s store.Store) {
	ctx := t.Context()
	p, jobs := seedPatchset(t, s, 100, at(0), "linux", "mac")
	p = voted(t, s, p, jobs)
	other, otherJobs := seedPatchset(t, s, 101, at(0), "linux")
	fresh := func(typ string, sec int) *model.Job {
		return model.NewJob(at(sec), p.Src(), typ, nil, false)
	}
	taken := clone(t, otherJobs[0]) // an existing id, offered as new
	taken.Src, taken.State, taken.Worker, taken.TimeStarted, taken.TimeEnded = p.Src(), model.Queued, "", time.Time{}, time.Time{}
	started := fresh("win", 300)
	started.State = model.Started
	dup := fresh("dup", 300)
	tests := []struct {
		name string
		src  string
		jobs []*model.Job
		want errs.Code
	}{
		{"taken job id", p.Src(), []*model.Job{fresh("win", 300), taken}, errs.AlreadyExists},
		{"unknown patchset", "cls/999-1", []*model.Job{model.NewJob(at(300), "cls/999-1", "linux", nil, false)}, errs.NotFound},
		{"unknown postsubmit", "branches/main-20250301120000", []*model.Job{model.NewJob(at(300), "branches/main-20250301120000", "linux", nil, false)}, errs.NotFound},
		{"malformed source", "cls/nope", []*model.Job{model.NewJob(at(300), "cls/nope", "linux", nil, false)}, errs.InvalidArgument},
		{"no jobs", p.Src(), nil, errs.InvalidArgument},
		{"job of another source", p.Src(), []*model.Job{fresh("win", 300), model.NewJob(at(300), other.Src(), "win", nil, false)}, errs.InvalidArgument},
		{"job given twice", p.Src(), []*model.Job{dup, dup}, errs.InvalidArgument},
		{"job not queued", p.Src(), []*model.Job{started}, errs.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.AddJobs(ctx, tc.src, tc.jobs, lease)
			wantCode(t, "AddJobs", err, tc.want)
			if got != nil {
				t.Fatalf("a refused AddJobs returned %s", js(t, got))
			}
			stored, err := s.GetPatchset(ctx, p.ID)
			mustOK(t, "GetPatchset", err)
			wantSame(t, "patchset after the refused AddJobs", stored, p)
			wantSame(t, "the taken job", getJob(t, s, otherJobs[0].ID), otherJobs[0])
			for _, j := range tc.jobs {
				if j.ID == taken.ID {
					continue
				}
				_, err := s.GetJob(ctx, j.ID)
				wantCode(t, "GetJob of a refused job "+j.ID, err, errs.NotFound)
			}
		})
	}

	// While a vote claim is live, the reopen is refused and nothing changes.
	q, qJobs := seedPatchset(t, s, 200, at(0), "linux")
	drive(t, s, qJobs[0].ID, model.Failed, "w1")
	var err error
	q, err = s.UpdatePatchset(ctx, q.ID, model.PatchsetUpdate{Kind: model.End, Now: at(200)})
	mustOK(t, "End", err)
	q, err = s.UpdatePatchset(ctx, q.ID, model.PatchsetUpdate{Kind: model.ClaimVote, Now: at(201), Lease: lease})
	mustOK(t, "ClaimVote", err)
	during := model.NewJob(at(230), q.Src(), "linux", nil, false)
	_, err = s.AddJobs(ctx, q.Src(), []*model.Job{during}, lease)
	wantCode(t, "AddJobs during a vote claim", err, errs.FailedPrecondition)
	stored, err := s.GetPatchset(ctx, q.ID)
	mustOK(t, "GetPatchset", err)
	wantSame(t, "patchset after the refused reopen", stored, q)
	_, err = s.GetJob(ctx, during.ID)
	wantCode(t, "GetJob of the refused job", err, errs.NotFound)
	// Once the claim's lease passed, the reopen goes through.
	after := model.NewJob(at(201).Add(lease+time.Second), q.Src(), "linux", nil, false)
	got, err := s.AddJobs(ctx, q.Src(), []*model.Job{after}, lease)
	mustOK(t, "AddJobs after the claim's lease", err)
	if !got.Pending() || got.Round != q.Round || got.VoteAttempt != 0 {
		t.Fatalf("reopened after a stale claim: %s", js(t, got))
	}
}

// Concurrent AddJobs on one patchset lose no job id: each commit sees the
// one before it.
func testAddJobsConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	p, _ := seedPatchset(t, s, 100, at(0), "linux")
	const callers = 16
	gate := start()
	var wg sync.WaitGroup
	errc := make(chan error, callers)
	var added []string
	for i := range callers {
		j := model.NewJob(at(10+i), p.Src(), fmt.Sprintf("t%02d", i), nil, false)
		added = append(added, j.ID)
		wg.Go(func() {
			<-gate
			_, err := s.AddJobs(ctx, p.Src(), []*model.Job{j}, lease)
			errc <- err
		})
	}
	close(gate)
	wg.Wait()
	close(errc)
	for err := range errc {
		mustOK(t, "concurrent AddJobs", err)
	}
	stored, jobs, err := s.GetPatchsetWithJobs(ctx, p.ID)
	mustOK(t, "GetPatchsetWithJobs", err)
	wantIDs(t, "job ids after concurrent AddJobs", sorted(stored.JobIDs), sorted(append(slices.Clone(p.JobIDs), added...)))
	if len(jobs) != callers+1 {
		t.Fatalf("%d jobs, want %d", len(jobs), callers+1)
	}
}
