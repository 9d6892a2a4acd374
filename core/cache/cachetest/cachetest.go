// Package cachetest is the conformance suite of the cache port. Every
// backend runs Run, so the port's semantics (LRU order, hysteresis, what
// counts as a use, refs cleanup, refusals, races with a cleanup) are tested
// once, here.
//
// The suite controls time with a fake clock and space with the harness:
// free space is Capacity minus what the harness measures behind the
// cache's back (files on disk, objects in a bucket), and objects are whole
// 4 KiB blocks (Unit), so a disk's block usage and a quota's byte count
// agree and every expectation is exact.
package cachetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
)

// Unit is the size of the suite's objects: one 4 KiB block.
const Unit = 4096

// Step is how far the clock moves between two uses, so every use falls in
// its own access-time bucket and refreshes a coarse access time.
const Step = time.Minute

// TouchInterval is what the suite expects a backend that records access
// times coarsely to use: at most this long between refreshes of a used
// object's access time. It is shorter than Step.
const TouchInterval = 30 * time.Second

// Setup is what the suite asks of a new cache.
type Setup struct {
	// Capacity is the disk size or the quota, in bytes.
	Capacity int64
	// Options are the thresholds.
	Options cache.Options
	// Clock is the cache's clock; the suite moves it.
	Clock *clock.Fake
	// Metrics receives the cache's metrics.
	Metrics metrics.Metrics
}

// Env is a cache under test and its controls.
type Env struct {
	Cache cache.Cache
	// SetCapacity changes the disk size or quota.
	SetCapacity func(int64)
	// Used measures, behind the cache's back, the bytes that count against
	// the capacity: object files and uploads in progress on disk, objects
	// in a bucket.
	Used func() int64
	// Delete removes an object behind the cache's back, as an operator or
	// a lifecycle rule would.
	Delete func(cache.Digest)
}

// Harness makes caches for the suite.
type Harness struct {
	// New returns an empty cache for s. It registers its own cleanup with
	// t; the suite closes the cache too.
	New func(t *testing.T, s Setup) *Env
	// CleansOnPut: a Put that would leave less than MinHeadroom free cleans
	// first (the disk backend). Otherwise only Cleanup evicts (a bucket,
	// cleaned on a schedule).
	CleansOnPut bool
}

var ctx = context.Background()

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Run("Validation", func(t *testing.T) { testValidation(t, h) })
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, h) })
	t.Run("DigestMismatch", func(t *testing.T) { testMismatch(t, h) })
	t.Run("TooLarge", func(t *testing.T) { testTooLarge(t, h) })
	t.Run("Refs", func(t *testing.T) { testRefs(t, h) })
	t.Run("DeletedBehindTheBack", func(t *testing.T) { testDeletedBehind(t, h) })
	t.Run("LRUOrder", func(t *testing.T) { testLRUOrder(t, h) })
	t.Run("Hysteresis", func(t *testing.T) { testHysteresis(t, h) })
	t.Run("UploadsRaceCleanup", func(t *testing.T) { testUploadsRace(t, h) })
	t.Run("TouchesRaceCleanup", func(t *testing.T) { testTouchesRace(t, h) })
}

// fixture is one cache with the suite's helpers.
type fixture struct {
	t       *testing.T
	env     *Env
	c       cache.Cache
	clock   *clock.Fake
	metrics *Metrics
	seed    string
}

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func newFixture(t *testing.T, h Harness, capacity int64, o cache.Options) *fixture {
	t.Helper()
	fc := clock.NewFake(t0)
	m := NewMetrics()
	env := h.New(t, Setup{Capacity: capacity, Options: o, Clock: fc, Metrics: m})
	t.Cleanup(func() { env.Cache.Close() })
	return &fixture{t: t, env: env, c: env.Cache, clock: fc, metrics: m, seed: t.Name()}
}

// Object returns the content and digest of object i of a set named seed:
// size bytes that differ between any two (seed, i).
func Object(seed string, i, size int) ([]byte, cache.Digest) {
	b := make([]byte, size)
	h := sha256.Sum256(fmt.Appendf(nil, "%s#%d", seed, i))
	for off := 0; off < size; off += len(h) {
		copy(b[off:], h[:])
		h = sha256.Sum256(h[:])
	}
	return b, cache.DigestOf(b)
}

