package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
)

// BenchmarkVoteLatency measures, on the embedded runtime, the time from the
// last job of a patchset finishing to its review arriving at the fake
// Gerrit: the worker's Finish defers check_pending_cl at once, which ends
// the patchset and defers comment_and_vote. The target is under 1 s at the
// median; the report gives the median and p90 over 50 patchsets, and the
// same with the patchset check left to the next tick for comparison.
func BenchmarkVoteLatency(b *testing.B) {
	const changes = 50
	g := fakegerrit.New(fakegerrit.Options{User: "bot", Password: "pw"})
	url, err := g.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	g.CreateBranch("p", "main", fakegerrit.CommitSpec{})
	b.Setenv("TG_LAT_USER", "bot")
	b.Setenv("TG_LAT_PW", "pw")
	cfg, err := config.Parse(fmt.Appendf(nil, `
gerrit: {url: %s, project: p, user_env: TG_LAT_USER, password_env: TG_LAT_PW, poll_interval: 1h, full_reconcile_interval: 1h, max_qps: 1000}
trust: {trusted_emails: '.*@example\.com'}
jobs: {build: {command: ["true"]}, test: {command: ["true"]}}
`, url))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var lat []time.Duration
	for b.Loop() {
		rt, err := startEmbedded(ctx, embeddedOptions{Config: cfg, DataDir: b.TempDir(), Listen: "127.0.0.1:0",
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), TickEvery: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < changes; i++ {
			ps, err := g.CreateChange(fakegerrit.ChangeSpec{Project: "p", Branch: "main", Subject: "x", OwnerEmail: "dev@example.com"})
			if err != nil {
				b.Fatal(err)
			}
			g.SetVote(ps.Change, "lead@example.com", "Presubmit-Ready", 1)
		}
		if err := rt.Queue.Defer(ctx, controller.CheckNewCLs, controller.CheckNewCLsArgs{Full: true}); err != nil {
			b.Fatal(err)
		}
		waitFor(b, 30*time.Second, func() bool {
			n, _ := rt.Store.CountJobs(ctx, model.Queued)
			return n[model.Queued] >= 2*changes
		})
		rt.Fleet.Heartbeat(ctx, fleet.Heartbeat{WorkerID: "bench"})
		// Run the jobs one at a time; when a patchset's last job finishes,
		// wait for its review and record the time since that Finish.
		done := map[int]int{}
		for {
			a, err := rt.Fleet.Claim(ctx, "bench")
			if errs.Is(err, errs.NotFound) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			code := 0
			finished := time.Now()
			if err := rt.Fleet.Finish(ctx, fleet.Result{WorkerID: "bench", JobID: a.Job.ID, State: model.Completed, ExitCode: &code}); err != nil {
				b.Fatal(err)
			}
			cl, _, ok := a.Job.Change()
			if !ok {
				continue
			}
			if done[cl]++; done[cl] == 2 {
				waitFor(b, 10*time.Second, func() bool { return len(g.Reviews(cl)) == 1 })
				lat = append(lat, time.Since(finished))
			}
		}
		if len(done) != changes {
			b.Fatalf("ran the jobs of %d patchsets, want %d", len(done), changes)
		}
		rt.Close()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
	b.ReportMetric(float64(time.Second.Microseconds())/1000/(float64(lat[len(lat)/2].Microseconds())/1000), "x-under-1s-target")
}

func waitFor(tb testing.TB, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %s", d)
		}
		time.Sleep(time.Millisecond)
	}
}
