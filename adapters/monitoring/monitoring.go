// Package monitoring implements the Metrics port on Cloud Monitoring custom
// metrics, for the production runtime (and locally against
// emulators/monitoring).
//
// Cloud Monitoring takes at most one point per series every 5 seconds,
// each CreateTimeSeries request at most 200 series, and refuses points out
// of time order. So writes never go straight to the API: Set, Observe and
// Add only update an in-memory value per series, and Flush (called by Run
// every Options.Flush, or by a short-lived function before it returns)
// sends one point for each series that changed, at most once per flush
// interval per series, in requests of up to 200 series.
//
// Metric kinds: a Gauge is a GAUGE DOUBLE point with the latest value; a
// Counter is a CUMULATIVE DOUBLE with the running total since the series'
// first write in this process; a Distribution is a CUMULATIVE DISTRIBUTION
// with count, mean, sum of squared deviation and bucket counts since the
// series' first write (explicit buckets, SecondsBounds for seconds).
// Cumulative points are restatements of the whole state, so a point that
// may or may not have been written is simply written again later, never
// counted twice.
//
// Cumulative series need one writer each: two processes writing the same
// series with different start times make the service refuse one of them
// ("Points must be written in order"). Processes that may overlap (Cloud
// Run instances, a rolling restart) must each write their own series, by
// giving each a distinct Options.Resource such as generic_task with a
// unique task_id. The default resource, global, suits one writer, such as
// the tick's queue gauge that drives the autoscaler.
//
// A point refused because another writer sent one to the same series less
// than 5 s before is not an error: the value stays pending and goes out in
// a later flush. Other refusals are returned by Flush (and logged by Run),
// and their values are kept too.
package monitoring

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	distpb "google.golang.org/genproto/googleapis/api/distribution"
	labelpb "google.golang.org/genproto/googleapis/api/label"
	metricpb "google.golang.org/genproto/googleapis/api/metric"
	monitoredrespb "google.golang.org/genproto/googleapis/api/monitoredres"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
)

const (
	// DefaultPrefix is prepended to catalogue names to make metric types.
	DefaultPrefix = "custom.googleapis.com/tollgate/"
	// MinFlush is the shortest spacing of two points of one series that
	// Cloud Monitoring accepts for custom metrics, so the shortest flush
	// interval.
	MinFlush = 5 * time.Second
	// DefaultFlush is the default flush interval.
	DefaultFlush = MinFlush
	// MaxSeriesPerRequest is Cloud Monitoring's limit per CreateTimeSeries.
	MaxSeriesPerRequest = 200
	// finalFlushTimeout bounds the flush Run makes on shutdown.
	finalFlushTimeout = 10 * time.Second
	// maxAhead is how far in the future a point may be stamped: the
	// service allows 5 minutes, minus a margin for clock skew.
	maxAhead = 4 * time.Minute
)

// SecondsBounds are the explicit bucket bounds of distributions in
// seconds, the same as the Prometheus adapter's: from a 1 s job to the 6 h
// the longest jobs and reviews take.
var SecondsBounds = []float64{1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 21600}

// otherBounds serve distributions in other units: powers of 2 up to 2^20.
var otherBounds = func() []float64 {
	b := make([]float64, 21)
	for i := range b {
		b[i] = math.Ldexp(1, i)
	}
	return b
}()

// Options configure Metrics. The zero value gives the defaults.
type Options struct {
	// Prefix makes a metric type of a catalogue name; it must end in "/".
	// Default DefaultPrefix.
	Prefix string
	// Flush is the interval of Run's flushes and the shortest spacing of
	// two points of one series; at least MinFlush. Default DefaultFlush.
	Flush time.Duration
	// Clock stamps points. Default: the system clock.
	Clock clock.Clock
	// Log receives flush outcomes. Default slog.Default().
	Log *slog.Logger
	// Resource is the monitored resource of every series. Default global
	// with the project's project_id. See the package comment for when it
	// must be distinct per process.
	Resource *monitoredrespb.MonitoredResource
}

