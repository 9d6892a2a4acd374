package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/controller"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
	"github.com/tollgate-ci/tollgate/emulators/launcher"
)

// The chaos of scenario 11: every push delivered twice, and 10% of the
// deliveries failing.
var chaosSettings = launcher.Chaos{Duplicate: true, FailRate: 0.1}

// 11. Chaos. The same workload runs on the clean topology and on one whose
// every message is delivered twice and 10% of handler calls fail: the
// final states are the same, with exactly one review per voted patchset.
// Poison messages (tasks whose arguments a handler refuses) end in the
// dead letter and show in /api/v1/tasks/dead, on both.
func chaos(t *testing.T, e *env) {
	clean := runWorkload(t, e)
	e.poison(t)
	t.Run("chaos", func(t *testing.T) {
		settings := chaosSettings
		settings.Seed = uint64(time.Now().UnixNano())
		t.Logf("chaos seed %d", settings.Seed)
		ce, err := e.private(t, options{chaos: &settings})
		if errors.Is(err, ErrUnsupported) {
			e.note(scenarioChaos, "clean run and poison only: no chaos on this topology")
			t.Skip("this topology cannot deliver unreliably: " + err.Error())
		}
		if err != nil {
			t.Fatal(err)
		}
		got := runWorkload(t, ce)
		if got != clean {
			t.Errorf("final state under chaos differs from the clean run's.\nclean:\n%s\nchaos:\n%s", clean, got)
		}
		ce.poison(t)
		oneReviewPerPatchset(t, ce)
		if em, ok := ce.topo.(*Emulated); ok {
			c := em.Launcher().ChaosCounts()
			if c.FailedBefore+c.FailedAfter == 0 || c.Deliveries < 2*(c.Pushes-c.FailedBefore) {
				t.Errorf("the chaos did not happen: %+v", c)
			}
			e.note(scenarioChaos, "same final state; %d pushes, %d deliveries, %d failed before the handler, %d after",
				c.Pushes, c.Deliveries, c.FailedBefore, c.FailedAfter)
		} else {
			e.note(scenarioChaos, "same final state (%s: duplicate, fail=%g)", EnvChaos, settings.FailRate)
		}
	})
}

const scenarioChaos = "11-chaos-duplicates-failures-poison"

// runWorkload runs the chaos scenario's changes and returns their final
// state, in terms that do not depend on the topology (no change numbers).
func runWorkload(t *testing.T, e *env) string {
	t.Helper()
	type chg struct {
		name  string
		ps    fakegerrit.PatchSet
		ready bool
		wait  func() // until its final state
	}
	mk := func(name, owner string, ready bool, rules ...Rule) *chg {
		c := &chg{name: name, ready: ready, ps: e.change(t, owner, "11: "+name, rules...)}
		if ready {
			e.approve(t, c.ps.Change)
		}
		return c
	}
	before := e.g.RequestCount(fakegerrit.EndpointQueryChanges)
	all := []*chg{
		mk("pass", Trusted("kim"), true),
		mk("test-fails", Trusted("kim"), true, Rule{Type: "test", Action: Fail}),
		mk("lint-fails", Trusted("kim"), true, Rule{Type: "lint", Action: Fail}),
		mk("untrusted-ready", Untrusted("lou"), true),
		mk("untrusted", Untrusted("lou"), false),
		mk("not-ready", Trusted("kim"), false),
		mk("superseded", Trusted("kim"), true, Rule{Type: "test", Patchset: 1, Action: Hang}),
	}
	sup := all[6]
	e.patchset(t, sup.ps.Change, 1, voteWait, "with build and lint COMPLETED, test STARTED", func(p *Patchset) bool {
		st := p.States()
		return st["build"] == "COMPLETED" && st["lint"] == "COMPLETED" && st["test"] == "STARTED"
	})
	if _, err := e.g.UploadPatchset(sup.ps.Change, fakegerrit.PatchSetSpec{Kind: fakegerrit.KindRework}); err != nil {
		t.Fatal(err)
	}
	e.approve(t, sup.ps.Change)
	for _, c := range all {
		switch {
		case c.name == "superseded":
			e.waitReview(t, c.ps.Change, 2, voteWait)
			e.patchset(t, c.ps.Change, 1, voteWait, "ended", (*Patchset).Ended)
		case c.ready:
			e.waitReview(t, c.ps.Change, 1, voteWait)
		case c.name == "not-ready":
			e.patchset(t, c.ps.Change, 1, voteWait, "ended", (*Patchset).Ended)
		}
	}
	e.polls(t, before, 3)
	// The state, once it holds still for two seconds.
	state := func() string {
		var b strings.Builder
		for _, c := range all {
			info, err := e.g.Change(c.ps.Change, "CURRENT_REVISION")
			if err != nil {
				return err.Error()
			}
			cur := info.Revisions[info.CurrentRevision].Number
			for ps := 1; ps <= cur; ps++ {
				fmt.Fprintf(&b, "%s/%d:", c.name, ps)
				p, err := e.api.Patchset(context.Background(), c.ps.Change, ps)
				switch {
				case errors.Is(err, ErrNotFound):
					b.WriteString(" no patchset")
				case err != nil:
					return err.Error()
				default:
					st := p.States()
					var types []string
					for typ := range st {
						types = append(types, typ)
					}
					slices.Sort(types)
					for _, typ := range types {
						fmt.Fprintf(&b, " %s=%s", typ, st[typ])
					}
					fmt.Fprintf(&b, " wants_vote=%v voted=%v vote=%+d", p.Patchset.WantsVote, p.Patchset.Voted, p.Patchset.Vote)
				}
				rs := e.reviewsOf(c.ps.Change, ps)
				fmt.Fprintf(&b, " reviews=%d", len(rs))
				for _, r := range rs {
					fmt.Fprintf(&b, " %s%+d", VoteLabel, r.Labels[VoteLabel])
				}
				b.WriteString("\n")
			}
		}
		return b.String()
	}
	var last string
	stable := time.Now()
	eventually(t, 60*time.Second, "a final state", func() (bool, string) {
		s := state()
		if s != last {
			last, stable = s, time.Now()
		}
		return time.Since(stable) >= 2*time.Second, s
	})
	return last
}

// poison delivers tasks whose arguments the handlers refuse and waits for
// them in the dead letter, through the API.
func (e *env) poison(t *testing.T) {
	t.Helper()
	mark := "poison-" + randomHex(4)
	for _, p := range []struct {
		action, args string
	}{
		{controller.CheckPendingCL, fmt.Sprintf(`{"id":"1-1","e2e":%q}`, mark)},
		{controller.CommentAndVote, fmt.Sprintf(`{"e2e":%q}`, mark)},
	} {
		if err := e.topo.DeliverRaw(ctx(t), p.action, []byte(p.args)); err != nil {
			t.Fatal(err)
		}
	}
	var dead []DeadTask
	eventually(t, 60*time.Second, "the poison messages in /api/v1/tasks/dead", func() (bool, string) {
		all, err := e.api.Dead(context.Background())
		if err != nil {
			return false, err.Error()
		}
		dead = dead[:0]
		seen := map[string]bool{}
		for _, d := range all {
			if strings.Contains(d.Args, mark) {
				dead = append(dead, d)
				seen[d.Action] = true
			}
		}
		return seen[controller.CheckPendingCL] && seen[controller.CommentAndVote], fmt.Sprintf("%d dead tasks, %d of ours", len(all), len(dead))
	})
	for _, d := range dead {
		if d.LastError == "" {
			t.Errorf("dead task %s (%s) has no last error", d.ID, d.Action)
		}
	}
}
