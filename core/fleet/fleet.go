// Package fleet is the controller's side of the workers: registration and
// heartbeats, job claims, log chunks, artifacts and results.
//
// Backend is the worker's whole view of Tollgate. Service implements it on
// the ports (the direct transport: in-process workers under `tollgate up`,
// and workers reading Firestore in Google Cloud mode); the HTTP worker API
// serves the same Service to workers on other machines and its client
// implements Backend again, so one worker runs on either transport.
package fleet

import (
	"context"
	"io"
	"time"

	"github.com/tollgate-ci/tollgate/core/model"
)

// Backend is what a worker calls. Every method is safe to retry: a repeated
// call after a lost answer has the effect of one call.
//
// Errors: NotFound (Claim: nothing to run; others: unknown job),
// FailedPrecondition (the job is no longer this worker's, e.g. it was
// cancelled or its lease given away; the worker must stop it),
// PermissionDenied (quarantined worker claiming), InvalidArgument (bad
// names or ids), Unavailable (retry later).
type Backend interface {
	// Heartbeat records that the worker is alive, what it runs and its
	// labels. The answer lists jobs it must stop and the intervals to use.
	Heartbeat(ctx context.Context, hb Heartbeat) (*HeartbeatReply, error)

	// Claim gives the worker the next queued job it may run (its labels
	// meet the job's requirements; presubmit first, then in fair order),
	// now STARTED by it, or NotFound.
	Claim(ctx context.Context, workerID string) (*Assignment, error)

	// AppendLog stores a chunk of the job's output at byte offset off.
	// Appending the same chunk again is a no-op; a gap is FailedPrecondition.
	AppendLog(ctx context.Context, workerID, jobID string, off int64, data []byte) error

	// PutArtifact stores a file the job produced, as "{jobID}/{name}".
	// name must be a clean relative path (blob.ValidName).
	PutArtifact(ctx context.Context, workerID, jobID, name string, r io.Reader) error

	// Finish records the job's end. State is COMPLETED, FAILED, TIMED_OUT,
	// CANCELLED or INTERRUPTED (INTERRUPTED jobs are queued again once). If
	// the job already ended the same way it is a no-op; if it was taken from
	// this worker, FailedPrecondition.
	Finish(ctx context.Context, r Result) error
}

// Heartbeat is what a worker reports.
type Heartbeat struct {
	WorkerID   string            `json:"worker_id"`
	Host       string            `json:"host"`
	Version    string            `json:"version"`
	Labels     map[string]string `json:"labels,omitempty"`
	CurrentJob string            `json:"current_job,omitempty"` // "" when idle
}

// HeartbeatReply tells a worker what to do.
type HeartbeatReply struct {
	// Cancel lists jobs the worker runs that it must stop (cancelled,
	// timed out by the controller, or given to another worker).
	Cancel []string `json:"cancel,omitempty"`
	// Quarantined workers run nothing new.
	Quarantined bool `json:"quarantined,omitempty"`
	// HeartbeatEvery and PollEvery are the server-chosen intervals.
	HeartbeatEvery time.Duration `json:"heartbeat_every"`
	PollEvery      time.Duration `json:"poll_every"`
}

// Assignment is a claimed job with everything needed to run it.
type Assignment struct {
	Job     *model.Job        `json:"job"`
	Command []string          `json:"command"`
	Env     map[string]string `json:"env"` // the job's env plus the TOLLGATE_* variables
	Timeout time.Duration     `json:"timeout"`
	// Checkout is what the worker checks out before the command runs; nil
	// runs the command in an empty work tree.
	Checkout *Checkout `json:"checkout,omitempty"`
	// Network is the job type's network mode: "" (egress through the
	// worker's filtering proxy) or "none".
	Network string `json:"network,omitempty"`
}

// Checkout is a job's model.Checkout plus where to fetch it from.
type Checkout struct {
	model.Checkout
	// URL is the project's anonymous git URL, {gerrit.url}/{project}; a
	// worker holding Gerrit credentials fetches from {gerrit.url}/a/{project}.
	URL string `json:"url"`
	// AuthURL is {gerrit.url}/a/{project}.
	AuthURL string `json:"auth_url"`
}

// Result is how a job ended.
type Result struct {
	WorkerID string      `json:"worker_id"`
	JobID    string      `json:"job_id"`
	State    model.State `json:"state"`
	ExitCode *int        `json:"exit_code,omitempty"`
	Reason   string      `json:"reason,omitempty"`
}
