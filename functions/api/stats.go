package api

import (
	"context"
	"math"
	"sort"
	"time"

	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
	"github.com/tollgate-ci/tollgate/functions/auth"
)

// Bounds of what the stats read: the distributions come from at most
// MaxStatsJobs recently ended jobs and MaxStatsPatchsets recently queued
// patchsets within the window, never from all of them.
const (
	MaxStatsJobs      = 2000
	MaxStatsPatchsets = 500
)

// Stats is the body of /api/v1/stats?window=24h: the queue length and the
// workers over time (one point a minute, written by update_queue_metrics),
// and, from recently ended jobs, queue and run time distributions and the
// pass rate per job type, and the completion time of patchsets. Times are
// in seconds.
type Stats struct {
	Since              time.Time      `json:"since"`
	Until              time.Time      `json:"until"`
	QueueLength        []QueuePoint   `json:"queue_length"`
	Workers            []WorkerPoint  `json:"workers"`
	JobTypes           []JobTypeStats `json:"job_types"`
	PatchsetCompletion Distribution   `json:"patchset_completion"`
	SampledJobs        int            `json:"sampled_jobs"`
	SampledPatchsets   int            `json:"sampled_patchsets"`
}

// QueuePoint is the queue at one minute.
type QueuePoint struct {
	Time    time.Time `json:"time"`
	Queued  float64   `json:"queued"`
	Running float64   `json:"running"`
}

// WorkerPoint is the fleet at one minute.
type WorkerPoint struct {
	Time  time.Time `json:"time"`
	Alive float64   `json:"alive"`
	Busy  float64   `json:"busy"`
}

// JobTypeStats are one job type's figures over the sampled jobs.
// PassRate is Passed / (Passed + Failed + Infra): cancelled jobs do not count.
type JobTypeStats struct {
	Type      string       `json:"type"`
	QueueTime Distribution `json:"queue_time"`
	RunTime   Distribution `json:"run_time"`
	Passed    int          `json:"passed"`
	Failed    int          `json:"failed"` // FAILED or TIMED_OUT
	Infra     int          `json:"infra"`  // BOT_DIED, INTERRUPTED, NO_RESOURCE or EXPIRED
	Cancelled int          `json:"cancelled"`
	PassRate  float64      `json:"pass_rate"`
}

// Distribution summarises durations in seconds, with a histogram.
type Distribution struct {
	Count   int      `json:"count"`
	Mean    float64  `json:"mean"`
	P50     float64  `json:"p50"`
	P90     float64  `json:"p90"`
	Max     float64  `json:"max"`
	Buckets []Bucket `json:"buckets"`
}

// Bucket counts the values up to LE seconds (above the previous bucket's
// bound); the last bucket has no bound (LE null).
type Bucket struct {
	LE    *float64 `json:"le"`
	Count int      `json:"count"`
}

// BucketBounds are the histogram bounds in seconds: roughly 1-2-5 steps
// from a second to three hours.
var BucketBounds = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 10800}

// Distribute summarises values (seconds).
func Distribute(values []float64) Distribution {
	d := Distribution{Count: len(values), Buckets: make([]Bucket, len(BucketBounds)+1)}
	for i := range BucketBounds {
		d.Buckets[i].LE = &BucketBounds[i]
	}
	if len(values) == 0 {
		return d
	}
	v := append([]float64(nil), values...)
	sort.Float64s(v)
	sum := 0.0
	for _, x := range v {
		sum += x
		d.Buckets[sort.SearchFloat64s(BucketBounds, x)].Count++
	}
	d.Mean = sum / float64(len(v))
	d.P50 = quantile(v, 0.5)
	d.P90 = quantile(v, 0.9)
	d.Max = v[len(v)-1]
	return d
}

// quantile of sorted v, nearest rank.
func quantile(v []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[min(max(i, 0), len(v)-1)]
}

