// Package sqlite implements store.Store on an embedded SQLite database
// (modernc.org/sqlite: pure Go, no cgo), the default backend when Tollgate
// runs on one machine.
//
// SQLite has a single writer. Every read-modify-write (UpdateJob, ClaimJob,
// UpdatePatchset, ...) runs in a BEGIN IMMEDIATE transaction, which takes the
// write lock before the read, so model.Job.Apply and model.Patchset.Apply see
// the latest record and no update is ever lost: exactly one of many racing
// callers wins without optimistic retries. Within a process, writers queue on
// a channel before they take a connection, so they wait in Go rather than in
// SQLite's sleeping busy handler; between processes sharing the file,
// busy_timeout covers the wait, and a lock still held after it (and a few
// retries) is reported as errs.Unavailable. WAL mode lets readers run while a
// write is in progress.
package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	sqlitedrv "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

const (
	// busyTimeout is how long one statement waits for another process's lock.
	busyTimeout = 5 * time.Second
	// busyRetries is how many times a transaction that still found the
	// database locked is run again before the caller gets Unavailable.
	busyRetries = 3
	// maxConns bounds the pool: WAL readers run in parallel, writers queue.
	maxConns = 8
	// maxParams is how many ids go into one IN list, well under SQLite's
	// limit on bound parameters.
	maxParams = 500
)

// Store is a store.Store in one SQLite file. It is safe for concurrent use,
// and several Stores (in one process or many) may share the file.
type Store struct {
	db     *sql.DB
	path   string
	writer chan struct{} // a one-slot semaphore held by the writing transaction

	reads, writes atomic.Int64 // transactions run, for RoundTrips
}

// RoundTrips returns how many read and write transactions the Store ran:
// the unit of cost benchmarks compare (one per method call, by design).
func (s *Store) RoundTrips() (reads, writes int64) { return s.reads.Load(), s.writes.Load() }

var _ store.Store = (*Store)(nil)

// Open opens or creates the database at path and brings its schema up to
// date. Opening an up-to-date file changes nothing.
func Open(path string) (*Store, error) { return open(path, busyTimeout) }

func open(path string, busy time.Duration) (*Store, error) {
	const op = "sqlite.Open"
	// The driver reads everything after '?' as options, and an in-memory
	// database would be a different one on each pooled connection.
	if path == "" || strings.Contains(path, "?") || strings.HasPrefix(path, "file:") || strings.HasPrefix(path, ":memory:") {
		return nil, errs.E(errs.InvalidArgument, op, "path %q is not a plain file path", path)
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "journal_mode(WAL)")
	// NORMAL is durable across process crashes in WAL mode; only a power
	// loss may drop the last commits.
	q.Add("_pragma", "synchronous(NORMAL)")
	// Every read-write transaction is BEGIN IMMEDIATE; read-only ones
	// (sql.TxOptions.ReadOnly) stay deferred and take no write lock.
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, wrap(op, err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	s := &Store{db: db, path: path, writer: make(chan struct{}, 1)}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error { return wrap("sqlite.Close", s.db.Close()) }

// migrate applies the migrations the file has not seen, all in one
// transaction, so a crash leaves the previous schema intact.
func (s *Store) migrate(ctx context.Context) error {
	return s.write(ctx, "sqlite.Open", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)`); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&v); err != nil {
			return err
		}
		if v > len(migrations) {
			return errs.E(errs.FailedPrecondition, "", "database schema version %d is newer than this binary's %d", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
			if fill := backfills[i]; fill != nil {
				if err := fill(ctx, tx); err != nil {
					return fmt.Errorf("migration %d: %w", i+1, err)
				}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied) VALUES (?, ?)`,
				i+1, time.Now().UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
}

// write runs fn in a BEGIN IMMEDIATE transaction and commits it. fn may run
// more than once (when the database stays locked), so it must only touch tx.
func (s *Store) write(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	select {
	case s.writer <- struct{}{}:
	case <-ctx.Done():
		return wrap(op, ctx.Err())
	}
	defer func() { <-s.writer }()
	s.writes.Add(1)
	return wrap(op, s.run(ctx, false, fn))
}

// read runs fn in a deferred read-only transaction: one consistent snapshot
// for all of fn's queries, taking no write lock.
func (s *Store) read(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	s.reads.Add(1)
	return wrap(op, s.run(ctx, true, fn))
}

func (s *Store) run(ctx context.Context, readOnly bool, fn func(*sql.Tx) error) error {
	var err error
	for range busyRetries {
		if err = s.once(ctx, readOnly, fn); !isBusy(err) || ctx.Err() != nil {
			break
		}
	}
	return err
}

func (s *Store) once(ctx context.Context, readOnly bool, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: readOnly})
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// wrap gives err the op and a code. This is the one place SQLite's errors
// become errs codes; errors that already carry a code keep it.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return errs.Wrap(codeOf(err), op, err)
}

