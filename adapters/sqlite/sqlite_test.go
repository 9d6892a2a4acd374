package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/store/storetest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.RunConformance(t, func(t *testing.T) store.Store { return openTemp(t) })
}

var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newPatchset(cl int, n int) (*model.Patchset, []*model.Job) {
	p := &model.Patchset{ID: model.PatchsetID(cl, 1), Change: cl, Patchset: 1, Owner: "o@x", TimeQueued: base}
	var jobs []*model.Job
	for i := range n {
		j := model.NewJob(base, p.Src(), fmt.Sprintf("t%03d", i), nil, false)
		jobs = append(jobs, j)
		p.JobIDs = append(p.JobIDs, j.ID)
	}
	return p, jobs
}

func schemaVersions(t *testing.T, s *Store) []int {
	t.Helper()
	rows, err := s.db.QueryContext(t.Context(), `SELECT version FROM schema_version ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// Reopening a file keeps its data and applies no migration twice.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Path() != path {
		t.Fatalf("Path() = %q, want %q", s.Path(), path)
	}
	p, jobs := newPatchset(1, 3)
	if err := s.CreatePatchset(t.Context(), p, jobs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimJob(t.Context(), "w1", []string{""}, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, err = Open(path)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		want := make([]int, len(migrations))
		for i := range want {
			want[i] = i + 1
		}
		if got := schemaVersions(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("schema versions %v, want %v", got, want)
		}
		_, got, err := s.GetPatchsetWithJobs(t.Context(), p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0].State != model.Started || got[1].State != model.Queued {
			t.Fatalf("jobs after reopen: %v", got)
		}
		if err := s.CreatePatchset(t.Context(), p, jobs); !errs.Is(err, errs.AlreadyExists) {
			t.Fatalf("CreatePatchset after reopen: %v, want AlreadyExists", err)
		}
		s.Close()
	}
}

// A file written by a newer binary is refused rather than misread.
func TestNewerSchema(t *testing.T) {
	s := openTemp(t)
	if _, err := s.db.ExecContext(t.Context(), `INSERT INTO schema_version (version, applied) VALUES (?, 0)`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(s.Path()); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("Open of a newer schema: %v, want FailedPrecondition", err)
	}
}

func TestOpenInvalid(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db", filepath.Join(t.TempDir(), "a?mode=ro")} {
		if _, err := Open(path); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("Open(%q): %v, want InvalidArgument", path, err)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "dir", "x.db")); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Open in a missing directory: %v, want Unavailable", err)
	}
}

// Two Stores on one file stand for two processes: each sees the other's
// writes, and claims stay exactly-once across them.
func TestTwoProcesses(t *testing.T) {
	a := openTemp(t)
	b, err := Open(a.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()

	p, jobs := newPatchset(1, 1)
	if err := a.CreatePatchset(ctx, p, jobs); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetPatchset(ctx, p.ID); err != nil {
		t.Fatalf("b does not see a's patchset: %v", err)
	}
	if _, err := b.UpdateJob(ctx, jobs[0].ID, model.Transition{Kind: model.Cancel, Now: base}); err != nil {
		t.Fatal(err)
	}
	if j, err := a.GetJob(ctx, jobs[0].ID); err != nil || j.State != model.Cancelled {
		t.Fatalf("a sees job %v, %v; want CANCELLED", j, err)
	}
	if _, err := a.UpdateJob(ctx, jobs[0].ID, model.Transition{Kind: model.Cancel, Now: base}); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("second cancel through a: %v, want FailedPrecondition", err)
	}

	const n, perStore = 120, 8
	var all []string
	for i := range 4 {
		p, jobs := newPatchset(10+i, n/4)
		if err := b.CreatePatchset(ctx, p, jobs); err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			all = append(all, j.ID)
		}
	}
	var (
		mu      sync.Mutex
		claimed = map[string]int{}
		wg      sync.WaitGroup
	)
	for i, s := range []*Store{a, b, a, b} {
		for k := range perStore / 2 {
			worker := fmt.Sprintf("s%d-w%d", i, k)
			wg.Go(func() {
				for {
					j, err := s.ClaimJob(ctx, worker, []string{""}, base.Add(time.Hour))
					if errs.Is(err, errs.NotFound) {
						return
					}
					if err != nil {
						t.Errorf("%s: %v", worker, err)
						return
					}
					mu.Lock()
					claimed[j.ID]++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(claimed) != len(all) {
		t.Fatalf("claimed %d distinct jobs, want %d", len(claimed), len(all))
	}
	for _, id := range all {
		if claimed[id] != 1 {
			t.Errorf("job %s claimed %d times", id, claimed[id])
		}
	}
}

// A lock held past busy_timeout by another process is Unavailable, not a
// hang or an unknown error, and the store works again once it is released.
func TestBusyIsUnavailable(t *testing.T) {
	s0 := openTemp(t)
	s, err := open(s0.Path(), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := sql.Open("sqlite", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	err = s.SetMeta(t.Context(), "k", "v")
	if !errs.Is(err, errs.Unavailable) {
		t.Fatalf("SetMeta under another process's lock: %v, want Unavailable", err)
	}
	// Readers are not blocked by a writer in WAL mode.
	if _, err := s.GetMeta(t.Context(), "k"); err != nil {
		t.Fatalf("GetMeta under another process's write lock: %v", err)
	}
	if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMeta(t.Context(), "k", "v"); err != nil {
		t.Fatalf("SetMeta after the lock is released: %v", err)
	}
}

// A caller whose context ends while it waits for the write lock gets
// Unavailable.
func TestContextWhileWaiting(t *testing.T) {
	s := openTemp(t)
	s.writer <- struct{}{} // another writer of this process holds the lock
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.SetMeta(ctx, "k", "v"); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("SetMeta with a cancelled context: %v, want Unavailable", err)
	}
	<-s.writer
}

// A database written at schema 1 (before jobs had time_ended) opens with
// the ended jobs listed by their end time, as if written today.
func TestMigrateTimeEnded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.db")
	all := migrations
	migrations = all[:1]
	s, err := Open(path)
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	_, jobs := newPatchset(1, 3)
	// Schema 1 has no time_ended column: write the rows as that binary did.
	code := 0
	for i, j := range jobs {
		if i < 2 {
			j.Apply(model.Transition{Kind: model.Start, Worker: "w", Now: base.Add(time.Minute)})
			j.Apply(model.Transition{Kind: model.Finish, Worker: "w", State: model.Completed, ExitCode: &code, Now: base.Add(time.Duration(10-i) * time.Minute)})
		}
		data, _ := encode(j)
		if _, err := s.db.ExecContext(t.Context(), `INSERT INTO jobs (id, src, state, worker, time_queued, time_started, data)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, j.ID, j.Src, string(j.State), j.Worker, nanos(j.TimeQueued), nanos(j.TimeStarted), data); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _, err := s.ListJobs(t.Context(), store.JobQuery{OrderBy: store.OrderEnded})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != jobs[0].ID || got[1].ID != jobs[1].ID {
		t.Fatalf("ended jobs after the migration: %v, want %s then %s", got, jobs[0].ID, jobs[1].ID)
	}
}