// Metrics writes the catalogue's metrics to Cloud Monitoring. Safe for
// concurrent use.
type Metrics struct {
	client   *monitoring.MetricClient
	project  string
	prefix   string
	interval time.Duration
	clock    clock.Clock
	log      *slog.Logger
	resource *monitoredrespb.MonitoredResource

	flushMu sync.Mutex // one flush at a time, so points of a series stay in order

	mu     sync.Mutex
	series map[string]*series // by seriesKey
}

var _ metrics.Metrics = (*Metrics)(nil)

// series is the pending state of one series.
type series struct {
	key    string
	desc   metrics.Descriptor
	labels map[string]string
	start  time.Time // of the cumulative interval
	value  float64   // a gauge's latest value or a counter's total
	dist   *distribution
	// version counts writes; sent is the version the service last
	// accepted. The series is pending while they differ.
	version, sent uint64
	// lastEnd is the end time of the last point sent, accepted or not.
	lastEnd time.Time
}

// New connects to Cloud Monitoring for project. clientOpts pass
// credentials or, for the emulator, an endpoint and insecure transport.
func New(ctx context.Context, project string, opts Options, clientOpts ...option.ClientOption) (*Metrics, error) {
	const op = "monitoring.New"
	if project == "" {
		return nil, errs.E(errs.InvalidArgument, op, "no project")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		return nil, errs.E(errs.InvalidArgument, op, "prefix %q must end in /", opts.Prefix)
	}
	if opts.Flush == 0 {
		opts.Flush = DefaultFlush
	}
	if opts.Flush < MinFlush {
		return nil, errs.E(errs.InvalidArgument, op, "flush interval %v is below Cloud Monitoring's %v per series", opts.Flush, MinFlush)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Resource == nil {
		opts.Resource = &monitoredrespb.MonitoredResource{Type: "global", Labels: map[string]string{"project_id": project}}
	}
	c, err := monitoring.NewMetricClient(ctx, clientOpts...)
	if err != nil {
		return nil, mapErr(op, err)
	}
	return &Metrics{
		client:   c,
		project:  project,
		prefix:   opts.Prefix,
		interval: opts.Flush,
		clock:    opts.Clock,
		log:      opts.Log,
		resource: proto.Clone(opts.Resource).(*monitoredrespb.MonitoredResource),
		series:   map[string]*series{},
	}, nil
}

// Close releases the client. Pending values not flushed are lost.
func (m *Metrics) Close() error { return mapErr("monitoring.Close", m.client.Close()) }

// MetricType returns the Cloud Monitoring type of a catalogue name.
func (m *Metrics) MetricType(name string) string { return m.prefix + name }

// descriptor returns the Cloud Monitoring descriptor of a catalogue entry.
func (m *Metrics) descriptor(d metrics.Descriptor) *metricpb.MetricDescriptor {
	kind, vt := kindOf(d.Kind)
	md := &metricpb.MetricDescriptor{
		Type:        m.MetricType(d.Name),
		MetricKind:  kind,
		ValueType:   vt,
		Unit:        d.Unit,
		Description: d.Help,
		DisplayName: d.Name,
		Metadata:    &metricpb.MetricDescriptor_MetricDescriptorMetadata{SamplePeriod: durationpb.New(m.interval)},
	}
	for _, k := range d.Labels {
		md.Labels = append(md.Labels, &labelpb.LabelDescriptor{Key: k, ValueType: labelpb.LabelDescriptor_STRING})
	}
	return md
}

func kindOf(k metrics.Kind) (metricpb.MetricDescriptor_MetricKind, metricpb.MetricDescriptor_ValueType) {
	switch k {
	case metrics.Gauge:
		return metricpb.MetricDescriptor_GAUGE, metricpb.MetricDescriptor_DOUBLE
	case metrics.Counter:
		return metricpb.MetricDescriptor_CUMULATIVE, metricpb.MetricDescriptor_DOUBLE
	default:
		return metricpb.MetricDescriptor_CUMULATIVE, metricpb.MetricDescriptor_DISTRIBUTION
	}
}

// CreateDescriptors makes sure every catalogue metric has its descriptor,
// with one list call and a create for each one missing or lacking a label,
// unit or description; a second call creates nothing. A descriptor that
// exists with another kind or value type is left alone and reported as
// FailedPrecondition: changing it would make its data unusable, so that
// takes an operator deleting it.
func (m *Metrics) CreateDescriptors(ctx context.Context) error {
	const op = "monitoring.CreateDescriptors"
	have := map[string]*metricpb.MetricDescriptor{}
	it := m.client.ListMetricDescriptors(ctx, &monitoringpb.ListMetricDescriptorsRequest{
		Name:   "projects/" + m.project,
		Filter: fmt.Sprintf("metric.type = starts_with(%q)", m.prefix),
	})
	for {
		d, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return mapErr(op, err)
		}
		have[d.Type] = d
	}
	var conflicts []string
	for _, d := range metrics.Catalogue {
		want := m.descriptor(d)
		if old := have[want.Type]; old != nil {
			if old.MetricKind != want.MetricKind || old.ValueType != want.ValueType {
				conflicts = append(conflicts, fmt.Sprintf("%s is %s %s, want %s %s",
					want.Type, old.MetricKind, old.ValueType, want.MetricKind, want.ValueType))
				continue
			}
			if old.Unit == want.Unit && old.Description == want.Description && hasLabels(old, d.Labels) {
				continue
			}
		}
		if _, err := m.client.CreateMetricDescriptor(ctx, &monitoringpb.CreateMetricDescriptorRequest{
			Name: "projects/" + m.project, MetricDescriptor: want,
		}); err != nil {
			return mapErr(op+" "+want.Type, err)
		}
	}
	if len(conflicts) > 0 {
		return errs.E(errs.FailedPrecondition, op, "descriptors of another kind exist (delete them to recreate): %s",
			strings.Join(conflicts, "; "))
	}
	return nil
}

