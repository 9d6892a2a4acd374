// Package api serves Tollgate's JSON API over the Store: patchsets, jobs,
// their logs and artifacts, workers, postsubmit runs, statistics and
// dead-lettered tasks, and the actions people take on them (cancel, retry,
// recheck, quarantine, delete). It is platform-neutral: `tollgate up` and
// the Cloud Run function serve it, inside the web UI (functions/ui), which
// renders the same views as pages. API.md, next to this file, is the
// reference.
//
// Every error is a JSON body {"error": {"code": "...", "message": "..."}}
// with the HTTP status of its code (StatusOf): unknown ids answer 404,
// malformed parameters 400, refused actions 403 (and change nothing).
package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/tasks"
	"github.com/tollgate-ci/tollgate/functions/auth"
)

// Options are the API's dependencies. Store is required.
type Options struct {
	Store store.Store
	// Dead lists dead-lettered tasks; nil answers an empty list.
	Dead tasks.DeadLetters
	// Blobs holds job artifacts; nil answers an empty list.
	Blobs blob.Bucket
	// Clock stamps "alive" in the workers list (default: real).
	Clock clock.Clock
	// WorkerDeath is how long a silent worker still counts as alive.
	WorkerDeath time.Duration
	// LongPoll bounds how long a log read waits for new bytes (default 25s).
	LongPoll time.Duration
	// Auth identifies callers and guards actions. Nil: every read is open
	// to anyone and every action is refused (a read-only API).
	Auth *auth.Authenticator
	// Actions cancels, retries and rechecks (the controller). Nil: those
	// actions answer Unavailable.
	Actions Actions
	// RevokeWorker revokes a deleted worker's worker API token
	// (workerapi.Revoke); nil: deleting only removes the record.
	RevokeWorker func(ctx context.Context, workerID string) error
	// Branches are the watched branches, for the postsubmit filter.
	Branches []string
	Log      *slog.Logger
}

// New returns the API handler. It serves /api/v1/... and /healthz.
func New(o Options) http.Handler { return NewServer(o).Handler() }

// Server holds the API's views and actions. Handler serves them as JSON;
// the web UI renders the same views as pages, so both show the same data
// under the same names.
type Server struct {
	o   Options
	mux *http.ServeMux
}

// NewServer returns a Server.
func NewServer(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.LongPoll <= 0 {
		o.LongPoll = 25 * time.Second
	}
	s := &Server{o: o, mux: http.NewServeMux()}
	read := func(pattern string, h http.HandlerFunc) { s.mux.Handle(pattern, s.guard(h)) }
	s.mux.HandleFunc("GET /api/v1/whoami", s.whoami) // open: it tells callers why they are refused
	read("GET /api/v1/overview", s.getOverview)
	read("GET /api/v1/cls", s.listCLs)
	read("GET /api/v1/cls/{id}", s.getCL)
	read("GET /api/v1/jobs", s.listJobs)
	read("GET /api/v1/jobs/{id}", s.getJob)
	read("GET /api/v1/jobs/{id}/log", s.getLog)
	read("GET /api/v1/jobs/{id}/artifacts", s.listArtifacts)
	read("GET /api/v1/jobs/{id}/artifacts/{name...}", s.getArtifact)
	read("GET /api/v1/workers", s.listWorkers)
	read("GET /api/v1/workers/{id}", s.getWorker)
	read("GET /api/v1/branches", s.listBranches)
	read("GET /api/v1/stats", s.getStats)
	read("GET /api/v1/tasks/dead", s.listDead)
	s.mux.HandleFunc("POST /api/v1/jobs/{id}/cancel", s.postCancel)
	s.mux.HandleFunc("POST /api/v1/jobs/{id}/retry", s.postRetry)
	s.mux.HandleFunc("POST /api/v1/cls/{id}/recheck", s.postRecheck)
	s.mux.HandleFunc("POST /api/v1/workers/{id}/quarantine", s.postQuarantine(true))
	s.mux.HandleFunc("POST /api/v1/workers/{id}/unquarantine", s.postQuarantine(false))
	s.mux.HandleFunc("DELETE /api/v1/workers/{id}", s.deleteWorker)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	// The links in Gerrit messages ({ui_url}/jobs/{id}, {ui_url}/cls/{id})
	// lead to the JSON when the API is served without the web UI (which
	// serves these paths itself).
	s.mux.HandleFunc("GET /jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/api/v1/jobs/"+url.PathEscape(r.PathValue("id")), http.StatusFound)
	})
	s.mux.HandleFunc("GET /cls/{id}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/api/v1/cls/"+url.PathEscape(r.PathValue("id")), http.StatusFound)
	})
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errs.E(errs.NotFound, "api", "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s
}

// Handler serves the API, identifying callers when Options.Auth is set.
func (s *Server) Handler() http.Handler {
	if s.o.Auth == nil {
		return s.mux
	}
	return s.o.Auth.Middleware(s.mux)
}

// Auth returns Options.Auth.
func (s *Server) Auth() *auth.Authenticator { return s.o.Auth }

// require checks the caller holds role. Without Auth, reading is open and
// acting refused.
func (s *Server) require(ctx context.Context, role auth.Role) error {
	if s.o.Auth == nil {
		if role == auth.User {
			return nil
		}
		return errs.E(errs.PermissionDenied, "api", "this server has no authentication configured: it is read-only")
	}
	return auth.Require(ctx, role)
}

// guard answers 403 to callers without the user role.
func (s *Server) guard(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.require(r.Context(), auth.User); err != nil {
			writeError(w, err)
			return
		}
		h(w, r)
	})
}