// A database written at schema 2 (before jobs had pools, priorities and a
// fair order) opens with its waiting jobs in the queue as if queued today:
// presubmit before postsubmit, each by queue time, and a running
// postsubmit job keeps its priority when it is queued again.
func TestMigrateQueueOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.db")
	all := migrations
	migrations = all[:2]
	s, err := Open(path)
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	legacy := func(src string, queued time.Time, typ string) *model.Job {
		j := model.NewJob(queued, src, typ, nil, false)
		j.Priority, j.Order = 0, time.Time{} // not in the records of that binary
		return j
	}
	post := "branches/main-20250301110000"
	jobs := []*model.Job{
		legacy(post, base, "post-queued"),
		legacy("cls/2-1", base.Add(2*time.Minute), "late"),
		legacy("cls/1-1", base.Add(time.Minute), "early"),
		legacy(post, base, "post-running"),
	}
	jobs[3].Apply(model.Transition{Kind: model.Start, Worker: "w", Now: base.Add(time.Minute)})
	for _, j := range jobs {
		data, _ := encode(j)
		if _, err := s.db.ExecContext(t.Context(), `INSERT INTO jobs (id, src, state, worker, time_queued, time_started, time_ended, data)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, j.ID, j.Src, string(j.State), j.Worker, nanos(j.TimeQueued), nanos(j.TimeStarted), nanos(j.TimeEnded), data); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.UpdateJob(t.Context(), jobs[3].ID, model.Transition{Kind: model.Release, Worker: "w", State: model.BotDied, Now: base.Add(time.Hour)})
	if err != nil || r.Priority != model.PriorityPostsubmit || !r.Order.Equal(base) {
		t.Fatalf("requeued legacy postsubmit job: %+v, %v", r, err)
	}
	var got []string
	for {
		j, err := s.ClaimJob(t.Context(), "w2", []string{""}, base.Add(2*time.Hour))
		if errs.Is(err, errs.NotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, j.Type)
	}
	if strings.Join(got, " ") != "early late post-queued post-running" {
		t.Fatalf("claim order after the migration: %v", got)
	}
}
