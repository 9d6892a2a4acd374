package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

func testCreatePatchset(t *testing.T, s store.Store) {
	p, jobs := newPatchset(100, 2, at(0), "linux", "mac", "win")
	p.WantsVote = true
	jobs[1].SkipVoting = true
	create(t, s, p, jobs)

	got, err := s.GetPatchset(t.Context(), p.ID)
	mustOK(t, "GetPatchset", err)
	wantSame(t, "GetPatchset", got, p)
	for _, j := range jobs {
		wantSame(t, "GetJob "+j.ID, getJob(t, s, j.ID), j)
	}
}

// A second create with the same id, as from a duplicate delivery, must not
// touch the first one's records nor add its own jobs.
func testCreatePatchsetDuplicate(t *testing.T, s store.Store) {
	p, jobs := newPatchset(100, 1, at(0), "linux", "mac")
	create(t, s, p, jobs)

	dup, dupJobs := newPatchset(100, 1, at(60), "linux", "other")
	dup.Subject = "changed"
	err := s.CreatePatchset(t.Context(), dup, dupJobs)
	wantCode(t, "second CreatePatchset", err, errs.AlreadyExists)

	got, err := s.GetPatchset(t.Context(), p.ID)
	mustOK(t, "GetPatchset", err)
	wantSame(t, "patchset after duplicate create", got, p)
	for _, j := range dupJobs {
		_, err := s.GetJob(t.Context(), j.ID)
		wantCode(t, "GetJob of the duplicate's job "+j.ID, err, errs.NotFound)
	}
	for _, j := range jobs {
		wantSame(t, "job after duplicate create", getJob(t, s, j.ID), j)
	}
}

// A create whose job id is taken is refused as a whole: the patchset is not
// written without its jobs, and the existing job is not overwritten.
func testCreatePatchsetJobCollision(t *testing.T, s store.Store) {
	_, jobs := seedPatchset(t, s, 100, at(0), "linux")
	started := drive(t, s, jobs[0].ID, model.Started, "w1")

	p2, jobs2 := newPatchset(200, 1, at(10), "mac")
	collide := clone(t, jobs[0])
	collide.Src, collide.State, collide.Worker, collide.TimeStarted = p2.Src(), model.Queued, "", time.Time{}
	jobs2 = append(jobs2, collide)
	p2.JobIDs = append(p2.JobIDs, collide.ID)

	err := s.CreatePatchset(t.Context(), p2, jobs2)
	wantCode(t, "CreatePatchset with a taken job id", err, errs.AlreadyExists)
	_, err = s.GetPatchset(t.Context(), p2.ID)
	wantCode(t, "GetPatchset after the refused create", err, errs.NotFound)
	_, err = s.GetJob(t.Context(), jobs2[0].ID)
	wantCode(t, "GetJob of the refused create's new job", err, errs.NotFound)
	wantSame(t, "the existing job", getJob(t, s, jobs[0].ID), started)
}

