package monitoring

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/api/option"
	labelpb "google.golang.org/genproto/googleapis/api/label"
	metricpb "google.golang.org/genproto/googleapis/api/metric"
	monitoredrespb "google.golang.org/genproto/googleapis/api/monitoredres"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
	fake "github.com/tollgate-ci/tollgate/emulators/monitoring"
)

const project = "test-project"

var (
	ctx = context.Background()
	t0  = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
)

type env struct {
	t     *testing.T
	fake  *fake.Server
	clock *clock.Fake
	m     *Metrics
	log   *bytes.Buffer
	opts  []option.ClientOption
}

// newEnv serves the fake Cloud Monitoring on loopback gRPC and connects
// Metrics to it; both share a fake clock.
func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	clk := clock.NewFake(t0)
	f := fake.New(fake.Options{Clock: clk})
	addr, err := f.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	var buf bytes.Buffer
	if opts.Clock == nil {
		opts.Clock = clk
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e := &env{t: t, fake: f, clock: clk, log: &buf, opts: []option.ClientOption{
		option.WithEndpoint(addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}}
	m, err := New(ctx, project, opts, e.opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	e.m = m
	return e
}

func (e *env) flush() {
	e.t.Helper()
	if err := e.m.Flush(ctx); err != nil {
		e.t.Fatalf("Flush: %v", err)
	}
}

func (e *env) points(name string) []fake.Point { return e.fake.Series(DefaultPrefix + name) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCreateDescriptors(t *testing.T) {
	e := newEnv(t, Options{})
	for range 2 {
		must(t, e.m.CreateDescriptors(ctx))
	}
	if got := e.fake.Calls("CreateMetricDescriptor"); got != len(metrics.Catalogue) {
		t.Errorf("%d descriptors created for a catalogue of %d", got, len(metrics.Catalogue))
	}
	tests := []struct {
		name  string
		kind  metricpb.MetricDescriptor_MetricKind
		vt    metricpb.MetricDescriptor_ValueType
		unit  string
		label string
	}{
		{metrics.QueueLen, metricpb.MetricDescriptor_GAUGE, metricpb.MetricDescriptor_DOUBLE, "1", ""},
		{metrics.RunTime, metricpb.MetricDescriptor_CUMULATIVE, metricpb.MetricDescriptor_DISTRIBUTION, "s", "job_type"},
		{metrics.TaskRetries, metricpb.MetricDescriptor_CUMULATIVE, metricpb.MetricDescriptor_DOUBLE, "1", "action"},
	}
	for _, tc := range tests {
		d := e.fake.Descriptor(DefaultPrefix + tc.name)
		if d.GetMetricKind() != tc.kind || d.GetValueType() != tc.vt || d.GetUnit() != tc.unit || d.GetDescription() == "" {
			t.Errorf("%s: descriptor %v", tc.name, d)
		}
		if tc.label != "" && (len(d.GetLabels()) != 1 || d.GetLabels()[0].GetKey() != tc.label) {
			t.Errorf("%s: labels %v, want [%s]", tc.name, d.GetLabels(), tc.label)
		}
	}
}

// TestCreateDescriptorsConflict: a descriptor of another kind is reported,
// not silently replaced; one lacking a label is completed.
func TestCreateDescriptorsConflict(t *testing.T) {
	e := newEnv(t, Options{})
	c, err := newClient(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*metricpb.MetricDescriptor{
		{Type: DefaultPrefix + metrics.GerritCalls, MetricKind: metricpb.MetricDescriptor_GAUGE, ValueType: metricpb.MetricDescriptor_INT64},
		{Type: DefaultPrefix + metrics.TaskRetries, MetricKind: metricpb.MetricDescriptor_CUMULATIVE, ValueType: metricpb.MetricDescriptor_DOUBLE,
			Labels: []*labelpb.LabelDescriptor{{Key: "other"}}},
	} {
		if _, err := c.CreateMetricDescriptor(ctx, &monitoringpb.CreateMetricDescriptorRequest{Name: "projects/" + project, MetricDescriptor: d}); err != nil {
			t.Fatal(err)
		}
	}
	err = e.m.CreateDescriptors(ctx)
	if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), metrics.GerritCalls) {
		t.Errorf("CreateDescriptors = %v, want FailedPrecondition naming %s", err, metrics.GerritCalls)
	}
	if d := e.fake.Descriptor(DefaultPrefix + metrics.GerritCalls); d.GetMetricKind() != metricpb.MetricDescriptor_GAUGE {
		t.Errorf("conflicting descriptor was changed to %v", d)
	}
	if d := e.fake.Descriptor(DefaultPrefix + metrics.TaskRetries); len(d.GetLabels()) != 2 {
		t.Errorf("descriptor lacking a label: %v, want action added", d)
	}
	if d := e.fake.Descriptor(DefaultPrefix + metrics.QueueLen); d == nil {
		t.Error("the other descriptors were not created")
	}
}

// TestBatches writes 250 series: two requests of at most 200.
func TestBatches(t *testing.T) {
	e := newEnv(t, Options{})
	for i := range 250 {
		must(t, e.m.Add(ctx, metrics.GerritCalls, map[string]string{"method": fmt.Sprintf("m%03d", i)}, 1))
	}
	e.flush()
	if got := e.fake.BatchSizes(); len(got) != 2 || got[0] != 200 || got[1] != 50 {
		t.Errorf("batch sizes = %v, want [200 50]", got)
	}
	if got := len(e.points(metrics.GerritCalls)); got != 250 {
		t.Errorf("%d points written, want 250", got)
	}
	// Nothing changed: the next flush sends nothing.
	e.clock.Advance(time.Minute)
	e.flush()
	if got := e.fake.Calls("CreateTimeSeries"); got != 2 {
		t.Errorf("%d requests after an idle flush, want 2", got)
	}
}

// TestGaugeCoalesces: values set within one interval give one point with
// the latest value, and a series is never written twice in 5 s.
func TestGaugeCoalesces(t *testing.T) {
	e := newEnv(t, Options{})
	must(t, e.m.Set(ctx, metrics.QueueLen, nil, 7))
	e.clock.Advance(time.Second)
	must(t, e.m.Set(ctx, metrics.QueueLen, nil, 3))
	e.flush()
	pts := e.points(metrics.QueueLen)
	if len(pts) != 1 || pts[0].Double() != 3 || !pts[0].End.Equal(t0.Add(time.Second)) {
		t.Fatalf("points = %v, want one point of 3 at t0+1s", pts)
	}
	steps := []struct {
		advance time.Duration
		set     float64
		want    int // points after the flush
	}{
		{2 * time.Second, 5, 1}, // 2 s after the last point: held back
		{2 * time.Second, 6, 1}, // 4 s after: still held back
		{time.Second, 8, 2},     // 5 s after: the latest value goes out
		{time.Minute, math.NaN(), 2},
	}
	for i, st := range steps {
		e.clock.Advance(st.advance)
		if !math.IsNaN(st.set) {
			must(t, e.m.Set(ctx, metrics.QueueLen, nil, st.set))
		}
		e.flush()
		if got := len(e.points(metrics.QueueLen)); got != st.want {
			t.Fatalf("step %d: %d points, want %d", i, got, st.want)
		}
	}
	if got := e.points(metrics.QueueLen)[1]; got.Double() != 8 {
		t.Errorf("second point = %v, want 8", got.Double())
	}
	if got := e.fake.Calls("CreateTimeSeries"); got != 2 {
		t.Errorf("%d requests, want 2", got)
	}
}

// TestSlack: a flush that comes a little before the interval is over
// sends the point stamped at the end of the interval.
func TestSlack(t *testing.T) {
	e := newEnv(t, Options{})
	must(t, e.m.Set(ctx, metrics.QueueLen, nil, 1))
	e.flush()
	e.clock.Advance(4800 * time.Millisecond)
	must(t, e.m.Set(ctx, metrics.QueueLen, nil, 2))
	e.flush()
	pts := e.points(metrics.QueueLen)
	if len(pts) != 2 || !pts[1].End.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("points = %v, want a second one at t0+5s", pts)
	}
	e.clock.Advance(4 * time.Second) // t0+8.8s: too early even with slack
	must(t, e.m.Set(ctx, metrics.QueueLen, nil, 3))
	e.flush()
	if got := len(e.points(metrics.QueueLen)); got != 2 {
		t.Errorf("%d points, want 2", got)
	}
}

// TestSamplingRefusalIsNotFailure: another writer wrote the series just
// before; the refusal is logged at debug, the other series of the request
// are written, and the value goes out in a later flush.
func TestSamplingRefusalIsNotFailure(t *testing.T) {
	e := newEnv(t, Options{})
	c, err := newClient(e)
	if err != nil {
		t.Fatal(err)
	}
	other := &monitoringpb.TimeSeries{
		Metric:   &metricpb.Metric{Type: DefaultPrefix + metrics.QueueLen},
		Resource: &monitoredrespb.MonitoredResource{Type: "global", Labels: map[string]string{"project_id": project}},
		Points: []*monitoringpb.Point{{
			Interval: &monitoringpb.TimeInterval{EndTime: timestamppb.New(t0)},
			Value:    &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_DoubleValue{DoubleValue: 100}},
		}},
	}
	if err := c.CreateTimeSeries(ctx, &monitoringpb.CreateTimeSeriesRequest{Name: "projects/" + project, TimeSeries: []*monitoringpb.TimeSeries{other}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second)
	must(t, e.m.Set(ctx, metrics.QueueLen, nil, 4))
	must(t, e.m.Set(ctx, metrics.WorkersAlive, nil, 2))
	if err := e.m.Flush(ctx); err != nil {
		t.Fatalf("Flush = %v, want no error for a sampling-period refusal", err)
	}
	if got := len(e.points(metrics.WorkersAlive)); got != 1 {
		t.Errorf("the other series got %d points, want 1", got)
	}
	if got := len(e.points(metrics.QueueLen)); got != 1 {
		t.Errorf("queue length has %d points, want only the other writer's", got)
	}
	if !strings.Contains(e.log.String(), "level=DEBUG") || !strings.Contains(e.log.String(), "sampling period") {
		t.Errorf("log = %q, want a debug line about the sampling period", e.log.String())
	}
	e.clock.Advance(5 * time.Second)
	e.flush()
	pts := e.points(metrics.QueueLen)
	if len(pts) != 2 || pts[1].Double() != 4 {
		t.Errorf("after the next interval: %v, want the kept value 4", pts)
	}
	if got := len(e.points(metrics.WorkersAlive)); got != 1 {
		t.Errorf("the written series was written again: %d points", got)
	}
}

func TestDistribution(t *testing.T) {
	e := newEnv(t, Options{})
	job := map[string]string{"job_type": "linux-gcc"}
	values := []float64{0.5, 45, 90, 30000}
	for _, v := range values {
		must(t, e.m.Observe(ctx, metrics.RunTime, job, v))
	}
	e.clock.Advance(time.Second)
	e.flush()
	e.clock.Advance(10 * time.Second)
	must(t, e.m.Observe(ctx, metrics.RunTime, job, 2))
	must(t, e.m.Observe(ctx, metrics.RunTime, map[string]string{"job_type": "other"}, 7))
	e.flush()

	pts := e.points(metrics.RunTime)
	if len(pts) != 3 {
		t.Fatalf("%d points, want 3", len(pts))
	}
	check := func(p fake.Point, vs []float64) {
		t.Helper()
		d := p.Value.GetDistributionValue()
		var sum float64
		for _, v := range vs {
			sum += v
		}
		mean := sum / float64(len(vs))
		var ssd float64
		for _, v := range vs {
			ssd += (v - mean) * (v - mean)
		}
		if d.GetCount() != int64(len(vs)) || math.Abs(d.GetMean()-mean) > 1e-9*mean ||
			math.Abs(d.GetSumOfSquaredDeviation()-ssd) > 1e-9*ssd {
			t.Errorf("distribution = count %d mean %v ssd %v, want %d %v %v",
				d.GetCount(), d.GetMean(), d.GetSumOfSquaredDeviation(), len(vs), mean, ssd)
		}
		if p.Kind != metricpb.MetricDescriptor_CUMULATIVE || !p.Start.Equal(t0) {
			t.Errorf("point kind %v start %v, want CUMULATIVE from t0", p.Kind, p.Start)
		}
	}
	check(pts[0], values)
	if got := pts[0].Value.GetDistributionValue().GetBucketCounts(); got[0] != 1 || got[5] != 1 || got[6] != 1 || got[15] != 1 {
		t.Errorf("bucket counts = %v, want 0.5 in (-inf,1), 45 in [30,60), 90 in [60,120), 30000 in [21600,inf)", got)
	}
	last := pts[1]
	if last.MetricLabels["job_type"] != "linux-gcc" {
		last = pts[2]
	}
	check(last, append(values, 2)) // cumulative: all six observations
	if !last.End.Equal(t0.Add(11 * time.Second)) {
		t.Errorf("end = %v", last.End)
	}
}

func TestCounterIsCumulative(t *testing.T) {
	e := newEnv(t, Options{})
	tick := map[string]string{"action": "tick"}
	must(t, e.m.Add(ctx, metrics.TaskRetries, tick, 1))
	must(t, e.m.Add(ctx, metrics.TaskRetries, tick, 2.5))
	e.flush() // at the instant of the first Add: the interval still has a length
	e.clock.Advance(10 * time.Second)
	must(t, e.m.Add(ctx, metrics.TaskRetries, tick, 1))
	e.flush()
	pts := e.points(metrics.TaskRetries)
	if len(pts) != 2 || pts[0].Double() != 3.5 || pts[1].Double() != 4.5 {
		t.Fatalf("points = %v, want 3.5 then 4.5", pts)
	}
	for _, p := range pts {
		if p.Kind != metricpb.MetricDescriptor_CUMULATIVE || !p.Start.Equal(t0) || !p.End.After(p.Start) {
			t.Errorf("point %v, want CUMULATIVE from t0", p)
		}
	}
}

// TestErrorsReturnedAndKept: a failed request and a refused series are
// errors, and their values are written once the cause is gone.
func TestErrorsReturnedAndKept(t *testing.T) {
	e := newEnv(t, Options{})
	must(t, e.m.Set(ctx, metrics.QueueLen, nil, 1))
	e.fake.FailNext("CreateTimeSeries", status.Error(codes.Unavailable, "try later"))
	if err := e.m.Flush(ctx); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Flush = %v, want Unavailable", err)
	}
	e.clock.Advance(5 * time.Second)
	e.flush()
	if got := len(e.points(metrics.QueueLen)); got != 1 {
		t.Errorf("%d points after the retry, want 1", got)
	}

	// A descriptor of another kind refuses its series; the others pass.
	c, err := newClient(e)
	if err != nil {
		t.Fatal(err)
	}
	bad := &metricpb.MetricDescriptor{Type: DefaultPrefix + metrics.WorkersBusy, MetricKind: metricpb.MetricDescriptor_CUMULATIVE, ValueType: metricpb.MetricDescriptor_DOUBLE}
	if _, err := c.CreateMetricDescriptor(ctx, &monitoringpb.CreateMetricDescriptorRequest{Name: "projects/" + project, MetricDescriptor: bad}); err != nil {
		t.Fatal(err)
	}
	must(t, e.m.Set(ctx, metrics.WorkersBusy, nil, 1))
	must(t, e.m.Set(ctx, metrics.WorkersAlive, nil, 2))
	err = e.m.Flush(ctx)
	if !errs.Is(err, errs.InvalidArgument) || !strings.Contains(err.Error(), "1 of 2 series refused") {
		t.Errorf("Flush = %v, want InvalidArgument for 1 of 2 series", err)
	}
	if got := len(e.points(metrics.WorkersAlive)); got != 1 {
		t.Errorf("the valid series got %d points", got)
	}
	// Fixed: the kept value goes out.
	if err := c.DeleteMetricDescriptor(ctx, &monitoringpb.DeleteMetricDescriptorRequest{Name: "projects/" + project + "/metricDescriptors/" + bad.Type}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(5 * time.Second)
	e.flush()
	if got := e.points(metrics.WorkersBusy); len(got) != 1 || got[0].Double() != 1 {
		t.Errorf("after the fix: %v", got)
	}
}

// TestRunFlushesOnShutdown: the last values go out when Run stops, even
// within an interval of the previous point.
func TestRunFlushesOnShutdown(t *testing.T) {
	e := newEnv(t, Options{})
	must(t, e.m.Set(ctx, metrics.QueueLen, nil, 1))
	e.flush()
	e.clock.Advance(time.Second)
	must(t, e.m.Set(ctx, metrics.QueueLen, nil, 2))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- e.m.Run(rctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	pts := e.points(metrics.QueueLen)
	if len(pts) != 2 || pts[1].Double() != 2 || !pts[1].End.Equal(t0.Add(5*time.Second)) {
		t.Errorf("points = %v, want 2 stamped an interval after the first", pts)
	}
}

func TestInvalidWrites(t *testing.T) {
	e := newEnv(t, Options{})
	m := e.m
	job := map[string]string{"job_type": "a"}
	tests := []struct {
		name  string
		write func() error
	}{
		{"unknown metric", func() error { return m.Set(ctx, "ci_nope", nil, 1) }},
		{"prefixed name", func() error { return m.Set(ctx, DefaultPrefix+metrics.QueueLen, nil, 1) }},
		{"Set on a distribution", func() error { return m.Set(ctx, metrics.RunTime, job, 1) }},
		{"Observe on a gauge", func() error { return m.Observe(ctx, metrics.QueueLen, nil, 1) }},
		{"Add on a gauge", func() error { return m.Add(ctx, metrics.QueueLen, nil, 1) }},
		{"missing label", func() error { return m.Observe(ctx, metrics.RunTime, nil, 1) }},
		{"wrong label key", func() error { return m.Observe(ctx, metrics.RunTime, map[string]string{"type": "a"}, 1) }},
		{"extra label", func() error {
			return m.Observe(ctx, metrics.RunTime, map[string]string{"job_type": "a", "x": "y"}, 1)
		}},
		{"label on an unlabelled metric", func() error { return m.Set(ctx, metrics.QueueLen, job, 1) }},
		{"negative counter", func() error { return m.Add(ctx, metrics.TaskRetries, map[string]string{"action": "a"}, -1) }},
		{"NaN counter", func() error { return m.Add(ctx, metrics.TaskRetries, map[string]string{"action": "a"}, math.NaN()) }},
		{"NaN observation", func() error { return m.Observe(ctx, metrics.RunTime, job, math.NaN()) }},
		{"infinite observation", func() error { return m.Observe(ctx, metrics.RunTime, job, math.Inf(1)) }},
		{"NaN on a wrong metric", func() error { return m.Observe(ctx, "ci_nope", job, math.NaN()) }},
	}
	for _, tc := range tests {
		if err := tc.write(); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", tc.name, err)
		}
	}
	e.flush()
	if got := e.fake.Calls("CreateTimeSeries"); got != 0 {
		t.Errorf("invalid writes made %d requests", got)
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		project string
		opts    Options
		ok      bool
	}{
		{project, Options{}, true},
		{"", Options{}, false},
		{project, Options{Flush: time.Second}, false},
		{project, Options{Flush: 10 * time.Second}, true},
		{project, Options{Prefix: "custom.googleapis.com/x"}, false},
		{project, Options{Prefix: "custom.googleapis.com/x/"}, true},
	}
	for _, tc := range tests {
		m, err := New(ctx, tc.project, tc.opts, option.WithEndpoint("127.0.0.1:1"), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
		if (err == nil) != tc.ok {
			t.Errorf("New(%q, %+v) = %v, want ok=%v", tc.project, tc.opts, err, tc.ok)
		}
		if err == nil {
			m.Close()
		} else if !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("New(%q, %+v) = %v, want InvalidArgument", tc.project, tc.opts, err)
		}
	}
}

// TestResource: series go to the configured resource, such as one per
// process so that several writers never share a cumulative series.
func TestResource(t *testing.T) {
	res := &monitoredrespb.MonitoredResource{Type: "generic_task", Labels: map[string]string{
		"project_id": project, "location": "europe-west1", "namespace": "tollgate", "job": "functions", "task_id": "instance-1",
	}}
	e := newEnv(t, Options{Resource: res, Prefix: "custom.googleapis.com/tg/", Flush: 10 * time.Second})
	must(t, e.m.Add(ctx, metrics.GerritCalls, map[string]string{"method": "GET"}, 1))
	e.flush()
	pts := e.fake.Series("custom.googleapis.com/tg/" + metrics.GerritCalls)
	if len(pts) != 1 || pts[0].ResourceType != "generic_task" || pts[0].ResourceLabels["task_id"] != "instance-1" {
		t.Fatalf("points = %v", pts)
	}
	// The interval is 10 s here.
	e.clock.Advance(6 * time.Second)
	must(t, e.m.Add(ctx, metrics.GerritCalls, map[string]string{"method": "GET"}, 1))
	e.flush()
	if got := len(e.fake.Series("custom.googleapis.com/tg/" + metrics.GerritCalls)); got != 1 {
		t.Errorf("%d points 6 s apart with a 10 s interval", got)
	}
}

// TestOutcomes reads partial failures in the message formats the real
// service has used over the years.
func TestOutcomes(t *testing.T) {
	partial := func(msg string, total, ok int) error {
		st := status.New(codes.InvalidArgument, msg)
		st, _ = st.WithDetails(&monitoringpb.CreateTimeSeriesSummary{
			TotalPointCount: int32(total), SuccessPointCount: int32(ok),
			Errors: []*monitoringpb.CreateTimeSeriesSummary_Error{{Status: &spb.Status{Code: 3}, PointCount: int32(total - ok)}},
		})
		return st.Err()
	}
	const sampling = msgSampling + " {Metric: custom.googleapis.com/x, Timestamps: {Youngest Existing: '2019/06/21-12:29:46.439', New: '2019/06/21-12:29:51.439'}}"
	const order = "Points must be written in order. One or more of the points specified had an older start time than the most recent point."
	W, T, R, U := written, throttled, refused, unknown
	tests := []struct {
		name string
		err  error
		n    int
		want []outcome
		code errs.Code // Unknown: no error
	}{
		{"success", nil, 2, []outcome{W, W}, errs.Unknown},
		{"2019 sampling", partial(msgPartial+": "+sampling+": timeSeries[1-2]; "+sampling+": timeSeries[4]", 5, 2), 5, []outcome{W, T, T, W, T}, errs.Unknown},
		{"mixed", partial(msgPartial+": "+sampling+": timeSeries[0,2]; "+order+": timeSeries[1]", 4, 1), 4, []outcome{T, R, T, W}, errs.InvalidArgument},
		{"2023 with resource", partial(msgPartial+": "+order+": global{} timeSeries[3]: custom.googleapis.com/x{a:b}", 4, 3), 4, []outcome{W, W, W, R}, errs.InvalidArgument},
		{"2025 format", partial(msgPartial+": timeSeries[0-2] (example metric.type=\"custom.googleapis.com/x\", metric.labels={\"a\": \"b\"}): write for resource=generic_task{namespace:n,job:j,task_id:1} failed with: "+sampling, 3, 0), 3, []outcome{T, T, T}, errs.Unknown},
		{"field error names the index twice", partial(msgPartial+": Field timeSeries[1].points[0].interval.start_time had an invalid value of \"x\": The start time must be before the end time (x) for the non-gauge metric 'm'.: timeSeries[1]", 2, 1), 2, []outcome{W, R}, errs.InvalidArgument},
		{"counts disagree, sampling only", partial(msgPartial+": "+sampling+": timeSeries[0]", 3, 1), 3, []outcome{U, U, U}, errs.Unknown},
		{"counts disagree", partial(msgPartial+": "+order+": timeSeries[0]", 3, 1), 3, []outcome{U, U, U}, errs.InvalidArgument},
		{"index out of range", partial(msgPartial+": "+order+": timeSeries[5]", 3, 2), 3, []outcome{U, U, U}, errs.InvalidArgument},
		{"no summary", status.Error(codes.Unavailable, "down"), 2, []outcome{U, U}, errs.Unavailable},
		{"whole request refused", status.Error(codes.InvalidArgument, "Request was missing field timeSeries."), 1, []outcome{U}, errs.InvalidArgument},
		{"deadline", status.Error(codes.DeadlineExceeded, "slow"), 1, []outcome{U}, errs.Unavailable},
		{"quota", status.Error(codes.ResourceExhausted, "quota"), 1, []outcome{U}, errs.ResourceExhausted},
	}
	for _, tc := range tests {
		got, err := outcomes("op", tc.err, tc.n)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: outcomes %v, want %v", tc.name, got, tc.want)
		}
		if tc.code == errs.Unknown && err != nil || tc.code != errs.Unknown && !errs.Is(err, tc.code) {
			t.Errorf("%s: error %v, want code %v", tc.name, err, tc.code)
		}
	}
}

// newClient connects a second, independent writer to the fake.
func newClient(e *env) (*monitoring.MetricClient, error) {
	c, err := monitoring.NewMetricClient(ctx, e.opts...)
	if err == nil {
		e.t.Cleanup(func() { c.Close() })
	}
	return c, err
}
