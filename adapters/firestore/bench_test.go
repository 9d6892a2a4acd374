package firestore

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tollgate-ci/tollgate/adapters/sqlite"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

// counting is a store.Store that counts method calls: the unit of round
// trips the benchmark compares across backends (one per call).
type counting struct {
	store.Store
	calls atomic.Int64
}

func (c *counting) CreatePatchset(ctx context.Context, ps *model.Patchset, jobs []*model.Job) error {
	c.calls.Add(1)
	return c.Store.CreatePatchset(ctx, ps, jobs)
}

func (c *counting) GetPatchset(ctx context.Context, id string) (*model.Patchset, error) {
	c.calls.Add(1)
	return c.Store.GetPatchset(ctx, id)
}

func (c *counting) GetPatchsets(ctx context.Context, ids []string) (map[string]*model.Patchset, error) {
	c.calls.Add(1)
	return c.Store.GetPatchsets(ctx, ids)
}

func (c *counting) GetPatchsetWithJobs(ctx context.Context, id string) (*model.Patchset, []*model.Job, error) {
	c.calls.Add(1)
	return c.Store.GetPatchsetWithJobs(ctx, id)
}

func (c *counting) UpdatePatchset(ctx context.Context, id string, u model.PatchsetUpdate) (*model.Patchset, error) {
	c.calls.Add(1)
	return c.Store.UpdatePatchset(ctx, id, u)
}

func (c *counting) ListPatchsets(ctx context.Context, q store.PatchsetQuery) ([]*model.Patchset, string, error) {
	c.calls.Add(1)
	return c.Store.ListPatchsets(ctx, q)
}

func (c *counting) CreatePostsubmit(ctx context.Context, p *model.Postsubmit, jobs []*model.Job) error {
	c.calls.Add(1)
	return c.Store.CreatePostsubmit(ctx, p, jobs)
}

func (c *counting) LatestPostsubmit(ctx context.Context, branch string) (*model.Postsubmit, error) {
	c.calls.Add(1)
	return c.Store.LatestPostsubmit(ctx, branch)
}

func (c *counting) ListPostsubmits(ctx context.Context, branch string, limit int, cursor string) ([]*model.Postsubmit, string, error) {
	c.calls.Add(1)
	return c.Store.ListPostsubmits(ctx, branch, limit, cursor)
}

func (c *counting) GetJob(ctx context.Context, id string) (*model.Job, error) {
	c.calls.Add(1)
	return c.Store.GetJob(ctx, id)
}

func (c *counting) GetJobs(ctx context.Context, ids []string) (map[string]*model.Job, error) {
	c.calls.Add(1)
	return c.Store.GetJobs(ctx, ids)
}

func (c *counting) UpdateJob(ctx context.Context, id string, t model.Transition) (*model.Job, error) {
	c.calls.Add(1)
	return c.Store.UpdateJob(ctx, id, t)
}

func (c *counting) ClaimJob(ctx context.Context, workerID string, pools []string, now time.Time) (*model.Job, error) {
	c.calls.Add(1)
	return c.Store.ClaimJob(ctx, workerID, pools, now)
}

func (c *counting) ListJobs(ctx context.Context, q store.JobQuery) ([]*model.Job, string, error) {
	c.calls.Add(1)
	return c.Store.ListJobs(ctx, q)
}

func (c *counting) CountJobs(ctx context.Context, states ...model.State) (map[model.State]int, error) {
	c.calls.Add(1)
	return c.Store.CountJobs(ctx, states...)
}

func (c *counting) PutWorker(ctx context.Context, w *model.Worker) (*model.Worker, error) {
	c.calls.Add(1)
	return c.Store.PutWorker(ctx, w)
}

func (c *counting) GetWorker(ctx context.Context, id string) (*model.Worker, error) {
	c.calls.Add(1)
	return c.Store.GetWorker(ctx, id)
}

func (c *counting) ListWorkers(ctx context.Context, seenBefore time.Time) ([]*model.Worker, error) {
	c.calls.Add(1)
	return c.Store.ListWorkers(ctx, seenBefore)
}

func (c *counting) SetWorkerQuarantined(ctx context.Context, id string, quarantined bool) (*model.Worker, error) {
	c.calls.Add(1)
	return c.Store.SetWorkerQuarantined(ctx, id, quarantined)
}

func (c *counting) DeleteWorker(ctx context.Context, id string) error {
	c.calls.Add(1)
	return c.Store.DeleteWorker(ctx, id)
}

func (c *counting) AppendLog(ctx context.Context, jobID string, off int64, data []byte, expires time.Time) error {
	c.calls.Add(1)
	return c.Store.AppendLog(ctx, jobID, off, data, expires)
}

func (c *counting) ReadLog(ctx context.Context, jobID string, off int64, max int) ([]byte, int64, error) {
	c.calls.Add(1)
	return c.Store.ReadLog(ctx, jobID, off, max)
}

func (c *counting) ListExpiredLogs(ctx context.Context, now time.Time, limit int) ([]string, error) {
	c.calls.Add(1)
	return c.Store.ListExpiredLogs(ctx, now, limit)
}

func (c *counting) DeleteJobLogs(ctx context.Context, jobID string) error {
	c.calls.Add(1)
	return c.Store.DeleteJobLogs(ctx, jobID)
}

