package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

func testWorkers(t *testing.T, s store.Store) {
	ctx := t.Context()
	put := func(w *model.Worker, want *model.Worker) {
		t.Helper()
		got, err := s.PutWorker(ctx, w)
		mustOK(t, "PutWorker "+w.ID, err)
		wantSame(t, "PutWorker result", got, want)
		stored, err := s.GetWorker(ctx, w.ID)
		mustOK(t, "GetWorker "+w.ID, err)
		wantSame(t, "stored worker", stored, want)
	}
	w1 := &model.Worker{ID: "w1", Host: "h1", Version: "v1", Labels: map[string]string{"os": "linux"},
		State: model.WorkerIdle, LastSeen: at(100), FirstSeen: at(0)}
	put(w1, w1)

	// A heartbeat replaces the record.
	beat := clone(t, w1)
	beat.Version, beat.State, beat.CurrentJob, beat.LastSeen = "v2", model.WorkerBusy, "job-1", at(200)
	put(beat, beat)

	q, err := s.SetWorkerQuarantined(ctx, "w1", true)
	mustOK(t, "SetWorkerQuarantined", err)
	want := clone(t, beat)
	want.State = model.WorkerQuarantined
	wantSame(t, "quarantined worker", q, want)

	// Heartbeats of a quarantined worker keep it quarantined, and update the rest.
	for i, st := range []model.WorkerState{model.WorkerIdle, model.WorkerBusy} {
		beat = clone(t, beat)
		beat.State, beat.LastSeen = st, at(300+i)
		want = clone(t, beat)
		want.State = model.WorkerQuarantined
		put(beat, want)
	}

	u, err := s.SetWorkerQuarantined(ctx, "w1", false)
	mustOK(t, "lift quarantine", err)
	if u.State == model.WorkerQuarantined || u.LastSeen != beat.LastSeen || u.Version != "v2" {
		t.Fatalf("after lifting the quarantine: %s", js(t, u))
	}
	beat = clone(t, beat)
	beat.State, beat.CurrentJob, beat.LastSeen = model.WorkerIdle, "", at(310)
	put(beat, beat)

	// ListWorkers(seenBefore) is strict: seen at exactly that time is not stale.
	put(&model.Worker{ID: "w2", Host: "h2", State: model.WorkerIdle, LastSeen: at(50)}, &model.Worker{ID: "w2", Host: "h2", State: model.WorkerIdle, LastSeen: at(50)})
	put(&model.Worker{ID: "w3", Host: "h3", State: model.WorkerBusy, LastSeen: at(400)}, &model.Worker{ID: "w3", Host: "h3", State: model.WorkerBusy, LastSeen: at(400)})
	put(&model.Worker{ID: "w4", Host: "h4", State: model.WorkerIdle, LastSeen: at(310)}, &model.Worker{ID: "w4", Host: "h4", State: model.WorkerIdle, LastSeen: at(310)})
	list := func(before time.Time) []string {
		t.Helper()
		ws, err := s.ListWorkers(ctx, before)
		mustOK(t, "ListWorkers", err)
		return sorted(ids(ws, func(w *model.Worker) string { return w.ID }))
	}
	wantIDs(t, "ListWorkers(all)", list(time.Time{}), []string{"w1", "w2", "w3", "w4"})
	wantIDs(t, "ListWorkers(seen before 310)", list(at(310)), []string{"w2"})
	wantIDs(t, "ListWorkers(seen before 311)", list(at(311)), []string{"w1", "w2", "w4"})
	wantIDs(t, "ListWorkers(seen before 0)", list(at(0)), []string{})

	mustOK(t, "DeleteWorker", s.DeleteWorker(ctx, "w2"))
	_, err = s.GetWorker(ctx, "w2")
	wantCode(t, "GetWorker after delete", err, errs.NotFound)
	mustOK(t, "DeleteWorker again", s.DeleteWorker(ctx, "w2"))
	mustOK(t, "DeleteWorker of an unknown worker", s.DeleteWorker(ctx, "never"))
	wantIDs(t, "ListWorkers after delete", list(time.Time{}), []string{"w1", "w3", "w4"})
}

func logID(i int) string { return model.JobID(at(0), model.PatchsetSrc(i, 1), "linux") }

func readAll(t *testing.T, s store.Store, id string) string {
	t.Helper()
	b, size, err := s.ReadLog(t.Context(), id, 0, 1<<20)
	mustOK(t, "ReadLog", err)
	if int64(len(b)) != size {
		t.Fatalf("ReadLog(%s) gave %d bytes of a log of %d", id, len(b), size)
	}
	return string(b)
}