func codeOf(err error) errs.Code {
	if c := errs.CodeOf(err); c != errs.Unknown { // includes context errors
		return c
	}
	var se *sqlitedrv.Error
	if !errors.As(err, &se) {
		return errs.Unknown
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_PROTOCOL:
		return errs.Unavailable
	case sqlite3.SQLITE_CONSTRAINT:
		if isDuplicate(err) {
			return errs.AlreadyExists
		}
		return errs.InvalidArgument
	case sqlite3.SQLITE_FULL:
		return errs.ResourceExhausted
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH:
		return errs.PermissionDenied
	}
	return errs.Unknown
}

func isBusy(err error) bool {
	var se *sqlitedrv.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code() & 0xff
	return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
}

func isDuplicate(err error) bool {
	var se *sqlitedrv.Error
	return errors.As(err, &se) &&
		(se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE)
}

// nanos is how times are stored in indexed columns: Unix nanoseconds, and 0
// for the zero time (which has no Unix nanosecond value).
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", errs.Wrap(errs.InvalidArgument, "", err)
	}
	return string(b), nil
}

func decode[T any](data string) (*T, error) {
	v := new(T)
	if err := json.Unmarshal([]byte(data), v); err != nil {
		return nil, fmt.Errorf("corrupt record: %w", err)
	}
	return v, nil
}

// A cursor is the sort key (time, id) of the last row of a page, encoded so
// that callers treat it as opaque and can put it in a URL. Listings by queue
// time write "nanos:id"; the job orders by start and end time put "s:" and
// "e:" in front, so a cursor is refused by a listing of another order.
func makeCursor(t time.Time, id string) string { return makeOrderCursor("", t, id) }

func makeOrderCursor(prefix string, t time.Time, id string) string {
	body := strconv.FormatInt(nanos(t), 10) + ":" + id
	if prefix != "" {
		body = prefix + ":" + body
	}
	return base64.RawURLEncoding.EncodeToString([]byte(body))
}

func parseCursor(prefix, c string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		body, ok := string(b), true
		if prefix != "" {
			body, ok = strings.CutPrefix(body, prefix+":")
		}
		n, id, ok2 := strings.Cut(body, ":")
		if v, err := strconv.ParseInt(n, 10, 64); ok && ok2 && err == nil {
			return v, id, nil
		}
	}
	return 0, "", errs.E(errs.InvalidArgument, "", "malformed cursor %q", c)
}

// filter collects the conditions of a WHERE clause and their arguments.
type filter struct {
	conds []string
	args  []any
}

func (f *filter) add(cond string, args ...any) {
	f.conds = append(f.conds, cond)
	f.args = append(f.args, args...)
}

// cursor restricts a newest-first listing by time_queued to rows after the
// cursor's row.
func (f *filter) cursor(c string) error { return f.cursorOn("time_queued", "", c) }

// cursorOn is cursor for a listing by column col, whose cursors carry prefix.
func (f *filter) cursorOn(col, prefix, c string) error {
	if c == "" {
		return nil
	}
	n, id, err := parseCursor(prefix, c)
	if err != nil {
		return err
	}
	f.add("("+col+", id) < (?, ?)", n, id)
	return nil
}