func hasLabels(d *metricpb.MetricDescriptor, keys []string) bool {
	for _, k := range keys {
		if !slices.ContainsFunc(d.Labels, func(l *labelpb.LabelDescriptor) bool { return l.Key == k }) {
			return false
		}
	}
	return true
}

// update applies f to the series of name and labels, creating it.
func (m *Metrics) update(op, name string, kind metrics.Kind, labels map[string]string, f func(*series)) error {
	if err := metrics.Validate(name, kind, labels); err != nil {
		return errs.Wrap(errs.InvalidArgument, op, err)
	}
	key := seriesKey(name, labels)
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.series[key]
	if s == nil {
		d, _ := metrics.Lookup(name)
		s = &series{key: key, desc: d, labels: maps.Clone(labels), start: m.clock.Now()}
		if s.labels == nil {
			s.labels = map[string]string{}
		}
		if kind == metrics.Distribution {
			bounds := otherBounds
			if d.Unit == "s" {
				bounds = SecondsBounds
			}
			s.dist = &distribution{bounds: bounds, buckets: make([]int64, len(bounds)+1)}
		}
		m.series[key] = s
	}
	f(s)
	s.version++
	return nil
}

func seriesKey(name string, labels map[string]string) string {
	var b strings.Builder
	b.WriteString(name)
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b.WriteString("\x00" + k + "=" + labels[k])
	}
	return b.String()
}

// Set records the current value of a Gauge; the next flush sends the
// latest value only.
func (m *Metrics) Set(_ context.Context, name string, labels map[string]string, v float64) error {
	return m.update("monitoring.Set", name, metrics.Gauge, labels, func(s *series) { s.value = v })
}

