package api

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/functions/auth"
)

// The views below are what the API answers and what the web UI renders:
// each is built with a bounded number of Store round trips, whatever the
// number of jobs in the Store.

// JobRow is a job as lists show it: the record, how long it waited and ran
// (so far, for a job still queued or running), and whether a later run of
// its type in its source replaced it (known where the source's jobs are).
type JobRow struct {
	*model.Job
	QueueSeconds float64 `json:"queue_seconds"`
	RunSeconds   float64 `json:"run_seconds"`
	Superseded   bool    `json:"superseded,omitempty"`
}

// Row returns j as a JobRow at now.
func Row(j *model.Job, now time.Time) JobRow {
	r := JobRow{Job: j}
	switch {
	case !j.TimeStarted.IsZero():
		r.QueueSeconds = j.TimeStarted.Sub(j.TimeQueued).Seconds()
		end := j.TimeEnded
		if end.IsZero() {
			end = now
		}
		r.RunSeconds = max(0, end.Sub(j.TimeStarted).Seconds())
	case !j.TimeEnded.IsZero():
		r.QueueSeconds = j.TimeEnded.Sub(j.TimeQueued).Seconds()
	default:
		r.QueueSeconds = now.Sub(j.TimeQueued).Seconds()
	}
	r.QueueSeconds = max(0, r.QueueSeconds)
	return r
}

func (s *Server) rows(jobs []*model.Job) []JobRow {
	now := s.o.Clock.Now()
	out := make([]JobRow, len(jobs))
	for i, j := range jobs {
		out[i] = Row(j, now)
	}
	return out
}

// JobBrief is a job in a summary: enough for a state icon and a link.
type JobBrief struct {
	ID         string      `json:"id"`
	Type       string      `json:"type"`
	State      model.State `json:"state"`
	SkipVoting bool        `json:"skip_voting,omitempty"`
}

// Statuses of a patchset or a postsubmit run, from the latest run of each
// job type, as the vote would judge them.
const (
	StatusQueued    = "queued"    // no job started yet
	StatusRunning   = "running"   // some job still queued or running
	StatusPassed    = "passed"    // every voting job passed
	StatusFailed    = "failed"    // a voting job did not pass
	StatusCancelled = "cancelled" // a job was cancelled (no vote)
	StatusUnknown   = "unknown"   // no jobs
)

// briefs returns the latest run of each job type among ids, in type order,
// and the status they make.
func briefs(ids []string, jobs map[string]*model.Job) ([]JobBrief, string) {
	var of []*model.Job
	for _, id := range ids {
		if j := jobs[id]; j != nil {
			of = append(of, j)
		}
	}
	latest := model.Latest(of)
	out := make([]JobBrief, 0, len(latest))
	for _, j := range latest {
		out = append(out, JobBrief{ID: j.ID, Type: j.Type, State: j.State, SkipVoting: j.SkipVoting})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Type < out[b].Type })
	return out, status(out)
}

func status(latest []JobBrief) string {
	if len(latest) == 0 {
		return StatusUnknown
	}
	var queued, running, cancelled, failed bool
	for _, j := range latest {
		switch {
		case j.State == model.Queued:
			queued = true
		case j.State == model.Started:
			running = true
		case j.State == model.Cancelled:
			cancelled = true
		case j.State != model.Completed && !j.SkipVoting:
			failed = true
		}
	}
	switch {
	case running || (queued && len(latest) > 1 && anyEnded(latest)):
		return StatusRunning
	case queued:
		return StatusQueued
	case cancelled:
		return StatusCancelled
	case failed:
		return StatusFailed
	}
	return StatusPassed
}

func anyEnded(v []JobBrief) bool {
	return slices.ContainsFunc(v, func(j JobBrief) bool { return j.State.Terminal() })
}

// PatchsetSummary is a patchset in a list: the record, its status and the
// latest run of each job type.
type PatchsetSummary struct {
	*model.Patchset
	Status     string     `json:"status"`
	LatestJobs []JobBrief `json:"latest_jobs"`
}

// summaries builds the summaries of ps with one batched read of their jobs.
func (s *Server) summaries(ctx context.Context, ps []*model.Patchset) ([]PatchsetSummary, error) {
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.JobIDs...)
	}
	jobs, err := s.o.Store.GetJobs(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]PatchsetSummary, len(ps))
	for i, p := range ps {
		b, st := briefs(p.JobIDs, jobs)
		out[i] = PatchsetSummary{Patchset: p, Status: st, LatestJobs: b}
	}
	return out, nil
}

