// Package model holds Tollgate's domain types: patchsets, jobs, workers,
// postsubmit runs, and the rules for changing them. Adapters persist these
// types; the rules live here once so every backend behaves the same.
package model

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// State is a job's state. QUEUED → STARTED → one terminal state.
type State string

const (
	Queued      State = "QUEUED"
	Started     State = "STARTED"
	Completed   State = "COMPLETED"
	Failed      State = "FAILED"
	TimedOut    State = "TIMED_OUT"
	Cancelled   State = "CANCELLED"
	Interrupted State = "INTERRUPTED"
	BotDied     State = "BOT_DIED"
	// NoResource: the job waited, queued, while no live worker had the
	// labels it requires (see Expire).
	NoResource State = "NO_RESOURCE"
	// Expired: the job waited, queued, longer than its expiry.
	Expired State = "EXPIRED"
)

// AllStates lists every state in display order.
var AllStates = []State{Queued, Started, Completed, Failed, TimedOut, Cancelled, Interrupted, BotDied, NoResource, Expired}

// Terminal reports whether s is final: a job in a terminal state never changes again.
func (s State) Terminal() bool {
	switch s {
	case Completed, Failed, TimedOut, Cancelled, Interrupted, BotDied, NoResource, Expired:
		return true
	}
	return false
}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	for _, v := range AllStates {
		if v == s {
			return true
		}
	}
	return false
}

// Infra reports whether s means the infrastructure, not the code under test, failed.
func (s State) Infra() bool {
	switch s {
	case BotDied, Interrupted, NoResource, Expired:
		return true
	}
	return false
}

// ParseState parses a state name (case-insensitive).
func ParseState(v string) (State, error) {
	s := State(strings.ToUpper(strings.TrimSpace(v)))
	if !s.Valid() {
		return "", errs.E(errs.InvalidArgument, "model.ParseState", "unknown job state %q", v)
	}
	return s, nil
}

// MaxAttempts is how many times a job runs at most: a job whose worker died
// or was shut down is queued again once.
const MaxAttempts = 2

// Attempt records one earlier run of a job that ended in an infrastructure failure.
type Attempt struct {
	Attempt int       `json:"attempt"`
	State   State     `json:"state"`
	Worker  string    `json:"worker"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
}

// Job is one run of one job type for one source (a patchset or a branch commit).
type Job struct {
	ID          string            `json:"id"`
	Src         string            `json:"src"`  // "cls/{cl}-{ps}" or "branches/{branch}-{committed}"
	Type        string            `json:"type"` // a key of the config's jobs
	Env         map[string]string `json:"env,omitempty"`
	State       State             `json:"state"`
	TimeQueued  time.Time         `json:"time_queued"`
	TimeStarted time.Time         `json:"time_started,omitzero"`
	TimeEnded   time.Time         `json:"time_ended,omitzero"`
	Worker      string            `json:"worker,omitempty"`
	Attempt     int               `json:"attempt"`
	ExitCode    *int              `json:"exit_code,omitempty"`
	Reason      string            `json:"reason,omitempty"` // why it ended, for CANCELLED and infra states
	SkipVoting  bool              `json:"skip_voting,omitempty"`
	History     []Attempt         `json:"history,omitempty"`
	// MetricsDone is set once the job's queue and run times were written.
	MetricsDone bool `json:"metrics_done,omitempty"`
	// RetryOf is the job this one re-runs (a retry or a recheck), and
	// RequestedBy who asked for it; both empty for jobs the controller queued.
	RetryOf     string `json:"retry_of,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
	// Checkout is the commit the job tests; nil for jobs queued before
	// Tollgate recorded it (they run in an empty work tree).
	Checkout *Checkout `json:"checkout,omitempty"`

	// Require is the labels a worker must have to run the job (its job
	// type's require when it was queued), and Pool their canonical form
	// (PoolOf; "" for none): a worker claims from the pools its labels meet.
	Require map[string]string `json:"require,omitempty"`
	Pool    string            `json:"pool,omitempty"`
	// Priority and Order place the job in the queue: workers claim by
	// (Priority, QueueOrder, ID), lowest first. Priority is
	// PriorityPresubmit or PriorityPostsubmit; Order is TimeQueued pushed
	// back by the job's rank among the jobs queued with it (see Stagger),
	// so that one source's many jobs interleave with other sources' jobs.
	// A job queued again after an infrastructure failure keeps both.
	Priority int       `json:"priority,omitempty"`
	Order    time.Time `json:"order,omitzero"`
}

// Priorities: presubmit jobs (retries and rechecks included) are claimed
// before postsubmit ones.
const (
	PriorityPresubmit  = 0
	PriorityPostsubmit = 1
)

// PriorityOf is the priority of a job of source src.
func PriorityOf(src string) int {
	if strings.HasPrefix(src, "branches/") {
		return PriorityPostsubmit
	}
	return PriorityPresubmit
}