func testLogs(t *testing.T, s store.Store) {
	ctx := t.Context()
	id, other := logID(1), logID(2)
	chunks := []string{"hello ", "wonderful ", "w", "orld\n"}
	exp := at(3600)
	var full string
	for i, c := range chunks {
		mustOK(t, "AppendLog", s.AppendLog(ctx, id, int64(len(full)), []byte(c), exp))
		full += c
		// Readable while it grows; another job's log is separate.
		if got := readAll(t, s, id); got != full {
			t.Fatalf("after chunk %d: log %q, want %q", i, got, full)
		}
		mustOK(t, "AppendLog other", s.AppendLog(ctx, other, int64(i), []byte{'0' + byte(i)}, exp))
	}
	// Retried chunks, in any order, change nothing.
	off := 0
	offs := map[string]int{}
	for _, c := range chunks {
		offs[c] = off
		off += len(c)
	}
	for _, c := range []string{chunks[3], chunks[0], chunks[1], chunks[3]} {
		mustOK(t, fmt.Sprintf("AppendLog(%q) again at %d", c, offs[c]), s.AppendLog(ctx, id, int64(offs[c]), []byte(c), exp))
	}
	if got := readAll(t, s, id); got != full {
		t.Fatalf("after retried appends: %q, want %q", got, full)
	}
	if got := readAll(t, s, other); got != "0123" {
		t.Fatalf("other log %q, want %q", got, "0123")
	}

	// Every window of the log reads back in order, without gaps.
	for from := 0; from <= len(full)+2; from++ {
		for _, max := range []int{1, 2, 5, 7, 100} {
			got, size, err := s.ReadLog(ctx, id, int64(from), max)
			mustOK(t, "ReadLog", err)
			lo := min(from, len(full))
			want := full[lo:min(lo+max, len(full))]
			if string(got) != want || size != int64(len(full)) {
				t.Fatalf("ReadLog(off %d, max %d) = %q, size %d; want %q, size %d", from, max, got, size, want, len(full))
			}
		}
	}

	got, size, err := s.ReadLog(ctx, logID(99), 0, 100)
	mustOK(t, "ReadLog of an unknown job", err)
	if len(got) != 0 || size != 0 {
		t.Fatalf("ReadLog of an unknown job = %q, %d; want empty", got, size)
	}
}

// A chunk that would leave a gap or rewrite stored bytes is refused, and the
// log stays as it was.
func testLogsRejected(t *testing.T, s store.Store) {
	ctx := t.Context()
	id := logID(1)
	exp := at(3600)
	mustOK(t, "AppendLog", s.AppendLog(ctx, id, 0, []byte("abcdef"), exp))
	mustOK(t, "AppendLog", s.AppendLog(ctx, id, 6, []byte("ghi"), exp))
	tests := []struct {
		name string
		off  int64
		data string
	}{
		{"gap", 10, "x"},
		{"far gap", 1000, "x"},
		{"overlap with the last chunk", 6, "ghX"},
		{"same offset, other bytes", 0, "abcdeX"},
		{"inside a chunk, other bytes", 3, "dXf"},
		{"across chunks, other bytes", 4, "efXhi"},
		{"overlapping the end with other bytes", 8, "Xjk"},
	}
	for _, tc := range tests {
		err := s.AppendLog(ctx, id, tc.off, []byte(tc.data), exp)
		wantCode(t, tc.name, err, errs.FailedPrecondition)
		if got := readAll(t, s, id); got != "abcdefghi" {
			t.Fatalf("after a refused %s: log %q", tc.name, got)
		}
	}
	err := s.AppendLog(ctx, logID(2), 5, []byte("x"), exp)
	wantCode(t, "first chunk of a log at offset 5", err, errs.FailedPrecondition)
	if got := readAll(t, s, logID(2)); got != "" {
		t.Fatalf("refused first chunk was stored: %q", got)
	}
	mustOK(t, "AppendLog at the end", s.AppendLog(ctx, id, 9, []byte("jkl"), exp))
	if got := readAll(t, s, id); got != "abcdefghijkl" {
		t.Fatalf("log %q", got)
	}
}

