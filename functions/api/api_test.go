package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/functions/api"
)

var t0 = time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)

func newServer(t *testing.T) (*httptest.Server, *sqlite.Store) {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for cl := 1; cl <= 3; cl++ {
		ps := &model.Patchset{ID: model.PatchsetID(cl, 1), Change: cl, Patchset: 1, Owner: "o" + string(rune('0'+cl)) + "@x.org", TimeQueued: t0.Add(time.Duration(cl) * time.Minute)}
		var jobs []*model.Job
		for _, typ := range []string{"build", "test"} {
			j := model.NewJob(ps.TimeQueued, ps.Src(), typ, nil, false)
			jobs = append(jobs, j)
			ps.JobIDs = append(ps.JobIDs, j.ID)
		}
		if err := st.CreatePatchset(ctx, ps, jobs); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(api.New(api.Options{Store: st}))
	t.Cleanup(srv.Close)
	return srv, st
}

func get(t *testing.T, url string, wantStatus int, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, b, wantStatus)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET %s: Content-Type %q", url, ct)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, b)
		}
	}
}

func TestListAndGet(t *testing.T) {
	srv, st := newServer(t)
	var cls api.Page[*model.Patchset]
	get(t, srv.URL+"/api/v1/cls", 200, &cls)
	if len(cls.Items) != 3 || cls.Items[0].ID != "3-1" {
		t.Fatalf("cls = %+v, want 3 newest first", cls.Items)
	}
	var one api.PatchsetWithJobs
	get(t, srv.URL+"/api/v1/cls/2-1", 200, &one)
	if one.Patchset.ID != "2-1" || len(one.Jobs) != 2 || one.Jobs[0].State != model.Queued {
		t.Fatalf("cl 2-1 = %+v", one)
	}
	var jobs api.Page[*model.Job]
	get(t, srv.URL+"/api/v1/jobs?state=queued&limit=4", 200, &jobs)
	if len(jobs.Items) != 4 || jobs.NextCursor == "" {
		t.Fatalf("first page: %d items, cursor %q", len(jobs.Items), jobs.NextCursor)
	}
	var rest api.Page[*model.Job]
	get(t, srv.URL+"/api/v1/jobs?state=queued&limit=4&cursor="+jobs.NextCursor, 200, &rest)
	if len(rest.Items) != 2 || rest.NextCursor != "" {
		t.Fatalf("second page: %d items, cursor %q", len(rest.Items), rest.NextCursor)
	}
	if _, err := st.ClaimJob(context.Background(), "w", []string{""}, t0); err != nil {
		t.Fatal(err)
	}
	get(t, srv.URL+"/api/v1/jobs?state=STARTED", 200, &jobs)
	if len(jobs.Items) != 1 {
		t.Fatalf("started jobs: %d", len(jobs.Items))
	}
	var j model.Job
	get(t, srv.URL+"/api/v1/jobs/"+jobs.Items[0].ID, 200, &j)
	if j.Worker != "w" {
		t.Fatalf("job = %+v", j)
	}
	get(t, srv.URL+"/api/v1/cls?change=1", 200, &cls)
	if len(cls.Items) != 1 || cls.Items[0].Change != 1 {
		t.Fatalf("filter by change: %+v", cls.Items)
	}
	var dead api.Page[model.DeadTask]
	get(t, srv.URL+"/api/v1/tasks/dead", 200, &dead)
	if dead.Items == nil {
		t.Error("dead tasks must be an empty list, not null")
	}
	get(t, srv.URL+"/healthz", 200, nil)
}

func TestErrorsAreJSONWithCodes(t *testing.T) {
	srv, _ := newServer(t)
	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/api/v1/cls/9-9", 404, "NotFound"},
		{"/api/v1/cls/nope", 400, "InvalidArgument"},
		{"/api/v1/cls/..%2F..%2Fetc", 400, "InvalidArgument"},
		{"/api/v1/jobs/20261124090000--cls-9-9--build", 404, "NotFound"},
		{"/api/v1/jobs/not-a-job-id", 400, "InvalidArgument"},
		{"/api/v1/jobs?state=EXPLODED", 400, "InvalidArgument"},
		{"/api/v1/jobs?limit=-1", 400, "InvalidArgument"},
		{"/api/v1/jobs?cursor=garbage", 400, "InvalidArgument"},
		{"/api/v1/cls?pending=maybe", 400, "InvalidArgument"},
		{"/api/v1/nothing", 404, "NotFound"},
	} {
		var body api.ErrorBody
		get(t, srv.URL+tc.path, tc.status, &body)
		if body.Error.Code != tc.code || body.Error.Message == "" {
			t.Errorf("%s: %+v, want code %s", tc.path, body, tc.code)
		}
	}
}
