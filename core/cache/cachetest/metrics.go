package cachetest

import (
	"context"
	"sync"

	"github.com/tollgate-ci/tollgate/core/metrics"
)

// Metrics records what a cache writes: the last value of each gauge and
// the sum of each counter (labels are ignored: the cache's have none).
type Metrics struct {
	mu       sync.Mutex
	gauges   map[string]float64
	counters map[string]float64
}

var _ metrics.Metrics = (*Metrics)(nil)

// NewMetrics returns an empty recorder.
func NewMetrics() *Metrics {
	return &Metrics{gauges: map[string]float64{}, counters: map[string]float64{}}
}

// Set implements metrics.Metrics.
func (m *Metrics) Set(_ context.Context, name string, _ map[string]string, v float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gauges[name] = v
	return nil
}

// Observe implements metrics.Metrics; the cache writes no distributions.
func (m *Metrics) Observe(context.Context, string, map[string]string, float64) error { return nil }

// Add implements metrics.Metrics.
func (m *Metrics) Add(_ context.Context, name string, _ map[string]string, v float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counters[name] += v
	return nil
}

// Gauge returns a gauge's last value and whether it was written.
func (m *Metrics) Gauge(name string) (float64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.gauges[name]
	return v, ok
}

// Counter returns a counter's sum.
func (m *Metrics) Counter(name string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counters[name]
}