// Observe adds v to a Distribution; v must be finite, since one NaN or
// infinity would poison the mean for good.
func (m *Metrics) Observe(_ context.Context, name string, labels map[string]string, v float64) error {
	const op = "monitoring.Observe"
	if math.IsNaN(v) || math.IsInf(v, 0) {
		if err := metrics.Validate(name, metrics.Distribution, labels); err != nil {
			return errs.Wrap(errs.InvalidArgument, op, err)
		}
		return errs.E(errs.InvalidArgument, op, "%s: observation %v is not finite", name, v)
	}
	return m.update(op, name, metrics.Distribution, labels, func(s *series) { s.dist.add(v) })
}

// Add adds v to a Counter; v must be finite and not negative, since a
// cumulative value only grows and one NaN would poison it for good.
func (m *Metrics) Add(_ context.Context, name string, labels map[string]string, v float64) error {
	const op = "monitoring.Add"
	if !(v >= 0) || math.IsInf(v, 0) {
		if err := metrics.Validate(name, metrics.Counter, labels); err != nil {
			return errs.Wrap(errs.InvalidArgument, op, err)
		}
		return errs.E(errs.InvalidArgument, op, "counter %s cannot add %v", name, v)
	}
	return m.update(op, name, metrics.Counter, labels, func(s *series) { s.value += v })
}

// distribution accumulates observations: Welford's running mean and sum
// of squared deviations, and counts per explicit bucket, where bucket 0 is
// (-inf, bounds[0]) and bucket i is [bounds[i-1], bounds[i]).
type distribution struct {
	bounds  []float64
	count   int64
	mean    float64
	m2      float64
	buckets []int64
}

func (d *distribution) add(v float64) {
	d.count++
	delta := v - d.mean
	d.mean += delta / float64(d.count)
	d.m2 += delta * (v - d.mean)
	d.buckets[sort.Search(len(d.bounds), func(i int) bool { return d.bounds[i] > v })]++
}

func (d *distribution) proto() *distpb.Distribution {
	return &distpb.Distribution{
		Count:                 d.count,
		Mean:                  d.mean,
		SumOfSquaredDeviation: d.m2,
		BucketOptions: &distpb.Distribution_BucketOptions{Options: &distpb.Distribution_BucketOptions_ExplicitBuckets{
			ExplicitBuckets: &distpb.Distribution_BucketOptions_Explicit{Bounds: slices.Clone(d.bounds)},
		}},
		BucketCounts: slices.Clone(d.buckets),
	}
}

// pending is a point on its way: the series, the version it states, and
// its end time.
type pending struct {
	s       *series
	version uint64
	end     time.Time
	ts      *monitoringpb.TimeSeries
}

// slack lets a flush that comes a little early, as ticks jitter, send a
// series whose interval is almost over: the point is stamped at the end
// of the interval, a moment in the future, which the service allows (up
// to 5 minutes). Without it a 5 s ticker would skip every other tick.
func (m *Metrics) slack() time.Duration { return min(m.interval/10, time.Second) }