func testLogsExpiry(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b, c := logID(1), logID(2), logID(3)
	for i, id := range []string{a, b, c} {
		exp := at(1000 * (i + 1))
		mustOK(t, "AppendLog", s.AppendLog(ctx, id, 0, []byte("first "), exp))
		mustOK(t, "AppendLog", s.AppendLog(ctx, id, 6, []byte("second"), exp))
	}
	expired := func(now time.Time, limit int) []string {
		t.Helper()
		got, err := s.ListExpiredLogs(ctx, now, limit)
		mustOK(t, "ListExpiredLogs", err)
		return sorted(got)
	}
	wantIDs(t, "expired at 500", expired(at(500), 10), []string{})
	wantIDs(t, "expired at 1500", expired(at(1500), 10), []string{a})
	wantIDs(t, "expired at 2500", expired(at(2500), 10), sorted([]string{a, b}))
	wantIDs(t, "expired at 9999", expired(at(9999), 10), sorted([]string{a, b, c}))
	if got := expired(at(2500), 1); len(got) != 1 || (got[0] != a && got[0] != b) {
		t.Fatalf("expired at 2500, limit 1: %v", got)
	}

	mustOK(t, "DeleteJobLogs", s.DeleteJobLogs(ctx, a))
	got, size, err := s.ReadLog(ctx, a, 0, 100)
	mustOK(t, "ReadLog after delete", err)
	if len(got) != 0 || size != 0 {
		t.Fatalf("ReadLog after delete = %q, %d", got, size)
	}
	wantIDs(t, "expired at 2500 after deleting a", expired(at(2500), 10), []string{b})
	if got := readAll(t, s, b); got != "first second" {
		t.Fatalf("log b after deleting a: %q", got)
	}
	mustOK(t, "DeleteJobLogs again", s.DeleteJobLogs(ctx, a))
	mustOK(t, "DeleteJobLogs of an unknown job", s.DeleteJobLogs(ctx, logID(99)))

	// A deleted log starts again from offset 0.
	mustOK(t, "AppendLog after delete", s.AppendLog(ctx, a, 0, []byte("again"), at(5000)))
	if got := readAll(t, s, a); got != "again" {
		t.Fatalf("log after delete and append: %q", got)
	}
	wantIDs(t, "expired at 2500 after rewriting a", expired(at(2500), 10), []string{b})
}

func testLease(t *testing.T, s store.Store) {
	const ttl = time.Minute
	steps := []struct {
		name   string
		holder string
		now    int
		want   bool
	}{
		{"A takes the free lease", "A", 0, true}, // until 60
		{"B while A holds it", "B", 30, false},
		{"A renews", "A", 30, true}, // until 90
		{"B after A's first term, within the renewal", "B", 80, false},
		{"B after expiry", "B", 91, true}, // until 151
		{"A while B holds it", "A", 100, false},
		{"B renews", "B", 150, true}, // until 210
		{"A just before expiry", "A", 209, false},
		{"A after expiry", "A", 211, true},
	}
	for _, st := range steps {
		got, err := s.AcquireLease(t.Context(), "tick", st.holder, at(st.now), ttl)
		mustOK(t, st.name, err)
		if got != st.want {
			t.Fatalf("%s: AcquireLease = %v, want %v", st.name, got, st.want)
		}
	}
	got, err := s.AcquireLease(t.Context(), "other", "B", at(212), ttl)
	mustOK(t, "AcquireLease of another name", err)
	if !got {
		t.Fatal("a lease of another name was not free")
	}
}

// Racing acquirers of a free lease: exactly one gets it.
func testLeaseConcurrent(t *testing.T, s store.Store) {
	const callers, leases = 32, 32
	holder := func(i int) string { return fmt.Sprintf("h%02d", i) }
	winners := race(t, callers, leases, func(i, k int) error {
		ok, err := s.AcquireLease(t.Context(), fmt.Sprintf("lease-%d", k), holder(i), at(0), time.Minute)
		if err == nil && !ok {
			return errs.E(errs.FailedPrecondition, "", "lease taken")
		}
		return err
	})
	for k, w := range winners {
		name := fmt.Sprintf("lease-%d", k)
		if len(w) != 1 {
			t.Fatalf("%s: %d holders got it (%v), want exactly 1", name, len(w), w)
		}
		loser := (w[0] + 1) % callers
		if ok, err := s.AcquireLease(t.Context(), name, holder(loser), at(1), time.Minute); err != nil || ok {
			t.Fatalf("%s: loser %s: AcquireLease = %v, %v; want false", name, holder(loser), ok, err)
		}
		if ok, err := s.AcquireLease(t.Context(), name, holder(w[0]), at(1), time.Minute); err != nil || !ok {
			t.Fatalf("%s: winner %s: AcquireLease = %v, %v; want true", name, holder(w[0]), ok, err)
		}
	}
}

func testMeta(t *testing.T, s store.Store) {
	ctx := t.Context()
	get := func(key string) string {
		t.Helper()
		v, err := s.GetMeta(ctx, key)
		mustOK(t, "GetMeta "+key, err)
		return v
	}
	if v := get("watermark"); v != "" {
		t.Fatalf("GetMeta of a missing key = %q", v)
	}
	long := strings.Repeat("x", 10000)
	steps := []struct{ key, value string }{
		{"watermark", "2025-03-01 12:00:00.000000000"},
		{"other", "1"},
		{"watermark", "2025-03-01 12:05:00.000000000"},
		{"other", ""},
		{"big", long},
	}
	want := map[string]string{}
	for _, st := range steps {
		mustOK(t, "SetMeta", s.SetMeta(ctx, st.key, st.value))
		want[st.key] = st.value
		for k, v := range want {
			if got := get(k); got != v {
				t.Fatalf("after SetMeta(%q): GetMeta(%q) = %q, want %q", st.key, k, trunc(got), trunc(v))
			}
		}
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
