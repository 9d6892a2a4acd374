package api_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/fsblob"
	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/api"
)

func TestLogsArtifactsWorkers(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b, err := fsblob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ps := &model.Patchset{ID: "5-1", Change: 5, Patchset: 1, TimeQueued: t0}
	j := model.NewJob(t0, ps.Src(), "build", nil, false)
	ps.JobIDs = []string{j.ID}
	if err := st.CreatePatchset(ctx, ps, []*model.Job{j}); err != nil {
		t.Fatal(err)
	}
	st.PutWorker(ctx, &model.Worker{ID: "w1", Host: "h", State: model.WorkerBusy, LastSeen: time.Now()})
	st.PutWorker(ctx, &model.Worker{ID: "w2", Host: "h", State: model.WorkerIdle, LastSeen: time.Now().Add(-time.Hour)})
	if _, err := st.ClaimJob(ctx, "w1", []string{""}, t0); err != nil {
		t.Fatal(err)
	}
	st.AppendLog(ctx, j.ID, 0, []byte("line 1\nline 2\n"), t0.Add(time.Hour))
	b.Put(ctx, j.ID+"/report/index.html", strings.NewReader("<script>alert(1)</script>"), "text/html")
	srv := httptest.NewServer(api.New(api.Options{Store: st, Blobs: b, WorkerDeath: 5 * time.Minute, LongPoll: 2 * time.Second}))
	defer srv.Close()

	var chunk api.LogChunk
	get(t, srv.URL+"/api/v1/jobs/"+j.ID+"/log?offset=7", 200, &chunk)
	if chunk.Data != "line 2\n" || chunk.NextOffset != 14 || chunk.Size != 14 || chunk.Complete {
		t.Fatalf("log chunk = %+v", chunk)
	}
	// A long poll waits for the next bytes.
	go func() {
		time.Sleep(300 * time.Millisecond)
		st.AppendLog(ctx, j.ID, 14, []byte("line 3\n"), t0.Add(time.Hour))
	}()
	get(t, srv.URL+"/api/v1/jobs/"+j.ID+"/log?offset=14&wait=1", 200, &chunk)
	if chunk.Data != "line 3\n" || chunk.NextOffset != 21 {
		t.Fatalf("long-polled chunk = %+v", chunk)
	}
	code := 0
	st.UpdateJob(ctx, j.ID, model.Transition{Kind: model.Finish, Worker: "w1", State: model.Completed, ExitCode: &code, Now: t0})
	get(t, srv.URL+"/api/v1/jobs/"+j.ID+"/log?offset=21&wait=1", 200, &chunk)
	if !chunk.Complete || chunk.Data != "" {
		t.Fatalf("end of an ended job's log = %+v", chunk)
	}

	var arts api.Page[api.Artifact]
	get(t, srv.URL+"/api/v1/jobs/"+j.ID+"/artifacts", 200, &arts)
	if len(arts.Items) != 1 || arts.Items[0].Name != "report/index.html" || arts.Items[0].Size != 25 {
		t.Fatalf("artifacts = %+v", arts.Items)
	}
	resp, err := http.Get(srv.URL + arts.Items[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "<script>alert(1)</script>" || resp.Header.Get("Content-Security-Policy") != "sandbox" {
		t.Fatalf("artifact: %d %q csp=%q", resp.StatusCode, body, resp.Header.Get("Content-Security-Policy"))
	}
	var e api.ErrorBody
	get(t, srv.URL+"/api/v1/jobs/"+j.ID+"/artifacts/..%2F..%2Fdb", 400, &e)
	get(t, srv.URL+"/api/v1/jobs/"+j.ID+"/artifacts/missing.txt", 404, &e)

	var ws api.Page[api.WorkerView]
	get(t, srv.URL+"/api/v1/workers", 200, &ws)
	alive := map[string]bool{}
	for _, w := range ws.Items {
		alive[w.ID] = w.Alive
	}
	if len(ws.Items) != 2 || !alive["w1"] || alive["w2"] {
		t.Fatalf("workers = %+v", alive)
	}
	var wd api.WorkerDetail
	get(t, srv.URL+"/api/v1/workers/w1", 200, &wd)
	if len(wd.RecentJobs) != 1 || wd.RecentJobs[0].ID != j.ID {
		t.Fatalf("worker detail = %+v", wd)
	}
	get(t, srv.URL+"/api/v1/workers/nobody", 404, &e)
}
