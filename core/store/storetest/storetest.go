// Package storetest is the conformance suite of the store.Store port, in the
// manner of Go CDK's blob/drivertest: every adapter runs RunConformance, so
// the contracts documented on store.Store are stated once, as tests, and
// every backend is held to the same ones.
//
// The suite uses fixed timestamps (whole seconds after a base time, which
// every backend stores exactly) and never sleeps: times that matter, such as
// lease and log expiry, are passed explicitly.
package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

// RunConformance runs the suite. newStore must return a new, empty store for
// each subtest, and release it when the subtest ends (t.Cleanup).
func RunConformance(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"CreatePatchset", testCreatePatchset},
		{"CreatePatchsetDuplicate", testCreatePatchsetDuplicate},
		{"CreatePatchsetJobCollision", testCreatePatchsetJobCollision},
		{"CreatePatchsetInvalid", testCreatePatchsetInvalid},
		{"NotFound", testNotFound},
		{"GetBatched", testGetBatched},
		{"GetPatchsetWithJobs", testGetPatchsetWithJobs},
		{"UpdateJob", testUpdateJob},
		{"UpdateJobTerminal", testUpdateJobTerminal},
		{"UpdateJobRelease", testUpdateJobRelease},
		{"UpdateJobMarkMetrics", testUpdateJobMarkMetrics},
		{"UpdateJobConcurrent", testUpdateJobConcurrent},
		{"ClaimJobOrder", testClaimJobOrder},
		{"ClaimJobRequeued", testClaimJobRequeued},
		{"ClaimJobPools", testClaimJobPools},
		{"ClaimJobFairOrder", testClaimJobFairOrder},
		{"ClaimJobConcurrent", testClaimJobConcurrent},
		{"UpdatePatchset", testUpdatePatchset},
		{"UpdatePatchsetConcurrent", testUpdatePatchsetConcurrent},
		{"ListJobs", testListJobs},
		{"ListJobsDefaultLimit", testListJobsDefaultLimit},
		{"CountJobs", testCountJobs},
		{"ListPatchsets", testListPatchsets},
		{"Postsubmits", testPostsubmits},
		{"Workers", testWorkers},
		{"Logs", testLogs},
		{"LogsRejected", testLogsRejected},
		{"LogsExpiry", testLogsExpiry},
		{"Lease", testLease},
		{"LeaseConcurrent", testLeaseConcurrent},
		{"Meta", testMeta},
		{"AddJobsPatchset", testAddJobsPatchset},
		{"AddJobsPostsubmit", testAddJobsPostsubmit},
		{"AddJobsRefused", testAddJobsRefused},
		{"AddJobsConcurrent", testAddJobsConcurrent},
		{"ListJobsOrder", testListJobsOrder},
		{"CountJobsSince", testCountJobsSince},
		{"Samples", testSamples},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// unlabeled is the pool list of a claimer that runs the jobs requiring no
// labels (the only jobs most tests queue).
var unlabeled = []string{""}

// base is the suite's epoch; at(n) is n seconds after it.
var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

// newPatchset returns patchset cl-ps queued at queued with one QUEUED job
// per type, in the order of typs.
func newPatchset(cl, ps int, queued time.Time, typs ...string) (*model.Patchset, []*model.Job) {
	src := model.PatchsetSrc(cl, ps)
	p := &model.Patchset{
		ID:         model.PatchsetID(cl, ps),
		Change:     cl,
		Patchset:   ps,
		ChangeID:   fmt.Sprintf("proj~main~I%040d", cl),
		Revision:   fmt.Sprintf("%040x", cl*1000+ps),
		Ref:        fmt.Sprintf("refs/changes/%02d/%d/%d", cl%100, cl, ps),
		Project:    "proj",
		Branch:     "main",
		Subject:    fmt.Sprintf("change %d", cl),
		Owner:      "owner@example.com",
		Uploader:   "uploader@example.com",
		TimeQueued: queued,
		JobIDs:     []string{},
		Round:      1,
	}
	var jobs []*model.Job
	for _, typ := range typs {
		j := model.NewJob(queued, src, typ, map[string]string{"REF": p.Ref}, false)
		jobs = append(jobs, j)
		p.JobIDs = append(p.JobIDs, j.ID)
	}
	return p, jobs
}

// types returns n job types, t00 … t{n-1}.
func types(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("t%02d", i)
	}
	return out
}

func create(t *testing.T, s store.Store, p *model.Patchset, jobs []*model.Job) {
	t.Helper()
	if err := s.CreatePatchset(t.Context(), p, jobs); err != nil {
		t.Fatalf("CreatePatchset(%s): %v", p.ID, err)
	}
}

// seedPatchset creates patchset cl-1 queued at queued with the given types.
func seedPatchset(t *testing.T, s store.Store, cl int, queued time.Time, typs ...string) (*model.Patchset, []*model.Job) {
	t.Helper()
	p, jobs := newPatchset(cl, 1, queued, typs...)
	create(t, s, p, jobs)
	return p, jobs
}