// Patchsets is the body of /api/v1/cls: patchsets, newest first.
func (s *Server) Patchsets(ctx context.Context, q store.PatchsetQuery) (*Page[PatchsetSummary], error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	ps, next, err := s.o.Store.ListPatchsets(ctx, q)
	if err != nil {
		return nil, err
	}
	sums, err := s.summaries(ctx, ps)
	if err != nil {
		return nil, err
	}
	return &Page[PatchsetSummary]{Items: nonNil(sums), NextCursor: next}, nil
}

// PatchsetWithJobs is the body of /api/v1/cls/{id}: the patchset, its
// status, every run of its jobs (retried ones marked superseded), and the
// change's patchsets, newest first.
type PatchsetWithJobs struct {
	Patchset        *model.Patchset   `json:"patchset"`
	Status          string            `json:"status"`
	Jobs            []JobRow          `json:"jobs"`
	ChangePatchsets []PatchsetSummary `json:"change_patchsets"`
}

// Patchset returns one patchset's view.
func (s *Server) Patchset(ctx context.Context, id string) (*PatchsetWithJobs, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	cl, _, err := model.ParsePatchsetID(id)
	if err != nil {
		return nil, err
	}
	ps, jobs, err := s.o.Store.GetPatchsetWithJobs(ctx, id)
	if err != nil {
		return nil, err
	}
	out := &PatchsetWithJobs{Patchset: ps, Jobs: s.rows(jobs)}
	markSuperseded(out.Jobs)
	byID := make(map[string]*model.Job, len(jobs))
	for _, j := range jobs {
		byID[j.ID] = j
	}
	_, out.Status = briefs(ps.JobIDs, byID)
	all, _, err := s.o.Store.ListPatchsets(ctx, store.PatchsetQuery{Change: cl, Limit: 100})
	if err != nil {
		return nil, err
	}
	if out.ChangePatchsets, err = s.summaries(ctx, all); err != nil {
		return nil, err
	}
	return out, nil
}

// markSuperseded marks the rows that a later run of their type replaced.
func markSuperseded(rows []JobRow) {
	jobs := make([]*model.Job, len(rows))
	for i, r := range rows {
		jobs[i] = r.Job
	}
	latest := model.Latest(jobs)
	for i := range rows {
		rows[i].Superseded = latest[rows[i].Type] != rows[i].Job
	}
}

// CountsWindow is the window of the job counts on the jobs page.
const CountsWindow = 24 * time.Hour

// JobsPage is the body of /api/v1/jobs: one page of jobs in the order
// asked, and how many jobs queued in the last 24 hours are in each state.
type JobsPage struct {
	Items      []JobRow            `json:"items"`
	NextCursor string              `json:"next_cursor,omitempty"`
	Order      store.JobOrder      `json:"order"`
	States     []model.State       `json:"states"`
	Counts24h  map[model.State]int `json:"counts_24h"`
}

// Jobs returns one page of jobs and the 24-hour counts.
func (s *Server) Jobs(ctx context.Context, q store.JobQuery) (*JobsPage, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	if q.OrderBy == "" {
		q.OrderBy = store.OrderQueued
	}
	jobs, next, err := s.o.Store.ListJobs(ctx, q)
	if err != nil {
		return nil, err
	}
	counts, err := s.counts24h(ctx)
	if err != nil {
		return nil, err
	}
	return &JobsPage{Items: s.rows(jobs), NextCursor: next, Order: q.OrderBy, States: nonNil(q.States), Counts24h: counts}, nil
}

func (s *Server) counts24h(ctx context.Context) (map[model.State]int, error) {
	c, err := s.o.Store.CountJobsSince(ctx, s.o.Clock.Now().Add(-CountsWindow))
	if err != nil {
		return nil, err
	}
	for _, st := range model.AllStates {
		if _, ok := c[st]; !ok {
			c[st] = 0
		}
	}
	return c, nil
}

// JobDetail is the body of /api/v1/jobs/{id}: the job's record (its fields
// at the top level) and times, its patchset (for presubmit jobs), every
// run of its type in its source (newest first, this one included), its
// artifacts and the worker that ran it.
type JobDetail struct {
	JobRow
	Patchset   *model.Patchset `json:"patchset,omitempty"`
	Runs       []JobRow        `json:"runs"`
	Artifacts  []Artifact      `json:"artifacts"`
	WorkerInfo *WorkerView     `json:"worker_info,omitempty"`
}

