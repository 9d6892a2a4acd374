package monitoring

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	labelpb "google.golang.org/genproto/googleapis/api/label"
	metricpb "google.golang.org/genproto/googleapis/api/metric"
	monitoredrespb "google.golang.org/genproto/googleapis/api/monitoredres"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Texts of the real service, which clients match on.
const (
	// MsgPartial prefixes the message of a CreateTimeSeries that refused
	// some series.
	MsgPartial = "One or more TimeSeries could not be written"
	// MsgOutOfOrder refuses a point older than the series' latest.
	MsgOutOfOrder = "Points must be written in order. One or more of the points specified had an older start time than the most recent point."
	// MsgOutOfOrderEnd refuses a cumulative point with the series' start
	// time and an end time not after the latest.
	MsgOutOfOrderEnd = "Points must be written in order. One or more of the points specified had an older end time than the most recent point."
	// MsgSamplingPeriod refuses a point written less than the sampling
	// period after the series' latest.
	MsgSamplingPeriod = "One or more points were written more frequently than the maximum sampling period configured for the metric."
)

// Bounds of point end times relative to the server clock.
const (
	maxPast   = 25 * time.Hour
	maxFuture = 5 * time.Minute
)

// resourceLabels are the labels of the monitored resource types custom
// metrics may use. project_id is filled from the request when missing.
var resourceLabels = map[string][]string{
	"global":        {"project_id"},
	"generic_task":  {"project_id", "location", "namespace", "job", "task_id"},
	"generic_node":  {"project_id", "location", "namespace", "node_id"},
	"gce_instance":  {"project_id", "instance_id", "zone"},
	"k8s_container": {"project_id", "location", "cluster_name", "namespace_name", "pod_name", "container_name"},
}

// CreateTimeSeries writes one point to each series. Requests breaking the
// request-wide rules are refused whole; series breaking a per-series rule
// are refused while the others are written.
func (s *Server) CreateTimeSeries(_ context.Context, req *monitoringpb.CreateTimeSeriesRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, len(req.GetTimeSeries()))
	if err := s.enter("CreateTimeSeries"); err != nil {
		return nil, err
	}
	proj, err := projectName(req.GetName())
	if err != nil {
		return nil, err
	}
	if err := checkRequest(proj, req.GetTimeSeries()); err != nil {
		return nil, err
	}
	p := s.project(proj)
	now := s.clock.Now()
	var fails []failure
	for i, ts := range req.GetTimeSeries() {
		if msg := s.write(p, proj, i, ts, now); msg != "" {
			fails = append(fails, failure{i, msg})
		}
	}
	if len(fails) > 0 {
		return nil, partialError(len(req.GetTimeSeries()), fails)
	}
	return &emptypb.Empty{}, nil
}

// checkRequest applies the rules that refuse a whole request.
func checkRequest(proj string, series []*monitoringpb.TimeSeries) error {
	if len(series) == 0 {
		return status.Error(codes.InvalidArgument, "Request was missing field timeSeries.")
	}
	if len(series) > MaxTimeSeriesPerRequest {
		return status.Errorf(codes.InvalidArgument,
			"Field timeSeries had an invalid value: %d TimeSeries were given; at most %d can be written in a single request.",
			len(series), MaxTimeSeriesPerRequest)
	}
	seen := map[string]int{}
	for i, ts := range series {
		if ts.GetMetric().GetType() == "" {
			return status.Errorf(codes.InvalidArgument, "Field timeSeries[%d].metric.type had an invalid value of \"\": The metric type must be a URL-formatted string with a domain and non-empty path.", i)
		}
		if ts.GetResource().GetType() == "" {
			return status.Errorf(codes.InvalidArgument, "Field timeSeries[%d].resource.type had an invalid value of \"\": The resource type must be set.", i)
		}
		if n := len(ts.GetPoints()); n != 1 {
			return status.Errorf(codes.InvalidArgument, "Field timeSeries[%d].points had an invalid value: Only one point can be written per TimeSeries per request (got %d).", i, n)
		}
		key := seriesKey(proj, ts.GetMetric().GetType(), ts.GetMetric().GetLabels(), ts.GetResource().GetType(), withProject(ts.GetResource().GetLabels(), proj))
		if j, dup := seen[key]; dup {
			return status.Errorf(codes.InvalidArgument, "Field timeSeries[%d] had an invalid value: Duplicate TimeSeries encountered (also timeSeries[%d]). Only one point can be written per TimeSeries per request.", i, j)
		}
		seen[key] = i
	}
	return nil
}

