package monitoring

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	distpb "google.golang.org/genproto/googleapis/api/distribution"
	labelpb "google.golang.org/genproto/googleapis/api/label"
	metricpb "google.golang.org/genproto/googleapis/api/metric"
	monitoredrespb "google.golang.org/genproto/googleapis/api/monitoredres"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate-ci/tollgate/core/clock"
)

const proj = "projects/test-project"

var (
	ctx = context.Background()
	t0  = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
)

type env struct {
	s     *Server
	clock *clock.Fake
	c     *monitoring.MetricClient
}

// newEnv serves a fresh fake over gRPC on loopback and connects a real
// client to it.
func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	clk := clock.NewFake(t0)
	if opts.Clock == nil {
		opts.Clock = clk
	}
	s := New(opts)
	addr, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	c, err := monitoring.NewMetricClient(ctx, option.WithEndpoint(addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &env{s: s, clock: clk, c: c}
}

func global() *monitoredrespb.MonitoredResource {
	return &monitoredrespb.MonitoredResource{Type: "global", Labels: map[string]string{"project_id": "test-project"}}
}

func gauge(typ string, labels map[string]string, end time.Time, v float64) *monitoringpb.TimeSeries {
	return &monitoringpb.TimeSeries{
		Metric:   &metricpb.Metric{Type: typ, Labels: labels},
		Resource: global(),
		Points: []*monitoringpb.Point{{
			Interval: &monitoringpb.TimeInterval{EndTime: timestamppb.New(end)},
			Value:    &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_DoubleValue{DoubleValue: v}},
		}},
	}
}

func cumulative(typ string, start, end time.Time, v float64) *monitoringpb.TimeSeries {
	ts := gauge(typ, nil, end, v)
	ts.MetricKind = metricpb.MetricDescriptor_CUMULATIVE
	ts.Points[0].Interval.StartTime = timestamppb.New(start)
	return ts
}

func (e *env) write(series ...*monitoringpb.TimeSeries) error {
	return e.c.CreateTimeSeries(ctx, &monitoringpb.CreateTimeSeriesRequest{Name: proj, TimeSeries: series})
}

func summaryOf(err error) *monitoringpb.CreateTimeSeriesSummary {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if s, ok := d.(*monitoringpb.CreateTimeSeriesSummary); ok {
			return s
		}
	}
	return nil
}

const (
	typA = "custom.googleapis.com/test/a"
	typB = "custom.googleapis.com/test/b"
)

