package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// The parts of the JSON API's answers the scenarios read.

// Job is a job as /api/v1/jobs/{id} and /api/v1/cls/{id} show it.
type Job struct {
	ID          string    `json:"id"`
	Src         string    `json:"src"`
	Type        string    `json:"type"`
	State       string    `json:"state"`
	Worker      string    `json:"worker"`
	Attempt     int       `json:"attempt"`
	TimeQueued  time.Time `json:"time_queued"`
	TimeStarted time.Time `json:"time_started"`
	TimeEnded   time.Time `json:"time_ended"`
	SkipVoting  bool      `json:"skip_voting"`
	Reason      string    `json:"reason"`
	History     []struct {
		Attempt int    `json:"attempt"`
		State   string `json:"state"`
		Worker  string `json:"worker"`
	} `json:"history"`
}

// Patchset is a patchset with its jobs (/api/v1/cls/{cl}-{ps}).
type Patchset struct {
	Patchset struct {
		ID        string    `json:"id"`
		Change    int       `json:"change"`
		Patchset  int       `json:"patchset"`
		WantsVote bool      `json:"wants_vote"`
		Voted     bool      `json:"voted"`
		Vote      int       `json:"vote"`
		TimeEnded time.Time `json:"time_ended"`
		JobIDs    []string  `json:"job_ids"`
	} `json:"patchset"`
	Jobs []Job `json:"jobs"`
}

// Ended reports whether every job of the patchset ended.
func (p *Patchset) Ended() bool {
	if len(p.Jobs) == 0 {
		return false
	}
	for _, j := range p.Jobs {
		if !Terminal(j.State) {
			return false
		}
	}
	return true
}

// States maps job type to state (the latest run of each type).
func (p *Patchset) States() map[string]string {
	out := map[string]string{}
	latest := map[string]Job{}
	for _, j := range p.Jobs {
		if l, ok := latest[j.Type]; !ok || j.TimeQueued.After(l.TimeQueued) {
			latest[j.Type] = j
		}
	}
	for t, j := range latest {
		out[t] = j.State
	}
	return out
}

// Job returns the patchset's (latest) job of type t.
func (p *Patchset) Job(t string) (Job, bool) {
	var out Job
	found := false
	for _, j := range p.Jobs {
		if j.Type == t && (!found || j.TimeQueued.After(out.TimeQueued)) {
			out, found = j, true
		}
	}
	return out, found
}

// Terminal reports whether a job state is final.
func Terminal(state string) bool {
	switch state {
	case "QUEUED", "STARTED", "":
		return false
	}
	return true
}

// Postsubmit is a postsubmit run (/api/v1/branches).
type Postsubmit struct {
	ID       string   `json:"id"`
	Branch   string   `json:"branch"`
	Revision string   `json:"revision"`
	JobIDs   []string `json:"job_ids"`
}

// Log is a read of a job's log (/api/v1/jobs/{id}/log).
type Log struct {
	Data     string `json:"data"`
	Size     int64  `json:"size"`
	Complete bool   `json:"complete"`
}

// DeadTask is a dead-lettered task (/api/v1/tasks/dead).
type DeadTask struct {
	ID        string `json:"id"`
	Action    string `json:"action"`
	Args      string `json:"args"`
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error"`
}

// ErrNotFound is a 404 from the API.
var ErrNotFound = errors.New("e2e: API answered 404")

// API is a client of the JSON API.
type API struct {
	Base   string
	Client *http.Client
}

// NewAPI returns a client of the API at base.
func NewAPI(base string) *API {
	return &API{Base: base, Client: &http.Client{Timeout: 30 * time.Second}}
}

// Get decodes the JSON answer to GET path into v; 404 is ErrNotFound.
func (a *API) Get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.Base+path, nil)
	if err != nil {
		return err
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, path)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("e2e: GET %s: HTTP %d: %.300s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("e2e: GET %s: %w", path, err)
	}
	return nil
}

// Patchset returns patchset cl-ps; ErrNotFound when Tollgate has none.
func (a *API) Patchset(ctx context.Context, cl, ps int) (*Patchset, error) {
	var p Patchset
	if err := a.Get(ctx, fmt.Sprintf("/api/v1/cls/%d-%d", cl, ps), &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Job returns one job.
func (a *API) Job(ctx context.Context, id string) (*Job, error) {
	var j Job
	if err := a.Get(ctx, "/api/v1/jobs/"+url.PathEscape(id), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// Log returns the start of a job's log.
func (a *API) Log(ctx context.Context, id string) (*Log, error) {
	var l Log
	if err := a.Get(ctx, "/api/v1/jobs/"+url.PathEscape(id)+"/log", &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Postsubmits lists the runs of branch, newest first (up to 100).
func (a *API) Postsubmits(ctx context.Context, branch string) ([]Postsubmit, error) {
	var page struct {
		Items []Postsubmit `json:"items"`
	}
	if err := a.Get(ctx, "/api/v1/branches?limit=100&branch="+url.QueryEscape(branch), &page); err != nil {
		return nil, err
	}
	return page.Items, nil
}

// JobsOf lists the jobs of src ("cls/1-1", "branches/main-...").
func (a *API) JobsOf(ctx context.Context, src string) ([]Job, error) {
	var page struct {
		Items []Job `json:"items"`
	}
	if err := a.Get(ctx, "/api/v1/jobs?limit=100&src="+url.QueryEscape(src), &page); err != nil {
		return nil, err
	}
	return page.Items, nil
}

// Dead lists the dead-lettered tasks.
func (a *API) Dead(ctx context.Context) ([]DeadTask, error) {
	var page struct {
		Items []DeadTask `json:"items"`
	}
	if err := a.Get(ctx, "/api/v1/tasks/dead?limit=1000", &page); err != nil {
		return nil, err
	}
	return page.Items, nil
}
