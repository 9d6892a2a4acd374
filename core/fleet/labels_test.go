package fleet_test

import (
	"testing"

	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/model"
)

// A worker claims only jobs whose required labels (recorded when the job
// was queued) its own labels meet; the rest wait for other workers.
func TestClaimMatchesLabels(t *testing.T) {
	e := newEnv(t)
	cfg, err := config.Parse([]byte(`
gerrit: {url: "http://gerrit.invalid", project: p}
trust: {trusted_emails: '.*'}
jobs:
  build: {command: [make]}
  large: {command: [make, big], require: {os: linux, pool: large}}
  mac: {command: [make, mac], require: {os: mac}}
`))
	if err != nil {
		t.Fatal(err)
	}
	*e.cfg = *cfg
	// Jobs record their type's requirements when queued, as the
	// controller queues them.
	ps := &model.Patchset{ID: "1-1", Change: 1, Patchset: 1, TimeQueued: e.clock.Now()}
	var jobs []*model.Job
	for _, typ := range []string{"large", "mac", "build"} {
		j := model.NewJob(e.clock.Now(), ps.Src(), typ, nil, false)
		j.SetRequire(cfg.Jobs[typ].Require)
		jobs = append(jobs, j)
		ps.JobIDs = append(ps.JobIDs, j.ID)
	}
	if err := e.st.CreatePatchset(e.ctx, ps, jobs); err != nil {
		t.Fatal(err)
	}

	heartbeat := func(id string, labels map[string]string) {
		t.Helper()
		if _, err := e.svc.Heartbeat(e.ctx, fleet.Heartbeat{WorkerID: id, Host: "h", Version: "v1", Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(id string) string {
		t.Helper()
		a, err := e.svc.Claim(e.ctx, id)
		if errs.Is(err, errs.NotFound) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return a.Job.Type
	}
	heartbeat("linux", map[string]string{"os": "linux"})
	heartbeat("big", map[string]string{"os": "linux", "pool": "large", "zone": "b"})
	heartbeat("mac", map[string]string{"os": "mac"})
	// The plain linux worker meets only build's (empty) requirements.
	if got := claim("linux"); got != "build" {
		t.Fatalf("linux worker claimed %q, want build", got)
	}
	if got := claim("linux"); got != "" {
		t.Fatalf("linux worker claimed %q, want nothing: large needs pool=large, mac os=mac", got)
	}
	if got := claim("mac"); got != "mac" {
		t.Fatalf("mac worker claimed %q", got)
	}
	if got := claim("big"); got != "large" {
		t.Fatalf("large worker claimed %q", got)
	}
	// A config whose every job type requires labels a worker lacks offers
	// it nothing to claim.
	e.cfg.Jobs = map[string]config.Job{"mac": cfg.Jobs["mac"]}
	if _, err := e.svc.Claim(e.ctx, "linux"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("claim with no pool to serve: %v", err)
	}
}