func (f *fixture) obj(i int) ([]byte, cache.Digest) { return Object(f.seed, i, Unit) }

func (f *fixture) digests(from, to int) []cache.Digest {
	var ds []cache.Digest
	for i := from; i < to; i++ {
		_, d := f.obj(i)
		ds = append(ds, d)
	}
	return ds
}

func (f *fixture) put(i int) cache.Digest {
	f.t.Helper()
	data, d := f.obj(i)
	if err := f.c.Put(ctx, d, bytes.NewReader(data)); err != nil {
		f.t.Fatalf("Put(object %d): %v", i, err)
	}
	return d
}

// putAll puts objects from..to-1, one Step apart.
func (f *fixture) putAll(from, to int) {
	f.t.Helper()
	for i := from; i < to; i++ {
		f.put(i)
		f.clock.Advance(Step)
	}
}

func (f *fixture) get(d cache.Digest) ([]byte, error) {
	rc, err := f.c.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func (f *fixture) missing(ds []cache.Digest) []cache.Digest {
	f.t.Helper()
	m, err := f.c.FindMissing(ctx, ds)
	if err != nil {
		f.t.Fatalf("FindMissing: %v", err)
	}
	return m
}

func (f *fixture) cleanup(dry bool) *cache.CleanupReport {
	f.t.Helper()
	r, err := f.c.Cleanup(ctx, cache.CleanupOptions{DryRun: dry})
	if err != nil {
		f.t.Fatalf("Cleanup(dry run %v): %v", dry, err)
	}
	if r == nil || r.Busy {
		f.t.Fatalf("Cleanup(dry run %v) = %+v: want a run", dry, r)
	}
	return r
}

func (f *fixture) stats() *cache.Stats {
	f.t.Helper()
	s, err := f.c.Stats(ctx)
	if err != nil {
		f.t.Fatalf("Stats: %v", err)
	}
	return s
}

func wantCode(t *testing.T, what string, err error, c errs.Code) {
	t.Helper()
	if !errs.Is(err, c) {
		t.Errorf("%s: err = %v (%v), want %v", what, err, errs.CodeOf(err), c)
	}
}

func indexes(f *fixture, ds []cache.Digest, n int) []int {
	pos := map[cache.Digest]int{}
	for i := range n {
		_, d := f.obj(i)
		pos[d] = i
	}
	var out []int
	for _, d := range ds {
		i, ok := pos[d]
		if !ok {
			i = -1
		}
		out = append(out, i)
	}
	return out
}

func span(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

var defaultOpts = cache.Options{MinHeadroom: 10 * Unit, MaxHeadroom: 30 * Unit}

func testValidation(t *testing.T, h Harness) {
	f := newFixture(t, h, 100*Unit, defaultOpts)
	_, good := f.obj(0)
	bad := []cache.Digest{
		{Hash: strings.ToUpper(good.Hash), Size: good.Size},
		{Hash: good.Hash[:63], Size: good.Size},
		{Hash: good.Hash + "0", Size: good.Size},
		{Hash: strings.Repeat("g", 64), Size: 1},
		{Hash: "../../../../etc/passwd" + strings.Repeat("a", 42), Size: 1},
		{Hash: good.Hash, Size: -1},
		{Hash: good.Hash, Size: cache.MaxObjectSize + 1},
	}
	for _, d := range bad {
		wantCode(t, fmt.Sprintf("Put(%q)", d), f.c.Put(ctx, d, strings.NewReader("x")), errs.InvalidArgument)
		_, err := f.c.Get(ctx, d)
		wantCode(t, fmt.Sprintf("Get(%q)", d), err, errs.InvalidArgument)
		_, err = f.c.FindMissing(ctx, []cache.Digest{good, d})
		wantCode(t, fmt.Sprintf("FindMissing(%q)", d), err, errs.InvalidArgument)
		wantCode(t, fmt.Sprintf("SetRef(%q)", d), f.c.SetRef(ctx, "r", d), errs.InvalidArgument)
	}
	f.put(0)
	for _, name := range []string{"", "/a", "a/", "a//b", "a/../b", ".", "..", "a b", "a\\b", "ä", "a?b", "a%2fb",
		strings.Repeat("x", cache.MaxRefName+1)} {
		wantCode(t, fmt.Sprintf("SetRef(%q)", name), f.c.SetRef(ctx, name, good), errs.InvalidArgument)
		_, err := f.c.ResolveRef(ctx, name)
		wantCode(t, fmt.Sprintf("ResolveRef(%q)", name), err, errs.InvalidArgument)
	}
	if used := f.env.Used(); used != Unit {
		t.Errorf("after refused calls, %d bytes are used, want %d", used, Unit)
	}
}

func testRoundTrip(t *testing.T, h Harness) {
	f := newFixture(t, h, 100*Unit, defaultOpts)
	sizes := []int{0, 1, 100, Unit, 3*Unit + 17}
	var ds []cache.Digest
	for i, n := range sizes {
		_, d := Object(f.seed, i, n)
		ds = append(ds, d)
	}
	// Duplicates are reported once, in the order given.
	got := f.missing(append(slices.Clone(ds), ds[1], ds[0]))
	if !slices.Equal(got, ds) {
		t.Fatalf("FindMissing on an empty cache = %v, want %v", got, ds)
	}
	for i, n := range sizes {
		data, d := Object(f.seed, i, n)
		if err := f.c.Put(ctx, d, bytes.NewReader(data)); err != nil {
			t.Fatalf("Put(%d bytes): %v", n, err)
		}
		// A second Put of the same object is a use, not an error.
		if err := f.c.Put(ctx, d, bytes.NewReader(data)); err != nil {
			t.Fatalf("Put again (%d bytes): %v", n, err)
		}
	}
	_, absent := Object(f.seed, 99, 10)
	if got := f.missing(append([]cache.Digest{absent}, ds...)); !slices.Equal(got, []cache.Digest{absent}) {
		t.Errorf("FindMissing = %v, want only %v", got, absent)
	}
	if got := f.missing(nil); len(got) != 0 {
		t.Errorf("FindMissing(nil) = %v", got)
	}
	for i, n := range sizes {
		want, d := Object(f.seed, i, n)
		got, err := f.get(d)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Get(%d bytes) = %d bytes, %v", n, len(got), err)
		}
	}
	_, err := f.c.Get(ctx, absent)
	wantCode(t, "Get(absent)", err, errs.NotFound)
	s := f.stats()
	var total int64
	for _, n := range sizes {
		total += int64(n)
	}
	if s.Objects != int64(len(sizes)) || s.Bytes != total || s.Capacity != 100*Unit {
		t.Errorf("Stats = %+v, want %d objects, %d bytes, capacity %d", s, len(sizes), total, 100*Unit)
	}
}

// failingReader yields some bytes and then fails.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func testMismatch(t *testing.T, h Harness) {
	f := newFixture(t, h, 100*Unit, defaultOpts)
	data, d := f.obj(0)
	other, _ := f.obj(1)
	broken := errs.E(errs.Unavailable, "test", "the connection broke")
	cases := []struct {
		name string
		r    io.Reader
		code errs.Code
	}{
		{"other content of the same size", bytes.NewReader(other), errs.InvalidArgument},
		{"one byte short", bytes.NewReader(data[:len(data)-1]), errs.InvalidArgument},
		{"one byte more", bytes.NewReader(append(slices.Clone(data), 'x')), errs.InvalidArgument},
		{"much more", bytes.NewReader(bytes.Repeat(data, 5)), errs.InvalidArgument},
		{"empty", strings.NewReader(""), errs.InvalidArgument},
		{"reader fails", &failingReader{data: data[:Unit/2], err: broken}, errs.Unavailable},
		{"reader fails at the end", &failingReader{data: data, err: broken}, errs.Unavailable},
	}
	for _, tc := range cases {
		err := f.c.Put(ctx, d, tc.r)
		wantCode(t, "Put with "+tc.name, err, tc.code)
		if got := f.missing([]cache.Digest{d}); len(got) != 1 {
			t.Errorf("after a Put with %s, the object is present", tc.name)
		}
		if used := f.env.Used(); used != 0 {
			t.Errorf("after a Put with %s, %d bytes are used", tc.name, used)
		}
	}
	_, err := f.c.Get(ctx, d)
	wantCode(t, "Get after refused Puts", err, errs.NotFound)
	if err := f.c.Put(ctx, d, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put with the right content: %v", err)
	}
}

