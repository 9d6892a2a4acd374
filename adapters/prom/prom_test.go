package prom

import (
	"context"
	"io"
	"math"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
)

var ctx = context.Background()

func newMetrics(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func TestRegistersCatalogue(t *testing.T) {
	m, reg := newMetrics(t)
	// Give every labelled metric one series so that all show up.
	for _, d := range metrics.Catalogue {
		labels := map[string]string{}
		for _, k := range d.Labels {
			labels[k] = "x"
		}
		var err error
		switch d.Kind {
		case metrics.Gauge:
			err = m.Set(ctx, d.Name, labels, 1)
		case metrics.Distribution:
			err = m.Observe(ctx, d.Name, labels, 1)
		case metrics.Counter:
			err = m.Add(ctx, d.Name, labels, 1)
		}
		if err != nil {
			t.Errorf("write %s: %v", d.Name, err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range families {
		got[f.GetName()] = f.GetType().String()
	}
	want := map[metrics.Kind]string{metrics.Gauge: "GAUGE", metrics.Distribution: "HISTOGRAM", metrics.Counter: "COUNTER"}
	for _, d := range metrics.Catalogue {
		if got[d.Name] != want[d.Kind] {
			t.Errorf("%s exported as %q, want %s", d.Name, got[d.Name], want[d.Kind])
		}
	}
	if len(got) != len(metrics.Catalogue) {
		t.Errorf("exported %d metrics, the catalogue has %d", len(got), len(metrics.Catalogue))
	}
	if _, err := New(reg); !errs.Is(err, errs.AlreadyExists) {
		t.Errorf("second New on one registry = %v, want AlreadyExists", err)
	}
}

func TestValues(t *testing.T) {
	m, reg := newMetrics(t)
	if err := m.Set(ctx, metrics.QueueLen, nil, 7); err != nil {
		t.Fatal(err)
	}
	if err := m.Set(ctx, metrics.QueueLen, nil, 3); err != nil {
		t.Fatal(err)
	}
	for _, v := range []float64{1, 2.5} {
		if err := m.Add(ctx, metrics.TaskRetries, map[string]string{"action": "tick"}, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Add(ctx, metrics.TaskRetries, map[string]string{"action": "check_new_cl"}, 1); err != nil {
		t.Fatal(err)
	}
	for _, v := range []float64{0.5, 45, 90, 30000} {
		if err := m.Observe(ctx, metrics.RunTime, map[string]string{"job_type": "linux-gcc"}, v); err != nil {
			t.Fatal(err)
		}
	}
	s := m.series
	if got := testutil.ToFloat64(s[metrics.QueueLen].gauge); got != 3 {
		t.Errorf("%s = %v, want 3 (the latest)", metrics.QueueLen, got)
	}
	if got := testutil.ToFloat64(s[metrics.TaskRetries].counter.WithLabelValues("tick")); got != 3.5 {
		t.Errorf("%s{action=tick} = %v, want 3.5", metrics.TaskRetries, got)
	}
	if got := testutil.ToFloat64(s[metrics.WorkersAlive].gauge); got != 0 {
		t.Errorf("unwritten %s = %v, want 0", metrics.WorkersAlive, got)
	}
	const want = `
# HELP ci_job_run_time Time jobs run, from start to end.
# TYPE ci_job_run_time histogram
ci_job_run_time_bucket{job_type="linux-gcc",le="1"} 1
ci_job_run_time_bucket{job_type="linux-gcc",le="2"} 1
ci_job_run_time_bucket{job_type="linux-gcc",le="5"} 1
ci_job_run_time_bucket{job_type="linux-gcc",le="10"} 1
ci_job_run_time_bucket{job_type="linux-gcc",le="30"} 1
ci_job_run_time_bucket{job_type="linux-gcc",le="60"} 2
ci_job_run_time_bucket{job_type="linux-gcc",le="120"} 3
ci_job_run_time_bucket{job_type="linux-gcc",le="300"} 3
ci_job_run_time_bucket{job_type="linux-gcc",le="600"} 3
ci_job_run_time_bucket{job_type="linux-gcc",le="1200"} 3
ci_job_run_time_bucket{job_type="linux-gcc",le="1800"} 3
ci_job_run_time_bucket{job_type="linux-gcc",le="3600"} 3
ci_job_run_time_bucket{job_type="linux-gcc",le="7200"} 3
ci_job_run_time_bucket{job_type="linux-gcc",le="14400"} 3
ci_job_run_time_bucket{job_type="linux-gcc",le="21600"} 3
ci_job_run_time_bucket{job_type="linux-gcc",le="+Inf"} 4
ci_job_run_time_sum{job_type="linux-gcc"} 30135.5
ci_job_run_time_count{job_type="linux-gcc"} 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), metrics.RunTime); err != nil {
		t.Error(err)
	}

	// The HTTP handler serves the same registry.
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range []string{
		"ci_job_queue_len 3",
		`ci_task_retries{action="check_new_cl"} 1`,
		`ci_task_retries{action="tick"} 3.5`,
		"ci_cl_completion_time_count 0",
	} {
		if !strings.Contains(string(body), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", line, body)
		}
	}
}

func TestInvalidWrites(t *testing.T) {
	m, _ := newMetrics(t)
	job := map[string]string{"job_type": "a"}
	tests := []struct {
		name  string
		write func() error
	}{
		{"unknown metric", func() error { return m.Set(ctx, "ci_nope", nil, 1) }},
		{"tollgate_ prefixed name", func() error { return m.Set(ctx, "tollgate_"+metrics.QueueLen, nil, 1) }},
		{"Set on a distribution", func() error { return m.Set(ctx, metrics.RunTime, job, 1) }},
		{"Observe on a gauge", func() error { return m.Observe(ctx, metrics.QueueLen, nil, 1) }},
		{"Add on a gauge", func() error { return m.Add(ctx, metrics.QueueLen, nil, 1) }},
		{"Set on a counter", func() error { return m.Set(ctx, metrics.GerritCalls, map[string]string{"method": "GET"}, 1) }},
		{"missing label", func() error { return m.Observe(ctx, metrics.RunTime, nil, 1) }},
		{"wrong label key", func() error { return m.Observe(ctx, metrics.RunTime, map[string]string{"type": "a"}, 1) }},
		{"extra label", func() error {
			return m.Observe(ctx, metrics.RunTime, map[string]string{"job_type": "a", "x": "y"}, 1)
		}},
		{"label on an unlabelled metric", func() error { return m.Set(ctx, metrics.QueueLen, job, 1) }},
		{"negative counter", func() error { return m.Add(ctx, metrics.TaskRetries, map[string]string{"action": "a"}, -1) }},
		{"NaN observation", func() error { return m.Observe(ctx, metrics.RunTime, job, math.NaN()) }},
		{"infinite observation", func() error { return m.Observe(ctx, metrics.RunTime, job, math.Inf(1)) }},
		{"NaN counter", func() error { return m.Add(ctx, metrics.TaskRetries, map[string]string{"action": "a"}, math.NaN()) }},
	}
	for _, tc := range tests {
		if err := tc.write(); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", tc.name, err)
		}
	}
}
