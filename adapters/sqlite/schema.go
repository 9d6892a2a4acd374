package sqlite

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
`,
}
