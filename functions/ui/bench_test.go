package ui_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/functions/api/apitest"
	"github.com/tollgate-ci/tollgate/functions/ui"
)

// counting is a Store that counts round trips and the job records they
// return, so the benchmark can show a page reads a page of jobs, not all.
type counting struct {
	store.Store
	mu          sync.Mutex
	calls, jobs int
}

func (c *counting) add(calls, jobs int) {
	c.mu.Lock()
	c.calls += calls
	c.jobs += jobs
	c.mu.Unlock()
}

func (c *counting) take() (calls, jobs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls, jobs, c.calls, c.jobs = c.calls, c.jobs, 0, 0
	return calls, jobs
}

func (c *counting) ListJobs(ctx context.Context, q store.JobQuery) ([]*model.Job, string, error) {
	v, n, err := c.Store.ListJobs(ctx, q)
	c.add(1, len(v))
	return v, n, err
}

func (c *counting) GetJobs(ctx context.Context, ids []string) (map[string]*model.Job, error) {
	v, err := c.Store.GetJobs(ctx, ids)
	c.add(1, len(v))
	return v, err
}

func (c *counting) GetJob(ctx context.Context, id string) (*model.Job, error) {
	c.add(1, 1)
	return c.Store.GetJob(ctx, id)
}

func (c *counting) GetPatchsetWithJobs(ctx context.Context, id string) (*model.Patchset, []*model.Job, error) {
	p, v, err := c.Store.GetPatchsetWithJobs(ctx, id)
	c.add(1, len(v))
	return p, v, err
}

func (c *counting) ListPatchsets(ctx context.Context, q store.PatchsetQuery) ([]*model.Patchset, string, error) {
	c.add(1, 0)
	return c.Store.ListPatchsets(ctx, q)
}

func (c *counting) ListPostsubmits(ctx context.Context, branch string, limit int, cursor string) ([]*model.Postsubmit, string, error) {
	c.add(1, 0)
	return c.Store.ListPostsubmits(ctx, branch, limit, cursor)
}

func (c *counting) ListWorkers(ctx context.Context, seenBefore time.Time) ([]*model.Worker, error) {
	c.add(1, 0)
	return c.Store.ListWorkers(ctx, seenBefore)
}

func (c *counting) GetWorker(ctx context.Context, id string) (*model.Worker, error) {
	c.add(1, 0)
	return c.Store.GetWorker(ctx, id)
}

func (c *counting) CountJobs(ctx context.Context, states ...model.State) (map[model.State]int, error) {
	c.add(1, 0)
	return c.Store.CountJobs(ctx, states...)
}

func (c *counting) CountJobsSince(ctx context.Context, since time.Time) (map[model.State]int, error) {
	c.add(1, 0)
	return c.Store.CountJobsSince(ctx, since)
}

func (c *counting) ListSamples(ctx context.Context, name string, since time.Time) ([]model.Sample, error) {
	c.add(1, 0)
	return c.Store.ListSamples(ctx, name, since)
}

func (c *counting) GetMeta(ctx context.Context, key string) (string, error) {
	c.add(1, 0)
	return c.Store.GetMeta(ctx, key)
}