func TestDescriptors(t *testing.T) {
	e := newEnv(t, Options{})
	d := &metricpb.MetricDescriptor{
		Type: typA, MetricKind: metricpb.MetricDescriptor_GAUGE, ValueType: metricpb.MetricDescriptor_DOUBLE,
		Labels: []*labelpb.LabelDescriptor{{Key: "job_type"}}, Description: "first",
	}
	got, err := e.c.CreateMetricDescriptor(ctx, &monitoringpb.CreateMetricDescriptorRequest{Name: proj, MetricDescriptor: d})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != proj+"/metricDescriptors/"+typA {
		t.Errorf("name = %q", got.Name)
	}
	// Creating again updates, and never removes labels.
	d2 := &metricpb.MetricDescriptor{
		Type: typA, MetricKind: metricpb.MetricDescriptor_GAUGE, ValueType: metricpb.MetricDescriptor_DOUBLE,
		Labels: []*labelpb.LabelDescriptor{{Key: "branch"}}, Description: "second",
	}
	if _, err := e.c.CreateMetricDescriptor(ctx, &monitoringpb.CreateMetricDescriptorRequest{Name: proj, MetricDescriptor: d2}); err != nil {
		t.Fatal(err)
	}
	got, err = e.c.GetMetricDescriptor(ctx, &monitoringpb.GetMetricDescriptorRequest{Name: proj + "/metricDescriptors/" + typA})
	if err != nil {
		t.Fatal(err)
	}
	if got.Description != "second" || len(got.Labels) != 2 {
		t.Errorf("after update: %v", got)
	}
	other := &metricpb.MetricDescriptor{Type: "custom.googleapis.com/other/x", MetricKind: metricpb.MetricDescriptor_CUMULATIVE, ValueType: metricpb.MetricDescriptor_INT64}
	if _, err := e.c.CreateMetricDescriptor(ctx, &monitoringpb.CreateMetricDescriptorRequest{Name: proj, MetricDescriptor: other}); err != nil {
		t.Fatal(err)
	}
	list := func(filter string) []string {
		var types []string
		it := e.c.ListMetricDescriptors(ctx, &monitoringpb.ListMetricDescriptorsRequest{Name: proj, Filter: filter, PageSize: 1})
		for {
			d, err := it.Next()
			if err == iterator.Done {
				return types
			}
			if err != nil {
				t.Fatalf("list %q: %v", filter, err)
			}
			types = append(types, d.Type)
		}
	}
	if got := list(`metric.type = starts_with("custom.googleapis.com/test/")`); len(got) != 1 || got[0] != typA {
		t.Errorf("list by prefix = %v", got)
	}
	if got := list(""); len(got) != 2 {
		t.Errorf("list all = %v", got)
	}
	if err := e.c.DeleteMetricDescriptor(ctx, &monitoringpb.DeleteMetricDescriptorRequest{Name: proj + "/metricDescriptors/" + typA}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.GetMetricDescriptor(ctx, &monitoringpb.GetMetricDescriptorRequest{Name: proj + "/metricDescriptors/" + typA}); status.Code(err) != codes.NotFound {
		t.Errorf("get after delete = %v, want NotFound", err)
	}

	bad := []*metricpb.MetricDescriptor{
		{Type: "compute.googleapis.com/x", MetricKind: metricpb.MetricDescriptor_GAUGE, ValueType: metricpb.MetricDescriptor_DOUBLE},
		{Type: typB, ValueType: metricpb.MetricDescriptor_DOUBLE},
		{Type: typB, MetricKind: metricpb.MetricDescriptor_GAUGE},
		{Type: typB, MetricKind: metricpb.MetricDescriptor_GAUGE, ValueType: metricpb.MetricDescriptor_DOUBLE,
			Labels: []*labelpb.LabelDescriptor{{Key: "http.scheme"}}},
	}
	for _, d := range bad {
		if _, err := e.c.CreateMetricDescriptor(ctx, &monitoringpb.CreateMetricDescriptorRequest{Name: proj, MetricDescriptor: d}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("create %v = %v, want InvalidArgument", d, err)
		}
	}
}

// TestRequestRules checks the rules that refuse a whole request.
func TestRequestRules(t *testing.T) {
	e := newEnv(t, Options{})
	many := make([]*monitoringpb.TimeSeries, 201)
	for i := range many {
		many[i] = gauge(typA, map[string]string{"i": fmt.Sprint(i)}, t0, 1)
	}
	twoPoints := gauge(typA, nil, t0, 1)
	twoPoints.Points = append(twoPoints.Points, twoPoints.Points[0])
	noPoints := gauge(typA, nil, t0, 1)
	noPoints.Points = nil
	noType := gauge("", nil, t0, 1)
	tests := []struct {
		name   string
		series []*monitoringpb.TimeSeries
		text   string
	}{
		{"empty", nil, "Request was missing field timeSeries."},
		{"201 series", many, "at most 200"},
		{"two points", []*monitoringpb.TimeSeries{twoPoints}, "Only one point can be written per TimeSeries per request"},
		{"no points", []*monitoringpb.TimeSeries{noPoints}, "Only one point"},
		{"duplicate", []*monitoringpb.TimeSeries{gauge(typA, nil, t0, 1), gauge(typA, nil, t0, 2)}, "Duplicate TimeSeries encountered"},
		{"no type", []*monitoringpb.TimeSeries{gauge(typB, nil, t0, 1), noType}, "metric.type"},
	}
	for _, tc := range tests {
		err := e.write(tc.series...)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want InvalidArgument with %q", tc.name, err, tc.text)
		}
	}
	if got := len(e.s.Series(typA)) + len(e.s.Series(typB)); got != 0 {
		t.Errorf("refused requests wrote %d points", got)
	}
	if got := e.s.BatchSizes(); len(got) != len(tests) || got[1] != 201 {
		t.Errorf("batch sizes = %v", got)
	}
	ok := make([]*monitoringpb.TimeSeries, 200)
	for i := range ok {
		ok[i] = gauge(typA, map[string]string{"i": fmt.Sprint(i)}, t0, 1)
	}
	// Auto-creation takes the first series' labels, so one label for all.
	if err := e.write(ok...); err != nil {
		t.Fatalf("200 series: %v", err)
	}
	if got := len(e.s.Series(typA)); got != 200 {
		t.Errorf("wrote %d points, want 200", got)
	}
}

