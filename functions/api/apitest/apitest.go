// Package apitest builds Stores full of CI state for the tests and
// benchmarks of the API and the web UI: a small fixture with a record of
// every kind and state, and a large one for the page-time benchmark.
package apitest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/gerrit"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/tasks/taskstest"
)

// Now is the fixtures' present.
var Now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// Fixture names the records Seed made.
type Fixture struct {
	// Patchset 1-1: every job ended; build COMPLETED, test FAILED (exit 1),
	// lint FAILED (non-voting); voted -1.
	Failed      string // the patchset
	FailedJob   string // its failed test job
	PassedJob   string // its completed build job
	Running     string // patchset 2-1: build STARTED on w-busy, test QUEUED
	RunningJob  string
	QueuedJob   string
	Cancelled   string // patchset 3-1, its job cancelled while queued
	Postsubmit  string // the postsubmit run's src
	PostJob     string // its completed job
	WorkerBusy  string // alive, BUSY, running RunningJob
	WorkerIdle  string // alive, IDLE
	WorkerDead  string // last seen an hour ago
	WorkerQuar  string // QUARANTINED, alive
	LogText     string // RunningJob's log so far (with ANSI colours)
	ArtifactJob string // PassedJob has artifacts (the caller puts them)
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

func drive(tb testing.TB, st store.Store, id string, trs ...model.Transition) {
	tb.Helper()
	for _, tr := range trs {
		_, err := st.UpdateJob(context.Background(), id, tr)
		must(tb, err)
	}
}

func exit(c int) *int { return &c }

// Seed fills st with the small fixture around Now.
func Seed(tb testing.TB, st store.Store) *Fixture {
	tb.Helper()
	ctx := context.Background()
	f := &Fixture{WorkerBusy: "w-busy", WorkerIdle: "w-idle", WorkerDead: "w-dead", WorkerQuar: "w-quarantined"}
	at := func(min int) time.Time { return Now.Add(time.Duration(min) * time.Minute) }
	newPS := func(cl, ps int, owner, subject string, queued time.Time, wants bool, types ...string) (*model.Patchset, []*model.Job) {
		p := &model.Patchset{ID: model.PatchsetID(cl, ps), Change: cl, Patchset: ps, ChangeID: fmt.Sprintf("demo~main~I%040d", cl),
			Revision: fmt.Sprintf("%040x", cl*100+ps), Ref: fmt.Sprintf("refs/changes/%02d/%d/%d", cl%100, cl, ps), Project: "demo/hello",
			Branch: "main", Subject: subject, Owner: owner, Uploader: owner, TimeQueued: queued, WantsVote: wants, Round: 1}
		var jobs []*model.Job
		for _, typ := range types {
			j := model.NewJob(queued, p.Src(), typ, map[string]string{"TOLLGATE_GIT_REF": p.Ref}, typ == "lint")
			jobs = append(jobs, j)
			p.JobIDs = append(p.JobIDs, j.ID)
		}
		must(tb, st.CreatePatchset(ctx, p, jobs))
		return p, jobs
	}

	// 1-1: ended, voted -1.
	p, jobs := newPS(1, 1, "alice@example.com", "Add a greeting", at(-60), true, "build", "lint", "test")
	f.Failed, f.PassedJob, f.FailedJob, f.ArtifactJob = p.ID, jobs[0].ID, jobs[2].ID, jobs[0].ID
	drive(tb, st, jobs[0].ID, model.Transition{Kind: model.Start, Worker: f.WorkerIdle, Now: at(-59)},
		model.Transition{Kind: model.Finish, Worker: f.WorkerIdle, State: model.Completed, ExitCode: exit(0), Now: at(-55)})
	drive(tb, st, jobs[1].ID, model.Transition{Kind: model.Start, Worker: f.WorkerBusy, Now: at(-59)},
		model.Transition{Kind: model.Finish, Worker: f.WorkerBusy, State: model.Failed, ExitCode: exit(1), Now: at(-58)})
	drive(tb, st, jobs[2].ID, model.Transition{Kind: model.Start, Worker: f.WorkerBusy, Now: at(-57)},
		model.Transition{Kind: model.Finish, Worker: f.WorkerBusy, State: model.Failed, ExitCode: exit(1), Now: at(-50)})
	for _, u := range []model.PatchsetUpdate{
		{Kind: model.End, Now: at(-50)},
		{Kind: model.ClaimVote, Now: at(-50), Lease: time.Minute},
		{Kind: model.MarkVoted, Now: at(-50), Vote: -1, Message: "Tollgate: 2 of 3 jobs failed. Code-Review-1\n\nFAIL: test (exit code 1)"},
	} {
		_, err := st.UpdatePatchset(ctx, p.ID, u)
		must(tb, err)
	}

	// 3-1: cancelled by an admin while queued.
	_, cj := newPS(3, 1, "bob@example.com", "Fix a typo", at(-40), false, "build")
	drive(tb, st, cj[0].ID, model.Transition{Kind: model.Cancel, Reason: "cancelled by ada@example.com", Now: at(-39)})
	_, err := st.UpdatePatchset(ctx, model.PatchsetID(3, 1), model.PatchsetUpdate{Kind: model.End, Now: at(-39)})
	must(tb, err)
	f.Cancelled = model.PatchsetID(3, 1)

	// A postsubmit run, completed.
	post := &model.Postsubmit{ID: model.PostsubmitID("main", at(-30)), Branch: "main", Revision: strings.Repeat("ab", 20),
		Subject: "Land the greeting", Author: "alice@example.com", TimeCommitted: at(-30), TimeQueued: at(-29)}
	pj := model.NewJob(at(-29), post.Src(), "build", nil, false)
	post.JobIDs = []string{pj.ID}
	must(tb, st.CreatePostsubmit(ctx, post, []*model.Job{pj}))
	drive(tb, st, pj.ID, model.Transition{Kind: model.Start, Worker: f.WorkerIdle, Now: at(-28)},
		model.Transition{Kind: model.Finish, Worker: f.WorkerIdle, State: model.Completed, ExitCode: exit(0), Now: at(-25)})
	f.Postsubmit, f.PostJob = post.Src(), pj.ID

	// 2-1: running.
	p, jobs = newPS(2, 1, "dave@contributor.example", "Add Esperanto <translation> & \"quotes\"", at(-5), true, "build", "test")
	f.Running, f.RunningJob, f.QueuedJob = p.ID, jobs[0].ID, jobs[1].ID
	drive(tb, st, jobs[0].ID, model.Transition{Kind: model.Start, Worker: f.WorkerBusy, Now: at(-4)})
	f.LogText = "building \x1b[1;32mOK\x1b[0m\n<script>alert(1)</script>\n\x1b[31mwarning\x1b[0m: slow\n"
	must(tb, st.AppendLog(ctx, f.RunningJob, 0, []byte(f.LogText), Now.Add(24*time.Hour)))

	for _, w := range []*model.Worker{
		{ID: f.WorkerBusy, Host: "vm-1", Version: "v1.2", Labels: map[string]string{"os": "linux"}, State: model.WorkerBusy, CurrentJob: f.RunningJob, LastSeen: at(0), FirstSeen: at(-120)},
		{ID: f.WorkerIdle, Host: "vm-2", Version: "v1.2", State: model.WorkerIdle, LastSeen: at(0), FirstSeen: at(-120)},
		{ID: f.WorkerDead, Host: "vm-3", Version: "v1.1", State: model.WorkerIdle, LastSeen: at(-60), FirstSeen: at(-600)},
		{ID: f.WorkerQuar, Host: "vm-4", Version: "v1.2", State: model.WorkerIdle, LastSeen: at(0), FirstSeen: at(-120)},
	} {
		_, err := st.PutWorker(ctx, w)
		must(tb, err)
	}
	_, err = st.SetWorkerQuarantined(ctx, f.WorkerQuar, true)
	must(tb, err)

	for i := range 30 {
		must(tb, st.PutSamples(ctx, at(-30+i), map[string]float64{
			controller.SampleQueued: float64(i % 7), controller.SampleRunning: float64(i % 3),
			controller.SampleWorkersAlive: 3, controller.SampleWorkersBusy: float64(i % 3),
		}))
	}
	return f
}

// Config is a configuration for controllers over the fixtures.
func Config(tb testing.TB) *config.Config {
	tb.Helper()
	c, err := config.Parse([]byte(`
gerrit: {url: "http://127.0.0.1:1", project: demo/hello}
trust: {trusted_emails: '.*@example\.com'}
jobs:
  build: {command: [make]}
  test: {command: [make, test]}
  lint: {command: [make, lint], skip_voting: true}
`))
	must(tb, err)
	return c
}

// Controller returns a controller on st at clk, for the actions; its
// Gerrit is unreachable (the actions the UI takes never call it).
func Controller(tb testing.TB, st store.Store, clk clock.Clock) *controller.Controller {
	tb.Helper()
	gc, err := gerrit.New(gerrit.Options{URL: "http://127.0.0.1:1", Retries: -1})
	must(tb, err)
	c, err := controller.New(controller.Deps{Config: Config(tb), Store: st, Tasks: &taskstest.Recorder{}, Gerrit: gc, Clock: clk,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	must(tb, err)
	return c
}

// SeedMany fills st with patchsets of 5 jobs each until it holds jobs
// jobs, queued over the last 20 hours in every state, and workers
// workers, for the benchmarks. It writes through the Store, so it takes a
// few seconds for 10,000 jobs.
func SeedMany(tb testing.TB, st store.Store, jobs, workers int) {
	tb.Helper()
	ctx := context.Background()
	types := []string{"build", "test", "lint", "asan", "docs"}
	n := jobs / len(types)
	span := 20 * time.Hour
	for i := range n {
		queued := Now.Add(-span + time.Duration(i)*span/time.Duration(n))
		p := &model.Patchset{ID: model.PatchsetID(1000+i, 1), Change: 1000 + i, Patchset: 1, Project: "demo/hello", Branch: "main",
			Subject: fmt.Sprintf("Change number %d", i), Owner: fmt.Sprintf("dev%d@example.com", i%40), TimeQueued: queued, Round: 1}
		var js []*model.Job
		for _, typ := range types {
			j := model.NewJob(queued, p.Src(), typ, nil, typ == "docs")
			js = append(js, j)
			p.JobIDs = append(p.JobIDs, j.ID)
		}
		must(tb, st.CreatePatchset(ctx, p, js))
		w := fmt.Sprintf("w%03d", i%workers)
		switch {
		case i >= n-20: // the newest stay queued or running
			if i%2 == 0 {
				drive(tb, st, js[0].ID, model.Transition{Kind: model.Start, Worker: w, Now: queued.Add(time.Minute)})
			}
			continue
		}
		for k, j := range js {
			state := model.Completed
			switch (i + k) % 11 {
			case 3:
				state = model.Failed
			case 7:
				state = model.TimedOut
			}
			start := queued.Add(time.Duration(1+k) * time.Minute)
			drive(tb, st, j.ID, model.Transition{Kind: model.Start, Worker: w, Now: start},
				model.Transition{Kind: model.Finish, Worker: w, State: state, ExitCode: exit(0), Now: start.Add(time.Duration(2+(i+k)%20) * time.Minute)})
		}
		_, err := st.UpdatePatchset(ctx, p.ID, model.PatchsetUpdate{Kind: model.End, Now: queued.Add(30 * time.Minute)})
		must(tb, err)
	}
	for i := range workers {
		state := model.WorkerIdle
		if i%3 == 0 {
			state = model.WorkerBusy
		}
		seen := Now
		if i%10 == 9 {
			seen = Now.Add(-time.Hour)
		}
		_, err := st.PutWorker(ctx, &model.Worker{ID: fmt.Sprintf("w%03d", i), Host: fmt.Sprintf("vm-%03d", i), Version: "v1",
			State: state, LastSeen: seen, FirstSeen: Now.Add(-48 * time.Hour)})
		must(tb, err)
	}
	for m := range 24 * 60 {
		must(tb, st.PutSamples(ctx, Now.Add(-24*time.Hour+time.Duration(m)*time.Minute), map[string]float64{
			controller.SampleQueued: float64(m % 40), controller.SampleRunning: float64(m % 25),
			controller.SampleWorkersAlive: float64(workers), controller.SampleWorkersBusy: float64(m % 25),
		}))
	}
}
