package controller_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/cache/cachetest"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/errs"
)

// fakeCache records cleanups; the rest of cache.Cache comes from cachetest.Mem.
type fakeCache struct {
	*cachetest.Mem
	mu   sync.Mutex
	runs []cache.CleanupOptions
	busy bool
	fail error
}

func (f *fakeCache) Cleanup(_ context.Context, o cache.CleanupOptions) (*cache.CleanupReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.runs = append(f.runs, o)
	return &cache.CleanupReport{DryRun: o.DryRun, Busy: f.busy}, nil
}
func (f *fakeCache) Stats(context.Context) (*cache.Stats, error) { return &cache.Stats{}, nil }
func (f *fakeCache) Close() error                                { return nil }

func TestCacheCleanupRunsOnScheduleAndOnDemand(t *testing.T) {
	e := newEnv(t, baseConfig)
	fc := &fakeCache{Mem: cachetest.NewMem()}
	e.c = e.newControllerWith(e.st, nil, fc)
	e.run(controller.Tick, nil)
	if n := e.tq.Count(controller.CacheCleanup); n != 1 {
		t.Fatalf("tick deferred cache_cleanup %d times, want 1", n)
	}
	e.clock.Advance(time.Minute) // within cache.cleanup_interval (15m): not again
	if err := e.c.Tick(e.ctx, "second-tick"); err != nil {
		t.Fatal(err)
	}
	if n := e.tq.Count(controller.CacheCleanup); n != 1 {
		t.Fatalf("cache_cleanup deferred again within its interval: %d", n)
	}
	e.drain()
	e.run(controller.CacheCleanup, cache.CleanupOptions{DryRun: true})
	if len(fc.runs) != 2 || fc.runs[0].DryRun || !fc.runs[1].DryRun {
		t.Fatalf("cleanups = %+v, want a scheduled one then a dry run", fc.runs)
	}
	fc.busy = true // another cleanup holds the lease: nothing to retry
	e.run(controller.CacheCleanup, nil)
	fc.fail = errs.E(errs.Unavailable, "test", "bucket down")
	if err := e.deliver(controller.CacheCleanup, nil); !errs.Transient(err) {
		t.Fatalf("failed cleanup: %v, want a transient error (retried)", err)
	}
	if err := e.deliver(controller.CacheCleanup, map[string]any{"dry_run": "yes"}); !errs.Is(err, errs.InvalidArgument) {
		t.Fatalf("malformed args: %v", err)
	}
}
