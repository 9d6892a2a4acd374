package firestore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/store/storetest"
	"github.com/tollgate-ci/tollgate/emulators/gcloud"
	"github.com/tollgate-ci/tollgate/emulators/gcloud/gcloudtest"
)

func TestMain(m *testing.M) { gcloudtest.Main(m, gcloud.Firestore) }

// projects numbers the emulator projects of the tests. Each store gets a
// project of its own, so stores never see each other's documents and
// tests need no reset before they start; the project is reset when the
// store is released, to free the emulator's memory.
var projects atomic.Int64

// openTest returns a store on a fresh emulator project, closed and reset
// when the test ends.
func openTest(t testing.TB, o Options) *Store {
	t.Helper()
	host := gcloudtest.Host(t, gcloud.Firestore)
	o.EmulatorHost = host
	if o.Project == "" {
		o.Project = fmt.Sprintf("tollgate-test-%d", projects.Add(1))
	}
	s, err := OpenWith(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if err := gcloud.ResetFirestore(context.Background(), host, o.Project); err != nil {
			t.Errorf("reset %s: %v", o.Project, err)
		}
	})
	return s
}

// queryLog records the shape of every query stores issue, for
// TestIndexesCoverQueries.
type queryLog struct {
	mu    sync.Mutex
	specs []spec
}

func (l *queryLog) add(sp spec) {
	l.mu.Lock()
	l.specs = append(l.specs, sp)
	l.mu.Unlock()
}

var issued queryLog

func TestConformance(t *testing.T) {
	start := time.Now()
	storetest.RunConformance(t, func(t *testing.T) store.Store {
		s := openTest(t, Options{})
		s.observe = issued.add
		return s
	})
	t.Logf("conformance suite on the emulator: %v", time.Since(start).Round(time.Millisecond))
}

// Every query the conformance suite made the store issue is served by an
// index production Firestore has: a single-field one, or one of Indexes.
// And every shape the store can issue is one allSpecs (the source of
// Indexes) enumerates.
func TestIndexesCoverQueries(t *testing.T) {
	issued.mu.Lock()
	ran := len(issued.specs) > 0
	issued.mu.Unlock()
	if !ran && !t.Run("conformance", TestConformance) { // when run alone
		t.Fatal("conformance failed")
	}
	declared := map[string]bool{}
	for _, x := range Indexes() {
		declared[x.String()] = true
	}
	known := map[string]bool{}
	for _, sp := range allSpecs() {
		known[shapeKey(sp)] = true
	}
	issued.mu.Lock()
	defer issued.mu.Unlock()
	if len(issued.specs) == 0 {
		t.Fatal("no query was recorded")
	}
	seen := map[string]bool{}
	for _, sp := range issued.specs {
		k := shapeKey(sp)
		if seen[k] {
			continue
		}
		seen[k] = true
		if !known[k] {
			t.Errorf("query shape %s is not enumerated by allSpecs", k)
		}
		if x, ok := sp.index(); ok && !declared[x.String()] {
			t.Errorf("query shape %s needs index %s, which Indexes does not declare", k, x)
		}
	}
	t.Logf("%d query shapes issued, %d composite indexes declared", len(seen), len(declared))
}

// shapeKey is what of a query decides its index: collection, filtered
// fields and operators, and order.
func shapeKey(sp spec) string {
	var ws []string
	for _, c := range sp.where {
		op := c.op
		if op == "in" {
			op = "==" // served by the same index
		}
		ws = append(ws, c.path+op)
	}
	slices.Sort(ws)
	return fmt.Sprintf("%s%v order%v", sp.coll, ws, sp.order)
}