// checkMutation guards a JSON action: the role, and an XSRF token unless
// the caller used a bearer token.
func (s *Server) checkMutation(r *http.Request, role auth.Role) error {
	if s.o.Auth == nil {
		return s.require(r.Context(), role)
	}
	return s.o.Auth.CheckMutation(r, role)
}

// Page is a list response with the cursor of the next page ("" at the end).
type Page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Whoami is the body of /api/v1/whoami: the caller, their roles, and an
// XSRF token for JSON actions made without a bearer token.
type Whoami struct {
	auth.Identity
	XSRFToken string `json:"xsrf_token,omitempty"`
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	out := Whoami{Identity: auth.Identity{Roles: []auth.Role{auth.User}}}
	if s.o.Auth != nil {
		out.Identity, _ = auth.FromContext(r.Context())
		out.XSRFToken = s.o.Auth.XSRFToken(r.Context())
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getOverview(w http.ResponseWriter, r *http.Request) {
	v, err := s.Overview(r.Context())
	reply(w, v, err)
}

// ParsePatchsetsQuery reads the filters of /api/v1/cls and /cls:
// change, owner, state (pending or ended; the old pending=true too),
// limit, cursor.
func ParsePatchsetsQuery(q url.Values) (store.PatchsetQuery, error) {
	pq := store.PatchsetQuery{Owner: strings.TrimSpace(q.Get("owner")), Cursor: q.Get("cursor")}
	var err error
	if pq.Change, err = intParam(q.Get("change"), "change"); err != nil {
		return pq, err
	}
	if pq.Limit, err = intParam(q.Get("limit"), "limit"); err != nil {
		return pq, err
	}
	if v := q.Get("pending"); v != "" {
		if pq.Pending, err = strconv.ParseBool(v); err != nil {
			return pq, errs.E(errs.InvalidArgument, "api", "pending must be true or false")
		}
	}
	switch q.Get("state") {
	case "", "all":
	case "pending":
		pq.Pending = true
	case "ended":
		pq.Ended = true
	default:
		return pq, errs.E(errs.InvalidArgument, "api", "state must be pending, ended or all, got %q", q.Get("state"))
	}
	return pq, pq.Check()
}

func (s *Server) listCLs(w http.ResponseWriter, r *http.Request) {
	pq, err := ParsePatchsetsQuery(r.URL.Query())
	if err != nil {
		writeError(w, err)
		return
	}
	v, err := s.Patchsets(r.Context(), pq)
	reply(w, v, err)
}

func (s *Server) getCL(w http.ResponseWriter, r *http.Request) {
	v, err := s.Patchset(r.Context(), r.PathValue("id"))
	reply(w, v, err)
}

// ParseJobsQuery reads the filters of /api/v1/jobs and /jobs: state
// (repeated or comma-separated), src, worker, order (queued, started or
// ended), limit, cursor.
func ParseJobsQuery(q url.Values) (store.JobQuery, error) {
	jq := store.JobQuery{Src: q.Get("src"), Worker: q.Get("worker"), Cursor: q.Get("cursor"), OrderBy: store.JobOrder(q.Get("order"))}
	var err error
	if jq.Limit, err = intParam(q.Get("limit"), "limit"); err != nil {
		return jq, err
	}
	for _, v := range q["state"] {
		for _, name := range strings.Split(v, ",") {
			if strings.TrimSpace(name) == "" {
				continue
			}
			st, err := model.ParseState(name)
			if err != nil {
				return jq, err
			}
			jq.States = append(jq.States, st)
		}
	}
	return jq, jq.Check()
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	jq, err := ParseJobsQuery(r.URL.Query())
	if err != nil {
		writeError(w, err)
		return
	}
	v, err := s.Jobs(r.Context(), jq)
	reply(w, v, err)
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	v, err := s.Job(r.Context(), r.PathValue("id"))
	reply(w, v, err)
}

func (s *Server) listBranches(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), "limit")
	if err != nil {
		writeError(w, err)
		return
	}
	v, err := s.Postsubmits(r.Context(), q.Get("branch"), limit, q.Get("cursor"))
	reply(w, v, err)
}

func (s *Server) getStats(w http.ResponseWriter, r *http.Request) {
	window, err := ParseWindow(r.URL.Query().Get("window"))
	if err != nil {
		writeError(w, err)
		return
	}
	v, err := s.Stats(r.Context(), window)
	reply(w, v, err)
}

func (s *Server) listDead(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r.URL.Query().Get("limit"), "limit")
	if err != nil {
		writeError(w, err)
		return
	}
	items, err := s.DeadTasks(r.Context(), limit)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Page[model.DeadTask]{Items: items})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if _, err := s.o.Store.GetMeta(r.Context(), "healthz"); err != nil {
		writeError(w, errs.Wrap(errs.Unavailable, "healthz: store", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// reply writes v, or err.
func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func intParam(v, name string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errs.E(errs.InvalidArgument, "api", "%s must be a non-negative integer, got %q", name, v)
	}
	return n, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// StatusOf maps an error code to an HTTP status (errs.HTTPStatus).
func StatusOf(err error) int { return errs.HTTPStatus(err) }

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// PublicMessage is what a caller may see of err: internal errors are
// logged and answered without their details.
func PublicMessage(err error) string {
	if StatusOf(err) == http.StatusInternalServerError {
		slog.Error("api internal error", "err", err)
		return "internal error"
	}
	return err.Error()
}

// writeError writes err as JSON with the status of its code.
func writeError(w http.ResponseWriter, err error) {
	var b ErrorBody
	st := StatusOf(err)
	b.Error.Code = errs.CodeOf(err).String()
	b.Error.Message = PublicMessage(err)
	if b.Error.Code == errs.Unknown.String() {
		b.Error.Code = "Internal"
	}
	writeJSON(w, st, b)
}

// WriteError is writeError for other handlers sharing the error shape.
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