func testCreatePatchsetInvalid(t *testing.T, s store.Store) {
	tests := []struct {
		name string
		edit func(p *model.Patchset, jobs []*model.Job) (*model.Patchset, []*model.Job)
	}{
		{"job missing from JobIDs", func(p *model.Patchset, jobs []*model.Job) (*model.Patchset, []*model.Job) {
			p.JobIDs = p.JobIDs[:1]
			return p, jobs
		}},
		{"JobIDs names a job not given", func(p *model.Patchset, jobs []*model.Job) (*model.Patchset, []*model.Job) {
			return p, jobs[:1]
		}},
		{"JobIDs names another id", func(p *model.Patchset, jobs []*model.Job) (*model.Patchset, []*model.Job) {
			p.JobIDs[1] = p.JobIDs[1] + "x"
			return p, jobs
		}},
		{"JobIDs lists a job twice", func(p *model.Patchset, jobs []*model.Job) (*model.Patchset, []*model.Job) {
			p.JobIDs[1] = p.JobIDs[0]
			return p, jobs
		}},
		{"job given twice", func(p *model.Patchset, jobs []*model.Job) (*model.Patchset, []*model.Job) {
			p.JobIDs = append(p.JobIDs, jobs[0].ID)
			return p, append(jobs, jobs[0])
		}},
		{"job ids but no jobs", func(p *model.Patchset, jobs []*model.Job) (*model.Patchset, []*model.Job) {
			return p, nil
		}},
		{"nil patchset", func(p *model.Patchset, jobs []*model.Job) (*model.Patchset, []*model.Job) {
			return nil, jobs
		}},
		{"empty patchset id", func(p *model.Patchset, jobs []*model.Job) (*model.Patchset, []*model.Job) {
			p.ID = ""
			return p, jobs
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig, origJobs := newPatchset(100+i, 1, at(i), "linux", "mac")
			p, jobs := tc.edit(clone(t, orig), []*model.Job{clone(t, origJobs[0]), clone(t, origJobs[1])})
			err := s.CreatePatchset(t.Context(), p, jobs)
			wantCode(t, "CreatePatchset", err, errs.InvalidArgument)
			_, err = s.GetPatchset(t.Context(), orig.ID)
			wantCode(t, "GetPatchset after the refused create", err, errs.NotFound)
			for _, j := range origJobs {
				_, err := s.GetJob(t.Context(), j.ID)
				wantCode(t, "GetJob after the refused create", err, errs.NotFound)
			}
		})
	}
}

func testNotFound(t *testing.T, s store.Store) {
	seedPatchset(t, s, 100, at(0), "linux")
	ctx := t.Context()
	_, err := s.GetPatchset(ctx, "999-1")
	wantCode(t, "GetPatchset", err, errs.NotFound)
	_, _, err = s.GetPatchsetWithJobs(ctx, "999-1")
	wantCode(t, "GetPatchsetWithJobs", err, errs.NotFound)
	_, err = s.GetJob(ctx, model.JobID(at(0), "cls/999-1", "linux"))
	wantCode(t, "GetJob", err, errs.NotFound)
	_, err = s.UpdateJob(ctx, model.JobID(at(0), "cls/999-1", "linux"), model.Transition{Kind: model.Cancel, Now: at(1)})
	wantCode(t, "UpdateJob", err, errs.NotFound)
	_, err = s.UpdatePatchset(ctx, "999-1", model.PatchsetUpdate{Kind: model.End, Now: at(1)})
	wantCode(t, "UpdatePatchset", err, errs.NotFound)
	_, err = s.GetWorker(ctx, "nobody")
	wantCode(t, "GetWorker", err, errs.NotFound)
	_, err = s.SetWorkerQuarantined(ctx, "nobody", true)
	wantCode(t, "SetWorkerQuarantined", err, errs.NotFound)
	_, err = s.LatestPostsubmit(ctx, "main")
	wantCode(t, "LatestPostsubmit", err, errs.NotFound)
}

