package controller_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/gerrit"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// TestOnlyGerritActionsCallGerrit: every action but controller.GerritActions
// runs without touching Gerrit, which is why only the Gerrit actions'
// functions are given Gerrit's credentials in Google Cloud; and without a
// Gerrit client the Gerrit actions refuse with a clear error.
func TestOnlyGerritActionsCallGerrit(t *testing.T) {
	e := newEnv(t, baseConfig)
	ps := e.upload(trusted, "a change")
	if err := e.gerrit.SetVote(ps.Change, reviewer, "Presubmit-Ready", 1); err != nil { // so it wants a vote
		t.Fatal(err)
	}
	e.poll()
	p, jobs := e.patchset(ps.Change, ps.Number)
	e.finishAll("test")
	e.clock.Advance(time.Minute)

	// A Gerrit that counts every request and answers none.
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "not this Gerrit", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	gc, err := gerrit.New(gerrit.Options{URL: srv.URL, MaxQPS: 1000, BackoffBase: time.Millisecond, Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	counting, err := controller.New(controller.Deps{Config: e.cfg, Store: e.st, Tasks: e.tq, Gerrit: gc, Clock: e.clock,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	args := map[string]any{
		controller.CheckNewCL:          controller.CheckNewCLArgs{Change: ps.Change},
		controller.CancelOlderJobs:     controller.ChangeArgs{Change: ps.Change},
		controller.CheckPendingCL:      controller.PatchsetArgs{ID: p.ID},
		controller.CommentAndVote:      controller.PatchsetArgs{ID: p.ID},
		controller.QueuePostsubmitJobs: controller.BranchArgs{Branch: "main"},
		controller.CancelJob:           controller.CancelJobArgs{JobID: jobs[0].ID, Reason: "test"},
		controller.DeleteJobLogs:       controller.JobArgs{JobID: jobs[0].ID},
		controller.UpdateCLMetrics:     controller.PatchsetArgs{ID: p.ID},
		controller.UpdateJobMetrics:    controller.JobsArgs{JobIDs: []string{jobs[0].ID}},
		controller.CacheCleanup:        cache.CleanupOptions{},
	}
	// check_pending_cl first, so comment_and_vote has a vote to post.
	order := append([]string{controller.CheckPendingCL}, controller.Actions...)
	for _, action := range order {
		b, err := tasks.Marshal(action, args[action])
		if err != nil {
			t.Fatal(err)
		}
		before := calls.Load()
		err = counting.Handle(e.ctx, tasks.Task{ID: "t-" + action, Action: action, Args: b, Attempt: 1, Created: e.clock.Now()})
		called := calls.Load() > before
		if slices.Contains(controller.GerritActions, action) {
			if !called {
				t.Errorf("%s made no Gerrit request: is it still a Gerrit action?", action)
			}
			continue
		}
		if called {
			t.Errorf("%s called Gerrit, but is not in controller.GerritActions", action)
		}
		if err != nil {
			t.Errorf("%s: %v", action, err)
		}
	}

	noGerrit, err := controller.New(controller.Deps{Config: e.cfg, Store: e.st, Tasks: e.tq, Clock: e.clock,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("a controller without Gerrit: %v", err)
	}
	for _, action := range controller.GerritActions {
		b, _ := tasks.Marshal(action, args[action])
		err := noGerrit.Handle(e.ctx, tasks.Task{ID: "n-" + action, Action: action, Args: b, Attempt: 1, Created: e.clock.Now()})
		if !errs.Is(err, errs.FailedPrecondition) {
			t.Errorf("%s without a Gerrit client: %v, want FailedPrecondition", action, err)
		}
	}
}