// The indexes are the ones the infra declares; a change here is a change
// to Terraform too.
func TestIndexes(t *testing.T) {
	want := []string{
		"jobs(pool ASCENDING, state ASCENDING, priority ASCENDING, order ASCENDING, id ASCENDING)",
		"jobs(src ASCENDING, state ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"jobs(src ASCENDING, state ASCENDING, time_queued DESCENDING, id DESCENDING, time_started DESCENDING)",
		"jobs(src ASCENDING, state ASCENDING, worker ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"jobs(src ASCENDING, state ASCENDING, worker ASCENDING, time_queued DESCENDING, id DESCENDING, time_started DESCENDING)",
		"jobs(src ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"jobs(src ASCENDING, time_queued DESCENDING, id DESCENDING, time_started DESCENDING)",
		"jobs(src ASCENDING, worker ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"jobs(src ASCENDING, worker ASCENDING, time_queued DESCENDING, id DESCENDING, time_started DESCENDING)",
		"jobs(state ASCENDING, time_ended DESCENDING, id DESCENDING)",
		"jobs(state ASCENDING, time_queued ASCENDING)",
		"jobs(state ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"jobs(state ASCENDING, time_queued DESCENDING, id DESCENDING, time_started DESCENDING)",
		"jobs(state ASCENDING, time_started DESCENDING, id DESCENDING)",
		"jobs(state ASCENDING, worker ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"jobs(state ASCENDING, worker ASCENDING, time_queued DESCENDING, id DESCENDING, time_started DESCENDING)",
		"jobs(time_ended DESCENDING, id DESCENDING)",
		"jobs(time_queued DESCENDING, id DESCENDING)",
		"jobs(time_queued DESCENDING, id DESCENDING, time_started DESCENDING)",
		"jobs(time_started DESCENDING, id DESCENDING)",
		"jobs(worker ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"jobs(worker ASCENDING, time_queued DESCENDING, id DESCENDING, time_started DESCENDING)",
		"patchsets(change ASCENDING, ended ASCENDING, owner ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"patchsets(change ASCENDING, ended ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"patchsets(change ASCENDING, owner ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"patchsets(change ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"patchsets(ended ASCENDING, owner ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"patchsets(ended ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"patchsets(owner ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"patchsets(time_queued DESCENDING, id DESCENDING)",
		"postsubmits(branch ASCENDING, time_queued DESCENDING, id DESCENDING)",
		"postsubmits(time_queued DESCENDING, id DESCENDING)",
		"samples(name ASCENDING, t DESCENDING)",
	}
	var got []string
	for _, x := range Indexes() {
		got = append(got, x.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("Indexes:\n got %q\nwant %q", got, want)
	}
	for _, o := range FieldOverrides() {
		if o.TTL && o.Field != fExpireAt {
			t.Errorf("TTL on %s.%s: AppendLog writes expire_at", o.Collection, o.Field)
		}
	}
}

func TestDocID(t *testing.T) {
	for in, want := range map[string]string{
		"1234-5":                      "1234-5",
		"release/1.0-20250301120000":  "release%2F1.0-20250301120000",
		"a%2Fb":                       "a%252Fb",
		"":                            "%",
		".":                           "%2E",
		"..":                          "%2E.",
		"__x__":                       "%5F_x__",
		"__x":                         "__x",
		"20250301120000--cls-1-1--ab": "20250301120000--cls-1-1--ab",
	} {
		if got := docID(in); got != want {
			t.Errorf("docID(%q) = %q, want %q", in, got, want)
		}
	}
	id := model.JobID(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), "cls/1-1", "linux")
	if got := spreadID(id); len(got) != 5+len(id) || got[4] != '-' || got[5:] != id {
		t.Errorf("spreadID(%q) = %q", id, got)
	}
}

// Two stores with different prefixes share a project without seeing each
// other's records.
func TestPrefix(t *testing.T) {
	ctx := t.Context()
	project := fmt.Sprintf("tollgate-test-%d", projects.Add(1))
	a := openTest(t, Options{Project: project, Prefix: "a_"})
	b := openTest(t, Options{Project: project, Prefix: "b_"})
	p := &model.Patchset{ID: "1-1", Change: 1, Patchset: 1, TimeQueued: time.Unix(100, 0).UTC(), JobIDs: []string{}}
	if err := a.CreatePatchset(ctx, p, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.CreatePatchset(ctx, p, nil); err != nil {
		t.Fatalf("the same patchset under another prefix: %v", err)
	}
	if err := a.CreatePatchset(ctx, p, nil); !errs.Is(err, errs.AlreadyExists) {
		t.Fatalf("duplicate under one prefix: %v", err)
	}
	if err := a.SetMeta(ctx, "k", "a"); err != nil {
		t.Fatal(err)
	}
	if v, err := b.GetMeta(ctx, "k"); err != nil || v != "" {
		t.Fatalf("b sees a's meta: %q, %v", v, err)
	}
}

// A create of more documents than one commit takes is refused up front.
func TestCreateTooManyJobs(t *testing.T) {
	s := openTest(t, Options{})
	now := time.Unix(100, 0).UTC()
	p := &model.Patchset{ID: "1-1", Change: 1, Patchset: 1, TimeQueued: now}
	var jobs []*model.Job
	for i := range maxWrites {
		j := model.NewJob(now, p.Src(), fmt.Sprintf("t%04d", i), nil, false)
		jobs = append(jobs, j)
		p.JobIDs = append(p.JobIDs, j.ID)
	}
	if err := s.CreatePatchset(t.Context(), p, jobs); !errs.Is(err, errs.InvalidArgument) {
		t.Fatalf("CreatePatchset of %d jobs: %v, want InvalidArgument", len(jobs), err)
	}
	if _, err := s.GetPatchset(t.Context(), p.ID); !errs.Is(err, errs.NotFound) {
		t.Fatalf("GetPatchset after the refused create: %v", err)
	}
}

// Appends larger than one document split over several chunks and read
// back whole, from any offset.
func TestLogLargeChunks(t *testing.T) {
	s := openTest(t, Options{})
	ctx := t.Context()
	id := model.JobID(time.Unix(0, 0), "cls/1-1", "linux")
	data := make([]byte, 1<<20+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	exp := time.Unix(5000, 0)
	if err := s.AppendLog(ctx, id, 0, data[:1<<20], exp); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendLog(ctx, id, 1<<20, data[1<<20:], exp); err != nil {
		t.Fatal(err)
	}
	// A retry of the first append, whole, changes nothing.
	if err := s.AppendLog(ctx, id, 0, data[:1<<20], exp); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1, maxChunkDoc - 1, maxChunkDoc, 1 << 20, int64(len(data)) - 1} {
		got, size, err := s.ReadLog(ctx, id, off, len(data))
		if err != nil {
			t.Fatal(err)
		}
		if size != int64(len(data)) || !slices.Equal(got, data[off:]) {
			t.Fatalf("ReadLog at %d: %d bytes, size %d", off, len(got), size)
		}
	}
	if err := s.AppendLog(ctx, id, 0, make([]byte, maxAppend+1), exp); !errs.Is(err, errs.InvalidArgument) {
		t.Fatalf("oversized append: %v", err)
	}
}

// Lost races end in Aborted once the attempts are used up, never in a
// silent overwrite.
func TestRetryGivesUp(t *testing.T) {
	s := openTest(t, Options{MaxAttempts: 3})
	n := 0
	err := s.retry(t.Context(), "test", func() error { n++; return errConflict })
	if !errs.Is(err, errs.Aborted) || n != 3 {
		t.Fatalf("after %d attempts: %v, want Aborted after 3", n, err)
	}
}