// due returns the points to send now: one per pending series whose last
// point is at least an interval old (all pending series if final). The
// caller holds flushMu.
func (m *Metrics) due(now time.Time, final bool) []pending {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []pending
	for _, s := range m.series {
		if s.version == s.sent {
			continue
		}
		end := now
		if !s.lastEnd.IsZero() {
			next := s.lastEnd.Add(m.interval)
			if !final && now.Before(next.Add(-m.slack())) {
				continue
			}
			if next.After(now.Add(maxAhead)) {
				continue // even a final point cannot be stamped that far ahead
			}
			end = maxTime(end, next)
		}
		if s.desc.Kind != metrics.Gauge {
			end = maxTime(end, s.start.Add(time.Millisecond)) // a cumulative interval is never empty
		}
		out = append(out, pending{s: s, version: s.version, end: end, ts: m.timeSeries(s, end)})
	}
	slices.SortFunc(out, func(a, b pending) int { return cmp.Compare(a.s.key, b.s.key) })
	return out
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// timeSeries builds the point of s ending at end. The caller holds m.mu.
func (m *Metrics) timeSeries(s *series, end time.Time) *monitoringpb.TimeSeries {
	kind, vt := kindOf(s.desc.Kind)
	in := &monitoringpb.TimeInterval{EndTime: timestamppb.New(end)}
	var v *monitoringpb.TypedValue
	switch s.desc.Kind {
	case metrics.Gauge:
		v = &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_DoubleValue{DoubleValue: s.value}}
	case metrics.Counter:
		in.StartTime = timestamppb.New(s.start)
		v = &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_DoubleValue{DoubleValue: s.value}}
	default:
		in.StartTime = timestamppb.New(s.start)
		v = &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_DistributionValue{DistributionValue: s.dist.proto()}}
	}
	return &monitoringpb.TimeSeries{
		Metric:     &metricpb.Metric{Type: m.MetricType(s.desc.Name), Labels: maps.Clone(s.labels)},
		Resource:   m.resource,
		MetricKind: kind,
		ValueType:  vt,
		Unit:       s.desc.Unit,
		Points:     []*monitoringpb.Point{{Interval: in, Value: v}},
	}
}

// Flush sends one point for each series that changed since it was last
// written and whose last point is at least a flush interval old, in
// requests of at most MaxSeriesPerRequest. Points the service refuses
// because of its sampling period are kept for a later flush and are not
// errors; other refusals are returned, with their values kept as well.
func (m *Metrics) Flush(ctx context.Context) error { return m.flush(ctx, false) }

func (m *Metrics) flush(ctx context.Context, final bool) error {
	const op = "monitoring.Flush"
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	points := m.due(m.clock.Now(), final)
	var errList []error
	for len(points) > 0 {
		n := min(len(points), MaxSeriesPerRequest)
		batch := points[:n]
		points = points[n:]
		req := &monitoringpb.CreateTimeSeriesRequest{Name: "projects/" + m.project}
		for _, p := range batch {
			req.TimeSeries = append(req.TimeSeries, p.ts)
		}
		res, err := outcomes(op, m.client.CreateTimeSeries(ctx, req), n)
		nThrottled := 0
		m.mu.Lock()
		for i, p := range batch {
			// Whatever happened, the next point of the series must come
			// an interval later: this one may have been written.
			p.s.lastEnd = p.end
			switch res[i] {
			case written:
				p.s.sent = max(p.s.sent, p.version)
			case throttled:
				nThrottled++
			}
		}
		m.mu.Unlock()
		if nThrottled > 0 {
			m.log.Debug("metrics: points refused for the sampling period, kept for the next flush", "series", nThrottled)
		}
		if err != nil {
			errList = append(errList, err)
		}
	}
	return errors.Join(errList...)
}

// Run flushes every interval until ctx ends, then once more with every
// pending value, stamped up to an interval ahead (which the service
// allows, up to a few minutes), so a clean shutdown loses nothing. It returns the error of
// that last flush; the others it logs.
func (m *Metrics) Run(ctx context.Context) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
			defer cancel()
			err := m.flush(fctx, true)
			if err != nil {
				m.log.Warn("metrics: final flush failed", "err", err)
			}
			return err
		case <-t.C:
			if err := m.Flush(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("metrics: flush failed", "err", err)
			}
		}
	}
}

// outcome is what became of one series of a CreateTimeSeries request.
type outcome int

const (
	written   outcome = iota
	throttled         // refused for the sampling period: not an error
	refused           // refused for another reason
	unknown           // the call failed; the point may or may not be stored
)

