package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/gerrit"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/core/tasks/taskstest"
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
)

// naiveStore is the baseline the benchmark measures against, in the same
// run: it writes a new patchset and each of its jobs in separate writes
// (one write per record), and reads a patchset's jobs one by one when a
// pending patchset is checked, as a document store used naively would.
type naiveStore struct{ *Store }

func (n naiveStore) CreatePatchset(ctx context.Context, ps *model.Patchset, jobs []*model.Job) error {
	if _, err := n.Store.GetPatchset(ctx, ps.ID); err == nil {
		return errs.E(errs.AlreadyExists, "naive", "patchset %s exists", ps.ID)
	}
	data, err := encode(ps)
	if err != nil {
		return err
	}
	if err := n.write(ctx, "naive.CreatePatchset", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO patchsets (id, change_num, owner, time_queued, time_ended, data)
			VALUES (?, ?, ?, ?, ?, ?)`, ps.ID, ps.Change, ps.Owner, nanos(ps.TimeQueued), nanos(ps.TimeEnded), data)
		return err
	}); err != nil {
		return err
	}
	for _, j := range jobs {
		if err := n.write(ctx, "naive.CreateJob", func(tx *sql.Tx) error { return insertJobs(ctx, tx, []*model.Job{j}) }); err != nil {
			return err
		}
	}
	return nil
}

func (n naiveStore) GetPatchsets(ctx context.Context, ids []string) (map[string]*model.Patchset, error) {
	m := map[string]*model.Patchset{}
	for _, id := range ids {
		p, err := n.Store.GetPatchset(ctx, id)
		if errs.Is(err, errs.NotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		m[id] = p
	}
	return m, nil
}

func (n naiveStore) GetPatchsetWithJobs(ctx context.Context, id string) (*model.Patchset, []*model.Job, error) {
	p, err := n.Store.GetPatchset(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	var jobs []*model.Job
	for _, jid := range p.JobIDs {
		j, err := n.Store.GetJob(ctx, jid)
		if err != nil {
			return nil, nil, err
		}
		jobs = append(jobs, j)
	}
	return p, jobs, nil
}

const benchChanges, benchJobTypes = 1000, 5

// BenchmarkIngest measures one check_new_cls pass that finds 1,000 new
// trusted changes (5 job types each) and the check_pending_cls pass after
// it, on the embedded store, beside the naive baseline in the same run. It
// reports wall time, Store round trips per patchset and the ratios.
func BenchmarkIngest(b *testing.B) {
	g := fakegerrit.New(fakegerrit.Options{User: "bot", Password: "pw"})
	url, err := g.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	if _, err := g.CreateBranch("bench", "main", fakegerrit.CommitSpec{}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < benchChanges; i++ {
		if _, err := g.CreateChange(fakegerrit.ChangeSpec{Project: "bench", Branch: "main", Subject: fmt.Sprint("change ", i), OwnerEmail: "dev@trusted.example"}); err != nil {
			b.Fatal(err)
		}
	}
	yaml := fmt.Sprintf("gerrit: {url: %s, project: bench, user_env: TG_BENCH_USER, password_env: TG_BENCH_PW}\ntrust: {trusted_emails: '.*@trusted\\.example'}\njobs:\n", url)
	for i := 0; i < benchJobTypes; i++ {
		yaml += fmt.Sprintf("  job-%d: {command: [\"true\"]}\n", i)
	}
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv("TG_BENCH_USER", "bot")
	b.Setenv("TG_BENCH_PW", "pw")

	var tg, naive phase
	for b.Loop() {
		tg = tg.add(runIngest(b, cfg, url, false))
		naive = naive.add(runIngest(b, cfg, url, true))
	}
	n := float64(b.N)
	b.ReportMetric(tg.ingest.Seconds()*1000/n, "ingest-ms")
	b.ReportMetric(naive.ingest.Seconds()*1000/n, "naive-ingest-ms")
	b.ReportMetric(naive.ingest.Seconds()/tg.ingest.Seconds(), "ingest-speedup")
	b.ReportMetric(float64(tg.writes)/n/benchChanges, "writes/ps")
	b.ReportMetric(float64(naive.writes)/n/benchChanges, "naive-writes/ps")
	b.ReportMetric(float64(tg.checkReads)/n/benchChanges, "reads/check")
	b.ReportMetric(float64(naive.checkReads)/n/benchChanges, "naive-reads/check")
	b.ReportMetric(tg.check.Seconds()*1000/n, "check-ms")
	b.ReportMetric(naive.check.Seconds()*1000/n, "naive-check-ms")
	b.ReportMetric(naive.check.Seconds()/tg.check.Seconds(), "check-speedup")
}

type phase struct {
	ingest, check      time.Duration
	writes, checkReads int64
}

func (p phase) add(q phase) phase {
	return phase{p.ingest + q.ingest, p.check + q.check, p.writes + q.writes, p.checkReads + q.checkReads}
}

func runIngest(b *testing.B, cfg *config.Config, url string, naive bool) phase {
	b.Helper()
	ctx := context.Background()
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var st store.Store = s
	if naive {
		st = naiveStore{s}
	}
	gc, err := gerrit.New(gerrit.Options{URL: url, User: "bot", Password: "pw", MaxQPS: 1e6})
	if err != nil {
		b.Fatal(err)
	}
	tq := &taskstest.Recorder{}
	c, err := controller.New(controller.Deps{Config: cfg, Store: st, Tasks: tq, Gerrit: gc, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	c.PageSize = 500
	var p phase
	start := time.Now()
	if err := c.CheckNewCLs(ctx, controller.CheckNewCLsArgs{}); err != nil {
		b.Fatal(err)
	}
	_, w0 := s.RoundTrips()
	if t, err := tq.Drain(ctx, c.Handle, 1, 1e6); err != nil {
		b.Fatalf("%s: %v", t.Action, err)
	}
	p.ingest = time.Since(start)
	_, w1 := s.RoundTrips()
	p.writes = w1 - w0
	if n, _ := st.CountJobs(ctx, model.Queued); n[model.Queued] != benchChanges*benchJobTypes {
		b.Fatalf("queued %d jobs, want %d", n[model.Queued], benchChanges*benchJobTypes)
	}
	start = time.Now()
	if err := c.CheckPendingCLs(ctx); err != nil {
		b.Fatal(err)
	}
	r0, _ := s.RoundTrips()
	if t, err := tq.Drain(ctx, c.Handle, 1, 1e6); err != nil {
		b.Fatalf("%s: %v", t.Action, err)
	}
	p.check = time.Since(start)
	r1, _ := s.RoundTrips()
	p.checkReads = r1 - r0
	return p
}