// countingReader fails the test if read.
type countingReader struct {
	mu sync.Mutex
	n  int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return 0, errors.New("read")
}

func testTooLarge(t *testing.T, h Harness) {
	f := newFixture(t, h, 100*Unit, defaultOpts)
	f.putAll(0, 5)
	before := f.env.Used()
	for _, size := range []int64{90*Unit + 1, 100 * Unit, 1 << 40} {
		_, d := Object(f.seed, int(size%1000), 0)
		d.Size = size // a digest the server cannot check before reading: it must refuse first
		r := &countingReader{}
		wantCode(t, fmt.Sprintf("Put(%d bytes)", size), f.c.Put(ctx, d, r), errs.ResourceExhausted)
		if r.n != 0 {
			t.Errorf("Put(%d bytes) read the content before refusing it", size)
		}
		if used := f.env.Used(); used != before {
			t.Errorf("Put(%d bytes) changed the used bytes from %d to %d", size, before, used)
		}
	}
	if got := f.missing(f.digests(0, 5)); len(got) != 0 {
		t.Errorf("refused Puts evicted %v", got)
	}
	// Exactly the space minus MinHeadroom fits, in place of everything else.
	data, d := Object(f.seed, 1000, 90*Unit)
	if err := f.c.Put(ctx, d, bytes.NewReader(data)); err != nil && !errs.Is(err, errs.ResourceExhausted) {
		t.Fatalf("Put(capacity - MinHeadroom): %v", err)
	} else if err != nil && h.CleansOnPut {
		t.Fatalf("Put(capacity - MinHeadroom) with a cache that cleans on Put: %v", err)
	}
}