// bigUI is a UI over a store of jobs jobs and workers workers.
func bigUI(tb testing.TB, jobs, workers int) (*ui.UI, *counting) {
	tb.Helper()
	st, err := sqlite.Open(filepath.Join(tb.TempDir(), "db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	start := time.Now()
	apitest.SeedMany(tb, st, jobs, workers)
	tb.Logf("seeded %d jobs and %d workers in %v", jobs, workers, time.Since(start).Round(time.Millisecond))
	c := &counting{Store: st}
	cfg := apitest.Config(tb)
	cfg.UI = config.UI{Users: []string{"*"}, LocalUser: "local@localhost"}
	clk := clock.NewFake(apitest.Now)
	u, err := ui.New(ui.Options{Config: cfg, Store: c, Actions: apitest.Controller(tb, st, clk), Clock: clk, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return u, c
}

// bigPages are the pages of the benchmark and of the bounded-read test,
// with the most job records each may read (the stats page samples up to
// api.MaxStatsJobs ended jobs by design; the others read a page).
func bigPages(jobs int) []struct {
	name, path string
	maxJobs    int
} {
	// A patchset three quarters of the way through SeedMany's, and its test job.
	n := jobs / 5
	i := n * 3 / 4
	span := 20 * time.Hour
	ps := model.PatchsetID(1000+i, 1)
	job := model.JobID(apitest.Now.Add(-span+time.Duration(i)*span/time.Duration(n)), model.PatchsetSrc(1000+i, 1), "test")
	return []struct {
		name, path string
		maxJobs    int
	}{
		{"overview", "/", 200},
		{"patchsets", "/cls", 300},
		{"patchsets-filtered", "/cls?owner=dev7%40example.com&state=ended", 300},
		{"patchset", "/cls/" + ps, 10},
		{"jobs", "/jobs", 50},
		{"jobs-failed-by-end", "/jobs?state=FAILED&state=TIMED_OUT&order=ended", 50},
		{"jobs-by-start", "/jobs?order=started", 50},
		{"job", "/jobs/" + job, 10},
		{"workers", "/workers?sort=last_seen", 0},
		{"worker", "/workers/w007", 50},
		{"postsubmit", "/branches", 0},
		{"stats", "/stats", 2000},
		{"api-jobs", "/api/v1/jobs?limit=100", 100},
		{"api-overview", "/api/v1/overview", 200},
	}
}

func get(tb testing.TB, u *ui.UI, path string) string {
	r := httptest.NewRequest("GET", "http://ci.example.com"+path, nil)
	w := httptest.NewRecorder()
	u.ServeHTTP(w, r)
	if w.Code != 200 {
		tb.Fatalf("GET %s: %d %.300s", path, w.Code, w.Body)
	}
	return w.Body.String()
}

// The pages read a bounded number of jobs from a store of 3,000: the job
// list reads its page, never every job.
func TestPagesReadBoundedJobs(t *testing.T) {
	u, c := bigUI(t, 3000, 50)
	for _, p := range bigPages(3000) {
		c.take()
		body := get(t, u, p.path)
		calls, jobs := c.take()
		if jobs > p.maxJobs {
			t.Errorf("%s read %d jobs (%d store calls), want at most %d", p.path, jobs, calls, p.maxJobs)
		}
		if len(body) < 100 {
			t.Errorf("%s: empty page", p.path)
		}
	}
}

// BenchmarkPages renders every page (server time, through ServeHTTP into
// a recorder) over the embedded store holding 10,000 jobs and 200 workers,
// and reports per page the time, the Store round trips and the job
// records read. The target is under 100 ms a page.
//
//	go test ./functions/ui -run XXX -bench Pages -benchtime 20x
func BenchmarkPages(b *testing.B) {
	u, c := bigUI(b, 10000, 200)
	var report []string
	for _, p := range bigPages(10000) {
		b.Run(p.name, func(b *testing.B) {
			get(b, u, p.path) // warm the template buffers and SQLite's cache
			c.take()
			start := time.Now()
			n := 0
			for b.Loop() {
				get(b, u, p.path)
				n++
			}
			per := time.Since(start) / time.Duration(n)
			calls, jobs := c.take()
			b.ReportMetric(float64(per.Microseconds())/1000, "ms/page")
			b.ReportMetric(float64(calls)/float64(n), "store-calls/page")
			b.ReportMetric(float64(jobs)/float64(n), "jobs-read/page")
			b.ReportMetric(100/(float64(per.Microseconds())/1000), "x-under-100ms")
			report = append(report, fmt.Sprintf("%-20s %7.2f ms  %4.0f store calls  %5.0f jobs read", p.name,
				float64(per.Microseconds())/1000, float64(calls)/float64(n), float64(jobs)/float64(n)))
		})
	}
	sort.Strings(report)
	b.Logf("10,000 jobs, 200 workers:\n%s", strings.Join(report, "\n"))
}