// GetJobs and GetPatchsets return what exists, for any number of ids.
func testGetBatched(t *testing.T, s store.Store) {
	var all []*model.Job
	var psIDs []string
	for i := range 12 {
		p, jobs := seedPatchset(t, s, 100+i, at(i), types(50)...)
		all = append(all, jobs...)
		psIDs = append(psIDs, p.ID)
	}
	ctx := t.Context()
	missing := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = model.JobID(at(i), "cls/1-1", "missing")
		}
		return out
	}

	tests := []struct {
		name string
		ids  []string
		want []string
	}{
		{"empty", nil, nil},
		{"one", []string{all[7].ID}, []string{all[7].ID}},
		{"missing only", missing(2), nil},
		{"mixed", []string{all[0].ID, "nope", all[599].ID}, []string{all[0].ID, all[599].ID}},
		{"duplicates", []string{all[3].ID, all[3].ID}, []string{all[3].ID}},
		{"500", jobIDs(all[50:550]), jobIDs(all[50:550])},
		{"600", jobIDs(all), jobIDs(all)},
		{"missing first", append(missing(700), jobIDs(all)...), jobIDs(all)},
	}
	byID := map[string]*model.Job{}
	for _, j := range all {
		byID[j.ID] = j
	}
	for _, tc := range tests {
		got, err := s.GetJobs(ctx, tc.ids)
		mustOK(t, "GetJobs "+tc.name, err)
		wantIDs(t, "GetJobs "+tc.name, sortedKeys(got), sorted(tc.want))
		for id, j := range got {
			wantSame(t, "GetJobs "+tc.name, j, byID[id])
		}
	}

	var many []string
	for i := range 600 {
		many = append(many, model.PatchsetID(1000+i, 1))
	}
	many = append(many, psIDs...)
	got, err := s.GetPatchsets(ctx, many)
	mustOK(t, "GetPatchsets of 612 ids", err)
	wantIDs(t, "GetPatchsets of 612 ids", sortedKeys(got), sorted(psIDs))
	got, err = s.GetPatchsets(ctx, nil)
	mustOK(t, "GetPatchsets of none", err)
	if len(got) != 0 {
		t.Fatalf("GetPatchsets of none returned %d", len(got))
	}
	got, err = s.GetPatchsets(ctx, []string{"999-1", psIDs[4]})
	mustOK(t, "GetPatchsets", err)
	wantIDs(t, "GetPatchsets", sortedKeys(got), []string{psIDs[4]})
	wantSame(t, "GetPatchsets", got[psIDs[4]].JobIDs, jobIDs(all[200:250]))
}

func testGetPatchsetWithJobs(t *testing.T, s store.Store) {
	// JobIDs order is neither alphabetical nor insertion order.
	p, jobs := newPatchset(100, 1, at(0), types(10)...)
	order := []int{3, 9, 0, 7, 1, 8, 2, 6, 4, 5}
	p.JobIDs = nil
	var want []*model.Job
	for _, i := range order {
		p.JobIDs = append(p.JobIDs, jobs[i].ID)
		want = append(want, jobs[i])
	}
	slices.Reverse(jobs)
	create(t, s, p, jobs)
	seedPatchset(t, s, 101, at(0), types(3)...) // a neighbour that must not leak in
	want[1] = drive(t, s, want[1].ID, model.Started, "w1")

	gotP, gotJobs, err := s.GetPatchsetWithJobs(t.Context(), p.ID)
	mustOK(t, "GetPatchsetWithJobs", err)
	wantSame(t, "patchset", gotP, p)
	wantIDs(t, "job order", jobIDs(gotJobs), p.JobIDs)
	wantSame(t, "jobs", gotJobs, want)
}
func testUpdatePatchset(t *testing.T, s store.Store) {
	p, _ := seedPatchset(t, s, 100, at(0), "linux")
	const lease = 10 * time.Minute
	steps := []struct {
		name string
		u    model.PatchsetUpdate
		want errs.Code // Unknown: success
	}{
		{"SetWantsVote", model.PatchsetUpdate{Kind: model.SetWantsVote, Now: at(1)}, errs.Unknown},
		{"SetWantsVote again", model.PatchsetUpdate{Kind: model.SetWantsVote, Now: at(2)}, errs.FailedPrecondition},
		{"End", model.PatchsetUpdate{Kind: model.End, Now: at(60)}, errs.Unknown},
		{"End again", model.PatchsetUpdate{Kind: model.End, Now: at(61)}, errs.FailedPrecondition},
		{"ClaimVote", model.PatchsetUpdate{Kind: model.ClaimVote, Now: at(100), Lease: lease}, errs.Unknown},
		{"ClaimVote within the lease", model.PatchsetUpdate{Kind: model.ClaimVote, Now: at(100 + 599), Lease: lease}, errs.FailedPrecondition},
		{"ClaimVote after the lease", model.PatchsetUpdate{Kind: model.ClaimVote, Now: at(100 + 601), Lease: lease}, errs.Unknown},
		{"MarkVoted", model.PatchsetUpdate{Kind: model.MarkVoted, Now: at(710), Vote: 1, Message: "all passed"}, errs.Unknown},
		{"MarkVoted again", model.PatchsetUpdate{Kind: model.MarkVoted, Now: at(711), Vote: -1, Message: "x"}, errs.FailedPrecondition},
		{"ClaimVote after voting", model.PatchsetUpdate{Kind: model.ClaimVote, Now: at(2000), Lease: lease}, errs.FailedPrecondition},
		{"MarkPatchsetMetrics", model.PatchsetUpdate{Kind: model.MarkPatchsetMetrics, Now: at(720)}, errs.Unknown},
		{"MarkPatchsetMetrics again", model.PatchsetUpdate{Kind: model.MarkPatchsetMetrics, Now: at(721)}, errs.FailedPrecondition},
		{"unknown kind", model.PatchsetUpdate{Kind: 99, Now: at(722)}, errs.InvalidArgument},
	}
	want := clone(t, p)
	for _, st := range steps {
		got, err := s.UpdatePatchset(t.Context(), p.ID, st.u)
		if st.want != errs.Unknown {
			wantCode(t, st.name, err, st.want)
		} else {
			mustOK(t, st.name, err)
			mustOK(t, st.name+" (model)", want.Apply(st.u))
			wantSame(t, st.name+" result", got, want)
		}
		stored, err := s.GetPatchset(t.Context(), p.ID)
		mustOK(t, "GetPatchset", err)
		wantSame(t, "stored after "+st.name, stored, want)
	}
	if want.VoteAttempt != 2 || !want.Voted || want.Vote != 1 || !want.WantsVote || !want.MetricsDone || !want.TimeEnded.Equal(at(60)) {
		t.Fatalf("the steps did not reach the expected record: %s", js(t, want))
	}
}