// Job returns one job's view.
func (s *Server) Job(ctx context.Context, id string) (*JobDetail, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	if _, err := model.ParseJobID(id); err != nil {
		return nil, err
	}
	j, err := s.o.Store.GetJob(ctx, id)
	if err != nil {
		return nil, err
	}
	out := &JobDetail{JobRow: Row(j, s.o.Clock.Now())}
	var siblings []*model.Job
	if cl, ps, ok := j.Change(); ok {
		p, jobs, err := s.o.Store.GetPatchsetWithJobs(ctx, model.PatchsetID(cl, ps))
		if err != nil && !errs.Is(err, errs.NotFound) {
			return nil, err
		}
		out.Patchset, siblings = p, jobs
	} else {
		if siblings, _, err = s.o.Store.ListJobs(ctx, store.JobQuery{Src: j.Src, Limit: 1000}); err != nil {
			return nil, err
		}
	}
	var runs []*model.Job
	for _, o := range siblings {
		if o.Type == j.Type {
			runs = append(runs, o)
		}
	}
	if !slices.ContainsFunc(runs, func(o *model.Job) bool { return o.ID == j.ID }) {
		runs = append(runs, j)
	}
	sort.Slice(runs, func(a, b int) bool {
		if !runs[a].TimeQueued.Equal(runs[b].TimeQueued) {
			return runs[a].TimeQueued.After(runs[b].TimeQueued)
		}
		return runs[a].ID > runs[b].ID
	})
	out.Runs = s.rows(runs)
	markSuperseded(out.Runs)
	for _, r := range out.Runs {
		if r.ID == j.ID {
			out.Superseded = r.Superseded
		}
	}
	if out.Artifacts, err = s.Artifacts(ctx, id); err != nil {
		return nil, err
	}
	if j.Worker != "" {
		wk, err := s.o.Store.GetWorker(ctx, j.Worker)
		switch {
		case err == nil:
			v := s.view(wk)
			out.WorkerInfo = &v
		case !errs.Is(err, errs.NotFound):
			return nil, err
		}
	}
	return out, nil
}

// QueueCounts is the queue: jobs waiting, jobs running, and their sum
// (ci_job_queue_len, what the autoscaler reads).
type QueueCounts struct {
	Queued  int `json:"queued"`
	Running int `json:"running"`
	Length  int `json:"length"`
}

// WorkerCounts counts workers: alive ones by state, and dead ones (silent
// for longer than timeouts.worker_death). Quarantined counts alive and
// dead quarantined workers.
type WorkerCounts struct {
	Total       int `json:"total"`
	Alive       int `json:"alive"`
	Busy        int `json:"busy"`
	Idle        int `json:"idle"`
	Dead        int `json:"dead"`
	Quarantined int `json:"quarantined"`
}

func (s *Server) countWorkers(ws []WorkerView) WorkerCounts {
	var c WorkerCounts
	for _, w := range ws {
		c.Total++
		if w.State == model.WorkerQuarantined {
			c.Quarantined++
		}
		if !w.Alive {
			c.Dead++
			continue
		}
		c.Alive++
		switch w.State {
		case model.WorkerBusy:
			c.Busy++
		case model.WorkerIdle:
			c.Idle++
		}
	}
	return c
}

// Overview is the body of /api/v1/overview: the state of the CI at a glance.
type Overview struct {
	Queue             QueueCounts         `json:"queue"`
	Workers           WorkerCounts        `json:"workers"`
	RunningJobs       []JobRow            `json:"running_jobs"`
	RecentPatchsets   []PatchsetSummary   `json:"recent_patchsets"`
	RecentPostsubmits []PostsubmitView    `json:"recent_postsubmits"`
	DeadTasks         []model.DeadTask    `json:"dead_tasks"`
	Counts24h         map[model.State]int `json:"counts_24h"`
}

