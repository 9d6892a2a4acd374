package controller_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/model"
)

// labelsConfig has a job type for any worker, one for linux workers of
// the large pool, and one for mac workers.
const labelsConfig = configHead + configTrust + `jobs:
  build: {command: [make]}
  large: {command: [make, big], require: {os: linux, pool: large}}
  mac: {command: [make, mac], require: {os: mac}}
timeouts: {job: 30m, cl: 3h, worker_death: 5m, no_resource: 10m}
`

// heartbeat records a heartbeat of worker id with labels at the clock's now.
func (e *env) heartbeat(id string, labels map[string]string) {
	e.t.Helper()
	if _, err := e.st.PutWorker(e.ctx, &model.Worker{ID: id, Host: "h", Labels: labels, State: model.WorkerIdle, LastSeen: e.clock.Now()}); err != nil {
		e.t.Fatal(err)
	}
}

// byType returns the jobs of patchset cl-1 by type.
func (e *env) byType(cl int) map[string]*model.Job {
	e.t.Helper()
	_, jobs := e.patchset(cl, 1)
	out := map[string]*model.Job{}
	for _, j := range jobs {
		out[j.Type] = j
	}
	return out
}

func TestJobsRecordTheirRequirements(t *testing.T) {
	e := newEnv(t, labelsConfig)
	ch := e.readyChange("x")
	jobs := e.byType(ch.Change)
	if j := jobs["large"]; j.Pool != "os=linux,pool=large" || j.Require["pool"] != "large" || j.Priority != model.PriorityPresubmit {
		t.Errorf("large: pool %q, require %v, priority %d", j.Pool, j.Require, j.Priority)
	}
	if j := jobs["build"]; j.Pool != "" || j.Require != nil {
		t.Errorf("build: pool %q, require %v", j.Pool, j.Require)
	}
	// Each job is first in its pool: none is pushed back.
	for _, j := range jobs {
		if !j.Order.Equal(j.TimeQueued) {
			t.Errorf("%s ordered %v after its queue time", j.Type, j.Order.Sub(j.TimeQueued))
		}
	}
	e.run(controller.QueuePostsubmitJobs, controller.BranchArgs{Branch: "main"})
	runs, _, _ := e.st.ListPostsubmits(e.ctx, "main", 0, "")
	post, _ := e.st.GetJobs(e.ctx, runs[0].JobIDs)
	for _, j := range post {
		if j.Priority != model.PriorityPostsubmit || (j.Type == "mac" && j.Pool != "os=mac") {
			t.Errorf("postsubmit %s: priority %d, pool %q", j.Type, j.Priority, j.Pool)
		}
	}
}