func wantCode(t *testing.T, what string, err error, want errs.Code) {
	t.Helper()
	if !errs.Is(err, want) {
		t.Fatalf("%s: err = %v (code %v), want code %v", what, err, errs.CodeOf(err), want)
	}
}

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// js is the JSON form of v, the equality the suite uses for records: it
// compares times as instants and treats nil and empty maps alike, as a
// reader of the record would.
func js(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return string(b)
}

func wantSame(t *testing.T, what string, got, want any) {
	t.Helper()
	if g, w := js(t, got), js(t, want); g != w {
		t.Fatalf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func clone[T any](t *testing.T, v *T) *T {
	t.Helper()
	out := new(T)
	if err := json.Unmarshal([]byte(js(t, v)), out); err != nil {
		t.Fatal(err)
	}
	return out
}

func getJob(t *testing.T, s store.Store, id string) *model.Job {
	t.Helper()
	j, err := s.GetJob(t.Context(), id)
	mustOK(t, "GetJob "+id, err)
	return j
}

func update(t *testing.T, s store.Store, id string, tr model.Transition) *model.Job {
	t.Helper()
	j, err := s.UpdateJob(t.Context(), id, tr)
	mustOK(t, fmt.Sprintf("UpdateJob(%s, kind %d %s)", id, tr.Kind, tr.State), err)
	return j
}

// drive takes a QUEUED job to state the way the system would, starting and
// finishing it with worker w at times after at(100).
func drive(t *testing.T, s store.Store, id string, state model.State, w string) *model.Job {
	t.Helper()
	start := model.Transition{Kind: model.Start, Worker: w, Now: at(100)}
	switch state {
	case model.Queued:
		return getJob(t, s, id)
	case model.Started:
		return update(t, s, id, start)
	case model.Completed, model.Failed, model.TimedOut:
		code := 0
		update(t, s, id, start)
		return update(t, s, id, model.Transition{Kind: model.Finish, Worker: w, State: state, ExitCode: &code, Now: at(110)})
	case model.Cancelled:
		return update(t, s, id, model.Transition{Kind: model.Cancel, Reason: "superseded", Now: at(105)})
	case model.NoResource, model.Expired:
		return update(t, s, id, model.Transition{Kind: model.Expire, State: state, Reason: "waited in vain", Now: at(105)})
	case model.Interrupted, model.BotDied:
		for i := range model.MaxAttempts {
			update(t, s, id, model.Transition{Kind: model.Start, Worker: w, Now: at(100 + 20*i)})
			update(t, s, id, model.Transition{Kind: model.Release, Worker: w, State: state, Reason: "gone", Now: at(110 + 20*i)})
		}
		return getJob(t, s, id)
	}
	t.Fatalf("drive: unknown state %s", state)
	return nil
}

func ids[T any](v []*T, id func(*T) string) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = id(x)
	}
	return out
}

func jobIDs(v []*model.Job) []string { return ids(v, func(j *model.Job) string { return j.ID }) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sorted(v []string) []string {
	v = slices.Clone(v)
	sort.Strings(v)
	return v
}

func wantIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got %d %s\nwant %d %s", what, len(got), strings.Join(got, " "), len(want), strings.Join(want, " "))
	}
}

// start returns a channel closed to release concurrent goroutines at once,
// so they really contend instead of running one after another.
func start() chan struct{} { return make(chan struct{}) }

// race has callers goroutines each call try(caller, target) for every target,
// target after target, and returns for each target the callers whose try
// succeeded. All callers are released onto a target at once, after every
// one of them is done with the previous target, so each target is a fresh
// contest (goroutines that ran freely would drift into a convoy, the leader
// alone on each new target). Many short contests make a read-modify-write
// that is not atomic show up as two winners on some target. An error other
// than FailedPrecondition fails the test.
func race(t *testing.T, callers, targets int, try func(caller, target int) error) [][]int {
	t.Helper()
	won := make([][]bool, targets)
	gates := make([]chan struct{}, targets+1)
	left := make([]atomic.Int32, targets)
	for k := range targets {
		won[k] = make([]bool, callers)
		gates[k] = start()
		left[k].Store(int32(callers))
	}
	gates[targets] = start()
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for k := range targets {
				<-gates[k]
				err := try(i, k)
				switch {
				case err == nil:
					won[k][i] = true
				case !errs.Is(err, errs.FailedPrecondition):
					t.Errorf("caller %d, target %d: err = %v, want nil or FailedPrecondition", i, k, err)
				}
				if left[k].Add(-1) == 0 {
					close(gates[k+1])
				}
			}
		})
	}
	close(gates[0])
	wg.Wait()
	out := make([][]int, targets)
	for k := range won {
		for i, ok := range won[k] {
			if ok {
				out[k] = append(out[k], i)
			}
		}
	}
	return out
}