// Overview returns the overview.
func (s *Server) Overview(ctx context.Context) (*Overview, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	out := &Overview{}
	counts, err := s.o.Store.CountJobs(ctx, model.Queued, model.Started)
	if err != nil {
		return nil, err
	}
	out.Queue = QueueCounts{Queued: counts[model.Queued], Running: counts[model.Started], Length: counts[model.Queued] + counts[model.Started]}
	ws, err := s.workerViews(ctx)
	if err != nil {
		return nil, err
	}
	out.Workers = s.countWorkers(ws)
	running, _, err := s.o.Store.ListJobs(ctx, store.JobQuery{States: []model.State{model.Started}, OrderBy: store.OrderStarted, Limit: 20})
	if err != nil {
		return nil, err
	}
	out.RunningJobs = s.rows(running)
	ps, _, err := s.o.Store.ListPatchsets(ctx, store.PatchsetQuery{Limit: 10})
	if err != nil {
		return nil, err
	}
	posts, _, err := s.o.Store.ListPostsubmits(ctx, "", 5, "")
	if err != nil {
		return nil, err
	}
	// One batched read for the jobs of both lists.
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.JobIDs...)
	}
	for _, p := range posts {
		ids = append(ids, p.JobIDs...)
	}
	jobs, err := s.o.Store.GetJobs(ctx, ids)
	if err != nil {
		return nil, err
	}
	out.RecentPatchsets = make([]PatchsetSummary, len(ps))
	for i, p := range ps {
		b, st := briefs(p.JobIDs, jobs)
		out.RecentPatchsets[i] = PatchsetSummary{Patchset: p, Status: st, LatestJobs: b}
	}
	out.RecentPostsubmits = make([]PostsubmitView, len(posts))
	for i, p := range posts {
		b, st := briefs(p.JobIDs, jobs)
		out.RecentPostsubmits[i] = PostsubmitView{Postsubmit: p, Status: st, LatestJobs: b}
	}
	if out.DeadTasks, err = s.DeadTasks(ctx, 10); err != nil {
		return nil, err
	}
	if out.Counts24h, err = s.counts24h(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// DeadTasks returns up to limit dead-lettered tasks.
func (s *Server) DeadTasks(ctx context.Context, limit int) ([]model.DeadTask, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	if s.o.Dead == nil {
		return []model.DeadTask{}, nil
	}
	items, err := s.o.Dead.ListDead(ctx, store.Limit(limit))
	return nonNil(items), err
}

// PostsubmitView is a postsubmit run with its status and the latest run of
// each job type.
type PostsubmitView struct {
	*model.Postsubmit
	Status     string     `json:"status"`
	LatestJobs []JobBrief `json:"latest_jobs"`
}

// PostsubmitsPage is the body of /api/v1/branches: runs, newest first, and
// the watched branches.
type PostsubmitsPage struct {
	Items      []PostsubmitView `json:"items"`
	NextCursor string           `json:"next_cursor,omitempty"`
	Branches   []string         `json:"branches"`
}

// Postsubmits returns one page of postsubmit runs of branch ("" for all).
func (s *Server) Postsubmits(ctx context.Context, branch string, limit int, cursor string) (*PostsubmitsPage, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	posts, next, err := s.o.Store.ListPostsubmits(ctx, branch, limit, cursor)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, p := range posts {
		ids = append(ids, p.JobIDs...)
	}
	jobs, err := s.o.Store.GetJobs(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := &PostsubmitsPage{Items: make([]PostsubmitView, len(posts)), NextCursor: next, Branches: nonNil(s.o.Branches)}
	for i, p := range posts {
		b, st := briefs(p.JobIDs, jobs)
		out.Items[i] = PostsubmitView{Postsubmit: p, Status: st, LatestJobs: b}
	}
	return out, nil
}

// WorkerView is a worker with whether it counts as alive.
type WorkerView struct {
	*model.Worker
	Alive bool `json:"alive"`
}

func (s *Server) view(wk *model.Worker) WorkerView {
	return WorkerView{Worker: wk, Alive: s.o.WorkerDeath <= 0 || wk.Alive(s.o.Clock.Now(), s.o.WorkerDeath)}
}

func (s *Server) workerViews(ctx context.Context) ([]WorkerView, error) {
	ws, err := s.o.Store.ListWorkers(ctx, time.Time{})
	if err != nil {
		return nil, err
	}
	out := make([]WorkerView, len(ws))
	for i, w := range ws {
		out[i] = s.view(w)
	}
	return out, nil
}

// Worker sort orders of /api/v1/workers.
const (
	SortLastSeen = "last_seen" // most recently seen first
	SortState    = "state"     // quarantined, dead, busy, idle; then id
	SortID       = "id"
)

// WorkersPage is the body of /api/v1/workers: every worker, sorted, and
// the counts by state. (The fleet is listed whole: it is bounded by the
// machines one runs; next_cursor is always empty.)
type WorkersPage struct {
	Items      []WorkerView `json:"items"`
	NextCursor string       `json:"next_cursor,omitempty"`
	Counts     WorkerCounts `json:"counts"`
	Sort       string       `json:"sort"`
}

// Workers returns the workers sorted by sortBy (default id).
func (s *Server) Workers(ctx context.Context, sortBy string) (*WorkersPage, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	if sortBy == "" {
		sortBy = SortID
	}
	rank := func(w WorkerView) int {
		switch {
		case w.State == model.WorkerQuarantined:
			return 0
		case !w.Alive:
			return 1
		case w.State == model.WorkerBusy:
			return 2
		}
		return 3
	}
	var less func(a, b WorkerView) bool
	switch sortBy {
	case SortID:
		less = func(a, b WorkerView) bool { return a.ID < b.ID }
	case SortLastSeen:
		less = func(a, b WorkerView) bool {
			if !a.LastSeen.Equal(b.LastSeen) {
				return a.LastSeen.After(b.LastSeen)
			}
			return a.ID < b.ID
		}
	case SortState:
		less = func(a, b WorkerView) bool {
			if ra, rb := rank(a), rank(b); ra != rb {
				return ra < rb
			}
			return a.ID < b.ID
		}
	default:
		return nil, errs.E(errs.InvalidArgument, "api", "sort must be last_seen, state or id, got %q", sortBy)
	}
	ws, err := s.workerViews(ctx)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(ws, func(a, b int) bool { return less(ws[a], ws[b]) })
	return &WorkersPage{Items: ws, Counts: s.countWorkers(ws), Sort: sortBy}, nil
}

// WorkerDetail is the body of /api/v1/workers/{id}: the worker, its recent
// jobs (latest started first), and over them the time it spent running
// jobs and idle between them (Swarming's bot page).
type WorkerDetail struct {
	Worker      WorkerView `json:"worker"`
	RecentJobs  []JobRow   `json:"recent_jobs"`
	RunSeconds  float64    `json:"run_seconds"`
	IdleSeconds float64    `json:"idle_seconds"`
}

// RecentWorkerJobs is how many jobs a worker's page shows.
const RecentWorkerJobs = 50

// Worker returns one worker's view.
func (s *Server) Worker(ctx context.Context, id string) (*WorkerDetail, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	wk, err := s.o.Store.GetWorker(ctx, id)
	if err != nil {
		return nil, err
	}
	jobs, _, err := s.o.Store.ListJobs(ctx, store.JobQuery{Worker: wk.ID, Limit: RecentWorkerJobs})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(jobs, func(a, b int) bool { return jobs[a].TimeStarted.After(jobs[b].TimeStarted) })
	out := &WorkerDetail{Worker: s.view(wk), RecentJobs: s.rows(jobs)}
	now := s.o.Clock.Now()
	for i, j := range jobs {
		if j.TimeStarted.IsZero() {
			continue
		}
		end := j.TimeEnded
		if end.IsZero() {
			end = now
		}
		out.RunSeconds += max(0, end.Sub(j.TimeStarted).Seconds())
		// Idle: from this job's end to the next (newer) job's start, or to
		// now for the newest one if the worker is idle.
		if j.TimeEnded.IsZero() {
			continue
		}
		next := now
		if i > 0 {
			next = jobs[i-1].TimeStarted
		} else if wk.State == model.WorkerBusy {
			continue
		}
		out.IdleSeconds += max(0, next.Sub(j.TimeEnded).Seconds())
	}
	return out, nil
}

// ParseWindow reads a stats window: "24h" (default), "7d" or another
// duration between 1h and 7d.
func ParseWindow(v string) (time.Duration, error) {
	if v == "" {
		return 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if n, ok := strings.CutSuffix(v, "d"); ok {
		if days, derr := time.ParseDuration(n + "h"); derr == nil {
			d, err = days*24, nil
		}
	}
	if err != nil || d < time.Hour || d > store.MaxSamples*time.Minute {
		return 0, errs.E(errs.InvalidArgument, "api", "window must be a duration from 1h to 7d, got %q", v)
	}
	return d, nil
}