func TestNoResource(t *testing.T) {
	e := newEnv(t, labelsConfig)
	e.twice = true
	// Live: a plain worker and a large linux one; a mac worker was seen
	// once, long ago, and another is quarantined.
	e.heartbeat("mac-old", map[string]string{"os": "mac"})
	e.clock.Advance(time.Hour)
	e.heartbeat("mac-quarantined", map[string]string{"os": "mac"})
	if _, err := e.st.SetWorkerQuarantined(e.ctx, "mac-quarantined", true); err != nil {
		t.Fatal(err)
	}
	live := func() {
		e.heartbeat("plain", nil)
		e.heartbeat("big", map[string]string{"os": "linux", "pool": "large", "zone": "b"})
		e.heartbeat("mac-quarantined", map[string]string{"os": "mac"})
	}
	live()
	ch := e.readyChange("x")
	queued := e.byType(ch.Change)["mac"].TimeQueued

	// Within the grace nothing ends, however long the mac pool has been empty.
	e.clock.Set(queued.Add(10 * time.Minute))
	live()
	e.run(controller.ReapDeadWorkers, nil)
	e.drain()
	for typ, j := range e.byType(ch.Change) {
		if j.State != model.Queued {
			t.Fatalf("%s is %s within the grace", typ, j.State)
		}
	}
	e.clock.Advance(time.Second)
	live()
	e.run(controller.ReapDeadWorkers, nil)
	e.run(controller.ReapDeadWorkers, nil)
	e.drain()
	jobs := e.byType(ch.Change)
	mac := jobs["mac"]
	if mac.State != model.NoResource || !strings.Contains(mac.Reason, "os=mac") || !mac.TimeEnded.Equal(e.clock.Now()) || !mac.TimeStarted.IsZero() {
		t.Fatalf("mac after the grace: %s %q ended %v", mac.State, mac.Reason, mac.TimeEnded)
	}
	if jobs["build"].State != model.Queued || jobs["large"].State != model.Queued {
		t.Fatalf("jobs live workers can run ended: build %s, large %s", jobs["build"].State, jobs["large"].State)
	}

	// build runs; the large worker goes silent: past the grace, its pool
	// has no worker left (the plain worker does not meet pool=large).
	e.finishAll()
	live()
	e.clock.Advance(10 * time.Minute)
	e.heartbeat("plain", nil)
	e.run(controller.ReapDeadWorkers, nil)
	e.drain()
	if j := e.byType(ch.Change)["large"]; j.State != model.Queued {
		t.Fatalf("large ended %s while its worker was seen within the grace", j.State)
	}
	e.clock.Advance(time.Minute)
	e.heartbeat("plain", nil)
	e.run(controller.ReapDeadWorkers, nil)
	e.drain()
	if j := e.byType(ch.Change)["large"]; j.State != model.NoResource || !strings.Contains(j.Reason, "os=linux,pool=large") {
		t.Fatalf("large: %s %q, want NO_RESOURCE", j.State, j.Reason)
	}

	// The patchset ended with its last job, and voted at once.
	e.wantInfraVote(ch.Change, "FAIL: mac (infrastructure failure: no live worker has the labels it requires (os=mac), not a test failure)")
}

// A job whose required labels no configured job type requires any more
// (the config changed after it was queued) can never be claimed: it ends
// NO_RESOURCE though a worker has those labels.
func TestNoResourceAfterTheConfigChanged(t *testing.T) {
	e := newEnv(t, labelsConfig)
	ch := e.readyChange("x")
	delete(e.cfg.Jobs, "mac")
	e.clock.Advance(11 * time.Minute)
	e.heartbeat("plain", nil)
	e.heartbeat("mac", map[string]string{"os": "mac"})
	e.heartbeat("big", map[string]string{"os": "linux", "pool": "large"})
	e.run(controller.ReapDeadWorkers, nil)
	jobs := e.byType(ch.Change)
	if j := jobs["mac"]; j.State != model.NoResource || !strings.Contains(j.Reason, "no configured job type") {
		t.Fatalf("mac: %s %q", j.State, j.Reason)
	}
	if jobs["build"].State != model.Queued || jobs["large"].State != model.Queued {
		t.Fatalf("build %s, large %s", jobs["build"].State, jobs["large"].State)
	}
	// No worker at all for the grace: even jobs requiring nothing end.
	e.clock.Advance(11 * time.Minute)
	e.run(controller.ReapDeadWorkers, nil)
	if j := e.byType(ch.Change)["build"]; j.State != model.NoResource || !strings.Contains(j.Reason, "no worker has sent a heartbeat") {
		t.Fatalf("build with no worker: %s %q", j.State, j.Reason)
	}
}

const expiryConfig = configHead + configTrust + `jobs:
  build: {command: [make], expiry: 20m}
  test: {command: [make, test]}
  lint: {command: [make, lint], skip_voting: true}
timeouts: {job: 30m, cl: 3h, worker_death: 5m, expiry: 1h}
`

