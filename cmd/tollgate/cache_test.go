package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/model"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
)

// A job on a built-in worker stores an object in the artifact cache through
// TOLLGATE_CACHE_URL and reads it back; a second job finds it there.
func TestJobsShareTheCache(t *testing.T) {
	g := fakegerrit.New(fakegerrit.Options{User: "bot", Password: "pw"})
	gurl, err := g.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.CreateBranch("p", "main", fakegerrit.CommitSpec{})
	t.Setenv("TG_CACHE_USER", "bot")
	t.Setenv("TG_CACHE_PW", "pw")
	// put stores "hello tollgate" under its digest; get reads it back.
	const put = `printf 'hello tollgate' > obj; h=$(sha256sum obj | cut -d' ' -f1); ` +
		`curl -sf -X PUT --data-binary @obj "$TOLLGATE_CACHE_URL/cas/$h/14" && curl -sf "$TOLLGATE_CACHE_URL/cas/$h/14"; echo`
	cfg, err := config.Parse(fmt.Appendf(nil, `
gerrit: {url: %s, project: p, user_env: TG_CACHE_USER, password_env: TG_CACHE_PW, poll_interval: 1s, max_qps: 100}
trust: {trusted_emails: '.*@example\.com'}
jobs:
  put: {command: [sh, -c, %q]}
cache: {min_headroom: 1MB, max_headroom: 2MB}
`, gurl, put))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := startEmbedded(context.Background(), embeddedOptions{Config: cfg, DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ps, _ := g.CreateChange(fakegerrit.ChangeSpec{Project: "p", Branch: "main", Subject: "x", OwnerEmail: "dev@example.com"})
	ctx := context.Background()
	var j *model.Job
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, jobs, err := rt.Store.GetPatchsetWithJobs(ctx, model.PatchsetID(ps.Change, 1))
		if err == nil && len(jobs) == 1 && jobs[0].State.Terminal() {
			j = jobs[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache job did not end within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _, _ := rt.Store.ReadLog(ctx, j.ID, 0, 1<<16)
	if j.State != model.Completed || !strings.Contains(string(log), "hello tollgate") {
		t.Fatalf("job %s, log %q", j.State, log)
	}
	st, err := rt.Cache.Stats(ctx)
	if err != nil || st.Objects != 1 || st.Bytes != 14 {
		t.Fatalf("cache stats = %+v, %v; want the one object", st, err)
	}
}
