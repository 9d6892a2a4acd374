package gerrit

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Fault makes the REST API or git smart HTTP misbehave for matching
// requests. Faults never apply to the control API. When several faults match, the oldest active
// one applies.
type Fault struct {
	// PathPrefix selects requests whose path, without the /a prefix, starts
	// with it, e.g. "/changes/", "/projects/", or "/demo/hello/" for the
	// git requests of project demo/hello ("/demo/hello/git-upload-pack" for
	// its fetches only). Empty matches every REST and git request.
	PathPrefix string
	// Method selects one HTTP method; empty matches all.
	Method string
	// Status, when set, answers with this status (429 or 5xx) and a short
	// text body instead of serving the request.
	Status int
	// Delay holds the request this long (real time) before it is answered,
	// failed or dropped. A request's context ending or Close cuts it short.
	Delay time.Duration
	// Drop closes the connection without an answer (hijacking it), so the
	// client sees a transport error.
	Drop bool
	// Count limits the fault to the next Count matching requests; 0 means
	// no limit.
	Count int
	// Duration limits the fault to this long after InjectFault, measured on
	// the server's Clock; 0 means no limit.
	Duration time.Duration
}

type faultState struct {
	id      int
	f       Fault
	left    int // remaining count when f.Count > 0
	expires time.Time
}

// InjectFault adds a fault and returns its id (for RemoveFault). A Status
// other than 0, 429 or 5xx, a negative Count, Delay or Duration, or a fault
// that does nothing, is ErrInvalid.
func (s *Server) InjectFault(f Fault) (int, error) {
	if f.Status != 0 && f.Status != http.StatusTooManyRequests && (f.Status < 500 || f.Status > 599) {
		return 0, fmt.Errorf("inject fault: status %d is not 429 or 5xx: %w", f.Status, ErrInvalid)
	}
	if f.Count < 0 || f.Delay < 0 || f.Duration < 0 {
		return 0, fmt.Errorf("inject fault: negative count, delay or duration: %w", ErrInvalid)
	}
	if f.Status == 0 && f.Delay == 0 && !f.Drop {
		return 0, fmt.Errorf("inject fault: set status, delay or drop: %w", ErrInvalid)
	}
	f.Method = strings.ToUpper(f.Method)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextFault++
	st := &faultState{id: s.nextFault, f: f, left: f.Count}
	if f.Duration > 0 {
		st.expires = s.now().Add(f.Duration)
	}
	s.faults = append(s.faults, st)
	return st.id, nil
}

// RemoveFault removes one fault; an unknown id is ignored.
func (s *Server) RemoveFault(id int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, st := range s.faults {
		if st.id == id {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
			return
		}
	}
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.faults = nil
	s.mu.Unlock()
}

// takeFault returns the fault that applies to a request to path (without
// the /a prefix), consuming one of its uses, and drops spent faults.
func (s *Server) takeFault(method, path string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	live := s.faults[:0]
	var hit *faultState
	for _, st := range s.faults {
		if !st.expires.IsZero() && !now.Before(st.expires) {
			continue
		}
		if hit == nil && strings.HasPrefix(path, st.f.PathPrefix) && (st.f.Method == "" || st.f.Method == method) {
			hit = st
			if st.f.Count > 0 {
				st.left--
				if st.left == 0 {
					continue
				}
			}
		}
		live = append(live, st)
	}
	for i := len(live); i < len(s.faults); i++ {
		s.faults[i] = nil
	}
	s.faults = live
	if hit == nil {
		return Fault{}, false
	}
	return hit.f, true
}

// applyFault acts out f; it returns true when the request was answered or
// dropped.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f Fault) bool {
	s.sleep(r.Context(), f.Delay)
	switch {
	case f.Drop:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler) // net/http aborts the response without logging
	case f.Status != 0:
		writeText(w, f.Status, fmt.Sprintf("injected fault: %d %s", f.Status, http.StatusText(f.Status)))
		return true
	}
	return false
}

// Endpoint names used by RequestCounts: the method and the path pattern
// without the /a prefix (anonymous and authenticated calls count alike).
const (
	EndpointQueryChanges   = "GET /changes/"
	EndpointGetChange      = "GET /changes/{change-id}"
	EndpointGetDetail      = "GET /changes/{change-id}/detail"
	EndpointListMessages   = "GET /changes/{change-id}/messages"
	EndpointPostReview     = "POST /changes/{change-id}/revisions/{revision-id}/review"
	EndpointRevisionCommit = "GET /changes/{change-id}/revisions/{revision-id}/commit"
	EndpointGetBranch      = "GET /projects/{project-name}/branches/{branch-id}"
	EndpointGetCommit      = "GET /projects/{project-name}/commits/{commit-id}"
	EndpointServerVersion  = "GET /config/server/version"
	EndpointAccountSelf    = "GET /accounts/self"
	// EndpointOther counts requests to any other path or with another
	// method (answered 404 or 405).
	EndpointOther = "OTHER"
)

func (s *Server) count(endpoint string) {
	s.mu.Lock()
	s.counts[endpoint]++
	s.mu.Unlock()
}

// RequestCounts returns how many REST and git requests each endpoint received
// (keys are the Endpoint constants), including requests that failed
// authentication or hit a fault. Control API calls are not counted.
func (s *Server) RequestCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.counts))
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

// RequestCount returns RequestCounts()[endpoint].
func (s *Server) RequestCount(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[endpoint]
}

// ResetRequestCounts zeroes every counter.
func (s *Server) ResetRequestCounts() {
	s.mu.Lock()
	s.counts = map[string]int{}
	s.mu.Unlock()
}
