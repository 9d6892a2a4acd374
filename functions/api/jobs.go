package api

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/auth"
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
func (s *Server) getLog(w http.ResponseWriter, r *http.Request) {
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
		if off+int64(len(data)) < size {
			// More follows: end this read on a whole UTF-8 character, so
			// one is never split into two U+FFFD between reads.
			data = data[:completeUTF8(data)]
		}
		done := j.State.Terminal()
		if len(data) > 0 || done || !wait || time.Now().After(deadline) {
			if q.Get("format") == "raw" {
				// Without wait, raw is the whole log from off (as it is
				// now); with wait, one chunk, like the JSON.
				end := off + int64(len(data))
				if !wait {
					end = max(end, size)
				}
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.Header().Set("X-Content-Type-Options", "nosniff")
				w.Header().Set("X-Log-Next-Offset", strconv.FormatInt(end, 10))
				w.Header().Set("X-Log-Complete", strconv.FormatBool(done && end >= size))
				if _, err := w.Write(data); err != nil {
					return
				}
				for at := off + int64(len(data)); at < end; {
					more, _, err := s.o.Store.ReadLog(ctx, id, at, int(min(maxLogRead, end-at)))
					if err != nil || len(more) == 0 {
						return // the answer is cut short; the client sees fewer bytes than X-Log-Next-Offset says
					}
					if _, err := w.Write(more); err != nil {
						return
					}
					at += int64(len(more))
				}
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

// completeUTF8 returns the length of b without a trailing incomplete UTF-8
// sequence (at most 3 bytes are dropped; invalid bytes are kept).
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		c := b[i]
		if c < 0x80 {
			return len(b) // ASCII: nothing pending
		}
		if c >= 0xC0 { // a leading byte: is its sequence complete?
			need := 2
			switch {
			case c >= 0xF0:
				need = 4
			case c >= 0xE0:
				need = 3
			}
			if len(b)-i < need {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}

// Artifact is one entry of /api/v1/jobs/{id}/artifacts.
type Artifact struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	URL  string `json:"url"`
}

func (s *Server) listArtifacts(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := model.ParseJobID(id); err != nil {
		writeError(w, err)
		return
	}
	if _, err := s.o.Store.GetJob(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	items, err := s.Artifacts(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Page[Artifact]{Items: items})
}

// Artifacts lists a job's artifacts, each with its download URL.
func (s *Server) Artifacts(ctx context.Context, id string) ([]Artifact, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	items := []Artifact{}
	if s.o.Blobs == nil {
		return items, nil
	}
	prefix := id + "/"
	for cursor := ""; ; {
		page, next, err := s.o.Blobs.List(ctx, prefix, 1000, cursor)
		if err != nil {
			return nil, err
		}
		for _, a := range page {
			name := a.Name[len(prefix):]
			items = append(items, Artifact{Name: name, Size: a.Size, URL: "/api/v1/jobs/" + url.PathEscape(id) + "/artifacts/" + escapePath(name)})
		}
		if next == "" {
			return items, nil
		}
		cursor = next
	}
}

// escapePath escapes each segment of a slash-separated name.
func escapePath(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// getArtifact serves one artifact. Artifacts come from jobs, so they are
// untrusted: they are served sandboxed (no scripts, no same-origin access).
func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request) {
	v, err := s.Workers(r.Context(), r.URL.Query().Get("sort"))
	reply(w, v, err)
}

func (s *Server) getWorker(w http.ResponseWriter, r *http.Request) {
	v, err := s.Worker(r.Context(), r.PathValue("id"))
	reply(w, v, err)
}