// QueueOrder is the time the queue orders the job by: Order, or TimeQueued
// for a record written before jobs had an Order.
func (j *Job) QueueOrder() time.Time {
	if j.Order.IsZero() {
		return j.TimeQueued
	}
	return j.Order
}

// SetRequire records the labels the job requires and its pool.
func (j *Job) SetRequire(require map[string]string) {
	j.Require, j.Pool = nil, PoolOf(require)
	if len(require) > 0 {
		j.Require = maps.Clone(require)
	}
}

// PoolOf is the canonical form of a set of required labels: "k=v" pairs
// sorted by key and joined by ",", "" for none. Label keys and values
// never contain ',' or '=' (ValidLabel), so the form is unambiguous.
func PoolOf(require map[string]string) string {
	keys := slices.Sorted(maps.Keys(require))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + require[k]
	}
	return strings.Join(parts, ",")
}

// Meets reports whether labels has every label of require, with its value.
func Meets(labels, require map[string]string) bool {
	for k, v := range require {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

var labelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$`)

// ValidLabel reports whether s may be a label key or value a job type
// requires: 1 to 63 letters, digits, '_', '.', ':', '/' and '-', starting
// with a letter or digit.
func ValidLabel(s string) bool { return labelRE.MatchString(s) }

// Stagger sets the Order of jobs queued together for one source, in the
// order given: the n-th job of a pool (counting from 0) is ordered n
// slots after its TimeQueued. Another source's jobs queued up to n slots
// later thus come before it: the first jobs of every change run before
// the tenth job of any, and one change's many jobs cannot starve another's.
func Stagger(jobs []*Job, slot time.Duration) {
	rank := map[string]int{}
	for _, j := range jobs {
		j.Order = j.TimeQueued.Add(time.Duration(rank[j.Pool]) * slot)
		rank[j.Pool]++
	}
}

// Checkout names what a job tests. For a patchset, Ref is its
// refs/changes/NN/CL/PS ref, merged by the worker onto the head of Branch
// as it is when the job starts; for a postsubmit run, Ref is
// refs/heads/{Branch} and Revision the branch commit itself, run as is.
type Checkout struct {
	Project  string `json:"project"`
	Branch   string `json:"branch"`   // the target branch, without refs/heads/
	Ref      string `json:"ref"`      // what to fetch
	Revision string `json:"revision"` // the commit Ref named when the job was queued
	// Merge says whether Revision is merged onto Branch's head (patchsets)
	// or checked out alone (postsubmit).
	Merge bool `json:"merge,omitempty"`
}

// NewJob returns a QUEUED job of type typ for src, created at now.
func NewJob(now time.Time, src, typ string, env map[string]string, skipVoting bool) *Job {
	return &Job{
		ID:         JobID(now, src, typ),
		Src:        src,
		Type:       typ,
		Env:        env,
		State:      Queued,
		TimeQueued: now.UTC(),
		Attempt:    1,
		SkipVoting: skipVoting,
		Priority:   PriorityOf(src),
		Order:      now.UTC(),
	}
}

// Transition is one change to a job's state, applied atomically by the Store.
type Transition struct {
	Kind     TransitionKind
	Worker   string    // Start, Finish, Release: the worker that runs the job
	State    State     // Finish: the terminal state; Release: Interrupted or BotDied; Expire: NoResource or Expired
	ExitCode *int      // Finish
	Reason   string    // Cancel, Release, Finish, Expire
	Now      time.Time // the time of the change
}

// TransitionKind names a transition.
type TransitionKind int

const (
	// Start: QUEUED → STARTED by Worker.
	Start TransitionKind = iota + 1
	// Finish: STARTED (by Worker, if set) → State, a terminal state other
	// than NO_RESOURCE and EXPIRED.
	Finish
	// Cancel: QUEUED or STARTED → CANCELLED. With Worker set (a worker
	// giving up its job), only a job STARTED by that worker.
	Cancel
	// Release: STARTED (by Worker, if set) ended by infrastructure (State is
	// INTERRUPTED or BOT_DIED). The first time, the job is queued again as
	// attempt 2; after MaxAttempts it takes State for good.
	Release
	// MarkMetrics: sets MetricsDone on a terminal job; FailedPrecondition if already set.
	MarkMetrics
	// Expire: QUEUED → State, NO_RESOURCE or EXPIRED, with Reason: the job
	// ends without having run.
	Expire
)

// Apply changes j by t, or returns FailedPrecondition and leaves j unchanged
// when t is not allowed from j's state. Apply is the only place the job state
// machine is written down; every Store adapter calls it inside its atomic update.
func (j *Job) Apply(t Transition) error {
	const op = "model.Job.Apply"
	now := t.Now.UTC()
	switch t.Kind {
	case Start:
		if j.State != Queued {
			return errs.E(errs.FailedPrecondition, op, "job %s is %s, not QUEUED", j.ID, j.State)
		}
		if t.Worker == "" {
			return errs.E(errs.InvalidArgument, op, "start of %s names no worker", j.ID)
		}
		j.State, j.Worker, j.TimeStarted = Started, t.Worker, now
		return nil
	case Finish:
		if !t.State.Terminal() {
			return errs.E(errs.InvalidArgument, op, "finish of %s with non-terminal state %q", j.ID, t.State)
		}
		if t.State == NoResource || t.State == Expired {
			return errs.E(errs.InvalidArgument, op, "finish of %s as %s: only a queued job expires", j.ID, t.State)
		}
		if j.State != Started {
			return errs.E(errs.FailedPrecondition, op, "job %s is %s, not STARTED", j.ID, j.State)
		}
		if t.Worker != "" && t.Worker != j.Worker {
			return errs.E(errs.FailedPrecondition, op, "job %s is run by %s, not %s", j.ID, j.Worker, t.Worker)
		}
		if t.State == Interrupted || t.State == BotDied {
			return j.Apply(Transition{Kind: Release, Worker: t.Worker, State: t.State, Reason: t.Reason, Now: t.Now})
		}
		j.State, j.TimeEnded, j.ExitCode, j.Reason = t.State, now, t.ExitCode, t.Reason
		return nil
	case Cancel:
		if j.State.Terminal() {
			return errs.E(errs.FailedPrecondition, op, "job %s already ended as %s", j.ID, j.State)
		}
		if t.Worker != "" && (j.State != Started || j.Worker != t.Worker) {
			return errs.E(errs.FailedPrecondition, op, "job %s is not run by %s", j.ID, t.Worker)
		}
		j.State, j.TimeEnded, j.Reason = Cancelled, now, t.Reason
		return nil
	case Release:
		if t.State != Interrupted && t.State != BotDied {
			return errs.E(errs.InvalidArgument, op, "release of %s with state %q", j.ID, t.State)
		}
		if j.State != Started {
			return errs.E(errs.FailedPrecondition, op, "job %s is %s, not STARTED", j.ID, j.State)
		}
		if t.Worker != "" && t.Worker != j.Worker {
			return errs.E(errs.FailedPrecondition, op, "job %s is run by %s, not %s", j.ID, j.Worker, t.Worker)
		}
		if j.Attempt < MaxAttempts {
			j.History = append(j.History, Attempt{Attempt: j.Attempt, State: t.State, Worker: j.Worker, Started: j.TimeStarted, Ended: now})
			j.Attempt++
			j.State, j.Worker, j.TimeStarted, j.Reason = Queued, "", time.Time{}, ""
			return nil
		}
		j.State, j.TimeEnded, j.Reason = t.State, now, t.Reason
		return nil
	case Expire:
		if t.State != NoResource && t.State != Expired {
			return errs.E(errs.InvalidArgument, op, "expiry of %s with state %q", j.ID, t.State)
		}
		if j.State != Queued {
			return errs.E(errs.FailedPrecondition, op, "job %s is %s, not QUEUED", j.ID, j.State)
		}
		j.State, j.TimeEnded, j.Reason = t.State, now, t.Reason
		return nil
	case MarkMetrics:
		if !j.State.Terminal() {
			return errs.E(errs.FailedPrecondition, op, "job %s has not ended", j.ID)
		}
		if j.MetricsDone {
			return errs.E(errs.FailedPrecondition, op, "metrics of job %s already written", j.ID)
		}
		j.MetricsDone = true
		return nil
	}
	return errs.E(errs.InvalidArgument, op, "unknown transition %d", t.Kind)
}

// Rerun returns a new QUEUED job of the same definition as j (source,
// type, env, skip_voting, checkout, required labels), created at now, for
// a retry or a recheck. Its Order is now: Stagger the jobs of a recheck.
func (j *Job) Rerun(now time.Time, by string) *Job {
	r := NewJob(now, j.Src, j.Type, maps.Clone(j.Env), j.SkipVoting)
	r.RetryOf, r.RequestedBy = j.ID, by
	r.SetRequire(j.Require)
	if j.Checkout != nil {
		c := *j.Checkout
		r.Checkout = &c
	}
	return r
}

// Latest returns, for each job type among jobs, the job that counts: the
// newest by TimeQueued, then id. Retries and rechecks add jobs of a type
// again, and only the latest run of each type decides a review.
func Latest(jobs []*Job) map[string]*Job {
	out := make(map[string]*Job, len(jobs))
	for _, j := range jobs {
		cur, ok := out[j.Type]
		if !ok || j.TimeQueued.After(cur.TimeQueued) || (j.TimeQueued.Equal(cur.TimeQueued) && j.ID > cur.ID) {
			out[j.Type] = j
		}
	}
	return out
}

// Change returns the change and patchset numbers of a job whose Src is a
// patchset, and ok=false for postsubmit jobs.
func (j *Job) Change() (cl, ps int, ok bool) {
	rest, found := strings.CutPrefix(j.Src, "cls/")
	if !found {
		return 0, 0, false
	}
	cl, ps, err := ParsePatchsetID(rest)
	return cl, ps, err == nil
}

// String is for logs.
func (j *Job) String() string { return fmt.Sprintf("%s[%s]", j.ID, j.State) }
