package api

import (
	"context"
	"net/http"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/auth"
)

// Actions are the controller's operations the API exposes
// (*controller.Controller implements them).
type Actions interface {
	// CancelJob cancels a queued or running job; an ended job is left alone.
	CancelJob(ctx context.Context, id, reason string) error
	// RetryJob queues a new run of an ended job.
	RetryJob(ctx context.Context, id, by string) (*model.Job, error)
	// Recheck queues new runs of a patchset's failed jobs.
	Recheck(ctx context.Context, patchsetID, by string) ([]*model.Job, error)
}

func (s *Server) actions() (Actions, error) {
	if s.o.Actions == nil {
		return nil, errs.E(errs.Unavailable, "api", "this server has no controller to act with")
	}
	return s.o.Actions, nil
}

func caller(ctx context.Context) string {
	id, _ := auth.FromContext(ctx)
	return id.Name()
}

// CancelJob cancels a queued or running job for a privileged caller and
// returns it CANCELLED; FailedPrecondition if it had already ended.
func (s *Server) CancelJob(ctx context.Context, id string) (*JobRow, error) {
	if err := s.require(ctx, auth.Privileged); err != nil {
		return nil, err
	}
	a, err := s.actions()
	if err != nil {
		return nil, err
	}
	if _, err := model.ParseJobID(id); err != nil {
		return nil, err
	}
	if _, err := s.o.Store.GetJob(ctx, id); err != nil {
		return nil, err
	}
	if err := a.CancelJob(ctx, id, "cancelled by "+caller(ctx)); err != nil {
		return nil, err
	}
	j, err := s.o.Store.GetJob(ctx, id)
	if err != nil {
		return nil, err
	}
	if j.State != model.Cancelled {
		return nil, errs.E(errs.FailedPrecondition, "api", "job %s already ended as %s", id, j.State)
	}
	s.o.Log.InfoContext(ctx, "job cancelled", "job", id, "by", caller(ctx))
	r := Row(j, s.o.Clock.Now())
	return &r, nil
}

// RetryJob queues a new run of an ended job for a privileged caller.
func (s *Server) RetryJob(ctx context.Context, id string) (*JobRow, error) {
	if err := s.require(ctx, auth.Privileged); err != nil {
		return nil, err
	}
	a, err := s.actions()
	if err != nil {
		return nil, err
	}
	j, err := a.RetryJob(ctx, id, caller(ctx))
	if err != nil {
		return nil, err
	}
	r := Row(j, s.o.Clock.Now())
	return &r, nil
}

// Recheck queues new runs of a patchset's failed jobs for a privileged caller.
func (s *Server) Recheck(ctx context.Context, patchsetID string) ([]JobRow, error) {
	if err := s.require(ctx, auth.Privileged); err != nil {
		return nil, err
	}
	a, err := s.actions()
	if err != nil {
		return nil, err
	}
	jobs, err := a.Recheck(ctx, patchsetID, caller(ctx))
	if err != nil {
		return nil, err
	}
	return s.rows(jobs), nil
}

// SetQuarantine quarantines a worker (it takes no new job; the one it runs
// finishes) or lifts its quarantine, for an admin.
func (s *Server) SetQuarantine(ctx context.Context, id string, on bool) (*WorkerView, error) {
	if err := s.require(ctx, auth.Admin); err != nil {
		return nil, err
	}
	w, err := s.o.Store.SetWorkerQuarantined(ctx, id, on)
	if err != nil {
		return nil, err
	}
	s.o.Log.InfoContext(ctx, "worker quarantine", "worker", id, "quarantined", on, "by", caller(ctx))
	v := s.view(w)
	return &v, nil
}

// DeleteWorker removes a worker's record and revokes its worker API token,
// for an admin. NotFound if there is no such worker. A job it still runs
// is released as BOT_DIED by the reaper once timeouts.worker_death passes;
// a worker that still runs can enroll again if it holds the enroll secret
// (quarantine keeps it from taking jobs).
func (s *Server) DeleteWorker(ctx context.Context, id string) error {
	if err := s.require(ctx, auth.Admin); err != nil {
		return err
	}
	if _, err := s.o.Store.GetWorker(ctx, id); err != nil {
		return err
	}
	if s.o.RevokeWorker != nil {
		if err := s.o.RevokeWorker(ctx, id); err != nil {
			return err
		}
	}
	if err := s.o.Store.DeleteWorker(ctx, id); err != nil {
		return err
	}
	s.o.Log.InfoContext(ctx, "worker deleted", "worker", id, "by", caller(ctx))
	return nil
}

// JobReply is the body of a job action's answer.
type JobReply struct {
	Job JobRow `json:"job"`
}

// JobsReply is the body of a recheck's answer: the new jobs.
type JobsReply struct {
	Jobs []JobRow `json:"jobs"`
}

// WorkerReply is the body of a quarantine's answer.
type WorkerReply struct {
	Worker WorkerView `json:"worker"`
}

func (s *Server) postCancel(w http.ResponseWriter, r *http.Request) {
	if err := s.checkMutation(r, auth.Privileged); err != nil {
		writeError(w, err)
		return
	}
	j, err := s.CancelJob(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, JobReply{Job: *j})
}

func (s *Server) postRetry(w http.ResponseWriter, r *http.Request) {
	if err := s.checkMutation(r, auth.Privileged); err != nil {
		writeError(w, err)
		return
	}
	j, err := s.RetryJob(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, JobReply{Job: *j})
}

func (s *Server) postRecheck(w http.ResponseWriter, r *http.Request) {
	if err := s.checkMutation(r, auth.Privileged); err != nil {
		writeError(w, err)
		return
	}
	jobs, err := s.Recheck(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, JobsReply{Jobs: jobs})
}

func (s *Server) postQuarantine(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.checkMutation(r, auth.Admin); err != nil {
			writeError(w, err)
			return
		}
		v, err := s.SetQuarantine(r.Context(), r.PathValue("id"), on)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, WorkerReply{Worker: *v})
	}
}

func (s *Server) deleteWorker(w http.ResponseWriter, r *http.Request) {
	if err := s.checkMutation(r, auth.Admin); err != nil {
		writeError(w, err)
		return
	}
	if err := s.DeleteWorker(r.Context(), r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
