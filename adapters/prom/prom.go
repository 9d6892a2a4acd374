// Package prom implements the Metrics port on the Prometheus client, for
// the embedded runtime and self-hosted runs.
//
// New registers one collector per metrics.Catalogue entry, under the
// catalogue's exact name (ci_job_queue_len, not tollgate_ci_job_queue_len),
// so dashboards and the autoscaler read the same names on every backend.
// Unlike Cloud Monitoring, Prometheus pulls, so every write lands in memory
// and nothing needs coalescing.
package prom

import (
	"context"
	"math"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
)

// SecondsBuckets are the histogram buckets of distributions in seconds:
// from a 1 s job to the 6 h the longest jobs and reviews take.
var SecondsBuckets = []float64{1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 21600}

// Metrics writes to Prometheus collectors. Safe for concurrent use.
type Metrics struct {
	gatherer prometheus.Gatherer
	series   map[string]series
}

// series is one catalogue entry and its collector.
type series struct {
	desc      metrics.Descriptor
	gauge     *prometheus.GaugeVec
	histogram *prometheus.HistogramVec
	counter   *prometheus.CounterVec
}

var _ metrics.Metrics = (*Metrics)(nil)

// New registers the catalogue on reg; nil means a new registry. Handler
// serves reg if it is also a Gatherer (a *prometheus.Registry is), else the
// default gatherer. Registering twice on one registry fails with
// AlreadyExists.
func New(reg prometheus.Registerer) (*Metrics, error) {
	const op = "prom.New"
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{gatherer: prometheus.DefaultGatherer, series: map[string]series{}}
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	}
	for _, d := range metrics.Catalogue {
		s := series{desc: d}
		var c prometheus.Collector
		switch d.Kind {
		case metrics.Gauge:
			s.gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: d.Name, Help: d.Help}, d.Labels)
			c = s.gauge
		case metrics.Distribution:
			buckets := prometheus.DefBuckets
			if d.Unit == "s" {
				buckets = SecondsBuckets
			}
			s.histogram = prometheus.NewHistogramVec(
				prometheus.HistogramOpts{Name: d.Name, Help: d.Help, Buckets: buckets}, d.Labels)
			c = s.histogram
		case metrics.Counter:
			s.counter = prometheus.NewCounterVec(prometheus.CounterOpts{Name: d.Name, Help: d.Help}, d.Labels)
			c = s.counter
		default:
			return nil, errs.E(errs.InvalidArgument, op, "metric %s has unknown kind %d", d.Name, d.Kind)
		}
		if err := reg.Register(c); err != nil {
			code := errs.Unknown
			if _, ok := err.(prometheus.AlreadyRegisteredError); ok {
				code = errs.AlreadyExists
			}
			return nil, errs.Wrap(code, op+" "+d.Name, err)
		}
		// A metric without labels has one series: export it from the start,
		// so a scrape sees 0 rather than nothing before the first write.
		if len(d.Labels) == 0 {
			switch {
			case s.gauge != nil:
				s.gauge.WithLabelValues()
			case s.histogram != nil:
				s.histogram.WithLabelValues()
			case s.counter != nil:
				s.counter.WithLabelValues()
			}
		}
		m.series[d.Name] = s
	}
	return m, nil
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

// lookup returns the series of name if it has kind, with the label values
// in the descriptor's order.
func (m *Metrics) lookup(op, name string, kind metrics.Kind, labels map[string]string) (series, []string, error) {
	if err := metrics.Validate(name, kind, labels); err != nil {
		return series{}, nil, errs.Wrap(errs.InvalidArgument, op, err)
	}
	s := m.series[name]
	values := make([]string, len(s.desc.Labels))
	for i, k := range s.desc.Labels {
		values[i] = labels[k]
	}
	return s, values, nil
}

// Set records the current value of a Gauge.
func (m *Metrics) Set(_ context.Context, name string, labels map[string]string, v float64) error {
	s, values, err := m.lookup("prom.Set", name, metrics.Gauge, labels)
	if err != nil {
		return err
	}
	s.gauge.WithLabelValues(values...).Set(v)
	return nil
}

// Observe records one value of a Distribution; v must be finite, since one
// NaN or infinity would poison the series' sum for good.
func (m *Metrics) Observe(_ context.Context, name string, labels map[string]string, v float64) error {
	const op = "prom.Observe"
	s, values, err := m.lookup(op, name, metrics.Distribution, labels)
	if err != nil {
		return err
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return errs.E(errs.InvalidArgument, op, "%s: observation %v is not finite", name, v)
	}
	s.histogram.WithLabelValues(values...).Observe(v)
	return nil
}

// Add adds v to a Counter; v must be finite and not negative, since a
// counter only grows and one NaN would poison it for good.
func (m *Metrics) Add(_ context.Context, name string, labels map[string]string, v float64) error {
	const op = "prom.Add"
	s, values, err := m.lookup(op, name, metrics.Counter, labels)
	if err != nil {
		return err
	}
	if !(v >= 0) || math.IsInf(v, 0) {
		return errs.E(errs.InvalidArgument, op, "counter %s cannot add %v", name, v)
	}
	s.counter.WithLabelValues(values...).Add(v)
	return nil
}