// Each patchset update succeeds exactly once however many callers race.
func testUpdatePatchsetConcurrent(t *testing.T, s store.Store) {
	kinds := []struct {
		name string
		kind model.PatchsetUpdateKind
	}{
		{"SetWantsVote", model.SetWantsVote},
		{"End", model.End},
		{"ClaimVote", model.ClaimVote},
		{"MarkVoted", model.MarkVoted},
		{"MarkPatchsetMetrics", model.MarkPatchsetMetrics},
	}
	const callers, patchsets = 32, 8
	for n, kc := range kinds {
		t.Run(kc.name, func(t *testing.T) {
			var ps []*model.Patchset
			for k := range patchsets {
				p, _ := seedPatchset(t, s, 100*(n+1)+k, at(0), "linux")
				if kc.kind == model.ClaimVote || kc.kind == model.MarkVoted {
					// A review is claimed and recorded once the patchset ended.
					var err error
					p, err = s.UpdatePatchset(t.Context(), p.ID, model.PatchsetUpdate{Kind: model.End, Now: at(50)})
					mustOK(t, "End", err)
				}
				ps = append(ps, p)
			}
			results := make([][]*model.Patchset, patchsets)
			for k := range results {
				results[k] = make([]*model.Patchset, callers)
			}
			winners := race(t, callers, patchsets, func(i, k int) (err error) {
				// Each caller posts something different, so a lost update shows.
				u := model.PatchsetUpdate{Kind: kc.kind, Now: at(100 + i), Lease: time.Hour, Vote: i%3 - 1, Message: fmt.Sprintf("from %d", i)}
				results[k][i], err = s.UpdatePatchset(t.Context(), ps[k].ID, u)
				return err
			})
			for k, p := range ps {
				if len(winners[k]) != 1 {
					t.Fatalf("patchset %s: %d callers succeeded (%v), want exactly 1", p.ID, len(winners[k]), winners[k])
				}
				stored, err := s.GetPatchset(t.Context(), p.ID)
				mustOK(t, "GetPatchset", err)
				wantSame(t, "stored patchset vs the winner's result", stored, results[k][winners[k][0]])
				if kc.kind == model.ClaimVote && stored.VoteAttempt != 1 {
					t.Fatalf("VoteAttempt = %d, want 1", stored.VoteAttempt)
				}
			}
		})
	}
}
