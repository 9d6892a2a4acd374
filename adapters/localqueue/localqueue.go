// Package localqueue implements the Tasks port for the embedded runtime: a
// durable queue in a SQLite database, drained by a pool of dispatchers in this
// process.
//
// A task is a row of lq_tasks from the moment Defer returns until a handler
// acknowledges it, so a crash loses nothing. A dispatcher reserves a due row
// by pushing its due time a lease into the future in one UPDATE statement,
// which SQLite serialises, so each delivery goes to one dispatcher even when
// several processes share the file. If the process dies mid-handler the lease
// runs out and the task is delivered again: delivery is at least once.
//
// The tables are prefixed lq_ and created with IF NOT EXISTS, so the queue can
// share a database file with other adapters.
package localqueue

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/url"
	"runtime/debug"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// Options configure a Queue. Zero values take the defaults.
type Options struct {
	// Handler receives every task; Start refuses to run without one.
	Handler tasks.Handler
	// Dispatchers is how many handlers run at once (default 4).
	Dispatchers int
	// MaxAttempts is how many deliveries a task gets before it is
	// dead-lettered (default 5).
	MaxAttempts int
	// BackoffBase and BackoffMax bound the delay between attempts (defaults
	// 1s and 5m); see tasks.Backoff.
	BackoffBase, BackoffMax time.Duration
	// PollInterval is how often idle dispatchers look for work that no Defer
	// in this process announced: retries coming due, other processes' tasks,
	// expired leases (default 200ms).
	PollInterval time.Duration
	// Lease is how long a delivery is reserved for one dispatcher; a handler
	// still running after it may see its task delivered again elsewhere, so
	// its context carries it as a deadline (default 10m).
	Lease time.Duration
	// Clock stamps and schedules tasks (default clock.Real). Waiting uses
	// real time whatever the clock.
	Clock clock.Clock
	// Logger reports failures the caller cannot see (default slog.Default()).
	Logger *slog.Logger
	// OnRetry and OnDead, if set, are called with the action of each failed
	// delivery that will be retried and of each task dead-lettered: hooks
	// for the ci_task_retries and ci_task_dead_letters metrics.
	OnRetry, OnDead func(action string)
}

func (o *Options) setDefaults() error {
	if o.Dispatchers == 0 {
		o.Dispatchers = 4
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 5
	}
	if o.BackoffBase == 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = 5 * time.Minute
	}
	if o.PollInterval == 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	if o.Lease == 0 {
		o.Lease = 10 * time.Minute
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Dispatchers < 0 || o.MaxAttempts < 0 || o.BackoffBase < 0 || o.BackoffMax < o.BackoffBase ||
		o.PollInterval < 0 || o.Lease < 0 {
		return errs.E(errs.InvalidArgument, "localqueue.New", "negative or inverted option in %+v", *o)
	}
	return nil
}

// Queue is a durable task queue. Defer, ListDead, Pending and RetryDead are
// safe for concurrent use; Start and Stop are meant for one owner.
type Queue struct {
	db     *sql.DB
	ownsDB bool
	opts   Options
	wake   chan struct{}

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

var (
	_ tasks.Tasks       = (*Queue)(nil)
	_ tasks.DeadLetters = (*Queue)(nil)
)

// Times are Unix nanoseconds. due_at is when the row may next be reserved:
// its scheduled time while it waits, the end of its lease while it is
// delivered (leased = 1). lease_expired records, at each reservation,
// that the previous delivery never reported back. token names the current
// lease, so the outcome of a delivery whose lease was taken over is dropped.
const schema = `
CREATE TABLE IF NOT EXISTS lq_tasks (
	seq           INTEGER PRIMARY KEY AUTOINCREMENT,
	id            TEXT    NOT NULL UNIQUE,
	action        TEXT    NOT NULL,
	args          TEXT    NOT NULL,
	attempts      INTEGER NOT NULL DEFAULT 0,
	created_at    INTEGER NOT NULL,
	due_at        INTEGER NOT NULL,
	leased        INTEGER NOT NULL DEFAULT 0,
	lease_expired INTEGER NOT NULL DEFAULT 0,
	token         TEXT    NOT NULL DEFAULT '',
	last_error    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS lq_tasks_due ON lq_tasks (due_at);
CREATE TABLE IF NOT EXISTS lq_dead_tasks (
	id         TEXT    PRIMARY KEY,
	action     TEXT    NOT NULL,
	args       TEXT    NOT NULL,
	attempts   INTEGER NOT NULL,
	last_error TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	died_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS lq_dead_tasks_died ON lq_dead_tasks (died_at);
`

// Open opens (creating if needed) the SQLite database at path in WAL mode
// with a busy timeout and returns a Queue on it; Close closes the database.
func Open(path string, opts Options) (*Queue, error) {
	dsn := "file:" + url.PathEscape(path) +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, "localqueue.Open", err)
	}
	q, err := New(db, opts)
	if err != nil {
		db.Close()
		return nil, err
	}
	q.ownsDB = true
	return q, nil
}