// TestSeriesRules writes a first point (if any), then a second one next to
// a valid series in the same request, and checks that the request fails
// partially with the right message, or succeeds.
func TestSeriesRules(t *testing.T) {
	declared := &metricpb.MetricDescriptor{
		Type: typB, MetricKind: metricpb.MetricDescriptor_CUMULATIVE, ValueType: metricpb.MetricDescriptor_DOUBLE,
		Labels: []*labelpb.LabelDescriptor{{Key: "action"}},
	}
	intValue := gauge(typA, nil, t0, 0)
	intValue.Points[0].Value = &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_Int64Value{Int64Value: 3}}
	delta := cumulative(typA, t0.Add(-time.Second), t0, 1)
	delta.MetricKind = metricpb.MetricDescriptor_DELTA
	gaugeWithStart := gauge(typA, nil, t0, 1)
	gaugeWithStart.Points[0].Interval.StartTime = timestamppb.New(t0.Add(-time.Second))
	undeclared := cumulative(typB, t0.Add(-time.Minute), t0, 1)
	undeclared.Metric.Labels = map[string]string{"action": "tick", "other": "x"}
	asGauge := gauge(typB, nil, t0, 1)
	asGauge.MetricKind = metricpb.MetricDescriptor_GAUGE
	taskMissing := gauge(typA, nil, t0, 1)
	taskMissing.Resource = &monitoredrespb.MonitoredResource{Type: "generic_task", Labels: map[string]string{"location": "l", "job": "j"}}
	task := gauge(typA, nil, t0, 1)
	task.Resource = &monitoredrespb.MonitoredResource{Type: "generic_task", Labels: map[string]string{"location": "l", "namespace": "n", "job": "j", "task_id": "1"}}
	badDist := gauge(typA, nil, t0, 0)
	badDist.Points[0].Value = &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_DistributionValue{DistributionValue: &distpb.Distribution{
		Count: 3, Mean: 1, BucketCounts: []int64{1, 1},
		BucketOptions: &distpb.Distribution_BucketOptions{Options: &distpb.Distribution_BucketOptions_ExplicitBuckets{
			ExplicitBuckets: &distpb.Distribution_BucketOptions_Explicit{Bounds: []float64{1}}}},
	}}}

	tests := []struct {
		name   string
		first  *monitoringpb.TimeSeries // written before, if set
		second *monitoringpb.TimeSeries
		want   string // "" for success
	}{
		{"gauge 5s later", gauge(typA, nil, t0.Add(-5*time.Second), 1), gauge(typA, nil, t0, 2), ""},
		{"gauge 4.9s later", gauge(typA, nil, t0.Add(-4900*time.Millisecond), 1), gauge(typA, nil, t0, 2),
			MsgSamplingPeriod + " {Metric: " + typA + ", Timestamps: {Youngest Existing: '2026/11/24-11:59:55.100', New: '2026/11/24-12:00:00.000'}}"},
		{"gauge older", gauge(typA, nil, t0.Add(time.Minute), 1), gauge(typA, nil, t0, 2), MsgOutOfOrder},
		{"gauge same time", gauge(typA, nil, t0, 1), gauge(typA, nil, t0, 2), MsgOutOfOrder},
		{"other labels are another series", gauge(typA, map[string]string{"k": "1"}, t0, 1), gauge(typA, map[string]string{"k": "2"}, t0, 2), ""},
		{"gauge with a start", nil, gaugeWithStart, "The start time must be equal to the end time"},
		{"value type", gauge(typA, nil, t0.Add(-time.Minute), 1), intValue, "Value type for metric " + typA + " must be DOUBLE, but is INT64."},
		{"auto-created DELTA", nil, delta, "auto-created with kind GAUGE or CUMULATIVE"},
		{"kind differs", gauge(typA, nil, t0.Add(-time.Minute), 1), cumulative(typA, t0.Add(-time.Hour), t0, 1), "Metric kind for metric " + typA + " must be GAUGE, but is CUMULATIVE."},
		{"cumulative grows", cumulative(typA, t0.Add(-time.Hour), t0.Add(-time.Minute), 1), cumulative(typA, t0.Add(-time.Hour), t0, 2), ""},
		{"cumulative start = end", nil, cumulative(typA, t0, t0, 1), "The start time must be before the end time"},
		{"cumulative older start", cumulative(typA, t0.Add(-time.Hour), t0.Add(-time.Minute), 1), cumulative(typA, t0.Add(-2*time.Hour), t0, 2), MsgOutOfOrder},
		{"cumulative same end", cumulative(typA, t0.Add(-time.Hour), t0, 1), cumulative(typA, t0.Add(-time.Hour), t0, 2), MsgOutOfOrderEnd},
		{"cumulative reset", cumulative(typA, t0.Add(-time.Hour), t0.Add(-time.Minute), 9), cumulative(typA, t0.Add(-30*time.Second), t0, 1), ""},
		{"cumulative reset overlapping", cumulative(typA, t0.Add(-time.Hour), t0.Add(-time.Minute), 9), cumulative(typA, t0.Add(-2*time.Minute), t0, 1), MsgOutOfOrder},
		{"cumulative 1s later", cumulative(typA, t0.Add(-time.Hour), t0.Add(-time.Second), 1), cumulative(typA, t0.Add(-time.Hour), t0, 2), MsgSamplingPeriod},
		{"declared label", nil, func() *monitoringpb.TimeSeries {
			ts := cumulative(typB, t0.Add(-time.Minute), t0, 1)
			ts.Metric.Labels = map[string]string{"action": "tick"}
			return ts
		}(), ""},
		{"undeclared label", nil, undeclared, `metric.labels had an invalid value of "other": Unrecognized metric label.`},
		{"declared kind differs", nil, asGauge, "Metric kind for metric " + typB + " must be CUMULATIVE, but is GAUGE."},
		{"unknown non-custom type", nil, gauge("external.googleapis.com/x", nil, t0, 1), "Could not find descriptor for metric 'external.googleapis.com/x'."},
		{"too old", nil, gauge(typA, nil, t0.Add(-26*time.Hour), 1), "in the past"},
		{"in the future", nil, gauge(typA, nil, t0.Add(6*time.Minute), 1), "in the future"},
		{"4 min ahead", nil, gauge(typA, nil, t0.Add(4*time.Minute), 1), ""},
		{"resource labels missing", nil, taskMissing, "The set of resource labels is incomplete. Missing labels: (namespace task_id)."},
		{"generic_task", nil, task, ""},
		{"unknown resource", nil, func() *monitoringpb.TimeSeries {
			ts := gauge(typA, nil, t0, 1)
			ts.Resource = &monitoredrespb.MonitoredResource{Type: "cloud_run_revision"}
			return ts
		}(), "not supported for user-defined metrics"},
		{"distribution counts", nil, badDist, "The sum of the bucket counts (2) must equal the count (3)."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			if _, err := e.c.CreateMetricDescriptor(ctx, &monitoringpb.CreateMetricDescriptorRequest{Name: proj, MetricDescriptor: declared}); err != nil {
				t.Fatal(err)
			}
			if tc.first != nil {
				if err := e.write(tc.first); err != nil {
					t.Fatalf("first write: %v", err)
				}
			}
			// A valid series of its own type next to the one under test.
			const bystander = "custom.googleapis.com/test/bystander"
			err := e.write(gauge(bystander, nil, t0, 1), tc.second)
			if got := len(e.s.Series(bystander)); got != 1 {
				t.Errorf("the valid series of the request wrote %d points, want 1", got)
			}
			if tc.want == "" {
				if err != nil {
					t.Errorf("write = %v, want success", err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("write = %v, want InvalidArgument with %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), MsgPartial+": ") || !strings.Contains(err.Error(), ": timeSeries[1]") {
				t.Errorf("message %q does not name the refused series like the real service", err)
			}
			s := summaryOf(err)
			if s == nil || s.TotalPointCount != 2 || s.SuccessPointCount != 1 || len(s.Errors) != 1 ||
				s.Errors[0].PointCount != 1 || s.Errors[0].Status.GetCode() != int32(codes.InvalidArgument) {
				t.Errorf("summary = %v, want 2 points, 1 written, 1 InvalidArgument", s)
			}
		})
	}
}

func TestAutoCreate(t *testing.T) {
	e := newEnv(t, Options{})
	if err := e.write(gauge(typA, map[string]string{"job_type": "x"}, t0, 1), cumulative(typB, t0.Add(-time.Second), t0, 2)); err != nil {
		t.Fatal(err)
	}
	a, b := e.s.Descriptor(typA), e.s.Descriptor(typB)
	if a.GetMetricKind() != metricpb.MetricDescriptor_GAUGE || a.GetValueType() != metricpb.MetricDescriptor_DOUBLE ||
		len(a.GetLabels()) != 1 || a.GetLabels()[0].GetKey() != "job_type" {
		t.Errorf("auto-created %v", a)
	}
	if b.GetMetricKind() != metricpb.MetricDescriptor_CUMULATIVE {
		t.Errorf("auto-created %v, want CUMULATIVE", b)
	}
	// A refused write creates nothing.
	err := e.write(gauge("custom.googleapis.com/test/c", nil, t0.Add(time.Hour), 1))
	if status.Code(err) != codes.InvalidArgument || e.s.Descriptor("custom.googleapis.com/test/c") != nil {
		t.Errorf("refused write = %v and created a descriptor", err)
	}
}

// TestPartialMessage checks the grouping of refused series by message.
func TestPartialMessage(t *testing.T) {
	e := newEnv(t, Options{})
	var first []*monitoringpb.TimeSeries
	for i := range 6 {
		first = append(first, gauge(typA, map[string]string{"i": fmt.Sprint(i)}, t0, 1))
	}
	if err := e.write(first...); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second)
	now := e.clock.Now()
	second := []*monitoringpb.TimeSeries{
		gauge(typA, map[string]string{"i": "0"}, now, 2),                     // too soon
		gauge(typA, map[string]string{"i": "1"}, now, 2),                     // too soon
		gauge(typA, map[string]string{"i": "2"}, t0.Add(-time.Second), 2),    // out of order
		gauge(typA, map[string]string{"i": "6"}, now, 2),                     // new series: fine
		gauge(typA, map[string]string{"i": "3"}, now, 2),                     // too soon
		gauge(typA, map[string]string{"i": "4"}, now.Add(3*time.Second), 2),  // 5 s after: fine
		gauge(typA, map[string]string{"i": "5"}, now.Add(-3*time.Second), 2), // out of order
	}
	err := e.write(second...)
	msg := status.Convert(err).Message()
	for _, want := range []string{
		MsgSamplingPeriod + " {Metric: " + typA + ", Timestamps: {Youngest Existing: '2026/11/24-12:00:00.000', New: '2026/11/24-12:00:02.000'}}: timeSeries[0-1,4]",
		MsgOutOfOrder + ": timeSeries[2,6]",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if s := summaryOf(err); s.GetTotalPointCount() != 7 || s.GetSuccessPointCount() != 2 || s.GetErrors()[0].GetPointCount() != 5 {
		t.Errorf("summary = %v", s)
	}
	if got := len(e.s.Series(typA)); got != 8 {
		t.Errorf("%d points stored, want 8", got)
	}
}

func TestSamplingPeriodOption(t *testing.T) {
	for _, tc := range []struct {
		period time.Duration
		gap    time.Duration
		ok     bool
	}{
		{0, 5 * time.Second, true},
		{0, 4 * time.Second, false},
		{10 * time.Second, 5 * time.Second, false},
		{10 * time.Second, 10 * time.Second, true},
		{-1, time.Millisecond, true},
	} {
		e := newEnv(t, Options{SamplingPeriod: tc.period})
		if err := e.write(gauge(typA, nil, t0, 1)); err != nil {
			t.Fatal(err)
		}
		err := e.write(gauge(typA, nil, t0.Add(tc.gap), 2))
		if (err == nil) != tc.ok {
			t.Errorf("period %v, gap %v: %v, want ok=%v", tc.period, tc.gap, err, tc.ok)
		}
	}
}

func TestListTimeSeries(t *testing.T) {
	e := newEnv(t, Options{})
	for i := range 3 {
		end := t0.Add(time.Duration(i) * 10 * time.Second)
		if err := e.write(
			gauge(typA, map[string]string{"k": "x"}, end, float64(i)),
			gauge(typA, map[string]string{"k": "y"}, end, float64(10+i)),
			gauge(typB, nil, end, 1),
		); err != nil {
			t.Fatal(err)
		}
	}
	list := func(filter string, start, end time.Time) []*monitoringpb.TimeSeries {
		t.Helper()
		in := &monitoringpb.TimeInterval{EndTime: timestamppb.New(end)}
		if !start.IsZero() {
			in.StartTime = timestamppb.New(start)
		}
		var out []*monitoringpb.TimeSeries
		it := e.c.ListTimeSeries(ctx, &monitoringpb.ListTimeSeriesRequest{Name: proj, Filter: filter, Interval: in, PageSize: 1})
		for {
			ts, err := it.Next()
			if err == iterator.Done {
				return out
			}
			if err != nil {
				t.Fatalf("list %q: %v", filter, err)
			}
			out = append(out, ts)
		}
	}
	got := list(`metric.type = "`+typA+`" AND metric.labels.k = "y"`, time.Time{}, t0.Add(time.Hour))
	if len(got) != 1 || len(got[0].Points) != 3 || got[0].Points[0].Value.GetDoubleValue() != 12 ||
		got[0].Metric.Labels["k"] != "y" || got[0].Resource.Type != "global" {
		t.Errorf("list by label = %v, want one series, newest first", got)
	}
	if got := list(`metric.type = "`+typA+`"`, t0, t0.Add(10*time.Second)); len(got) != 2 || len(got[0].Points) != 1 {
		t.Errorf("list in (t0, t0+10s] = %v, want two series of one point", got)
	}
	if got := list(`metric.type = starts_with("custom.googleapis.com/test/") AND resource.type = "global"`, time.Time{}, t0.Add(time.Hour)); len(got) != 3 {
		t.Errorf("list by prefix = %d series, want 3", len(got))
	}
	for _, tc := range []struct {
		req  *monitoringpb.ListTimeSeriesRequest
		code codes.Code
	}{
		{&monitoringpb.ListTimeSeriesRequest{Name: proj, Filter: `resource.type = "global"`, Interval: &monitoringpb.TimeInterval{EndTime: timestamppb.New(t0)}}, codes.InvalidArgument},
		{&monitoringpb.ListTimeSeriesRequest{Name: proj, Filter: `metric.type = "` + typA + `"`}, codes.InvalidArgument},
		{&monitoringpb.ListTimeSeriesRequest{Name: proj, Filter: `metric.type = "` + typA + `" OR x`, Interval: &monitoringpb.TimeInterval{EndTime: timestamppb.New(t0)}}, codes.InvalidArgument},
		{&monitoringpb.ListTimeSeriesRequest{Name: proj, Filter: `metric.type = "` + typA + `"`, Interval: &monitoringpb.TimeInterval{EndTime: timestamppb.New(t0)},
			Aggregation: &monitoringpb.Aggregation{PerSeriesAligner: monitoringpb.Aggregation_ALIGN_RATE}}, codes.Unimplemented},
	} {
		_, err := e.c.ListTimeSeries(ctx, tc.req).Next()
		if status.Code(err) != tc.code {
			t.Errorf("list %v = %v, want %v", tc.req, err, tc.code)
		}
	}
}

func TestFailNextAndCalls(t *testing.T) {
	e := newEnv(t, Options{})
	e.s.FailNext("CreateTimeSeries", status.Error(codes.Unavailable, "try later"))
	if err := e.write(gauge(typA, nil, t0, 1)); status.Code(err) != codes.Unavailable {
		// The client retries Unavailable for idempotent calls only;
		// CreateTimeSeries is not one.
		t.Errorf("first write = %v, want Unavailable", err)
	}
	if err := e.write(gauge(typA, nil, t0, 1)); err != nil {
		t.Errorf("second write = %v", err)
	}
	if got := e.s.Calls("CreateTimeSeries"); got != 2 {
		t.Errorf("calls = %d, want 2", got)
	}
	if got := len(e.s.Series(typA)); got != 1 {
		t.Errorf("points = %d, want 1", got)
	}
	e.s.Reset()
	if e.s.Calls("CreateTimeSeries") != 0 || len(e.s.Series(typA)) != 0 || e.s.Descriptor(typA) != nil {
		t.Error("Reset kept state")
	}
}

func TestMaxPoints(t *testing.T) {
	e := newEnv(t, Options{MaxPoints: 3})
	for i := range 5 {
		if err := e.write(gauge(typA, nil, t0.Add(time.Duration(i)*5*time.Second), float64(i))); err != nil {
			t.Fatal(err)
		}
	}
	pts := e.s.Series(typA)
	if len(pts) != 3 || pts[0].Double() != 2 {
		t.Errorf("kept %v, want the 3 latest", pts)
	}
	// The forgotten points still order the next one.
	if err := e.write(gauge(typA, nil, t0.Add(21*time.Second), 9)); status.Code(err) != codes.InvalidArgument {
		t.Errorf("write 1 s after the latest = %v, want a sampling refusal", err)
	}
}