func (f *filter) where() string {
	if len(f.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(f.conds, " AND ")
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func anys[T any](v []T) []any {
	out := make([]any, len(v))
	for i, x := range v {
		out[i] = x
	}
	return out
}

// page runs a newest-first listing query (which must select data, end in
// ORDER BY {time column} DESC, id DESC, and leave LIMIT to page) and returns
// up to limit records and the cursor of the next page, made by cursorOf from
// the last record. It asks for one row more than it returns, so the last page
// has no cursor.
func page[T any](ctx context.Context, tx *sql.Tx, query string, args []any, limit int, cursorOf func(*T) string) ([]*T, string, error) {
	limit = store.Limit(limit)
	if explainListing != nil {
		explainListing(ctx, tx, query+" LIMIT ?", append(args, limit+1))
	}
	rows, err := tx.QueryContext(ctx, query+" LIMIT ?", append(args, limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var out []*T
	for rows.Next() {
		var data string
		if err := rows.Scan(&data); err != nil {
			return nil, "", err
		}
		v, err := decode[T](data)
		if err != nil {
			return nil, "", err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = cursorOf(out[limit-1])
	}
	return out, next, nil
}

// explainListing, set by tests, sees every listing query before it runs,
// so they can check its plan reads an index, not the whole table.
var explainListing func(ctx context.Context, tx *sql.Tx, query string, args []any)

// getOne reads the data column of the row of table with id.
func getOne[T any](ctx context.Context, tx *sql.Tx, table, what, id string) (*T, error) {
	var data string
	err := tx.QueryRowContext(ctx, `SELECT data FROM `+table+` WHERE id = ?`, id).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.E(errs.NotFound, "", "%s %q not found", what, id)
	}
	if err != nil {
		return nil, err
	}
	return decode[T](data)
}

// getMany reads the rows of table among ids, maxParams ids per query.
func getMany[T any](ctx context.Context, tx *sql.Tx, table string, ids []string, key func(*T) string) (map[string]*T, error) {
	out := make(map[string]*T, len(ids))
	seen := make(map[string]bool, len(ids))
	uniq := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			uniq = append(uniq, id)
		}
	}
	for len(uniq) > 0 {
		n := min(len(uniq), maxParams)
		part := uniq[:n]
		uniq = uniq[n:]
		rows, err := tx.QueryContext(ctx, `SELECT data FROM `+table+` WHERE id IN (`+placeholders(n)+`)`, anys(part)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var data string
			if err := rows.Scan(&data); err != nil {
				rows.Close()
				return nil, err
			}
			v, err := decode[T](data)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out[key(v)] = v
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// insertJobs inserts new jobs; an id that exists already is AlreadyExists.
func insertJobs(ctx context.Context, tx *sql.Tx, jobs []*model.Job) error {
	if len(jobs) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO jobs (id, src, state, worker, time_queued, time_started, time_ended,
		pool, priority, queue_order, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, j := range jobs {
		data, err := encode(j)
		if err != nil {
			return err
		}
		_, err = stmt.ExecContext(ctx, j.ID, j.Src, string(j.State), j.Worker, nanos(j.TimeQueued), nanos(j.TimeStarted), nanos(j.TimeEnded),
			j.Pool, j.Priority, nanos(j.QueueOrder()), data)
		if isDuplicate(err) {
			return errs.E(errs.AlreadyExists, "", "job %s already exists", j.ID)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// putJob writes back j, read in this transaction in state was.
func putJob(ctx context.Context, tx *sql.Tx, j *model.Job, was model.State) error {
	data, err := encode(j)
	if err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, `UPDATE jobs SET state = ?, worker = ?, time_started = ?, time_ended = ?,
		pool = ?, priority = ?, queue_order = ?, data = ? WHERE id = ? AND state = ?`,
		string(j.State), j.Worker, nanos(j.TimeStarted), nanos(j.TimeEnded), j.Pool, j.Priority, nanos(j.QueueOrder()), data, j.ID, string(was))
	if err != nil {
		return err
	}
	// The write lock makes this impossible; it guards against a future
	// change that reads outside the transaction.
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return errs.E(errs.Aborted, "", "job %s changed concurrently", j.ID)
	}
	return nil
}

// CreatePatchset implements store.Store.
func (s *Store) CreatePatchset(ctx context.Context, ps *model.Patchset, jobs []*model.Job) error {
	const op = "sqlite.CreatePatchset"
	if ps == nil || ps.ID == "" {
		return errs.E(errs.InvalidArgument, op, "patchset without id")
	}
	if err := store.CheckJobs(ps.JobIDs, jobs); err != nil {
		return wrap(op, err)
	}
	data, err := encode(ps)
	if err != nil {
		return wrap(op, err)
	}
	return s.write(ctx, op, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO patchsets (id, change_num, owner, time_queued, time_ended, data)
			VALUES (?, ?, ?, ?, ?, ?)`, ps.ID, ps.Change, ps.Owner, nanos(ps.TimeQueued), nanos(ps.TimeEnded), data)
		if isDuplicate(err) {
			return errs.E(errs.AlreadyExists, "", "patchset %s already exists", ps.ID)
		}
		if err != nil {
			return err
		}
		return insertJobs(ctx, tx, jobs)
	})
}

// GetPatchset implements store.Store.
func (s *Store) GetPatchset(ctx context.Context, id string) (*model.Patchset, error) {
	var p *model.Patchset
	err := s.read(ctx, "sqlite.GetPatchset", func(tx *sql.Tx) (err error) {
		p, err = getOne[model.Patchset](ctx, tx, "patchsets", "patchset", id)
		return err
	})
	return p, err
}

// GetPatchsets implements store.Store.
func (s *Store) GetPatchsets(ctx context.Context, ids []string) (map[string]*model.Patchset, error) {
	var m map[string]*model.Patchset
	err := s.read(ctx, "sqlite.GetPatchsets", func(tx *sql.Tx) (err error) {
		m, err = getMany(ctx, tx, "patchsets", ids, func(p *model.Patchset) string { return p.ID })
		return err
	})
	return m, err
}

// GetPatchsetWithJobs implements store.Store; both reads see one snapshot.
func (s *Store) GetPatchsetWithJobs(ctx context.Context, id string) (*model.Patchset, []*model.Job, error) {
	var (
		p    *model.Patchset
		jobs []*model.Job
	)
	err := s.read(ctx, "sqlite.GetPatchsetWithJobs", func(tx *sql.Tx) (err error) {
		if p, err = getOne[model.Patchset](ctx, tx, "patchsets", "patchset", id); err != nil {
			return err
		}
		m, err := getMany(ctx, tx, "jobs", p.JobIDs, func(j *model.Job) string { return j.ID })
		if err != nil {
			return err
		}
		jobs = make([]*model.Job, 0, len(p.JobIDs))
		for _, id := range p.JobIDs {
			if j := m[id]; j != nil {
				jobs = append(jobs, j)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return p, jobs, nil
}

// UpdatePatchset implements store.Store.
func (s *Store) UpdatePatchset(ctx context.Context, id string, u model.PatchsetUpdate) (*model.Patchset, error) {
	var out *model.Patchset
	err := s.write(ctx, "sqlite.UpdatePatchset", func(tx *sql.Tx) error {
		p, err := getOne[model.Patchset](ctx, tx, "patchsets", "patchset", id)
		if err != nil {
			return err
		}
		if err := p.Apply(u); err != nil {
			return err
		}
		data, err := encode(p)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE patchsets SET time_ended = ?, data = ? WHERE id = ?`,
			nanos(p.TimeEnded), data, id); err != nil {
			return err
		}
		out = p
		return nil
	})
	return out, err
}

// ListPatchsets implements store.Store.
func (s *Store) ListPatchsets(ctx context.Context, q store.PatchsetQuery) ([]*model.Patchset, string, error) {
	const op = "sqlite.ListPatchsets"
	var f filter
	if q.Change != 0 {
		f.add("change_num = ?", q.Change)
	}
	if q.Owner != "" {
		f.add("owner = ?", q.Owner)
	}
	if err := q.Check(); err != nil {
		return nil, "", wrap(op, err)
	}
	if q.Pending {
		f.add("time_ended = 0") // literal, so the partial index applies
	}
	if q.Ended {
		f.add("time_ended > 0")
	}
	if err := f.cursor(q.Cursor); err != nil {
		return nil, "", wrap(op, err)
	}
	var (
		out  []*model.Patchset
		next string
	)
	err := s.read(ctx, op, func(tx *sql.Tx) (err error) {
		out, next, err = page(ctx, tx, `SELECT data FROM patchsets`+f.where()+` ORDER BY time_queued DESC, id DESC`,
			f.args, q.Limit, func(p *model.Patchset) string { return makeCursor(p.TimeQueued, p.ID) })
		return err
	})
	return out, next, err
}

// CreatePostsubmit implements store.Store.
func (s *Store) CreatePostsubmit(ctx context.Context, p *model.Postsubmit, jobs []*model.Job) error {
	const op = "sqlite.CreatePostsubmit"
	if p == nil || p.ID == "" {
		return errs.E(errs.InvalidArgument, op, "postsubmit without id")
	}
	if err := store.CheckJobs(p.JobIDs, jobs); err != nil {
		return wrap(op, err)
	}
	data, err := encode(p)
	if err != nil {
		return wrap(op, err)
	}
	return s.write(ctx, op, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO postsubmits (id, branch, time_queued, data) VALUES (?, ?, ?, ?)`,
			p.ID, p.Branch, nanos(p.TimeQueued), data)
		if isDuplicate(err) {
			return errs.E(errs.AlreadyExists, "", "postsubmit %s already exists", p.ID)
		}
		if err != nil {
			return err
		}
		return insertJobs(ctx, tx, jobs)
	})
}

// LatestPostsubmit implements store.Store.
func (s *Store) LatestPostsubmit(ctx context.Context, branch string) (*model.Postsubmit, error) {
	var p *model.Postsubmit
	err := s.read(ctx, "sqlite.LatestPostsubmit", func(tx *sql.Tx) error {
		var data string
		err := tx.QueryRowContext(ctx, `SELECT data FROM postsubmits WHERE branch = ?
			ORDER BY time_queued DESC, id DESC LIMIT 1`, branch).Scan(&data)
		if errors.Is(err, sql.ErrNoRows) {
			return errs.E(errs.NotFound, "", "no postsubmit on branch %q", branch)
		}
		if err != nil {
			return err
		}
		p, err = decode[model.Postsubmit](data)
		return err
	})
	return p, err
}

// ListPostsubmits implements store.Store.
func (s *Store) ListPostsubmits(ctx context.Context, branch string, limit int, cursor string) ([]*model.Postsubmit, string, error) {
	const op = "sqlite.ListPostsubmits"
	var f filter
	if branch != "" {
		f.add("branch = ?", branch)
	}
	if err := f.cursor(cursor); err != nil {
		return nil, "", wrap(op, err)
	}
	var (
		out  []*model.Postsubmit
		next string
	)
	err := s.read(ctx, op, func(tx *sql.Tx) (err error) {
		out, next, err = page(ctx, tx, `SELECT data FROM postsubmits`+f.where()+` ORDER BY time_queued DESC, id DESC`,
			f.args, limit, func(p *model.Postsubmit) string { return makeCursor(p.TimeQueued, p.ID) })
		return err
	})
	return out, next, err
}

// GetJob implements store.Store.
func (s *Store) GetJob(ctx context.Context, id string) (*model.Job, error) {
	var j *model.Job
	err := s.read(ctx, "sqlite.GetJob", func(tx *sql.Tx) (err error) {
		j, err = getOne[model.Job](ctx, tx, "jobs", "job", id)
		return err
	})
	return j, err
}

// GetJobs implements store.Store.
func (s *Store) GetJobs(ctx context.Context, ids []string) (map[string]*model.Job, error) {
	var m map[string]*model.Job
	err := s.read(ctx, "sqlite.GetJobs", func(tx *sql.Tx) (err error) {
		m, err = getMany(ctx, tx, "jobs", ids, func(j *model.Job) string { return j.ID })
		return err
	})
	return m, err
}

// UpdateJob implements store.Store.
func (s *Store) UpdateJob(ctx context.Context, id string, t model.Transition) (*model.Job, error) {
	var out *model.Job
	err := s.write(ctx, "sqlite.UpdateJob", func(tx *sql.Tx) error {
		j, err := getOne[model.Job](ctx, tx, "jobs", "job", id)
		if err != nil {
			return err
		}
		was := j.State
		if err := j.Apply(t); err != nil {
			return err
		}
		if err := putJob(ctx, tx, j, was); err != nil {
			return err
		}
		out = j
		return nil
	})
	return out, err
}

// claimQuery reads the head of one pool's queue from the jobs_claim index
// (its WHERE repeats the index's literally, so SQLite uses it).
const claimQuery = `SELECT priority, queue_order, id, data FROM jobs WHERE state = 'QUEUED' AND pool = ?
	ORDER BY priority, queue_order, id LIMIT 1`

// ClaimJob implements store.Store: one transaction that reads the head of
// each pool's queue (an index seek each), starts the first of them, and
// commits, so two claimers can never get the same job.
func (s *Store) ClaimJob(ctx context.Context, workerID string, pools []string, now time.Time) (*model.Job, error) {
	const op = "sqlite.ClaimJob"
	if workerID == "" {
		return nil, errs.E(errs.InvalidArgument, op, "claim names no worker")
	}
	pools = slices.Compact(slices.Sorted(slices.Values(pools)))
	var out *model.Job
	err := s.write(ctx, op, func(tx *sql.Tx) error {
		type head struct {
			prio  int
			order int64
			id    string
			data  string
		}
		var best *head
		for _, pool := range pools {
			var h head
			err := tx.QueryRowContext(ctx, claimQuery, pool).Scan(&h.prio, &h.order, &h.id, &h.data)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			if best == nil || h.prio < best.prio || (h.prio == best.prio && (h.order < best.order || (h.order == best.order && h.id < best.id))) {
				best = &h
			}
		}
		if best == nil {
			return errs.E(errs.NotFound, "", "no job of pools %q is queued", pools)
		}
		j, err := decode[model.Job](best.data)
		if err != nil {
			return err
		}
		if err := j.Apply(model.Transition{Kind: model.Start, Worker: workerID, Now: now}); err != nil {
			return err
		}
		if err := putJob(ctx, tx, j, model.Queued); err != nil {
			return err
		}
		out = j
		return nil
	})
	return out, err
}

// jobOrders are the sort column and cursor prefix of each job order.
var jobOrders = map[store.JobOrder]struct {
	col, prefix string
	time        func(*model.Job) time.Time
}{
	store.OrderQueued:  {"time_queued", "", func(j *model.Job) time.Time { return j.TimeQueued }},
	store.OrderStarted: {"time_started", "s", func(j *model.Job) time.Time { return j.TimeStarted }},
	store.OrderEnded:   {"time_ended", "e", func(j *model.Job) time.Time { return j.TimeEnded }},
}

// ListJobs implements store.Store.
func (s *Store) ListJobs(ctx context.Context, q store.JobQuery) ([]*model.Job, string, error) {
	const op = "sqlite.ListJobs"
	if err := q.Check(); err != nil {
		return nil, "", wrap(op, err)
	}
	if q.OrderBy == "" {
		q.OrderBy = store.OrderQueued
	}
	order := jobOrders[q.OrderBy]
	var f filter
	if len(q.States) > 0 {
		states := make([]any, len(q.States))
		for i, st := range q.States {
			states[i] = string(st)
		}
		f.add("state IN ("+placeholders(len(states))+")", states...)
	}
	if q.Src != "" {
		f.add("src = ?", q.Src)
	}
	if q.Worker != "" {
		f.add("worker = ?", q.Worker)
	}
	if !q.StartedBefore.IsZero() {
		f.add("time_started > 0 AND time_started < ?", nanos(q.StartedBefore))
	}
	if !q.QueuedBefore.IsZero() {
		f.add("time_queued < ?", nanos(q.QueuedBefore))
	}
	if q.OrderBy != store.OrderQueued {
		f.add(order.col + " > 0") // literal, so the partial indexes apply
	}
	if err := f.cursorOn(order.col, order.prefix, q.Cursor); err != nil {
		return nil, "", wrap(op, err)
	}
	var (
		out  []*model.Job
		next string
	)
	err := s.read(ctx, op, func(tx *sql.Tx) (err error) {
		out, next, err = page(ctx, tx, `SELECT data FROM jobs`+f.where()+` ORDER BY `+order.col+` DESC, id DESC`,
			f.args, q.Limit, func(j *model.Job) string { return makeOrderCursor(order.prefix, order.time(j), j.ID) })
		return err
	})
	return out, next, err
}

// CountJobsSince implements store.Store from the (time_queued, state) index.
func (s *Store) CountJobsSince(ctx context.Context, since time.Time) (map[model.State]int, error) {
	out := map[model.State]int{}
	if err := s.countStates(ctx, "sqlite.CountJobsSince", out, `SELECT state, count(*) FROM jobs INDEXED BY jobs_queued_state
			WHERE time_queued >= ? GROUP BY state`, nanos(since)); err != nil {
		return nil, err
	}
	return out, nil
}

// countStates adds the (state, count) rows of query to out.
func (s *Store) countStates(ctx context.Context, op string, out map[model.State]int, query string, args ...any) error {
	return s.read(ctx, op, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				st string
				n  int
			)
			if err := rows.Scan(&st, &n); err != nil {
				return err
			}
			out[model.State(st)] = n
		}
		return rows.Err()
	})
}

// AddJobs implements store.Store: the jobs, the source's new JobIDs and, for
// a patchset, its reopening, in one transaction.
func (s *Store) AddJobs(ctx context.Context, src string, jobs []*model.Job, lease time.Duration) (*model.Patchset, error) {
	const op = "sqlite.AddJobs"
	psID, postID, err := model.ParseSrc(src)
	if err != nil {
		return nil, wrap(op, err)
	}
	ids, now, err := store.CheckAddJobs(src, jobs)
	if err != nil {
		return nil, wrap(op, err)
	}
	var out *model.Patchset
	err = s.write(ctx, op, func(tx *sql.Tx) error {
		if postID != "" {
			p, err := getOne[model.Postsubmit](ctx, tx, "postsubmits", "postsubmit", postID)
			if err != nil {
				return err
			}
			p.JobIDs = append(p.JobIDs, ids...)
			data, err := encode(p)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE postsubmits SET data = ? WHERE id = ?`, data, postID); err != nil {
				return err
			}
			return insertJobs(ctx, tx, jobs)
		}
		p, err := getOne[model.Patchset](ctx, tx, "patchsets", "patchset", psID)
		if err != nil {
			return err
		}
		if err := p.Apply(model.PatchsetUpdate{Kind: model.Reopen, Now: now, Lease: lease}); err != nil {
			return err
		}
		p.JobIDs = append(p.JobIDs, ids...)
		data, err := encode(p)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE patchsets SET time_ended = ?, data = ? WHERE id = ?`,
			nanos(p.TimeEnded), data, psID); err != nil {
			return err
		}
		out = p
		return insertJobs(ctx, tx, jobs)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CountJobs implements store.Store. With no states it counts every state
// that has jobs.
func (s *Store) CountJobs(ctx context.Context, states ...model.State) (map[model.State]int, error) {
	out := make(map[model.State]int, len(states))
	query := `SELECT state, count(*) FROM jobs GROUP BY state`
	args := make([]any, len(states))
	for i, st := range states {
		out[st] = 0
		args[i] = string(st)
	}
	if len(states) > 0 {
		query = `SELECT state, count(*) FROM jobs WHERE state IN (` + placeholders(len(states)) + `) GROUP BY state`
	}
	if err := s.countStates(ctx, "sqlite.CountJobs", out, query, args...); err != nil {
		return nil, err
	}
	return out, nil
}

func putWorker(ctx context.Context, tx *sql.Tx, w *model.Worker) error {
	data, err := encode(w)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO workers (id, last_seen, data) VALUES (?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, data = excluded.data`,
		w.ID, nanos(w.LastSeen), data)
	return err
}

// PutWorker implements store.Store.
func (s *Store) PutWorker(ctx context.Context, w *model.Worker) (*model.Worker, error) {
	const op = "sqlite.PutWorker"
	if w == nil || w.ID == "" {
		return nil, errs.E(errs.InvalidArgument, op, "worker without id")
	}
	out := *w
	err := s.write(ctx, op, func(tx *sql.Tx) error {
		old, err := getOne[model.Worker](ctx, tx, "workers", "worker", w.ID)
		switch {
		case err == nil && old.State == model.WorkerQuarantined:
			out.State = model.WorkerQuarantined
		case err == nil || errs.Is(err, errs.NotFound):
			out.State = w.State
		default:
			return err
		}
		return putWorker(ctx, tx, &out)
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetWorker implements store.Store.
func (s *Store) GetWorker(ctx context.Context, id string) (*model.Worker, error) {
	var w *model.Worker
	err := s.read(ctx, "sqlite.GetWorker", func(tx *sql.Tx) (err error) {
		w, err = getOne[model.Worker](ctx, tx, "workers", "worker", id)
		return err
	})
	return w, err
}

// ListWorkers implements store.Store; workers come in id order.
func (s *Store) ListWorkers(ctx context.Context, seenBefore time.Time) ([]*model.Worker, error) {
	var f filter
	if !seenBefore.IsZero() {
		f.add("last_seen < ?", nanos(seenBefore))
	}
	var out []*model.Worker
	err := s.read(ctx, "sqlite.ListWorkers", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT data FROM workers`+f.where()+` ORDER BY id`, f.args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var data string
			if err := rows.Scan(&data); err != nil {
				return err
			}
			w, err := decode[model.Worker](data)
			if err != nil {
				return err
			}
			out = append(out, w)
		}
		return rows.Err()
	})
	return out, err
}

// SetWorkerQuarantined implements store.Store. Lifting a quarantine makes
// the worker BUSY if it still has a job, IDLE otherwise, until its next
// heartbeat says which.
func (s *Store) SetWorkerQuarantined(ctx context.Context, id string, quarantined bool) (*model.Worker, error) {
	var out *model.Worker
	err := s.write(ctx, "sqlite.SetWorkerQuarantined", func(tx *sql.Tx) error {
		w, err := getOne[model.Worker](ctx, tx, "workers", "worker", id)
		if err != nil {
			return err
		}
		switch {
		case quarantined:
			w.State = model.WorkerQuarantined
		case w.State != model.WorkerQuarantined:
		case w.CurrentJob != "":
			w.State = model.WorkerBusy
		default:
			w.State = model.WorkerIdle
		}
		out = w
		return putWorker(ctx, tx, w)
	})
	return out, err
}

// DeleteWorker implements store.Store.
func (s *Store) DeleteWorker(ctx context.Context, id string) error {
	return s.write(ctx, "sqlite.DeleteWorker", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM workers WHERE id = ?`, id)
		return err
	})
}

// logSize returns the size of a job's log, 0 if it has none.
func logSize(ctx context.Context, tx *sql.Tx, jobID string) (int64, error) {
	var size int64
	err := tx.QueryRowContext(ctx, `SELECT size FROM logs WHERE job_id = ?`, jobID).Scan(&size)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return size, err
}

// readRange returns n bytes of a job's log from off, which the caller has
// checked lie within the log. It starts at the chunk holding off.
func readRange(ctx context.Context, tx *sql.Tx, jobID string, off, n int64) ([]byte, error) {
	end := off + n
	rows, err := tx.QueryContext(ctx, `SELECT off, data FROM log_chunks
		WHERE job_id = ? AND off < ?
		AND off >= coalesce((SELECT max(off) FROM log_chunks WHERE job_id = ? AND off <= ?), 0)
		ORDER BY off`, jobID, end, jobID, off)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]byte, 0, n)
	for rows.Next() {
		var (
			co int64
			cd []byte
		)
		if err := rows.Scan(&co, &cd); err != nil {
			return nil, err
		}
		lo, hi := max(off, co)-co, min(end, co+int64(len(cd)))-co
		if lo < hi {
			out = append(out, cd[lo:hi]...)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if int64(len(out)) != n {
		return nil, fmt.Errorf("log of job %s: read %d bytes at %d, want %d: chunks are not contiguous", jobID, len(out), off, n)
	}
	return out, nil
}

// AppendLog implements store.Store. A chunk that overlaps the end of the log
// with matching bytes appends only its new tail, so a retried append after a
// partial success converges too. The log expires at the latest expiry given.
func (s *Store) AppendLog(ctx context.Context, jobID string, off int64, data []byte, expires time.Time) error {
	const op = "sqlite.AppendLog"
	if jobID == "" || off < 0 {
		return errs.E(errs.InvalidArgument, op, "append to log of job %q at offset %d", jobID, off)
	}
	return s.write(ctx, op, func(tx *sql.Tx) error {
		size, err := logSize(ctx, tx, jobID)
		if err != nil {
			return err
		}
		if off > size {
			return errs.E(errs.FailedPrecondition, "", "log of job %s ends at %d: a chunk at %d leaves a gap", jobID, size, off)
		}
		chunk := data
		if off < size {
			n := min(size-off, int64(len(data)))
			have, err := readRange(ctx, tx, jobID, off, n)
			if err != nil {
				return err
			}
			if !bytes.Equal(have, data[:n]) {
				return errs.E(errs.FailedPrecondition, "", "log of job %s: the chunk at %d differs from the bytes stored there", jobID, off)
			}
			chunk = data[n:]
		}
		if len(chunk) == 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO logs (job_id, size, expires) VALUES (?, ?, ?)
			ON CONFLICT (job_id) DO UPDATE SET size = excluded.size, expires = max(expires, excluded.expires)`,
			jobID, size+int64(len(chunk)), nanos(expires)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO log_chunks (job_id, off, data, expires) VALUES (?, ?, ?, ?)`,
			jobID, size, chunk, nanos(expires))
		return err
	})
}

// ReadLog implements store.Store.
func (s *Store) ReadLog(ctx context.Context, jobID string, off int64, maxBytes int) ([]byte, int64, error) {
	const op = "sqlite.ReadLog"
	if off < 0 || maxBytes < 0 {
		return nil, 0, errs.E(errs.InvalidArgument, op, "read of log of job %q at %d, max %d", jobID, off, maxBytes)
	}
	var (
		out  []byte
		size int64
	)
	err := s.read(ctx, op, func(tx *sql.Tx) (err error) {
		if size, err = logSize(ctx, tx, jobID); err != nil || off >= size {
			return err
		}
		out, err = readRange(ctx, tx, jobID, off, min(int64(maxBytes), size-off))
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if out == nil {
		out = []byte{}
	}
	return out, size, nil
}

// ListExpiredLogs implements store.Store, soonest expired first.
func (s *Store) ListExpiredLogs(ctx context.Context, now time.Time, limit int) ([]string, error) {
	var ids []string
	err := s.read(ctx, "sqlite.ListExpiredLogs", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT job_id FROM logs WHERE expires < ? ORDER BY expires, job_id LIMIT ?`,
			nanos(now), store.Limit(limit))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	return ids, err
}

// DeleteJobLogs implements store.Store.
func (s *Store) DeleteJobLogs(ctx context.Context, jobID string) error {
	return s.write(ctx, "sqlite.DeleteJobLogs", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM log_chunks WHERE job_id = ?`, jobID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM logs WHERE job_id = ?`, jobID)
		return err
	})
}

// AcquireLease implements store.Store. A lease is expired from the instant
// its expiry is reached.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	const op = "sqlite.AcquireLease"
	if name == "" || holder == "" || ttl <= 0 {
		return false, errs.E(errs.InvalidArgument, op, "lease %q for %q with ttl %v", name, holder, ttl)
	}
	var ok bool
	err := s.write(ctx, op, func(tx *sql.Tx) error {
		var (
			cur     string
			expires int64
		)
		err := tx.QueryRowContext(ctx, `SELECT holder, expires FROM leases WHERE name = ?`, name).Scan(&cur, &expires)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case cur != holder && nanos(now) < expires:
			return nil // held by another
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires`,
			name, holder, nanos(now.Add(ttl)))
		ok = err == nil
		return err
	})
	return ok, err
}

// PutSamples implements store.Store.
func (s *Store) PutSamples(ctx context.Context, t time.Time, values map[string]float64) error {
	const op = "sqlite.PutSamples"
	for name := range values {
		if name == "" {
			return errs.E(errs.InvalidArgument, op, "sample without a series name")
		}
	}
	return s.write(ctx, op, func(tx *sql.Tx) error {
		for name, v := range values {
			if _, err := tx.ExecContext(ctx, `INSERT INTO samples (name, t, value) VALUES (?, ?, ?)
				ON CONFLICT (name, t) DO UPDATE SET value = excluded.value`, name, nanos(t), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// ListSamples implements store.Store.
func (s *Store) ListSamples(ctx context.Context, name string, since time.Time) ([]model.Sample, error) {
	var out []model.Sample
	err := s.read(ctx, "sqlite.ListSamples", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT t, value FROM samples WHERE name = ? AND t >= ? ORDER BY t DESC LIMIT ?`,
			name, nanos(since), store.MaxSamples)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				t int64
				v float64
			)
			if err := rows.Scan(&t, &v); err != nil {
				return err
			}
			out = append(out, model.Sample{Time: time.Unix(0, t).UTC(), Value: v})
		}
		return rows.Err()
	})
	slices.Reverse(out)
	return out, err
}

// DeleteSamples implements store.Store.
func (s *Store) DeleteSamples(ctx context.Context, before time.Time, limit int) (int, error) {
	var n int64
	err := s.write(ctx, "sqlite.DeleteSamples", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM samples WHERE (name, t) IN (SELECT name, t FROM samples WHERE t < ? LIMIT ?)`,
			nanos(before), store.Limit(limit))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// GetMeta implements store.Store.
func (s *Store) GetMeta(ctx context.Context, key string) (string, error) {
	var v string
	err := s.read(ctx, "sqlite.GetMeta", func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	return v, err
}

// SetMeta implements store.Store.
func (s *Store) SetMeta(ctx context.Context, key, value string) error {
	const op = "sqlite.SetMeta"
	if key == "" {
		return errs.E(errs.InvalidArgument, op, "empty meta key")
	}
	return s.write(ctx, op, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return err
	})
}
