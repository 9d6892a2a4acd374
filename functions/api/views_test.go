package api_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/api"
	"github.com/tollgate-ci/tollgate/functions/api/apitest"
)

func (e *apiEnv) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	st, b := e.call(t, "GET", path, tokUser)
	if st != 200 {
		t.Fatalf("GET %s: %d %s", path, st, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

func TestViews(t *testing.T) {
	e := newAPIEnv(t, uiConfig, false)
	f := e.f

	var ov api.Overview
	e.getJSON(t, "/api/v1/overview", &ov)
	if ov.Queue != (api.QueueCounts{Queued: 1, Running: 1, Length: 2}) {
		t.Errorf("queue = %+v", ov.Queue)
	}
	if ov.Workers != (api.WorkerCounts{Total: 4, Alive: 3, Busy: 1, Idle: 1, Dead: 1, Quarantined: 1}) {
		t.Errorf("workers = %+v", ov.Workers)
	}
	if len(ov.RunningJobs) != 1 || ov.RunningJobs[0].ID != f.RunningJob || ov.RunningJobs[0].RunSeconds != 240 {
		t.Errorf("running jobs = %+v", ov.RunningJobs)
	}
	if len(ov.RecentPatchsets) != 3 || ov.RecentPatchsets[0].ID != f.Running || ov.RecentPatchsets[0].Status != api.StatusRunning {
		t.Errorf("recent patchsets = %+v", ov.RecentPatchsets)
	}
	statuses := map[string]string{}
	for _, p := range ov.RecentPatchsets {
		statuses[p.ID] = p.Status
	}
	if statuses[f.Failed] != api.StatusFailed || statuses[f.Cancelled] != api.StatusCancelled {
		t.Errorf("statuses = %v", statuses)
	}
	if len(ov.RecentPostsubmits) != 1 || ov.RecentPostsubmits[0].Status != api.StatusPassed || ov.DeadTasks == nil {
		t.Errorf("postsubmits = %+v, dead = %v", ov.RecentPostsubmits, ov.DeadTasks)
	}
	if ov.Counts24h[model.Failed] != 2 || ov.Counts24h[model.Completed] != 2 || ov.Counts24h[model.BotDied] != 0 {
		t.Errorf("counts = %v", ov.Counts24h)
	}

	var jobs api.JobsPage
	e.getJSON(t, "/api/v1/jobs?order=ended&limit=2", &jobs)
	if len(jobs.Items) != 2 || jobs.Items[0].ID != f.PostJob || jobs.Order != "ended" || jobs.NextCursor == "" || len(jobs.Counts24h) != len(model.AllStates) {
		t.Errorf("jobs by end = %+v", jobs)
	}
	e.getJSON(t, "/api/v1/jobs?order=ended&limit=2&cursor="+jobs.NextCursor, &jobs)
	if len(jobs.Items) != 2 || jobs.Items[0].ID != f.FailedJob {
		t.Errorf("second page by end = %+v", jobs.Items)
	}
	e.getJSON(t, "/api/v1/jobs?state=QUEUED,STARTED", &jobs)
	if len(jobs.Items) != 2 || len(jobs.States) != 2 {
		t.Errorf("queued and started = %+v", jobs)
	}

	var ps api.PatchsetWithJobs
	e.getJSON(t, "/api/v1/cls/"+f.Failed, &ps)
	if ps.Status != api.StatusFailed || len(ps.Jobs) != 3 || ps.Jobs[0].RunSeconds != 240 || len(ps.ChangePatchsets) != 1 {
		t.Errorf("patchset = %+v", ps)
	}

	// A retry: the old run is superseded, the job page lists both runs.
	st, b := e.call(t, "POST", "/api/v1/jobs/"+f.FailedJob+"/retry", tokPriv)
	var rr api.JobReply
	if st != 201 || json.Unmarshal(b, &rr) != nil || rr.Job.RetryOf != f.FailedJob || rr.Job.RequestedBy != "pat@example.com" {
		t.Fatalf("retry: %d %s", st, b)
	}
	e.getJSON(t, "/api/v1/cls/"+f.Failed, &ps)
	if len(ps.Jobs) != 4 || !ps.Jobs[2].Superseded || ps.Jobs[3].Superseded || ps.Status != api.StatusRunning || ps.Patchset.Round != 2 {
		t.Errorf("patchset after the retry = %+v", ps)
	}
	var jd api.JobDetail
	e.getJSON(t, "/api/v1/jobs/"+f.FailedJob, &jd)
	if !jd.Superseded || len(jd.Runs) != 2 || jd.Runs[0].ID != rr.Job.ID || jd.Patchset == nil || jd.Patchset.ID != f.Failed ||
		jd.WorkerInfo == nil || jd.WorkerInfo.ID != f.WorkerBusy || jd.ExitCode == nil || *jd.ExitCode != 1 || jd.Artifacts == nil {
		t.Errorf("job = %+v", jd)
	}
	jd = api.JobDetail{}
	e.getJSON(t, "/api/v1/jobs/"+f.PostJob, &jd)
	if jd.Patchset != nil || len(jd.Runs) != 1 || jd.Src != f.Postsubmit {
		t.Errorf("postsubmit job = %+v", jd)
	}

	var ws api.WorkersPage
	e.getJSON(t, "/api/v1/workers?sort=state", &ws)
	var order []string
	for _, w := range ws.Items {
		order = append(order, w.ID)
	}
	if strings.Join(order, " ") != "w-quarantined w-dead w-busy w-idle" || ws.Counts.Dead != 1 || ws.Sort != "state" {
		t.Errorf("workers by state = %v %+v", order, ws.Counts)
	}
	e.getJSON(t, "/api/v1/workers?sort=last_seen", &ws)
	if ws.Items[len(ws.Items)-1].ID != f.WorkerDead {
		t.Errorf("workers by last seen end with %s", ws.Items[len(ws.Items)-1].ID)
	}
	var wd api.WorkerDetail
	e.getJSON(t, "/api/v1/workers/"+f.WorkerBusy, &wd)
	// w-busy ran lint 59→58, test 57→50 and runs build since -4: 1+7+4 minutes
	// of running, idle from 58 to 57 and from 50 to 4: 1+46 minutes.
	if len(wd.RecentJobs) != 3 || wd.RecentJobs[0].ID != f.RunningJob || wd.RunSeconds != 12*60 || wd.IdleSeconds != 47*60 {
		t.Errorf("worker = %+v (run %v idle %v)", wd.Worker, wd.RunSeconds, wd.IdleSeconds)
	}

	var posts api.PostsubmitsPage
	e.getJSON(t, "/api/v1/branches?branch=main", &posts)
	if len(posts.Items) != 1 || posts.Items[0].Author != "alice@example.com" || len(posts.Items[0].LatestJobs) != 1 || posts.Branches[0] != "main" {
		t.Errorf("postsubmits = %+v", posts)
	}

	var stats api.Stats
	e.getJSON(t, "/api/v1/stats?window=2h", &stats)
	if len(stats.QueueLength) != 30 || stats.QueueLength[29].Queued != 29%7 || len(stats.Workers) != 30 {
		t.Errorf("queue length: %d points", len(stats.QueueLength))
	}
	types := map[string]api.JobTypeStats{}
	for _, ts := range stats.JobTypes {
		types[ts.Type] = ts
	}
	if b := types["build"]; b.Passed != 2 || b.Cancelled != 1 || b.PassRate != 1 || b.RunTime.Count != 2 || b.RunTime.Max != 240 {
		t.Errorf("build stats = %+v", b)
	}
	if tt := types["test"]; tt.Failed != 1 || tt.PassRate != 0 || tt.QueueTime.P50 != 180 {
		t.Errorf("test stats = %+v", tt)
	}
	// 1-1 is pending again after its retry: only 3-1 ended (in a minute).
	if stats.SampledJobs != 5 || stats.SampledPatchsets != 1 || stats.PatchsetCompletion.Max != 60 {
		t.Errorf("sampled %d jobs, %d patchsets, completion %+v", stats.SampledJobs, stats.SampledPatchsets, stats.PatchsetCompletion)
	}
}

// A log read that stops inside a UTF-8 character gives it whole to the next read.
func TestLogReadsEndOnWholeCharacters(t *testing.T) {
	e := newAPIEnv(t, uiConfig, false)
	id := e.f.QueuedJob
	text := strings.Repeat("a", 1<<20-1) + "é and more"
	if err := e.st.AppendLog(t.Context(), id, 0, []byte(text), apitest.Now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var c api.LogChunk
	e.getJSON(t, "/api/v1/jobs/"+id+"/log", &c)
	if c.NextOffset != 1<<20-1 || strings.ContainsRune(c.Data, '\uFFFD') {
		t.Fatalf("first read ends at %d", c.NextOffset)
	}
	e.getJSON(t, "/api/v1/jobs/"+id+"/log?offset=1048575", &c)
	if c.Data != "é and more" {
		t.Fatalf("second read = %q", c.Data)
	}
}

func TestDistribute(t *testing.T) {
	d := api.Distribute([]float64{0.5, 3, 3, 70, 50000})
	if d.Count != 5 || d.P50 != 3 || d.P90 != 50000 || d.Max != 50000 || d.Buckets[0].Count != 1 || d.Buckets[2].Count != 2 ||
		d.Buckets[7].Count != 1 || d.Buckets[len(d.Buckets)-1].Count != 1 || d.Buckets[len(d.Buckets)-1].LE != nil {
		t.Fatalf("Distribute = %+v", d)
	}
	if z := api.Distribute(nil); z.Count != 0 || len(z.Buckets) != len(api.BucketBounds)+1 {
		t.Fatalf("empty = %+v", z)
	}
}

// format=raw without wait streams the whole log, past one read's limit.
func TestRawLogIsWhole(t *testing.T) {
	e := newAPIEnv(t, uiConfig, false)
	id := e.f.QueuedJob
	text := strings.Repeat("0123456789abcdef\n", 150000) // 2.5 MB: three reads
	if err := e.st.AppendLog(t.Context(), id, 0, []byte(text), apitest.Now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	st, b := e.call(t, "GET", "/api/v1/jobs/"+id+"/log?format=raw&offset=17", tokUser)
	if st != 200 || string(b) != text[17:] {
		t.Fatalf("raw log: %d, %d bytes, want %d", st, len(b), len(text)-17)
	}
}
