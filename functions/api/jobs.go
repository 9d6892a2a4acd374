package api

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

// LogChunk is the body of /api/v1/jobs/{id}/log: the bytes of the log from
// Offset (as text; invalid UTF-8 shows as U+FFFD), where the next read
// starts, and whether the log is complete (the job ended).
type LogChunk struct {
	Offset     int64  `json:"offset"`
	NextOffset int64  `json:"next_offset"`
	Size       int64  `json:"size"`
	Data       string `json:"data"`
	Complete   bool   `json:"complete"`
}

// maxLogRead bounds one log response.
const maxLogRead = 1 << 20

// getLog answers the log from ?offset=N. With ?wait=1 and nothing new yet
// while the job runs, it waits (long poll) until bytes arrive, the job
// ends, or LongPoll passes. ?format=raw answers the bytes as text/plain.
func (s *server) getLog(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := model.ParseJobID(id); err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	off := int64(0)
	if v := q.Get("offset"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, errs.E(errs.InvalidArgument, "api", "offset must be a non-negative integer"))
			return
		}
		off = n
	}
	wait := q.Get("wait") == "1" || q.Get("wait") == "true"
	ctx := r.Context()
	deadline := time.Now().Add(s.o.LongPoll)
	for {
		j, err := s.o.Store.GetJob(ctx, id)
		if err != nil {
			writeError(w, err)
			return
		}
		data, size, err := s.o.Store.ReadLog(ctx, id, off, maxLogRead)
		if err != nil {
			writeError(w, err)
			return
		}
		done := j.State.Terminal()
		if len(data) > 0 || done || !wait || time.Now().After(deadline) {
			if q.Get("format") == "raw" {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.Header().Set("X-Content-Type-Options", "nosniff")
				w.Header().Set("X-Log-Next-Offset", strconv.FormatInt(off+int64(len(data)), 10))
				w.Header().Set("X-Log-Complete", strconv.FormatBool(done && off+int64(len(data)) >= size))
				_, _ = w.Write(data)
				return
			}
			writeJSON(w, http.StatusOK, LogChunk{Offset: off, NextOffset: off + int64(len(data)), Size: size,
				Data: string(data), Complete: done && off+int64(len(data)) >= size})
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Artifact is one entry of /api/v1/jobs/{id}/artifacts.
type Artifact struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	URL  string `json:"url"`
}

func (s *server) listArtifacts(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := model.ParseJobID(id); err != nil {
		writeError(w, err)
		return
	}
	if _, err := s.o.Store.GetJob(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	items := []Artifact{}
	if s.o.Blobs != nil {
		prefix := id + "/"
		for cursor := ""; ; {
			page, next, err := s.o.Blobs.List(r.Context(), prefix, 1000, cursor)
			if err != nil {
				writeError(w, err)
				return
			}
			for _, a := range page {
				name := a.Name[len(prefix):]
				items = append(items, Artifact{Name: name, Size: a.Size, URL: "/api/v1/jobs/" + id + "/artifacts/" + name})
			}
			if next == "" {
				break
			}
			cursor = next
		}
	}
	writeJSON(w, http.StatusOK, Page[Artifact]{Items: items})
}

// getArtifact serves one artifact. Artifacts come from jobs, so they are
// untrusted: they are served sandboxed (no scripts, no same-origin access).
func (s *server) getArtifact(w http.ResponseWriter, r *http.Request) {
	id, name := r.PathValue("id"), r.PathValue("name")
	if _, err := model.ParseJobID(id); err != nil {
		writeError(w, err)
		return
	}
	if err := blob.ValidName(name); err != nil {
		writeError(w, err)
		return
	}
	if s.o.Blobs == nil {
		writeError(w, errs.E(errs.NotFound, "api", "no artifact store"))
		return
	}
	attrs, err := s.o.Blobs.Stat(r.Context(), id+"/"+name)
	if err != nil {
		writeError(w, err)
		return
	}
	rc, err := s.o.Blobs.Get(r.Context(), id+"/"+name)
	if err != nil {
		writeError(w, err)
		return
	}
	defer rc.Close()
	ct := attrs.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.FormatInt(attrs.Size, 10))
	w.Header().Set("Content-Security-Policy", "sandbox")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = io.Copy(w, rc)
}

// WorkerView is a worker with whether it counts as alive.
type WorkerView struct {
	*model.Worker
	Alive bool `json:"alive"`
}

// WorkerDetail is the body of /api/v1/workers/{id}.
type WorkerDetail struct {
	Worker     WorkerView   `json:"worker"`
	RecentJobs []*model.Job `json:"recent_jobs"`
}

func (s *server) view(wk *model.Worker) WorkerView {
	return WorkerView{Worker: wk, Alive: s.o.WorkerDeath <= 0 || wk.Alive(s.o.Clock.Now(), s.o.WorkerDeath)}
}

func (s *server) listWorkers(w http.ResponseWriter, r *http.Request) {
	ws, err := s.o.Store.ListWorkers(r.Context(), time.Time{})
	if err != nil {
		writeError(w, err)
		return
	}
	items := make([]WorkerView, 0, len(ws))
	for _, wk := range ws {
		items = append(items, s.view(wk))
	}
	writeJSON(w, http.StatusOK, Page[WorkerView]{Items: items})
}

func (s *server) getWorker(w http.ResponseWriter, r *http.Request) {
	wk, err := s.o.Store.GetWorker(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	jobs, _, err := s.o.Store.ListJobs(r.Context(), store.JobQuery{Worker: wk.ID, Limit: 50})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, WorkerDetail{Worker: s.view(wk), RecentJobs: nonNil(jobs)})
}