func withProject(labels map[string]string, proj string) map[string]string {
	if labels["project_id"] != "" {
		return labels
	}
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	out["project_id"] = proj
	return out
}

// seriesKey identifies a series.
func seriesKey(proj, metricType string, metricLabels map[string]string, resType string, resLabels map[string]string) string {
	var b strings.Builder
	b.WriteString(proj + "\x00" + metricType)
	for _, k := range slices.Sorted(maps.Keys(metricLabels)) {
		b.WriteString("\x00" + k + "=" + metricLabels[k])
	}
	b.WriteString("\x01" + resType)
	for _, k := range slices.Sorted(maps.Keys(resLabels)) {
		b.WriteString("\x00" + k + "=" + resLabels[k])
	}
	return b.String()
}

func (p Point) key() string {
	return seriesKey(p.Project, p.MetricType, p.MetricLabels, p.ResourceType, p.ResourceLabels)
}

// failure is one refused series.
type failure struct {
	index int
	msg   string
}

// write checks one series and stores its point, or returns why not. The
// caller holds s.mu.
func (s *Server) write(p *project, proj string, i int, ts *monitoringpb.TimeSeries, now time.Time) string {
	metricType := ts.GetMetric().GetType()
	resType := ts.GetResource().GetType()
	resLabels := withProject(ts.GetResource().GetLabels(), proj)

	want, ok := resourceLabels[resType]
	if !ok {
		return fmt.Sprintf("Field timeSeries[%d].resource.type had an invalid value of %q: The resource type is not supported for user-defined metrics.", i, resType)
	}
	var missing []string
	for _, k := range want {
		if resLabels[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("The set of resource labels is incomplete. Missing labels: (%s).", strings.Join(missing, " "))
	}
	for _, k := range slices.Sorted(maps.Keys(resLabels)) {
		if !slices.Contains(want, k) {
			return fmt.Sprintf("Field timeSeries[%d].resource.labels had an invalid value of %q: Unrecognized resource label.", i, k)
		}
	}

	pt := ts.GetPoints()[0]
	vt, ok := valueType(pt.GetValue())
	if !ok {
		return fmt.Sprintf("Field timeSeries[%d].points[0].value had an invalid value: The value must be set.", i)
	}
	if ts.GetValueType() != metricpb.MetricDescriptor_VALUE_TYPE_UNSPECIFIED && ts.GetValueType() != vt {
		return fmt.Sprintf("Field timeSeries[%d].valueType had an invalid value of %q: The value type must match the type of the point's value (%s).", i, ts.GetValueType(), vt)
	}

	d := p.descriptors[metricType]
	created := false
	if d == nil {
		if !strings.HasPrefix(metricType, autoCreatePrefix) || len(metricType) == len(autoCreatePrefix) {
			return fmt.Sprintf("Could not find descriptor for metric '%s'.", metricType)
		}
		kind := ts.GetMetricKind()
		if kind == metricpb.MetricDescriptor_METRIC_KIND_UNSPECIFIED {
			kind = metricpb.MetricDescriptor_GAUGE
		}
		if kind != metricpb.MetricDescriptor_GAUGE && kind != metricpb.MetricDescriptor_CUMULATIVE {
			return fmt.Sprintf("Field timeSeries[%d].metricKind had an invalid value of %q: A metric can only be auto-created with kind GAUGE or CUMULATIVE.", i, kind)
		}
		if vt == metricpb.MetricDescriptor_STRING {
			return fmt.Sprintf("Field timeSeries[%d].valueType had an invalid value of %q: A metric can only be auto-created with value type BOOL, INT64, DOUBLE or DISTRIBUTION.", i, vt)
		}
		d = &metricpb.MetricDescriptor{
			Name:       "projects/" + proj + "/metricDescriptors/" + metricType,
			Type:       metricType,
			MetricKind: kind,
			ValueType:  vt,
			Unit:       ts.GetUnit(),
		}
		for _, k := range slices.Sorted(maps.Keys(ts.GetMetric().GetLabels())) {
			if !labelKeyRE.MatchString(k) {
				return fmt.Sprintf("Field timeSeries[%d].metric.labels had an invalid value of %q: Label key contains invalid characters.", i, k)
			}
			d.Labels = append(d.Labels, &labelpb.LabelDescriptor{Key: k, ValueType: labelpb.LabelDescriptor_STRING})
		}
		created = true
	}
	if ts.GetMetricKind() != metricpb.MetricDescriptor_METRIC_KIND_UNSPECIFIED && ts.GetMetricKind() != d.MetricKind {
		return fmt.Sprintf("Metric kind for metric %s must be %s, but is %s.", metricType, d.MetricKind, ts.GetMetricKind())
	}
	if vt != d.ValueType {
		return fmt.Sprintf("Value type for metric %s must be %s, but is %s.", metricType, d.ValueType, vt)
	}
	for _, k := range slices.Sorted(maps.Keys(ts.GetMetric().GetLabels())) {
		if !slices.ContainsFunc(d.Labels, func(l *labelpb.LabelDescriptor) bool { return l.Key == k }) {
			return fmt.Sprintf("Field timeSeries[%d].metric.labels had an invalid value of %q: Unrecognized metric label.", i, k)
		}
	}

	start, end, msg := s.interval(i, metricType, d.MetricKind, pt.GetInterval(), now)
	if msg != "" {
		return msg
	}
	point := Point{
		Project:        proj,
		MetricType:     metricType,
		MetricLabels:   maps.Clone(ts.GetMetric().GetLabels()),
		ResourceType:   resType,
		ResourceLabels: resLabels,
		Kind:           d.MetricKind,
		ValueType:      vt,
		Start:          start,
		End:            end,
		Value:          proto.Clone(pt.GetValue()).(*monitoringpb.TypedValue),
	}
	if point.MetricLabels == nil {
		point.MetricLabels = map[string]string{}
	}
	key := point.key()
	if last, ok := p.last[key]; ok {
		if msg := s.order(metricType, d.MetricKind, last, point); msg != "" {
			return msg
		}
	}
	if vt == metricpb.MetricDescriptor_DISTRIBUTION {
		if msg := checkDistribution(i, point.Value); msg != "" {
			return msg
		}
	}
	if created {
		p.descriptors[metricType] = d
	}
	p.last[key] = point
	p.log = append(p.log, point)
	if over := len(p.log) - s.maxPoints; over > 0 {
		p.log = slices.Delete(p.log, 0, over)
	}
	return ""
}

// interval checks a point's interval against its kind and the clock.
func (s *Server) interval(i int, metricType string, kind metricpb.MetricDescriptor_MetricKind, in *monitoringpb.TimeInterval, now time.Time) (start, end time.Time, msg string) {
	if in.GetEndTime() == nil {
		return start, end, fmt.Sprintf("Field timeSeries[%d].points[0].interval.end_time had an invalid value: The end time must be set.", i)
	}
	end = in.GetEndTime().AsTime()
	field := fmt.Sprintf("Field timeSeries[%d].points[0].interval", i)
	switch {
	case end.Before(now.Add(-maxPast)):
		return start, end, fmt.Sprintf("%s.end_time had an invalid value of %q: Data points cannot be written more than %v in the past.", field, stamp(end), maxPast)
	case end.After(now.Add(maxFuture)):
		return start, end, fmt.Sprintf("%s.end_time had an invalid value of %q: Data points cannot be written more than %v in the future.", field, stamp(end), maxFuture)
	}
	if kind == metricpb.MetricDescriptor_GAUGE {
		if in.GetStartTime() != nil && !in.GetStartTime().AsTime().Equal(end) {
			return start, end, fmt.Sprintf("%s.start_time had an invalid value of %q: The start time must be equal to the end time (%s) for the gauge metric '%s'.",
				field, stamp(in.GetStartTime().AsTime()), stamp(end), metricType)
		}
		return end, end, ""
	}
	if in.GetStartTime() == nil || !in.GetStartTime().AsTime().Before(end) {
		st := ""
		if in.GetStartTime() != nil {
			st = stamp(in.GetStartTime().AsTime())
		}
		return start, end, fmt.Sprintf("%s.start_time had an invalid value of %q: The start time must be before the end time (%s) for the non-gauge metric '%s'.",
			field, st, stamp(end), metricType)
	}
	return in.GetStartTime().AsTime(), end, ""
}

// order checks a point against the latest of its series.
func (s *Server) order(metricType string, kind metricpb.MetricDescriptor_MetricKind, last, p Point) string {
	switch kind {
	case metricpb.MetricDescriptor_GAUGE:
		if !p.End.After(last.End) {
			return MsgOutOfOrder
		}
	case metricpb.MetricDescriptor_CUMULATIVE:
		switch {
		case p.Start.Before(last.Start):
			return MsgOutOfOrder
		case p.Start.Equal(last.Start) && !p.End.After(last.End):
			return MsgOutOfOrderEnd
		case p.Start.After(last.Start) && p.Start.Before(last.End.Add(time.Millisecond)):
			return MsgOutOfOrder // a reset must start after the last interval
		}
	case metricpb.MetricDescriptor_DELTA:
		if p.Start.Before(last.End.Add(time.Millisecond)) {
			return MsgOutOfOrder
		}
	}
	if s.period > 0 && p.End.Sub(last.End) < s.period {
		return fmt.Sprintf("%s {Metric: %s, Timestamps: {Youngest Existing: '%s', New: '%s'}}",
			MsgSamplingPeriod, metricType, last.End.UTC().Format("2006/01/02-15:04:05.000"), p.End.UTC().Format("2006/01/02-15:04:05.000"))
	}
	return ""
}

func checkDistribution(i int, v *monitoringpb.TypedValue) string {
	d := v.GetDistributionValue()
	field := fmt.Sprintf("Field timeSeries[%d].points[0].value.distribution_value", i)
	if d.GetCount() < 0 {
		return fmt.Sprintf("%s.count had an invalid value of %d: The count must not be negative.", field, d.GetCount())
	}
	if d.GetCount() == 0 && (d.GetMean() != 0 || d.GetSumOfSquaredDeviation() != 0) {
		return fmt.Sprintf("%s had an invalid value: The mean and sum of squared deviation must be 0 when the count is 0.", field)
	}
	if len(d.GetBucketCounts()) == 0 {
		return ""
	}
	var sum int64
	for _, c := range d.GetBucketCounts() {
		if c < 0 {
			return fmt.Sprintf("%s.bucket_counts had an invalid value: Bucket counts must not be negative.", field)
		}
		sum += c
	}
	if sum != d.GetCount() {
		return fmt.Sprintf("%s had an invalid value: The sum of the bucket counts (%d) must equal the count (%d).", field, sum, d.GetCount())
	}
	opts := d.GetBucketOptions()
	var buckets int
	switch {
	case opts.GetExplicitBuckets() != nil:
		b := opts.GetExplicitBuckets().GetBounds()
		for j := 1; j < len(b); j++ {
			if !(b[j] > b[j-1]) {
				return fmt.Sprintf("%s.bucket_options.explicit_buckets.bounds had an invalid value: The bounds must be strictly increasing.", field)
			}
		}
		buckets = len(b) + 1
	case opts.GetExponentialBuckets() != nil:
		buckets = int(opts.GetExponentialBuckets().GetNumFiniteBuckets()) + 2
	case opts.GetLinearBuckets() != nil:
		buckets = int(opts.GetLinearBuckets().GetNumFiniteBuckets()) + 2
	default:
		return fmt.Sprintf("%s.bucket_options had an invalid value: Bucket counts need bucket options.", field)
	}
	if len(d.GetBucketCounts()) > buckets {
		return fmt.Sprintf("%s.bucket_counts had an invalid value: %d bucket counts for %d buckets.", field, len(d.GetBucketCounts()), buckets)
	}
	return ""
}

func valueType(v *monitoringpb.TypedValue) (metricpb.MetricDescriptor_ValueType, bool) {
	switch v.GetValue().(type) {
	case *monitoringpb.TypedValue_BoolValue:
		return metricpb.MetricDescriptor_BOOL, true
	case *monitoringpb.TypedValue_Int64Value:
		return metricpb.MetricDescriptor_INT64, true
	case *monitoringpb.TypedValue_DoubleValue:
		return metricpb.MetricDescriptor_DOUBLE, true
	case *monitoringpb.TypedValue_StringValue:
		return metricpb.MetricDescriptor_STRING, true
	case *monitoringpb.TypedValue_DistributionValue:
		return metricpb.MetricDescriptor_DISTRIBUTION, true
	}
	return 0, false
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// partialError reports refused series as the real service does: one
// "message: timeSeries[indexes]" part per distinct message, and a
// CreateTimeSeriesSummary whose error statuses carry only a code.
func partialError(total int, fails []failure) error {
	var msgs []string
	byMsg := map[string][]int{}
	for _, f := range fails {
		if _, ok := byMsg[f.msg]; !ok {
			msgs = append(msgs, f.msg)
		}
		byMsg[f.msg] = append(byMsg[f.msg], f.index)
	}
	parts := make([]string, len(msgs))
	for i, m := range msgs {
		parts[i] = fmt.Sprintf("%s: timeSeries[%s]", m, ranges(byMsg[m]))
	}
	st := status.New(codes.InvalidArgument, MsgPartial+": "+strings.Join(parts, "; "))
	summary := &monitoringpb.CreateTimeSeriesSummary{
		TotalPointCount:   int32(total),
		SuccessPointCount: int32(total - len(fails)),
		Errors: []*monitoringpb.CreateTimeSeriesSummary_Error{
			{Status: &spb.Status{Code: int32(codes.InvalidArgument)}, PointCount: int32(len(fails))},
		},
	}
	if withDetails, err := st.WithDetails(summary); err == nil {
		st = withDetails
	}
	return st.Err()
}

// ranges formats sorted indexes as "0-2,5,7-8".
func ranges(idx []int) string {
	var parts []string
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(idx[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", idx[i], idx[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// ListTimeSeries returns the raw points of the series the filter selects
// whose end time is in (start, end] of the interval (all points up to end
// when start is unset), newest first. The page token is a series offset.
func (s *Server) ListTimeSeries(_ context.Context, req *monitoringpb.ListTimeSeriesRequest) (*monitoringpb.ListTimeSeriesResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("ListTimeSeries"); err != nil {
		return nil, err
	}
	proj, err := projectName(req.GetName())
	if err != nil {
		return nil, err
	}
	f, err := parseFilter(req.GetFilter())
	if err == nil && !f.hasMetricType() {
		err = fmt.Errorf("A filter must specify a metric type.")
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "Field filter had an invalid value of %q: %v", req.GetFilter(), err)
	}
	if req.GetInterval().GetEndTime() == nil {
		return nil, status.Error(codes.InvalidArgument, "Field interval.end_time had an invalid value: The end time must be set.")
	}
	for _, a := range []*monitoringpb.Aggregation{req.GetAggregation(), req.GetSecondaryAggregation()} {
		if a.GetPerSeriesAligner() != monitoringpb.Aggregation_ALIGN_NONE ||
			a.GetCrossSeriesReducer() != monitoringpb.Aggregation_REDUCE_NONE || len(a.GetGroupByFields()) > 0 {
			return nil, status.Error(codes.Unimplemented, "the fake Cloud Monitoring neither aligns nor reduces time series")
		}
	}
	end := req.GetInterval().GetEndTime().AsTime()
	var start time.Time
	if req.GetInterval().GetStartTime() != nil {
		start = req.GetInterval().GetStartTime().AsTime()
	}

	var order []string
	bySeries := map[string][]Point{}
	for _, pt := range s.project(proj).log {
		if !f.matchPoint(pt) || pt.End.After(end) || (!start.IsZero() && !pt.End.After(start)) {
			continue
		}
		k := pt.key()
		if _, ok := bySeries[k]; !ok {
			order = append(order, k)
		}
		bySeries[k] = append(bySeries[k], pt)
	}
	offset, _ := strconv.Atoi(req.GetPageToken())
	size := int(req.GetPageSize())
	if size <= 0 {
		size = 100000
	}
	resp := &monitoringpb.ListTimeSeriesResponse{}
	for i := offset; i < len(order); i++ {
		if len(resp.TimeSeries) == size {
			resp.NextPageToken = strconv.Itoa(i)
			break
		}
		pts := bySeries[order[i]]
		first := pts[0]
		ts := &monitoringpb.TimeSeries{
			Metric:     &metricpb.Metric{Type: first.MetricType, Labels: maps.Clone(first.MetricLabels)},
			Resource:   &monitoredrespb.MonitoredResource{Type: first.ResourceType, Labels: maps.Clone(first.ResourceLabels)},
			MetricKind: first.Kind,
			ValueType:  first.ValueType,
		}
		if req.GetView() != monitoringpb.ListTimeSeriesRequest_HEADERS {
			for j := len(pts) - 1; j >= 0; j-- {
				ts.Points = append(ts.Points, &monitoringpb.Point{
					Interval: &monitoringpb.TimeInterval{StartTime: timestamppb.New(pts[j].Start), EndTime: timestamppb.New(pts[j].End)},
					Value:    proto.Clone(pts[j].Value).(*monitoringpb.TypedValue),
				})
			}
		}
		resp.TimeSeries = append(resp.TimeSeries, ts)
	}
	return resp, nil
}