// New returns a Queue on db, creating its tables if needed. The caller owns
// db; it should be a file database (each connection to ":memory:" is a
// different database) and may be shared with other users. A busy timeout in
// the DSN helps under contention; without one the queue retries SQLITE_BUSY
// itself.
func New(db *sql.DB, opts Options) (*Queue, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	q := &Queue{db: db, opts: opts, wake: make(chan struct{}, opts.Dispatchers)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := q.retryBusy(ctx, func() error {
		_, err := db.ExecContext(ctx, schema)
		return err
	})
	if err != nil {
		return nil, mapErr("localqueue.New", err)
	}
	return q, nil
}

// Defer stores the task; once it returns nil the task survives a crash.
func (q *Queue) Defer(ctx context.Context, action string, args any) error {
	const op = "localqueue.Defer"
	if action == "" {
		return errs.E(errs.InvalidArgument, op, "empty action")
	}
	b, err := tasks.Marshal(action, args)
	if err != nil {
		return err
	}
	now := q.opts.Clock.Now().UnixNano()
	id := newID()
	err = q.retryBusy(ctx, func() error {
		_, err := q.db.ExecContext(ctx,
			`INSERT INTO lq_tasks (id, action, args, created_at, due_at) VALUES (?, ?, ?, ?, ?)`,
			id, action, string(b), now, now)
		return err
	})
	if err != nil {
		return mapErr(op+" "+action, err)
	}
	q.poke()
	return nil
}

// poke wakes an idle dispatcher, if any is waiting.
func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Start runs the dispatchers until ctx is cancelled or Stop is called.
// Handlers get a context derived from ctx, so cancelling ctx asks in-flight
// handlers to give up; Stop lets them finish.
func (q *Queue) Start(ctx context.Context) error {
	const op = "localqueue.Start"
	if q.opts.Handler == nil {
		return errs.E(errs.InvalidArgument, op, "no handler")
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.started {
		return errs.E(errs.FailedPrecondition, op, "already started")
	}
	q.started = true
	loopCtx, cancel := context.WithCancel(ctx)
	q.cancel = cancel
	for range q.opts.Dispatchers {
		q.wg.Go(func() { q.dispatch(loopCtx, ctx) })
	}
	return nil
}

// Stop stops taking tasks and waits for in-flight handlers to return. Tasks
// not yet delivered stay in the database. Safe to call more than once.
func (q *Queue) Stop() {
	q.mu.Lock()
	if q.cancel != nil {
		q.cancel()
	}
	q.mu.Unlock()
	q.wg.Wait()
}

// Close stops the queue and, if Open opened the database, closes it.
func (q *Queue) Close() error {
	q.Stop()
	if q.ownsDB {
		return q.db.Close()
	}
	return nil
}

// dispatch delivers tasks one at a time until loopCtx ends. Handler
// contexts derive from handlerCtx, which Stop does not cancel.
func (q *Queue) dispatch(loopCtx, handlerCtx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for loopCtx.Err() == nil {
		task, leased, err := q.reserve(loopCtx)
		if err == nil && task != nil {
			q.deliver(handlerCtx, task, leased)
			continue
		}
		if err != nil && loopCtx.Err() == nil {
			q.opts.Logger.Error("localqueue: reserve failed", "err", err)
		}
		wait := q.opts.PollInterval
		if err == nil {
			wait = q.idleWait(loopCtx)
		}
		timer.Reset(wait)
		select {
		case <-loopCtx.Done():
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// reserve takes the next due task, if any, with a fresh lease. Tasks whose
// lease expired after their last allowed attempt are dead-lettered instead:
// a handler that crashes the process must not be delivered forever.
func (q *Queue) reserve(ctx context.Context) (*tasks.Task, string, error) {
	for {
		now := q.opts.Clock.Now()
		token := newID()
		var (
			t       tasks.Task
			args    string
			created int64
			expired bool
			found   bool
		)
		err := q.retryBusy(ctx, func() error {
			// SET expressions see the old row and RETURNING the new one, so
			// lease_expired carries the old lease state out.
			err := q.db.QueryRowContext(ctx, `
				UPDATE lq_tasks SET
					attempts = attempts + 1, leased = 1, lease_expired = leased, token = ?1, due_at = ?2
				WHERE id = (SELECT id FROM lq_tasks WHERE due_at <= ?3 ORDER BY due_at, seq LIMIT 1)
				RETURNING id, action, args, attempts, created_at, lease_expired`,
				token, now.Add(q.opts.Lease).UnixNano(), now.UnixNano(),
			).Scan(&t.ID, &t.Action, &args, &t.Attempt, &created, &expired)
			found = err == nil
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return err
		})
		if err != nil || !found {
			return nil, "", mapErr("localqueue.reserve", err)
		}
		if prev := t.Attempt - 1; expired && prev >= q.opts.MaxAttempts {
			msg := fmt.Sprintf("lease expired during attempt %d: the handler crashed the process or outlived its lease", prev)
			q.opts.Logger.Warn("localqueue: task dead-lettered", "task", t.ID, "action", t.Action, "err", msg)
			if err := q.bury(ctx, t.ID, token, t.Action, prev, msg); err != nil {
				return nil, "", err
			}
			continue
		}
		t.Args = []byte(args)
		t.Created = time.Unix(0, created).UTC()
		return &t, token, nil
	}
}

// idleWait is how long an idle dispatcher sleeps: until the next task is
// due, at most PollInterval.
func (q *Queue) idleWait(ctx context.Context) time.Duration {
	var next sql.NullInt64
	if err := q.db.QueryRowContext(ctx, `SELECT MIN(due_at) FROM lq_tasks`).Scan(&next); err != nil || !next.Valid {
		return q.opts.PollInterval
	}
	d := time.Duration(next.Int64 - q.opts.Clock.Now().UnixNano())
	return max(0, min(d, q.opts.PollInterval))
}

// deliver runs the handler on t and records the outcome under its lease.
func (q *Queue) deliver(ctx context.Context, t *tasks.Task, token string) {
	hctx, cancel := context.WithTimeout(ctx, q.opts.Lease)
	herr := q.call(hctx, *t)
	cancel()
	// Record the outcome even if ctx was cancelled: the handler's work is
	// done and a retry would redo it.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer rcancel()
	log := q.opts.Logger.With("task", t.ID, "action", t.Action, "attempt", t.Attempt)
	switch {
	case herr == nil:
		// Whoever holds the lease now, the task is done.
		err := q.retryBusy(rctx, func() error {
			_, err := q.db.ExecContext(rctx, `DELETE FROM lq_tasks WHERE id = ?`, t.ID)
			return err
		})
		if err != nil {
			log.Error("localqueue: cannot acknowledge task; it will be delivered again", "err", err)
		}
	case errs.Is(herr, errs.InvalidArgument) || t.Attempt >= q.opts.MaxAttempts:
		log.Warn("localqueue: task dead-lettered", "err", herr)
		if err := q.bury(rctx, t.ID, token, t.Action, t.Attempt, herr.Error()); err != nil {
			log.Error("localqueue: cannot dead-letter task; the lease will expire instead", "err", err)
		}
	default:
		delay := tasks.Backoff(t.Attempt, q.opts.BackoffBase, q.opts.BackoffMax, mathrand.Float64())
		log.Info("localqueue: task failed; will retry", "err", herr, "delay", delay)
		var n int64
		err := q.retryBusy(rctx, func() error {
			res, err := q.db.ExecContext(rctx,
				`UPDATE lq_tasks SET leased = 0, token = '', due_at = ?, last_error = ? WHERE id = ? AND token = ?`,
				q.opts.Clock.Now().Add(delay).UnixNano(), herr.Error(), t.ID, token)
			if err == nil {
				n, err = res.RowsAffected()
			}
			return err
		})
		if err != nil {
			log.Error("localqueue: cannot schedule retry; the lease will expire instead", "err", err)
		}
		if n == 1 && q.opts.OnRetry != nil {
			q.opts.OnRetry(t.Action)
		}
	}
}

// call runs the handler, turning a panic into an error.
func (q *Queue) call(ctx context.Context, t tasks.Task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			q.opts.Logger.Error("localqueue: handler panicked", "task", t.ID, "action", t.Action,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return q.opts.Handler(ctx, t)
}

// bury moves the task leased under token to the dead letter in one
// transaction. It does nothing if another dispatcher took the lease over.
func (q *Queue) bury(ctx context.Context, id, token, action string, attempts int, lastErr string) error {
	moved := false
	err := q.retryBusy(ctx, func() error {
		tx, err := q.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		// The first statement writes, so the transaction takes SQLite's write
		// lock before it reads anything.
		res, err := tx.ExecContext(ctx, `
			INSERT OR REPLACE INTO lq_dead_tasks (id, action, args, attempts, last_error, created_at, died_at)
			SELECT id, action, args, ?, ?, created_at, ? FROM lq_tasks WHERE id = ? AND token = ?`,
			attempts, lastErr, q.opts.Clock.Now().UnixNano(), id, token)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM lq_tasks WHERE id = ?`, id); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		moved = true
		return nil
	})
	if err != nil {
		return mapErr("localqueue.bury", err)
	}
	if moved && q.opts.OnDead != nil {
		q.opts.OnDead(action)
	}
	return nil
}

// ListDead returns up to limit dead tasks (default 100), most recent first.
func (q *Queue) ListDead(ctx context.Context, limit int) ([]model.DeadTask, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []model.DeadTask
	err := q.retryBusy(ctx, func() error {
		out = out[:0]
		rows, err := q.db.QueryContext(ctx, `
			SELECT id, action, args, attempts, last_error, died_at FROM lq_dead_tasks
			ORDER BY died_at DESC, id LIMIT ?`, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d model.DeadTask
			var died int64
			if err := rows.Scan(&d.ID, &d.Action, &d.Args, &d.Attempts, &d.LastError, &died); err != nil {
				return err
			}
			d.Time = time.Unix(0, died).UTC()
			out = append(out, d)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, mapErr("localqueue.ListDead", err)
	}
	return out, nil
}

// Pending counts the tasks not yet acknowledged, including those being
// delivered and those waiting for a retry.
func (q *Queue) Pending(ctx context.Context) (int, error) {
	var n int
	err := q.retryBusy(ctx, func() error {
		return q.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM lq_tasks`).Scan(&n)
	})
	return n, mapErr("localqueue.Pending", err)
}

// RetryDead moves a dead task back to the queue with a fresh set of
// attempts, due now; NotFound if no dead task has that id.
func (q *Queue) RetryDead(ctx context.Context, id string) error {
	const op = "localqueue.RetryDead"
	found := false
	err := q.retryBusy(ctx, func() error {
		tx, err := q.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		res, err := tx.ExecContext(ctx, `
			INSERT INTO lq_tasks (id, action, args, created_at, due_at, last_error)
			SELECT id, action, args, created_at, ?, last_error FROM lq_dead_tasks WHERE id = ?`,
			q.opts.Clock.Now().UnixNano(), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM lq_dead_tasks WHERE id = ?`, id); err != nil {
			return err
		}
		found = true
		return tx.Commit()
	})
	if err != nil {
		return mapErr(op, err)
	}
	if !found {
		return errs.E(errs.NotFound, op, "no dead task %q", id)
	}
	q.poke()
	return nil
}

// retryBusy runs fn again while SQLite reports the database busy or locked,
// for when the caller's DSN sets no busy timeout (or it ran out) under
// contention from other connections or processes.
func (q *Queue) retryBusy(ctx context.Context, fn func() error) error {
	delay := time.Millisecond
	end := time.Now().Add(30 * time.Second)
	for {
		err := fn()
		if !isBusy(err) || time.Now().After(end) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay + mathrand.N(delay)):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

func isBusy(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code() & 0xff
	return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
}

// mapErr gives a database error its code: the one place this adapter does.
func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errs.CodeOf(err) != errs.Unknown:
		return err
	case isBusy(err), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, sql.ErrConnDone):
		return errs.Wrap(errs.Unavailable, op, err)
	default:
		return errs.Wrap(errs.Unknown, op, err)
	}
}

// newID returns 128 random bits in hex.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