func TestExpired(t *testing.T) {
	e := newEnv(t, expiryConfig)
	e.twice = true
	ch := e.readyChange("x")
	e.run(controller.QueuePostsubmitJobs, controller.BranchArgs{Branch: "main"})
	queued := e.byType(ch.Change)["build"].TimeQueued
	// A live worker that runs nothing: no job lacks a resource.
	tick := func(at time.Duration) {
		e.clock.Set(queued.Add(at))
		e.heartbeat("w1", nil)
		e.run(controller.ReapDeadWorkers, nil)
		e.drain()
	}
	tick(20 * time.Minute)
	for typ, j := range e.byType(ch.Change) {
		if j.State != model.Queued {
			t.Fatalf("%s is %s at its expiry", typ, j.State)
		}
	}
	tick(20*time.Minute + time.Second)
	jobs := e.byType(ch.Change)
	if j := jobs["build"]; j.State != model.Expired || !strings.Contains(j.Reason, "20m") {
		t.Fatalf("build past jobs.build.expiry: %s %q", j.State, j.Reason)
	}
	if jobs["test"].State != model.Queued || jobs["lint"].State != model.Queued {
		t.Fatalf("test %s, lint %s before timeouts.expiry", jobs["test"].State, jobs["lint"].State)
	}
	tick(time.Hour + time.Second)
	for typ, j := range e.byType(ch.Change) {
		if j.State != model.Expired {
			t.Fatalf("%s is %s past timeouts.expiry", typ, j.State)
		}
	}
	// The postsubmit run's jobs expire too (its build job at 20 minutes).
	runs, _, _ := e.st.ListPostsubmits(e.ctx, "main", 0, "")
	post, _ := e.st.GetJobs(e.ctx, runs[0].JobIDs)
	for _, j := range post {
		if j.State != model.Expired {
			t.Errorf("postsubmit %s: %s", j.Type, j.State)
		}
	}
	e.wantInfraVote(ch.Change, "FAIL: build (infrastructure failure: no worker took it before it expired, not a test failure)")
}

// The order workers get jobs in: two changes with six jobs each, queued 30
// seconds apart, interleave (change B's first job right after change A's
// first, not after all of A's), and a postsubmit run, queued before both,
// waits for every presubmit job. A job whose worker died keeps its place.
func TestClaimOrderIsFairAndPresubmitFirst(t *testing.T) {
	e := newEnv(t, configHead+`trust:
  trusted_emails: '.*@trusted\.example'
jobs:
  j1: {command: [make]}
  j2: {command: [make]}
  j3: {command: [make]}
  j4: {command: [make]}
  j5: {command: [make]}
  j6: {command: [make]}
`)
	e.run(controller.QueuePostsubmitJobs, controller.BranchArgs{Branch: "main"})
	a := e.readyChange("a")
	e.clock.Advance(30 * time.Second)
	b := e.readyChange("b")

	claim := func(w string) *model.Job {
		t.Helper()
		j, err := e.st.ClaimJob(e.ctx, w, []string{""}, e.clock.Now())
		if err != nil {
			t.Fatalf("claim: %v", err)
		}
		return j
	}
	first := claim("dies")
	if _, err := e.st.UpdateJob(e.ctx, first.ID, model.Transition{Kind: model.Release, Worker: "dies", State: model.BotDied, Now: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 18 {
		j := claim("w1")
		name := "post"
		if cl, _, ok := j.Change(); ok {
			name = map[int]string{a.Change: "A", b.Change: "B"}[cl]
		}
		got = append(got, name+"/"+j.Type)
	}
	want := "A/j1 B/j1 A/j2 B/j2 A/j3 B/j3 A/j4 B/j4 A/j5 B/j5 A/j6 B/j6 post/j1 post/j2 post/j3 post/j4 post/j5 post/j6"
	if strings.Join(got, " ") != want {
		t.Fatalf("claim order:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	if first.Type != "j1" || first.Src != "cls/"+model.PatchsetID(a.Change, 1) {
		t.Fatalf("first claim %s", first.ID)
	}
}

// wantInfraVote checks that change's patchset 1 ended and got one -1
// review whose message holds want.
func (e *env) wantInfraVote(change int, want string) {
	e.t.Helper()
	ps, _ := e.patchset(change, 1)
	if ps.Pending() || !ps.Voted {
		e.t.Fatalf("patchset pending %v, voted %v", ps.Pending(), ps.Voted)
	}
	rv := e.gerrit.Reviews(change)
	if len(rv) != 1 || rv[0].Labels["Code-Review"] != -1 || !strings.Contains(rv[0].Message, want) {
		e.t.Fatalf("reviews = %+v, want one -1 saying %q", rv, want)
	}
}
