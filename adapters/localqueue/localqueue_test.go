package localqueue

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/core/tasks/taskstest"
)

// testOptions keep retries and polling in milliseconds.
func testOptions(maxAttempts int, h tasks.Handler) Options {
	return Options{
		Handler:      h,
		MaxAttempts:  maxAttempts,
		BackoffBase:  time.Millisecond,
		BackoffMax:   10 * time.Millisecond,
		PollInterval: 10 * time.Millisecond,
		Lease:        5 * time.Second,
		Logger:       slog.New(slog.DiscardHandler),
	}
}

// openDB opens path the way the embedded runtime shares one file between
// adapters: WAL mode, a busy timeout, several connections.
func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// harness builds a taskstest.Harness on the database file path; the handler
// is chosen later, at Start.
func harness(t *testing.T, path string, opts taskstest.Options) taskstest.Harness {
	db := openDB(t, path)
	var handler atomic.Pointer[tasks.Handler]
	q, err := New(db, testOptions(opts.MaxAttempts, func(ctx context.Context, task tasks.Task) error {
		return (*handler.Load())(ctx, task)
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return taskstest.Harness{
		Tasks:   q,
		Dead:    q,
		Pending: q.Pending,
		Start: func(h tasks.Handler) func() {
			handler.Store(&h)
			if err := q.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			return q.Stop
		},
		Reopen: func(t *testing.T) taskstest.Harness {
			q.Stop()
			db.Close()
			return harness(t, path, opts)
		},
	}
}

func TestConformance(t *testing.T) {
	taskstest.RunConformance(t, func(t *testing.T, opts taskstest.Options) taskstest.Harness {
		return harness(t, filepath.Join(t.TempDir(), "q.db"), opts)
	})
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestCrashMidHandler kills the database under a running handler, as a
// process crash would, and checks that a new queue on the same file delivers
// the task again once the lease runs out.
func TestCrashMidHandler(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	db := openDB(t, path)
	entered := make(chan tasks.Task, 1)
	release := make(chan struct{})
	opts := testOptions(5, func(ctx context.Context, task tasks.Task) error {
		entered <- task
		<-release
		return nil
	})
	opts.Lease = 300 * time.Millisecond
	opts.Logger = slog.New(slog.DiscardHandler)
	q1, err := New(db, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := q1.Defer(context.Background(), "crashy", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if err := q1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := <-entered
	db.Close() // the "crash": q1 can no longer record anything
	defer func() { close(release); q1.Stop() }()

	var got atomic.Pointer[tasks.Task]
	opts.Handler = func(ctx context.Context, task tasks.Task) error { got.Store(&task); return nil }
	q2, err := New(openDB(t, path), opts)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := q2.Pending(context.Background()); err != nil || n != 1 {
		t.Fatalf("Pending after crash = %d, %v; want 1", n, err)
	}
	if err := q2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer q2.Stop()
	waitFor(t, 10*time.Second, "redelivery after the lease expired", func() bool { return got.Load() != nil })
	if re := got.Load(); re.ID != first.ID || re.Attempt != 2 || string(re.Args) != `{"n":1}` {
		t.Errorf("redelivered %+v after %+v; want the same task, attempt 2", re, first)
	}
	waitFor(t, 10*time.Second, "the acknowledged task removed", func() bool {
		n, err := q2.Pending(context.Background())
		return err == nil && n == 0
	})
}

// TestCrashLoopDeadLetters checks that a task whose every delivery crashed
// the process is dead-lettered rather than delivered forever.
func TestCrashLoopDeadLetters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	opts := testOptions(2, nil)
	opts.Lease = 50 * time.Millisecond
	opts.Logger = slog.New(slog.DiscardHandler)
	q, err := New(openDB(t, path), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Defer(context.Background(), "poison", nil); err != nil {
		t.Fatal(err)
	}
	// Reserve without delivering, as two crashed processes would have.
	ctx := context.Background()
	for attempt := 1; attempt <= 2; attempt++ {
		waitFor(t, 5*time.Second, "the lease to expire", func() bool {
			task, _, err := q.reserve(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if task != nil && task.Attempt != attempt {
				t.Fatalf("reserved attempt %d, want %d", task.Attempt, attempt)
			}
			return task != nil
		})
	}
	waitFor(t, 5*time.Second, "the task dead-lettered", func() bool {
		task, _, err := q.reserve(ctx)
		if err != nil || task != nil {
			t.Fatalf("reserve after MaxAttempts crashes = %+v, %v; want nothing", task, err)
		}
		dead, err := q.ListDead(ctx, 10)
		return err == nil && len(dead) == 1
	})
	dead, _ := q.ListDead(ctx, 10)
	if d := dead[0]; d.Action != "poison" || d.Attempts != 2 {
		t.Errorf("dead task = %+v, want poison after 2 attempts", d)
	}
}

func TestPanicIsAFailure(t *testing.T) {
	var calls atomic.Int32
	var retries, deaths atomic.Int32
	opts := testOptions(2, func(ctx context.Context, task tasks.Task) error {
		calls.Add(1)
		panic("handler bug")
	})
	opts.Logger = slog.New(slog.DiscardHandler)
	opts.OnRetry = func(action string) { retries.Add(1) }
	opts.OnDead = func(action string) { deaths.Add(1) }
	q, err := New(openDB(t, filepath.Join(t.TempDir(), "q.db")), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Stop()
	if err := q.Defer(context.Background(), "panicky", nil); err != nil {
		t.Fatal(err)
	}
	if err := q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the panicking task dead-lettered", func() bool { return deaths.Load() == 1 })
	dead, err := q.ListDead(context.Background(), 10)
	if err != nil || len(dead) != 1 {
		t.Fatalf("ListDead = %v, %v", dead, err)
	}
	if d := dead[0]; d.Attempts != 2 || d.LastError != "handler panicked: handler bug" {
		t.Errorf("dead task = %+v, want 2 attempts and the panic", d)
	}
	if calls.Load() != 2 || retries.Load() != 1 {
		t.Errorf("%d calls and %d retries, want 2 and 1", calls.Load(), retries.Load())
	}
}

func TestRetryDead(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	var done atomic.Int32
	opts := testOptions(1, func(ctx context.Context, task tasks.Task) error {
		if fail.Load() {
			return errors.New("not yet")
		}
		done.Add(1)
		return nil
	})
	opts.Logger = slog.New(slog.DiscardHandler)
	q, err := New(openDB(t, filepath.Join(t.TempDir(), "q.db")), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Stop()
	ctx := context.Background()
	if err := q.RetryDead(ctx, "nope"); !errs.Is(err, errs.NotFound) {
		t.Errorf("RetryDead(missing) = %v, want NotFound", err)
	}
	if err := q.Defer(ctx, "later", map[string]string{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var id string
	waitFor(t, 10*time.Second, "the task dead-lettered", func() bool {
		dead, err := q.ListDead(ctx, 10)
		if err != nil || len(dead) == 0 {
			return false
		}
		id = dead[0].ID
		return true
	})
	fail.Store(false)
	if err := q.RetryDead(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the retried task delivered", func() bool { return done.Load() == 1 })
	if dead, err := q.ListDead(ctx, 10); err != nil || len(dead) != 0 {
		t.Errorf("ListDead after a successful retry = %v, %v; want empty", dead, err)
	}
}

func TestOptions(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "q.db"))
	for _, o := range []Options{
		{Dispatchers: -1},
		{BackoffBase: time.Minute, BackoffMax: time.Second},
		{Lease: -time.Second},
	} {
		if _, err := New(db, o); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("New(%+v) = %v, want InvalidArgument", o, err)
		}
	}
	q, err := New(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(context.Background()); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("Start without a handler = %v, want InvalidArgument", err)
	}
	if err := q.Defer(context.Background(), "", nil); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("Defer with no action = %v, want InvalidArgument", err)
	}
}

// TestOpen checks that Open finds the file at a path with URI-special
// characters, and that what it stores survives closing.
func TestOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir?with#odd%chars")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "q.db")
	q, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Defer(context.Background(), "kept", nil); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at %s: %v", path, err)
	}
	q, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if n, err := q.Pending(context.Background()); err != nil || n != 1 {
		t.Errorf("Pending after reopening = %d, %v; want 1", n, err)
	}
}
