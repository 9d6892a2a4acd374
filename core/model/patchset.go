package model

import (
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// Patchset is one revision of a Gerrit change that got jobs.
type Patchset struct {
	ID         string    `json:"id"` // "{cl}-{ps}"
	Change     int       `json:"change"`
	Patchset   int       `json:"patchset"`
	ChangeID   string    `json:"change_id"` // Gerrit's "project~branch~Ixxx" id
	Revision   string    `json:"revision"`
	Ref        string    `json:"ref"` // refs/changes/NN/CL/PS
	Project    string    `json:"project"`
	Branch     string    `json:"branch"`
	Subject    string    `json:"subject,omitempty"`
	Owner      string    `json:"owner"`    // owner's email
	Uploader   string    `json:"uploader"` // uploader's email
	TimeQueued time.Time `json:"time_queued"`
	TimeEnded  time.Time `json:"time_ended,omitzero"`
	// WantsVote is set when the ready label was approved by a trusted account.
	WantsVote bool     `json:"wants_vote"`
	JobIDs    []string `json:"job_ids"`

	// Round counts the patchset's review rounds: 1 at creation, one more
	// each time jobs are added (a retry or a recheck) after a review was
	// recorded. Gerrit gets one tagged message per round, which is how a
	// retried vote recognises that this round's message is already posted.
	Round int `json:"round,omitempty"`
	// RoundStarted is when the current round began (zero: at TimeQueued);
	// timeouts.cl and the completion time count from it.
	RoundStarted time.Time `json:"round_started,omitzero"`

	// Voting. VoteStarted is the lease of the comment_and_vote run that is
	// posting; Voted is set once the review was posted (or found posted).
	VoteStarted time.Time `json:"vote_started,omitzero"`
	VoteAttempt int       `json:"vote_attempt,omitempty"`
	Voted       bool      `json:"voted"`
	Vote        int       `json:"vote,omitempty"` // the label value posted; 0: message only
	Message     string    `json:"message,omitempty"`
	// MetricsDone is set once the completion time was written.
	MetricsDone bool `json:"metrics_done,omitempty"`
}

// Src is the job source of the patchset.
func (p *Patchset) Src() string { return "cls/" + p.ID }

// Pending reports whether some job of the patchset may still run.
func (p *Patchset) Pending() bool { return p.TimeEnded.IsZero() }

// RoundStart is when the current review round began.
func (p *Patchset) RoundStart() time.Time {
	if p.RoundStarted.IsZero() {
		return p.TimeQueued
	}
	return p.RoundStarted
}

// CurrentRound is Round, reading a record written before rounds existed as round 1.
func (p *Patchset) CurrentRound() int { return max(p.Round, 1) }

// PatchsetUpdate is one change to a patchset, applied atomically by the Store.
type PatchsetUpdate struct {
	Kind PatchsetUpdateKind
	Now  time.Time
	// ClaimVote and Reopen: how long a vote claim holds before another run
	// may take it over.
	Lease time.Duration
	// MarkVoted: what was posted.
	Vote    int
	Message string
}

// PatchsetUpdateKind names a patchset update.
type PatchsetUpdateKind int

const (
	// SetWantsVote turns WantsVote on; FailedPrecondition if it was on.
	SetWantsVote PatchsetUpdateKind = iota + 1
	// End sets TimeEnded; FailedPrecondition if it was set.
	End
	// ClaimVote takes the right to post the review: FailedPrecondition if
	// already voted, not ended (the round's jobs still run: a reopen came
	// between the caller's read and its claim), or another claim is younger
	// than its lease. It counts attempts, so a run that sees VoteAttempt > 1
	// knows an earlier run may have posted and checks Gerrit first.
	ClaimVote
	// MarkVoted records the posted review; FailedPrecondition if already
	// voted or not ended (reopened under a claim that outlived its lease).
	MarkVoted
	// MarkPatchsetMetrics sets MetricsDone; FailedPrecondition if already set.
	MarkPatchsetMetrics
	// Reopen makes the patchset pending again because jobs were added to it
	// (a retry or a recheck): it clears the end, the vote and the metrics
	// flag, so the patchset ends and votes again once the new jobs end, and
	// starts the new round at Now. Round grows only when the previous round
	// recorded a review, so the count of tagged messages on the revision
	// keeps matching Round (a pending round just gains jobs).
	// FailedPrecondition while a vote claim younger than Lease is live: the
	// review of the previous round is being posted, and the caller should
	// try again in a moment.
	Reopen
)

// Apply changes p by u, or returns FailedPrecondition leaving p unchanged.
// Like Job.Apply, it is the single statement of these rules for every Store.
func (p *Patchset) Apply(u PatchsetUpdate) error {
	const op = "model.Patchset.Apply"
	now := u.Now.UTC()
	switch u.Kind {
	case SetWantsVote:
		if p.WantsVote {
			return errs.E(errs.FailedPrecondition, op, "patchset %s already wants a vote", p.ID)
		}
		p.WantsVote = true
		return nil
	case End:
		if !p.TimeEnded.IsZero() {
			return errs.E(errs.FailedPrecondition, op, "patchset %s already ended", p.ID)
		}
		p.TimeEnded = now
		return nil
	case ClaimVote:
		if p.Voted {
			return errs.E(errs.FailedPrecondition, op, "patchset %s already voted", p.ID)
		}
		if p.Pending() {
			return errs.E(errs.FailedPrecondition, op, "patchset %s has jobs that have not ended", p.ID)
		}
		if !p.VoteStarted.IsZero() && now.Before(p.VoteStarted.Add(u.Lease)) {
			return errs.E(errs.FailedPrecondition, op, "patchset %s is being voted on since %s", p.ID, p.VoteStarted.Format(time.RFC3339))
		}
		p.VoteStarted = now
		p.VoteAttempt++
		return nil
	case MarkVoted:
		if p.Voted {
			return errs.E(errs.FailedPrecondition, op, "patchset %s already voted", p.ID)
		}
		if p.Pending() {
			return errs.E(errs.FailedPrecondition, op, "patchset %s was reopened", p.ID)
		}
		p.Voted, p.Vote, p.Message = true, u.Vote, u.Message
		return nil
	case Reopen:
		if !p.Voted && !p.VoteStarted.IsZero() && now.Before(p.VoteStarted.Add(u.Lease)) {
			return errs.E(errs.FailedPrecondition, op, "patchset %s: its review is being posted; try again in a moment", p.ID)
		}
		round := p.CurrentRound()
		if p.Voted {
			round++
		}
		p.Round, p.RoundStarted, p.TimeEnded = round, now, time.Time{}
		p.VoteStarted, p.VoteAttempt, p.Voted, p.Vote, p.Message = time.Time{}, 0, false, 0, ""
		p.MetricsDone = false
		return nil
	case MarkPatchsetMetrics:
		if p.MetricsDone {
			return errs.E(errs.FailedPrecondition, op, "metrics of patchset %s already written", p.ID)
		}
		p.MetricsDone = true
		return nil
	}
	return errs.E(errs.InvalidArgument, op, "unknown patchset update %d", u.Kind)
}

// Postsubmit is one run of the postsubmit jobs on a branch commit.
type Postsubmit struct {
	ID            string    `json:"id"` // "{branch}-{committed YYYYmmddHHMMSS}"
	Branch        string    `json:"branch"`
	Revision      string    `json:"revision"`
	Subject       string    `json:"subject"`
	Author        string    `json:"author"`
	TimeCommitted time.Time `json:"time_committed"`
	TimeQueued    time.Time `json:"time_queued"`
	JobIDs        []string  `json:"job_ids"`
}

// Src is the job source of the run.
func (p *Postsubmit) Src() string { return "branches/" + p.ID }

// WorkerState is a worker's state.
type WorkerState string

const (
	WorkerIdle        WorkerState = "IDLE"
	WorkerBusy        WorkerState = "BUSY"
	WorkerQuarantined WorkerState = "QUARANTINED"
)

// Worker is a machine (or a slot on one) that runs jobs.
type Worker struct {
	ID         string            `json:"id"`
	Host       string            `json:"host"`
	Version    string            `json:"version"`
	Labels     map[string]string `json:"labels,omitempty"`
	State      WorkerState       `json:"state"`
	CurrentJob string            `json:"current_job,omitempty"`
	LastSeen   time.Time         `json:"last_seen"`
	FirstSeen  time.Time         `json:"first_seen"`
}

// Alive reports whether w was seen within deathTimeout of now.
func (w *Worker) Alive(now time.Time, deathTimeout time.Duration) bool {
	return now.Sub(w.LastSeen) <= deathTimeout
}

// Sample is one point of a time series the Store keeps for the stats page
// (the queue length over time).
type Sample struct {
	Time  time.Time `json:"time"`
	Value float64   `json:"value"`
}

// DeadTask is a deferred task that exhausted its attempts or could never succeed.
type DeadTask struct {
	ID        string    `json:"id"`
	Action    string    `json:"action"`
	Args      string    `json:"args"` // JSON
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error"`
	Time      time.Time `json:"time"`
}
