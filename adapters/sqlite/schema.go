package sqlite

import (
	"context"
	"database/sql"

	"github.com/tollgate-ci/tollgate/core/model"
)

// migrations is the schema history, applied in order, each in the
// transaction that records it in schema_version. Append only: a released
// migration is never edited, so every database file reaches the same schema.
//
// Records are stored whole as JSON in data; the other columns copy the fields
// that queries filter or sort on, so the JSON is the single source of truth
// and the columns are rewritten with it on every update. Times are Unix
// nanoseconds, 0 for the zero time.
var migrations = []string{
	// 1: the initial schema.
	`
CREATE TABLE patchsets (
	id          TEXT PRIMARY KEY,
	change_num  INTEGER NOT NULL,
	owner       TEXT NOT NULL,
	time_queued INTEGER NOT NULL,
	time_ended  INTEGER NOT NULL,
	data        TEXT NOT NULL
);
CREATE INDEX patchsets_queued ON patchsets (time_queued, id);
CREATE INDEX patchsets_change ON patchsets (change_num, time_queued, id);
CREATE INDEX patchsets_owner ON patchsets (owner, time_queued, id);
CREATE INDEX patchsets_pending ON patchsets (time_queued, id) WHERE time_ended = 0;

CREATE TABLE jobs (
	id           TEXT PRIMARY KEY,
	src          TEXT NOT NULL,
	state        TEXT NOT NULL,
	worker       TEXT NOT NULL,
	time_queued  INTEGER NOT NULL,
	time_started INTEGER NOT NULL,
	data         TEXT NOT NULL
);
-- The queue: ClaimJob takes the first row of state='QUEUED' in this order.
CREATE INDEX jobs_queue ON jobs (state, time_queued, id);
CREATE INDEX jobs_queued ON jobs (time_queued, id);
CREATE INDEX jobs_src ON jobs (src, time_queued, id);
CREATE INDEX jobs_worker ON jobs (worker, time_queued, id);

CREATE TABLE postsubmits (
	id          TEXT PRIMARY KEY,
	branch      TEXT NOT NULL,
	time_queued INTEGER NOT NULL,
	data        TEXT NOT NULL
);
CREATE INDEX postsubmits_queued ON postsubmits (time_queued, id);
CREATE INDEX postsubmits_branch ON postsubmits (branch, time_queued, id);

CREATE TABLE workers (
	id        TEXT PRIMARY KEY,
	last_seen INTEGER NOT NULL,
	data      TEXT NOT NULL
);
CREATE INDEX workers_last_seen ON workers (last_seen);

-- One row per job log: its size and expiry, so appends know the end of the
-- log and ListExpiredLogs reads an index instead of scanning chunks.
CREATE TABLE logs (
	job_id  TEXT PRIMARY KEY,
	size    INTEGER NOT NULL,
	expires INTEGER NOT NULL
);
CREATE INDEX logs_expires ON logs (expires, job_id);

CREATE TABLE log_chunks (
	job_id  TEXT NOT NULL REFERENCES logs (job_id) ON DELETE CASCADE,
	off     INTEGER NOT NULL,
	data    BLOB NOT NULL,
	expires INTEGER NOT NULL,
	PRIMARY KEY (job_id, off)
);

CREATE TABLE leases (
	name    TEXT PRIMARY KEY,
	holder  TEXT NOT NULL,
	expires INTEGER NOT NULL
);

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
`, // 2: job listings by start and end time, counts over a time window,
	// and the stats samples. time_ended is filled from the records by
	// fillTimeEnded, in the same transaction.
	`
ALTER TABLE jobs ADD COLUMN time_ended INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_started ON jobs (time_started, id) WHERE time_started > 0;
CREATE INDEX jobs_state_started ON jobs (state, time_started, id) WHERE time_started > 0;
CREATE INDEX jobs_ended ON jobs (time_ended, id) WHERE time_ended > 0;
CREATE INDEX jobs_state_ended ON jobs (state, time_ended, id) WHERE time_ended > 0;
-- CountJobsSince reads only this index: the state is in it.
CREATE INDEX jobs_queued_state ON jobs (time_queued, state);

CREATE TABLE samples (
	name  TEXT NOT NULL,
	t     INTEGER NOT NULL,
	value REAL NOT NULL,
	PRIMARY KEY (name, t)
) WITHOUT ROWID;
CREATE INDEX samples_t ON samples (t);
`, // 3: the queue by pool, priority and fair order. The columns of the
	// jobs that may still run are filled from their records by
	// fillQueueOrder, in the same transaction.
	`
ALTER TABLE jobs ADD COLUMN pool TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN queue_order INTEGER NOT NULL DEFAULT 0;
-- ClaimJob reads the head of each pool a worker serves from this index:
-- one seek per pool, whatever the length of the queue.
CREATE INDEX jobs_claim ON jobs (pool, priority, queue_order, id) WHERE state = 'QUEUED';
`,
}

// backfills run after the migration of the same index (0-based), in its
// transaction, for what SQL alone cannot compute exactly.
var backfills = map[int]func(context.Context, *sql.Tx) error{
	1: fillTimeEnded,
	2: fillQueueOrder,
}

// fillQueueOrder gives the jobs that may still run (QUEUED, or STARTED and
// so queued again after an infrastructure failure) the priority and order
// of jobs queued today, in their records and columns: postsubmit jobs after
// presubmit ones, each in the order of its queue time. None had labels to
// require, so their pool stays "".
func fillQueueOrder(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT data FROM jobs WHERE state IN (?, ?)`, string(model.Queued), string(model.Started))
	if err != nil {
		return err
	}
	var jobs []*model.Job
	for rows.Next() {
		var data string
		if err := rows.Scan(&data); err != nil {
			rows.Close()
			return err
		}
		j, err := decode[model.Job](data)
		if err != nil {
			rows.Close()
			return err
		}
		jobs = append(jobs, j)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, j := range jobs {
		j.Priority, j.Order = model.PriorityOf(j.Src), j.QueueOrder()
		if err := putJob(ctx, tx, j, j.State); err != nil {
			return err
		}
	}
	return nil
}

// fillTimeEnded copies each ended job's end time from its record into the
// time_ended column, in the nanoseconds the column holds everywhere else.
func fillTimeEnded(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT data FROM jobs WHERE state NOT IN (?, ?)`, string(model.Queued), string(model.Started))
	if err != nil {
		return err
	}
	type end struct {
		id string
		t  int64
	}
	var ends []end
	for rows.Next() {
		var data string
		if err := rows.Scan(&data); err != nil {
			rows.Close()
			return err
		}
		j, err := decode[model.Job](data)
		if err != nil {
			rows.Close()
			return err
		}
		ends = append(ends, end{j.ID, nanos(j.TimeEnded)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, e := range ends {
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET time_ended = ? WHERE id = ?`, e.t, e.id); err != nil {
			return err
		}
	}
	return nil
}