func (c *counting) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	c.calls.Add(1)
	return c.Store.AcquireLease(ctx, name, holder, now, ttl)
}

func (c *counting) GetMeta(ctx context.Context, key string) (string, error) {
	c.calls.Add(1)
	return c.Store.GetMeta(ctx, key)
}

func (c *counting) SetMeta(ctx context.Context, key, value string) error {
	c.calls.Add(1)
	return c.Store.SetMeta(ctx, key, value)
}

// rpcs counts gRPC calls by method, unary and streaming alike (reads and
// queries are server streams).
type rpcs struct {
	mu sync.Mutex
	n  map[string]int64
}

func (r *rpcs) add(method string) {
	r.mu.Lock()
	if r.n == nil {
		r.n = map[string]int64{}
	}
	r.n[method[strings.LastIndex(method, "/")+1:]]++
	r.mu.Unlock()
}

func (r *rpcs) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			r.add(method)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			r.add(method)
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

// take returns the counts so far and resets them.
func (r *rpcs) take() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.n
	r.n = nil
	return out
}

func total(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

const lifeJobs = 5

// life runs one patchset's whole life on st: created with its jobs, each
// job claimed and completed, the pending check, the end, the vote claim
// and the vote.
func life(ctx context.Context, st store.Store, cl int, now time.Time) error {
	p := &model.Patchset{ID: model.PatchsetID(cl, 1), Change: cl, Patchset: 1, Owner: "dev@example.com",
		Project: "p", Branch: "main", TimeQueued: now, WantsVote: true}
	var jobs []*model.Job
	for i := range lifeJobs {
		j := model.NewJob(now, p.Src(), fmt.Sprintf("job-%d", i), map[string]string{"REF": "refs/changes/1"}, false)
		jobs = append(jobs, j)
		p.JobIDs = append(p.JobIDs, j.ID)
	}
	if err := st.CreatePatchset(ctx, p, jobs); err != nil {
		return err
	}
	code := 0
	for range lifeJobs {
		j, err := st.ClaimJob(ctx, "w1", []string{""}, now)
		if err != nil {
			return err
		}
		if _, err := st.UpdateJob(ctx, j.ID, model.Transition{Kind: model.Finish, Worker: "w1", State: model.Completed, ExitCode: &code, Now: now}); err != nil {
			return err
		}
	}
	_, got, err := st.GetPatchsetWithJobs(ctx, p.ID)
	if err != nil {
		return err
	}
	for _, j := range got {
		if !j.State.Terminal() {
			return fmt.Errorf("job %s still %s", j.ID, j.State)
		}
	}
	for _, u := range []model.PatchsetUpdate{
		{Kind: model.End, Now: now},
		{Kind: model.ClaimVote, Now: now, Lease: time.Minute},
		{Kind: model.MarkVoted, Now: now, Vote: 1, Message: "all passed"},
	} {
		if _, err := st.UpdatePatchset(ctx, p.ID, u); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkPatchsetLife measures one patchset's whole life (create with 5
// jobs, claim and complete them, the pending check with
// GetPatchsetWithJobs, end, claim the vote, mark voted) on the Firestore
// emulator and, in the same run, on the embedded sqlite store. It reports
// wall time per life on each, Store calls per life (the same on both, the
// port's unit of round trips), Firestore RPCs per life, and sqlite
// transactions per life.
func BenchmarkPatchsetLife(b *testing.B) {
	var counter rpcs
	fsStore := openTest(b, Options{DialOptions: counter.dialOptions()})
	sq, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer sq.Close()
	fsc, sqc := &counting{Store: fsStore}, &counting{Store: sq}
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	counter.take()

	var (
		fsTime, sqTime time.Duration
		byMethod       = map[string]int64{}
		cl             = 0
	)
	r0, w0 := sq.RoundTrips()
	for b.Loop() {
		cl++
		t0 := time.Now()
		if err := life(ctx, fsc, cl, now); err != nil {
			b.Fatal("firestore: ", err)
		}
		t1 := time.Now()
		if err := life(ctx, sqc, cl, now); err != nil {
			b.Fatal("sqlite: ", err)
		}
		sqTime += time.Since(t1)
		fsTime += t1.Sub(t0)
		for k, v := range counter.take() {
			byMethod[k] += v
		}
	}
	r1, w1 := sq.RoundTrips()
	n := float64(cl)
	b.ReportMetric(fsTime.Seconds()*1000/n, "firestore-ms/life")
	b.ReportMetric(sqTime.Seconds()*1000/n, "sqlite-ms/life")
	b.ReportMetric(float64(fsc.calls.Load())/n, "firestore-calls/life")
	b.ReportMetric(float64(sqc.calls.Load())/n, "sqlite-calls/life")
	b.ReportMetric(float64(total(byMethod))/n, "firestore-rpcs/life")
	b.ReportMetric(float64(r1-r0+w1-w0)/n, "sqlite-tx/life")
	var parts []string
	for k, v := range byMethod {
		parts = append(parts, fmt.Sprintf("%s=%.1f", k, float64(v)/n))
	}
	sort.Strings(parts)
	b.Logf("firestore RPCs per life: %s", strings.Join(parts, " "))
}
