// Package api serves Tollgate's read-only JSON API over the Store: patchsets,
// jobs, postsubmit runs and dead-lettered tasks. It is platform-neutral: the
// embedded runtime mounts it in `tollgate up` and the Cloud Run function
// serves the same handler.
//
// Every error is a JSON body {"error": {"code": "...", "message": "..."}}
// with the HTTP status of its code: unknown ids answer 404, malformed
// parameters 400.
package api

import (
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
)

// Options are the API's dependencies.
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
	Log      *slog.Logger
}

// New returns the API handler. It serves /api/v1/... and /healthz.
func New(o Options) http.Handler {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.LongPoll <= 0 {
		o.LongPoll = 25 * time.Second
	}
	s := &server{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/cls", s.listCLs)
	mux.HandleFunc("GET /api/v1/cls/{id}", s.getCL)
	mux.HandleFunc("GET /api/v1/jobs", s.listJobs)
	mux.HandleFunc("GET /api/v1/jobs/{id}", s.getJob)
	mux.HandleFunc("GET /api/v1/jobs/{id}/log", s.getLog)
	mux.HandleFunc("GET /api/v1/jobs/{id}/artifacts", s.listArtifacts)
	mux.HandleFunc("GET /api/v1/jobs/{id}/artifacts/{name...}", s.getArtifact)
	mux.HandleFunc("GET /api/v1/workers", s.listWorkers)
	mux.HandleFunc("GET /api/v1/workers/{id}", s.getWorker)
	mux.HandleFunc("GET /api/v1/branches", s.listBranches)
	mux.HandleFunc("GET /api/v1/tasks/dead", s.listDead)
	mux.HandleFunc("GET /healthz", s.healthz)
	// The links in Gerrit messages ({ui_url}/jobs/{id}, {ui_url}/cls/{id})
	// lead to the JSON until the web UI serves these paths.
	mux.HandleFunc("GET /jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/api/v1/jobs/"+url.PathEscape(r.PathValue("id")), http.StatusFound)
	})
	mux.HandleFunc("GET /cls/{id}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/api/v1/cls/"+url.PathEscape(r.PathValue("id")), http.StatusFound)
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errs.E(errs.NotFound, "api", "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

type server struct{ o Options }

// Page is a list response with the cursor of the next page ("" at the end).
type Page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// PatchsetWithJobs is the body of /api/v1/cls/{id}.
type PatchsetWithJobs struct {
	Patchset *model.Patchset `json:"patchset"`
	Jobs     []*model.Job    `json:"jobs"`
}

func (s *server) listCLs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pq := store.PatchsetQuery{Owner: q.Get("owner"), Cursor: q.Get("cursor")}
	var err error
	if pq.Change, err = intParam(q.Get("change"), "change"); err != nil {
		writeError(w, err)
		return
	}
	if pq.Limit, err = intParam(q.Get("limit"), "limit"); err != nil {
		writeError(w, err)
		return
	}
	if v := q.Get("pending"); v != "" {
		if pq.Pending, err = strconv.ParseBool(v); err != nil {
			writeError(w, errs.E(errs.InvalidArgument, "api", "pending must be true or false"))
			return
		}
	}
	items, next, err := s.o.Store.ListPatchsets(r.Context(), pq)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Page[*model.Patchset]{Items: nonNil(items), NextCursor: next})
}

func (s *server) getCL(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, _, err := model.ParsePatchsetID(id); err != nil {
		writeError(w, err)
		return
	}
	ps, jobs, err := s.o.Store.GetPatchsetWithJobs(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PatchsetWithJobs{Patchset: ps, Jobs: nonNil(jobs)})
}

func (s *server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	jq := store.JobQuery{Src: q.Get("src"), Worker: q.Get("worker"), Cursor: q.Get("cursor")}
	var err error
	if jq.Limit, err = intParam(q.Get("limit"), "limit"); err != nil {
		writeError(w, err)
		return
	}
	for _, v := range q["state"] {
		for _, name := range strings.Split(v, ",") {
			st, err := model.ParseState(name)
			if err != nil {
				writeError(w, err)
				return
			}
			jq.States = append(jq.States, st)
		}
	}
	items, next, err := s.o.Store.ListJobs(r.Context(), jq)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Page[*model.Job]{Items: nonNil(items), NextCursor: next})
}

func (s *server) getJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := model.ParseJobID(id); err != nil {
		writeError(w, err)
		return
	}
	j, err := s.o.Store.GetJob(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, j)
}

func (s *server) listBranches(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), "limit")
	if err != nil {
		writeError(w, err)
		return
	}
	items, next, err := s.o.Store.ListPostsubmits(r.Context(), q.Get("branch"), limit, q.Get("cursor"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Page[*model.Postsubmit]{Items: nonNil(items), NextCursor: next})
}

func (s *server) listDead(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r.URL.Query().Get("limit"), "limit")
	if err != nil {
		writeError(w, err)
		return
	}
	var items []model.DeadTask
	if s.o.Dead != nil {
		if items, err = s.o.Dead.ListDead(r.Context(), store.Limit(limit)); err != nil {
			writeError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, Page[model.DeadTask]{Items: nonNil(items)})
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	if _, err := s.o.Store.GetMeta(r.Context(), "healthz"); err != nil {
		writeError(w, errs.Wrap(errs.Unavailable, "healthz: store", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
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

// StatusOf maps an error code to an HTTP status.
func StatusOf(err error) int {
	switch errs.CodeOf(err) {
	case errs.NotFound:
		return http.StatusNotFound
	case errs.InvalidArgument:
		return http.StatusBadRequest
	case errs.AlreadyExists, errs.FailedPrecondition, errs.Aborted:
		return http.StatusConflict
	case errs.PermissionDenied:
		return http.StatusForbidden
	case errs.Unauthenticated:
		return http.StatusUnauthorized
	case errs.ResourceExhausted:
		return http.StatusTooManyRequests
	case errs.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError writes err as JSON with the status of its code. Internal errors
// are logged and answered without their details.
func writeError(w http.ResponseWriter, err error) {
	var b ErrorBody
	st := StatusOf(err)
	b.Error.Code = errs.CodeOf(err).String()
	b.Error.Message = err.Error()
	if st == http.StatusInternalServerError {
		slog.Error("api internal error", "err", err)
		b.Error.Message = "internal error"
	}
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
