package gcscache

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/cache/cachetest"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
)

const (
	bucket = "tollgate-cache"
	prefix = "ci/"
	U      = cachetest.Unit
)

var ctx = context.Background()

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// used sums the sizes of the objects in the fake bucket, behind the cache's back.
func (f *fakeGCS) used(t *testing.T) int64 {
	objs, _, err := f.srv.ListObjectsWithOptions(bucket, fakestorage.ListOptions{Prefix: prefix + casDir})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, o := range objs {
		n += o.Size
	}
	return n
}

func newCache(t *testing.T, f *fakeGCS, o Options) *Cache {
	t.Helper()
	o.Prefix = prefix
	if o.TouchInterval == 0 {
		o.TouchInterval = cachetest.TouchInterval
	}
	if o.BucketWidth == 0 {
		o.BucketWidth = time.Second
	}
	if o.Log == nil {
		o.Log = quiet()
	}
	c, err := Open(f.client, bucket, &o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) {
	cachetest.Run(t, cachetest.Harness{
		New: func(t *testing.T, s cachetest.Setup) *cachetest.Env {
			f := newFakeGCS(t, bucket)
			c := newCache(t, f, Options{Options: s.Options, Quota: s.Capacity, Clock: s.Clock, Metrics: s.Metrics})
			return &cachetest.Env{
				Cache:       c,
				SetCapacity: c.SetQuota,
				Used:        func() int64 { return f.used(t) },
				Delete: func(d cache.Digest) {
					err := f.client.Bucket(bucket).Object(prefix + casDir + d.Hash).Delete(ctx)
					if err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
						t.Fatal(err)
					}
				},
			}
		},
	})
}

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// fill puts objects from to to-1 one minute apart and returns their digests.
func fill(t *testing.T, c *Cache, fc *clock.Fake, seed string, from, to int) []cache.Digest {
	t.Helper()
	var ds []cache.Digest
	for i := from; i < to; i++ {
		data, d := cachetest.Object(seed, i, U)
		if err := c.Put(ctx, d, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
		fc.Advance(time.Minute)
	}
	return ds
}

// TestUsedDuringCleanupSurvives uses objects between the cleanup's listing
// and its deletes: their touch changes the metageneration, so the
// conditional deletes fail and the objects stay. This is the guarantee that
// needs real preconditions (see fakeGCS).
func TestUsedDuringCleanupSurvives(t *testing.T) {
	f := newFakeGCS(t, bucket)
	fc := clock.NewFake(t0)
	o := Options{Options: cache.Options{MinHeadroom: 10 * U, MaxHeadroom: 30 * U}, Quota: 100 * U, Clock: fc}
	c := newCache(t, f, o)
	ds := fill(t, c, fc, "survive", 0, 6)
	if err := c.SetRef(ctx, "r/5", ds[5]); err != nil {
		t.Fatal(err)
	}
	ds = append(ds, fill(t, c, fc, "survive", 6, 60)...)
	c.SetQuota(69 * U) // evict 21: objects 0 to 20
	fc.Advance(time.Minute)
	var usedErr error
	c.o.afterList = func() {
		// A FindMissing and a ResolveRef while the cleanup holds its list.
		_, usedErr = c.FindMissing(ctx, ds[0:2])
		if _, err := c.ResolveRef(ctx, "r/5"); err != nil && usedErr == nil {
			usedErr = err
		}
	}
	r, err := c.Cleanup(ctx, cache.CleanupOptions{})
	if err != nil || usedErr != nil {
		t.Fatalf("Cleanup: %v; uses: %v", err, usedErr)
	}
	if r.EvictedObjects != 18 || r.Survived != 3 || !r.Short {
		t.Errorf("report = %+v, want 18 evicted, 3 survivors (0, 1, 5), short of the target", r)
	}
	if m, _ := c.FindMissing(ctx, ds); !slices.Equal(m, slices.Concat(ds[2:5], ds[6:21])) {
		t.Errorf("missing after the cleanup: %d objects, want 2 to 20 but 5", len(m))
	}
	if d, err := c.ResolveRef(ctx, "r/5"); err != nil || d != ds[5] {
		t.Errorf("ResolveRef(r/5) = %v, %v", d, err)
	}
	if f.pre.Refused() == 0 {
		t.Errorf("no request was refused by a precondition")
	}
}

// TestCandidatesOverflow evicts more than MaxCandidates keeps in memory:
// the cleanup lists a second time and ends where it would have.
func TestCandidatesOverflow(t *testing.T) {
	for _, max := range []int{1, 7, 20, 1000} {
		f := newFakeGCS(t, bucket)
		fc := clock.NewFake(t0)
		c := newCache(t, f, Options{Options: cache.Options{MinHeadroom: 10 * U, MaxHeadroom: 30 * U}, Quota: 100 * U,
			Clock: fc, MaxCandidates: max, Concurrency: 3})
		ds := fill(t, c, fc, "overflow", 0, 60)
		c.SetQuota(69 * U)
		r, err := c.Cleanup(ctx, cache.CleanupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.EvictedObjects != 21 || r.FreeAfter != 30*U {
			t.Errorf("MaxCandidates %d: report = %+v", max, r)
		}
		if m, _ := c.FindMissing(ctx, ds); !slices.Equal(m, ds[:21]) {
			t.Errorf("MaxCandidates %d: evicted %d objects, want 0 to 20", max, len(m))
		}
	}
}

// TestLease checks that one cleanup runs at a time, that a live lease
// makes another answer Busy, that an expired one is taken over, and that a
// finished cleanup releases it.
func TestLease(t *testing.T) {
	f := newFakeGCS(t, bucket)
	fc := clock.NewFake(t0)
	o := Options{Options: cache.Options{MinHeadroom: 10 * U, MaxHeadroom: 30 * U}, Quota: 100 * U, Clock: fc,
		LeaseTTL: 10 * time.Minute}
	a := newCache(t, f, Options{Options: o.Options, Quota: o.Quota, Clock: fc, LeaseTTL: o.LeaseTTL, Holder: "a"})
	b := newCache(t, f, Options{Options: o.Options, Quota: o.Quota, Clock: fc, LeaseTTL: o.LeaseTTL, Holder: "b"})

	var inner *cache.CleanupReport
	var innerErr error
	a.o.afterList = func() { inner, innerErr = b.Cleanup(ctx, cache.CleanupOptions{}) }
	fill(t, a, fc, "lease", 0, 60)
	a.SetQuota(69 * U)
	b.SetQuota(69 * U)
	r, err := a.Cleanup(ctx, cache.CleanupOptions{})
	if err != nil || r.Busy || r.EvictedObjects != 21 {
		t.Fatalf("a's cleanup = %+v, %v", r, err)
	}
	if innerErr != nil || inner == nil || !inner.Busy || inner.EvictedObjects != 0 {
		t.Errorf("b's cleanup during a's = %+v, %v; want Busy", inner, innerErr)
	}
	// Released: b runs now.
	if r, err := b.Cleanup(ctx, cache.CleanupOptions{}); err != nil || r.Busy {
		t.Errorf("b's cleanup after a's = %+v, %v", r, err)
	}

	// A holder that died leaves its lease; it blocks others until it expires.
	dead := newCache(t, f, Options{Options: o.Options, Quota: o.Quota, Clock: fc, LeaseTTL: o.LeaseTTL, Holder: "dead"})
	if _, err := dead.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := b.Cleanup(ctx, cache.CleanupOptions{}); err != nil || !r.Busy {
		t.Errorf("cleanup while a live lease is held = %+v, %v; want Busy", r, err)
	}
	if r, err := b.Cleanup(ctx, cache.CleanupOptions{DryRun: true}); err != nil || r.Busy {
		t.Errorf("a dry run needs no lease: %+v, %v", r, err)
	}
	fc.Advance(11 * time.Minute)
	if r, err := b.Cleanup(ctx, cache.CleanupOptions{}); err != nil || r.Busy {
		t.Errorf("cleanup after the lease expired = %+v, %v", r, err)
	}
	if _, err := f.client.Bucket(bucket).Object(prefix + leaseName).Attrs(ctx); !errors.Is(err, storage.ErrObjectNotExist) {
		t.Errorf("the lease is still there after the cleanup: %v", err)
	}
}

// TestTouchInterval checks that uses refresh Custom-Time at most once per
// TouchInterval (each refresh is a billed metadata update).
func TestTouchInterval(t *testing.T) {
	f := newFakeGCS(t, bucket)
	fc := clock.NewFake(t0)
	c := newCache(t, f, Options{Quota: 100 << 30, Clock: fc, TouchInterval: time.Hour})
	data, d := cachetest.Object("touch", 0, 10)
	if err := c.Put(ctx, d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	customTime := func() time.Time {
		a, err := f.client.Bucket(bucket).Object(prefix + casDir + d.Hash).Attrs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return a.CustomTime
	}
	steps := []struct {
		advance time.Duration
		want    time.Time
	}{
		{0, t0},
		{30 * time.Minute, t0}, // within the interval: no write
		{29 * time.Minute, t0}, // still within
		{2 * time.Minute, t0.Add(61 * time.Minute)}, // past it: refreshed
		{59 * time.Minute, t0.Add(61 * time.Minute)},
	}
	before := f.pre.Patches()
	for i, s := range steps {
		fc.Advance(s.advance)
		if m, err := c.FindMissing(ctx, []cache.Digest{d}); err != nil || len(m) != 0 {
			t.Fatalf("step %d: FindMissing = %v, %v", i, m, err)
		}
		if got := customTime(); !got.Equal(s.want) {
			t.Errorf("step %d: Custom-Time = %v, want %v", i, got, s.want)
		}
	}
	if n := f.pre.Patches() - before; n != 1 {
		t.Errorf("%d metadata updates, want 1", n)
	}
}

func TestOpenValidates(t *testing.T) {
	f := newFakeGCS(t, bucket)
	for _, o := range []Options{
		{Quota: 0},
		{Quota: 10e9},
		{Quota: 100e9, Options: cache.Options{MinHeadroom: 5e9, MaxHeadroom: 5e9}},
		{Quota: 100e9, Prefix: "no-slash"},
	} {
		if _, err := Open(f.client, bucket, &o); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("Open(%+v) = %v, want InvalidArgument", o, err)
		}
	}
}