// Texts of the service's partial-failure message, which is the only place
// that says which series were refused for what: the summary detail gives
// counts per status code only, and the sampling refusal shares its code
// (InvalidArgument) with real errors.
const (
	msgPartial  = "One or more TimeSeries could not be written"
	msgSampling = "One or more points were written more frequently than the maximum sampling period configured for the metric."
)

var indexesRE = regexp.MustCompile(`timeSeries\[([0-9][0-9,\- ]*)\]`)

// outcomes maps the result of a request of n series to each series, and
// returns the error to report: nil when every refusal was for the
// sampling period. It trusts its reading of the message only when it
// accounts for exactly the failed count of the summary.
func outcomes(op string, err error, n int) ([]outcome, error) {
	res := make([]outcome, n)
	if err == nil {
		return res, nil
	}
	st, _ := status.FromError(err)
	var summary *monitoringpb.CreateTimeSeriesSummary
	for _, d := range st.Details() {
		if s, ok := d.(*monitoringpb.CreateTimeSeriesSummary); ok {
			summary = s
		}
	}
	if summary == nil {
		fill(res, unknown)
		return res, mapErr(op, err)
	}
	msg := strings.TrimPrefix(strings.TrimPrefix(st.Message(), msgPartial), ": ")
	var parts []string // one per refusal reason, each naming its series
	for _, p := range strings.Split(msg, "; ") {
		if len(parts) > 0 && !indexesRE.MatchString(p) {
			parts[len(parts)-1] += "; " + p // a "; " inside a label value
			continue
		}
		parts = append(parts, p)
	}
	byIndex := map[int]outcome{}
	onlySampling, parsed := true, true
	for _, p := range parts {
		o := refused
		if strings.Contains(p, msgSampling) {
			o = throttled
		} else {
			onlySampling = false
		}
		for _, m := range indexesRE.FindAllStringSubmatch(p, -1) {
			idx, ok := parseIndexes(m[1], n)
			parsed = parsed && ok
			for _, i := range idx {
				if byIndex[i] != refused { // refused wins over throttled
					byIndex[i] = o
				}
			}
		}
	}
	failed := int(summary.GetTotalPointCount() - summary.GetSuccessPointCount())
	if !parsed || len(byIndex) != failed {
		// The message is not what this code understands: assume nothing
		// was written, which at worst writes a point again later.
		fill(res, unknown)
		if onlySampling && strings.Contains(msg, msgSampling) {
			return res, nil
		}
		return res, mapErr(op, err)
	}
	nRefused := 0
	for i, o := range byIndex {
		res[i] = o
		if o == refused {
			nRefused++
		}
	}
	if nRefused == 0 {
		return res, nil
	}
	return res, mapErr(op, fmt.Errorf("%d of %d series refused: %w", nRefused, n, err))
}

func fill(res []outcome, o outcome) {
	for i := range res {
		res[i] = o
	}
}

// parseIndexes parses "0-2,5" into indexes below n.
func parseIndexes(s string, n int) ([]int, bool) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, false
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, false
			}
		}
		if a < 0 || b < a || b >= n {
			return nil, false
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out, true
}

// mapErr gives an API error its code: the one place this adapter does.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var coded *errs.Error
	if errors.As(err, &coded) && coded.Code != errs.Unknown {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errs.Wrap(errs.Unavailable, op, err)
	}
	code := errs.Unknown
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.NotFound:
			code = errs.NotFound
		case codes.AlreadyExists:
			code = errs.AlreadyExists
		case codes.FailedPrecondition:
			code = errs.FailedPrecondition
		case codes.ResourceExhausted:
			code = errs.ResourceExhausted
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal:
			code = errs.Unavailable
		case codes.InvalidArgument, codes.OutOfRange:
			code = errs.InvalidArgument
		case codes.PermissionDenied:
			code = errs.PermissionDenied
		case codes.Unauthenticated:
			code = errs.Unauthenticated
		case codes.Aborted:
			code = errs.Aborted
		}
	}
	return errs.Wrap(code, op, err)
}