func testRefs(t *testing.T, h Harness) {
	f := newFixture(t, h, 100*Unit, defaultOpts)
	_, absent := f.obj(9)
	wantCode(t, "SetRef to an absent object", f.c.SetRef(ctx, "build/linux/deps", absent), errs.FailedPrecondition)
	_, err := f.c.ResolveRef(ctx, "build/linux/deps")
	wantCode(t, "ResolveRef of an unknown ref", err, errs.NotFound)

	d0, d1 := f.put(0), f.put(1)
	names := []string{"build/linux/deps", "build", "a.b-c_d+e=f@g/X9", strings.Repeat("n", cache.MaxRefName)}
	for _, n := range names {
		if err := f.c.SetRef(ctx, n, d0); err != nil {
			t.Fatalf("SetRef(%q): %v", n, err)
		}
	}
	if err := f.c.SetRef(ctx, "build/linux/deps", d1); err != nil { // moves
		t.Fatal(err)
	}
	if err := f.c.SetRef(ctx, "build/linux/deps", d1); err != nil { // idempotent
		t.Fatal(err)
	}
	for _, n := range names {
		want := d0
		if n == "build/linux/deps" {
			want = d1
		}
		got, err := f.c.ResolveRef(ctx, n)
		if err != nil || got != want {
			t.Errorf("ResolveRef(%q) = %v, %v; want %v", n, got, err, want)
		}
	}

	// A ref whose object is gone answers NotFound and is removed: putting
	// the object back does not revive it.
	f.env.Delete(d1)
	_, err = f.c.ResolveRef(ctx, "build/linux/deps")
	wantCode(t, "ResolveRef of a ref whose object is gone", err, errs.NotFound)
	data, _ := f.obj(1)
	if err := f.c.Put(ctx, d1, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	_, err = f.c.ResolveRef(ctx, "build/linux/deps")
	wantCode(t, "ResolveRef of a removed ref after its object came back", err, errs.NotFound)
	if got, err := f.c.ResolveRef(ctx, "build"); err != nil || got != d0 {
		t.Errorf("ResolveRef(build) = %v, %v; want %v", got, err, d0)
	}
	if s := f.stats(); s.Refs != int64(len(names)-1) {
		t.Errorf("Stats.Refs = %d, want %d", s.Refs, len(names)-1)
	}
}

func testDeletedBehind(t *testing.T, h Harness) {
	f := newFixture(t, h, 100*Unit, defaultOpts)
	d := f.put(0)
	f.put(1)
	f.env.Delete(d)
	if got := f.missing([]cache.Digest{d}); !slices.Equal(got, []cache.Digest{d}) {
		t.Errorf("FindMissing of an object deleted behind the cache's back = %v", got)
	}
	_, err := f.get(d)
	wantCode(t, "Get of an object deleted behind the cache's back", err, errs.NotFound)
	f.env.Delete(d) // again: still fine
	f.clock.Advance(Step)
	if r := f.cleanup(false); r.EvictedObjects != 0 {
		t.Errorf("a cleanup with enough room evicted %d objects", r.EvictedObjects)
	}
	f.put(0)
	if got, err := f.get(d); err != nil || len(got) != Unit {
		t.Errorf("Get after putting it back = %d bytes, %v", len(got), err)
	}
	if s := f.stats(); s.Objects != 2 || s.Bytes != 2*Unit {
		t.Errorf("Stats = %+v, want 2 objects", s)
	}
}

// testLRUOrder fills a cache, uses some old objects each way that counts,
// shrinks the space and checks that a cleanup evicts exactly the least
// recently used objects, with their refs.
func testLRUOrder(t *testing.T, h Harness) {
	f := newFixture(t, h, 100*Unit, defaultOpts)
	var d [60]cache.Digest
	for i := range 60 {
		d[i] = f.put(i)
		switch i {
		case 3:
			mustSetRef(t, f.c, "keep/3", d[3])
		case 10:
			mustSetRef(t, f.c, "gone/10", d[10]) // its object will be evicted
		case 12:
			mustSetRef(t, f.c, "old/0", d[0]) // older than the newest evicted object
		}
		f.clock.Advance(Step)
	}
	// Each use that counts, of one old object.
	if got := f.missing(d[0:1]); len(got) != 0 {
		t.Fatalf("FindMissing = %v", got)
	}
	f.clock.Advance(Step)
	if _, err := f.get(d[1]); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(Step)
	mustSetRef(t, f.c, "keep/2", d[2])
	f.clock.Advance(Step)
	if got, err := f.c.ResolveRef(ctx, "keep/3"); err != nil || got != d[3] {
		t.Fatalf("ResolveRef(keep/3) = %v, %v", got, err)
	}
	f.clock.Advance(Step)
	f.put(4)
	f.clock.Advance(Step)

	// 60 units used of 69: 9 free, below MinHeadroom (10). A cleanup must
	// free 30, so evict the 21 least recently used: objects 5 to 25.
	f.env.SetCapacity(69 * Unit)
	want := span(5, 26)

	dry := f.cleanup(true)
	if !dry.DryRun || dry.EvictedObjects != 21 || dry.EvictedBytes != 21*Unit || dry.FreeBefore != 9*Unit || dry.FreeAfter != 30*Unit {
		t.Errorf("dry run report = %+v, want 21 objects (%d bytes) from 9 to 30 units free", dry, 21*Unit)
	}
	if used := f.env.Used(); used != 60*Unit {
		t.Fatalf("a dry run changed the used bytes to %d", used)
	}
	if s := f.stats(); s.Objects != 60 {
		t.Fatalf("after a dry run, Stats.Objects = %d", s.Objects)
	}

	r := f.cleanup(false)
	if r.DryRun || r.EvictedObjects != 21 || r.EvictedBytes != 21*Unit || r.FreeBefore != 9*Unit || r.FreeAfter != 30*Unit ||
		r.Objects != 39 || r.Bytes != 39*Unit || r.RefsRemoved != 2 || r.Short {
		t.Errorf("cleanup report = %+v, want 21 objects evicted, 39 left, 2 refs removed, 30 units free", r)
	}
	if r.OldestKept.IsZero() || !r.OldestKept.After(t0.Add(25*Step)) || !r.OldestKept.Before(t0.Add(27*Step)) {
		t.Errorf("OldestKept = %v, want the time object 26 was put (%v)", r.OldestKept, t0.Add(26*Step))
	}
	if used := f.env.Used(); used != 39*Unit {
		t.Errorf("used after the cleanup = %d units, want 39", used/Unit)
	}
	if got := indexes(f, f.missing(d[:]), 60); !slices.Equal(got, want) {
		t.Errorf("evicted objects %v, want %v", got, want)
	}
	for name, want := range map[string]cache.Digest{"keep/2": d[2], "keep/3": d[3]} {
		if got, err := f.c.ResolveRef(ctx, name); err != nil || got != want {
			t.Errorf("ResolveRef(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, name := range []string{"gone/10", "old/0"} {
		_, err := f.c.ResolveRef(ctx, name)
		wantCode(t, "ResolveRef("+name+") after the cleanup", err, errs.NotFound)
	}
	if s := f.stats(); s.Objects != 39 || s.EvictedObjects != 21 || s.EvictedBytes != 21*Unit {
		t.Errorf("Stats = %+v, want 39 objects, 21 evicted", s)
	}
	m := f.metrics
	if m.Counter(cache.MetricEvictedObjects) != 21 || m.Counter(cache.MetricEvictedBytes) != 21*Unit {
		t.Errorf("evicted metrics = %v objects, %v bytes; want 21, %d", m.Counter(cache.MetricEvictedObjects),
			m.Counter(cache.MetricEvictedBytes), 21*Unit)
	}
	objs, _ := m.Gauge(cache.MetricObjects)
	byts, _ := m.Gauge(cache.MetricBytes)
	age, _ := m.Gauge(cache.MetricOldestAge)
	wantAge := f.clock.Now().Sub(r.OldestKept).Seconds()
	if objs != 39 || byts != 39*Unit || age != wantAge {
		t.Errorf("gauges = %v objects, %v bytes, oldest %vs; want 39, %d, %vs", objs, byts, age, 39*Unit, wantAge)
	}
}

func mustSetRef(t *testing.T, c cache.Cache, name string, d cache.Digest) {
	t.Helper()
	if err := c.SetRef(ctx, name, d); err != nil {
		t.Fatalf("SetRef(%s): %v", name, err)
	}
}

// testHysteresis checks that nothing happens until the free space falls
// below MinHeadroom, and that a cleanup then frees up to MaxHeadroom.
func testHysteresis(t *testing.T, h Harness) {
	f := newFixture(t, h, 100*Unit, defaultOpts)
	f.putAll(0, 90) // 10 units free: at MinHeadroom, not below
	if r := f.cleanup(false); r.EvictedObjects != 0 || r.FreeBefore != 10*Unit || r.Objects != 90 {
		t.Errorf("cleanup at MinHeadroom = %+v, want nothing evicted", r)
	}
	f.put(90) // 9 free: below
	f.clock.Advance(Step)
	r := f.cleanup(false)
	if !h.CleansOnPut && r.EvictedObjects != 21 {
		t.Errorf("cleanup below MinHeadroom evicted %d objects, want 21", r.EvictedObjects)
	}
	if r.FreeAfter < 30*Unit || r.Objects != 70 {
		t.Errorf("cleanup report = %+v, want 70 objects left and 30 units free", r)
	}
	if got := indexes(f, f.missing(f.digests(0, 91)), 91); !slices.Equal(got, span(0, 21)) {
		t.Errorf("evicted %v, want the 21 oldest", got)
	}
	// Between the thresholds, nothing is evicted however often it runs.
	f.clock.Advance(Step)
	f.putAll(91, 110) // 11 units free
	for range 3 {
		if r := f.cleanup(false); r.EvictedObjects != 0 || r.FreeBefore != 11*Unit {
			t.Errorf("cleanup between the thresholds = %+v", r)
		}
	}
	if s := f.stats(); s.Objects != 89 || s.Free != 11*Unit || s.EvictedObjects != 21 {
		t.Errorf("Stats = %+v, want 89 objects, 11 units free, 21 evicted", s)
	}
}

// testUploadsRace uploads new objects while a cleanup runs and checks that
// every upload survives and only the oldest objects were evicted.
func testUploadsRace(t *testing.T, h Harness) {
	f := newFixture(t, h, 200*Unit, cache.Options{MinHeadroom: 20 * Unit, MaxHeadroom: 60 * Unit})
	const old = 150
	f.putAll(0, old)
	f.env.SetCapacity(165 * Unit) // 15 free: a cleanup must run
	f.clock.Advance(Step)

	const writers, each = 4, 10
	var wg sync.WaitGroup
	errc := make(chan error, writers*each+2)
	start := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			<-start
			for j := range each {
				data, d := f.obj(old + w*each + j)
				if err := f.c.Put(ctx, d, bytes.NewReader(data)); err != nil {
					errc <- fmt.Errorf("Put of new object %d: %w", w*each+j, err)
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			<-start
			if _, err := f.c.Cleanup(ctx, cache.CleanupOptions{}); err != nil {
				errc <- fmt.Errorf("Cleanup: %w", err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	// A last cleanup settles what the racing ones could not see.
	f.clock.Advance(Step)
	f.cleanup(false)
	if got := f.missing(f.digests(old, old+writers*each)); len(got) != 0 {
		t.Errorf("%d objects uploaded during the cleanup are missing: %v", len(got), indexes(f, got, old+writers*each))
	}
	gone := indexes(f, f.missing(f.digests(0, old)), old)
	if len(gone) == 0 || !slices.Equal(gone, span(0, len(gone))) {
		t.Errorf("evicted old objects %v, want a prefix of the oldest", gone)
	}
	if free := 165*Unit - f.env.Used(); free < 20*Unit {
		t.Errorf("after the cleanups, %d units are free, want at least MinHeadroom (20)", free/Unit)
	}
}

// testTouchesRace uses old objects while a cleanup evicts old objects and
// checks that every object a FindMissing reported present is still there.
func testTouchesRace(t *testing.T, h Harness) {
	f := newFixture(t, h, 200*Unit, cache.Options{MinHeadroom: 20 * Unit, MaxHeadroom: 60 * Unit})
	const old = 150
	f.putAll(0, old)
	f.env.SetCapacity(165 * Unit) // evict 45
	f.clock.Advance(Step)

	var (
		mu      sync.Mutex
		present = map[cache.Digest]bool{}
		wg      sync.WaitGroup
	)
	errc := make(chan error, 8)
	start := make(chan struct{})
	done := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			<-start
			// Each toucher walks its share of the 60 oldest objects, the
			// ones the cleanup is after, until the cleanup is over.
			for round := 0; ; round++ {
				for i := w; i < 60; i += 4 {
					_, d := f.obj(i)
					m, err := f.c.FindMissing(ctx, []cache.Digest{d})
					if err != nil {
						errc <- err
						return
					}
					if len(m) == 0 {
						mu.Lock()
						present[d] = true
						mu.Unlock()
					}
				}
				select {
				case <-done:
					if round > 0 {
						return
					}
				default:
				}
			}
		})
	}
	close(start)
	r, err := f.c.Cleanup(ctx, cache.CleanupOptions{})
	close(done)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	var lost []int
	for i := range old {
		_, d := f.obj(i)
		if present[d] && len(f.missing([]cache.Digest{d})) != 0 {
			lost = append(lost, i)
		}
	}
	if len(lost) > 0 {
		t.Errorf("objects reported present during the cleanup were evicted: %v (report %+v)", lost, r)
	}
	if r.EvictedObjects == 0 && r.Survived == 0 {
		t.Errorf("the cleanup did nothing: %+v", r)
	}
}