// Stats returns the statistics of the window ending now.
func (s *Server) Stats(ctx context.Context, window time.Duration) (*Stats, error) {
	if err := s.require(ctx, auth.User); err != nil {
		return nil, err
	}
	now := s.o.Clock.Now()
	since := now.Add(-window)
	out := &Stats{Since: since, Until: now}
	series := map[string][]model.Sample{}
	for _, name := range []string{controller.SampleQueued, controller.SampleRunning, controller.SampleWorkersAlive, controller.SampleWorkersBusy} {
		v, err := s.o.Store.ListSamples(ctx, name, since)
		if err != nil {
			return nil, err
		}
		series[name] = v
	}
	out.QueueLength = merge(series[controller.SampleQueued], series[controller.SampleRunning],
		func(t time.Time, a, b float64) QueuePoint { return QueuePoint{Time: t, Queued: a, Running: b} })
	out.Workers = merge(series[controller.SampleWorkersAlive], series[controller.SampleWorkersBusy],
		func(t time.Time, a, b float64) WorkerPoint { return WorkerPoint{Time: t, Alive: a, Busy: b} })

	type acc struct {
		queue, run []float64
		st         JobTypeStats
	}
	byType := map[string]*acc{}
	q := store.JobQuery{OrderBy: store.OrderEnded, Limit: 1000}
	for done := false; !done && out.SampledJobs < MaxStatsJobs; {
		jobs, next, err := s.o.Store.ListJobs(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, j := range jobs {
			if j.TimeEnded.Before(since) || out.SampledJobs >= MaxStatsJobs {
				done = true
				break
			}
			out.SampledJobs++
			a := byType[j.Type]
			if a == nil {
				a = &acc{st: JobTypeStats{Type: j.Type}}
				byType[j.Type] = a
			}
			switch j.State {
			case model.Completed:
				a.st.Passed++
			case model.Failed, model.TimedOut:
				a.st.Failed++
			case model.BotDied, model.Interrupted, model.NoResource, model.Expired:
				a.st.Infra++
			case model.Cancelled:
				a.st.Cancelled++
			}
			if !j.TimeStarted.IsZero() {
				a.queue = append(a.queue, j.TimeStarted.Sub(j.TimeQueued).Seconds())
				a.run = append(a.run, j.TimeEnded.Sub(j.TimeStarted).Seconds())
			}
		}
		if next == "" {
			done = true
		}
		q.Cursor = next
	}
	out.JobTypes = make([]JobTypeStats, 0, len(byType))
	for _, a := range byType {
		a.st.QueueTime, a.st.RunTime = Distribute(a.queue), Distribute(a.run)
		if n := a.st.Passed + a.st.Failed + a.st.Infra; n > 0 {
			a.st.PassRate = float64(a.st.Passed) / float64(n)
		}
		out.JobTypes = append(out.JobTypes, a.st)
	}
	sort.Slice(out.JobTypes, func(a, b int) bool { return out.JobTypes[a].Type < out.JobTypes[b].Type })

	ps, _, err := s.o.Store.ListPatchsets(ctx, store.PatchsetQuery{Ended: true, Limit: MaxStatsPatchsets})
	if err != nil {
		return nil, err
	}
	var completion []float64
	for _, p := range ps {
		if p.TimeEnded.Before(since) {
			continue
		}
		completion = append(completion, p.TimeEnded.Sub(p.RoundStart()).Seconds())
	}
	out.SampledPatchsets = len(completion)
	out.PatchsetCompletion = Distribute(completion)
	return out, nil
}

// merge joins two series sampled at the same minutes into points; a
// minute missing from one series counts as 0 there.
func merge[P any](a, b []model.Sample, point func(time.Time, float64, float64) P) []P {
	type pair struct{ a, b float64 }
	byTime := map[int64]*pair{}
	var times []int64
	add := func(v []model.Sample, set func(*pair, float64)) {
		for _, x := range v {
			k := x.Time.UnixNano()
			p := byTime[k]
			if p == nil {
				p = &pair{}
				byTime[k] = p
				times = append(times, k)
			}
			set(p, x.Value)
		}
	}
	add(a, func(p *pair, v float64) { p.a = v })
	add(b, func(p *pair, v float64) { p.b = v })
	sort.Slice(times, func(i, k int) bool { return times[i] < times[k] })
	out := make([]P, len(times))
	for i, k := range times {
		out[i] = point(time.Unix(0, k).UTC(), byTime[k].a, byTime[k].b)
	}
	return out
}
