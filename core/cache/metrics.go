package cache

import (
	"context"
	"log/slog"
	"time"

	"github.com/tollgate-ci/tollgate/core/metrics"
)

// Names of the metrics the backends write (no labels).
const (
	MetricBytes          = "ci_cache_bytes"           // gauge, By: bytes stored
	MetricObjects        = "ci_cache_objects"         // gauge, 1: objects stored
	MetricEvictedBytes   = "ci_cache_evicted_bytes"   // counter, By: bytes evicted
	MetricEvictedObjects = "ci_cache_evicted_objects" // counter, 1: objects evicted
	MetricOldestAge      = "ci_cache_oldest_age"      // gauge, s: age of the least recently used object kept
)

// MetricDescriptors describe the metrics above, for metrics.Catalogue.
var MetricDescriptors = []metrics.Descriptor{
	{Name: MetricBytes, Kind: metrics.Gauge, Unit: "By", Help: "Bytes of objects in the artifact cache."},
	{Name: MetricObjects, Kind: metrics.Gauge, Unit: "1", Help: "Objects in the artifact cache."},
	{Name: MetricEvictedBytes, Kind: metrics.Counter, Unit: "By", Help: "Bytes evicted from the artifact cache."},
	{Name: MetricEvictedObjects, Kind: metrics.Counter, Unit: "1", Help: "Objects evicted from the artifact cache."},
	{Name: MetricOldestAge, Kind: metrics.Gauge, Unit: "s",
		Help: "Time since the least recently used object kept in the artifact cache was last used: the cache's retention in practice."},
}

// Sample is one set of values for the cache metrics.
type Sample struct {
	Objects, Bytes               int64
	EvictedObjects, EvictedBytes int64 // since the last sample
	OldestAccess                 time.Time
	Now                          time.Time
}

// Emit writes s to m, best effort: a metrics backend that refuses a point
// (for instance one that does not know the name yet) is logged at debug
// level and otherwise ignored, since the cache must work without metrics.
func Emit(ctx context.Context, m metrics.Metrics, log *slog.Logger, s Sample) {
	if m == nil {
		return
	}
	try := func(err error) {
		if err != nil && log != nil {
			log.DebugContext(ctx, "cache metric not written", "err", err)
		}
	}
	try(m.Set(ctx, MetricBytes, nil, float64(s.Bytes)))
	try(m.Set(ctx, MetricObjects, nil, float64(s.Objects)))
	if s.EvictedObjects > 0 {
		try(m.Add(ctx, MetricEvictedObjects, nil, float64(s.EvictedObjects)))
		try(m.Add(ctx, MetricEvictedBytes, nil, float64(s.EvictedBytes)))
	}
	age := 0.0
	if !s.OldestAccess.IsZero() && s.Now.After(s.OldestAccess) {
		age = s.Now.Sub(s.OldestAccess).Seconds()
	}
	try(m.Set(ctx, MetricOldestAge, nil, age))
}
