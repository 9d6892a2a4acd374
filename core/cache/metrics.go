package cache

import (
	"context"
	"log/slog"
	"time"

	"github.com/tollgate-ci/tollgate/core/metrics"
)

// Names of the metrics the backends write (no labels); their descriptors
// are in metrics.Catalogue.
const (
	MetricBytes          = metrics.CacheBytes          // gauge, By: bytes stored
	MetricObjects        = metrics.CacheObjects        // gauge, 1: objects stored
	MetricEvictedBytes   = metrics.CacheEvictedBytes   // counter, By: bytes evicted
	MetricEvictedObjects = metrics.CacheEvictedObjects // counter, 1: objects evicted
	MetricOldestAge      = metrics.CacheOldestAge      // gauge, s: age of the least recently used object kept
)

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
