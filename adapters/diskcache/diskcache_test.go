package diskcache

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/cache/cachetest"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fakeDisk is a file system of a given size whose usage is what the cache
// directory holds: object files and uploads in progress, in 4 KiB blocks.
type fakeDisk struct {
	dir      string
	capacity atomic.Int64
	other    atomic.Int64 // bytes other programs use
}

func (d *fakeDisk) used() int64 {
	var n int64
	for _, sub := range []string{casDir, tmpDir} {
		filepath.WalkDir(filepath.Join(d.dir, sub), func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if info, err := e.Info(); err == nil {
					n += (info.Size() + 4095) / 4096 * 4096
				}
			}
			return nil
		})
	}
	return n
}

func (d *fakeDisk) space() (Space, error) {
	c := d.capacity.Load()
	return Space{Free: c - d.used() - d.other.Load(), Total: c}, nil
}

func open(t *testing.T, dir string, disk *fakeDisk, o Options) *Cache {
	t.Helper()
	o.FreeSpace = disk.space
	o.BlockSize = 4096
	if o.Log == nil {
		o.Log = quiet()
	}
	c, err := Open(context.Background(), dir, &o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) {
	cachetest.Run(t, cachetest.Harness{
		CleansOnPut: true,
		New: func(t *testing.T, s cachetest.Setup) *cachetest.Env {
			dir := t.TempDir()
			disk := &fakeDisk{dir: dir}
			disk.capacity.Store(s.Capacity)
			c := open(t, dir, disk, Options{Options: s.Options, Clock: s.Clock, Metrics: s.Metrics})
			return &cachetest.Env{
				Cache:       c,
				SetCapacity: disk.capacity.Store,
				Used:        disk.used,
				Delete: func(d cache.Digest) {
					if err := os.Remove(filepath.Join(dir, casPath(d.Hash))); err != nil && !errors.Is(err, fs.ErrNotExist) {
						t.Fatal(err)
					}
				},
			}
		},
	})
}

var ctx = context.Background()

func put(t *testing.T, c *Cache, seed string, i int) cache.Digest {
	t.Helper()
	data, d := cachetest.Object(seed, i, cachetest.Unit)
	if err := c.Put(ctx, d, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put(%d): %v", i, err)
	}
	return d
}

// TestRestartKeepsOrder checks that the index rebuilt at Open has the LRU
// order the access times persisted, to within PersistEvery, and the refs.
func TestRestartKeepsOrder(t *testing.T) {
	const U = cachetest.Unit
	dir := t.TempDir()
	disk := &fakeDisk{dir: dir}
	disk.capacity.Store(100 * U)
	fc := clock.NewFake(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC))
	o := Options{Options: cache.Options{MinHeadroom: 10 * U, MaxHeadroom: 30 * U}, Clock: fc, PersistEvery: 5 * time.Minute}
	c := open(t, dir, disk, o)
	var ds []cache.Digest
	for i := range 20 {
		ds = append(ds, put(t, c, "restart", i))
		fc.Advance(time.Minute)
	}
	if err := c.SetRef(ctx, "r/19", ds[19]); err != nil {
		t.Fatal(err)
	}
	fc.Advance(10 * time.Minute)
	// Used long after their last write: the access time is written.
	if m, _ := c.FindMissing(ctx, ds[0:2]); len(m) != 0 {
		t.Fatal(m)
	}
	fc.Advance(time.Minute)
	// Used again within PersistEvery: only the index knows.
	if m, _ := c.FindMissing(ctx, ds[1:2]); len(m) != 0 {
		t.Fatal(m)
	}
	c.Close()

	// Reopen with 9 units free (other programs use 71) and a cleanup that
	// stops at 14 free: exactly 5 objects must go.
	disk.other.Store(71 * U)
	o.Options = cache.Options{MinHeadroom: 10 * U, MaxHeadroom: 14 * U}
	c = open(t, dir, disk, o)
	defer c.Close()
	if c.RebuildTime() <= 0 {
		t.Errorf("RebuildTime = %v", c.RebuildTime())
	}
	if s, _ := c.Stats(ctx); s.Objects != 20 || s.Refs != 1 || s.Bytes != 20*U {
		t.Fatalf("after reopening, Stats = %+v", s)
	}
	r, err := c.Cleanup(ctx, cache.CleanupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The order after the restart: 2 to 19 as put, then 0 and 1 (used
	// later, written). So objects 2 to 6 go.
	if r.EvictedObjects != 5 || r.FreeAfter != 14*U {
		t.Fatalf("report = %+v", r)
	}
	if m, _ := c.FindMissing(ctx, ds); !slices.Equal(m, ds[2:7]) {
		t.Errorf("evicted %v, want objects 2 to 6", m)
	}
	if got, err := c.ResolveRef(ctx, "r/19"); err != nil || got != ds[19] {
		t.Errorf("ResolveRef after reopening = %v, %v", got, err)
	}
}

// TestPutWaitsForCleanup checks the double-checked lock: an upload that
// needs room while a cleanup runs waits for it, then measures again and
// proceeds without evicting when the running cleanup made the room.
func TestPutWaitsForCleanup(t *testing.T) {
	const U = cachetest.Unit
	dir := t.TempDir()
	disk := &fakeDisk{dir: dir}
	disk.capacity.Store(100 * U)
	var calls atomic.Int64
	o := Options{Options: cache.Options{MinHeadroom: 10 * U, MaxHeadroom: 30 * U}, Log: quiet(), BlockSize: 4096,
		FreeSpace: func() (Space, error) { calls.Add(1); return disk.space() }}
	c, err := Open(ctx, dir, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 5 {
		put(t, c, "wait", i)
	}
	disk.other.Store(86 * U) // 9 free: the next Put needs a cleanup

	c.cleanMu.Lock() // a cleanup is running
	before := calls.Load()
	done := make(chan error, 1)
	go func() {
		data, d := cachetest.Object("wait", 5, U)
		done <- c.Put(ctx, d, bytes.NewReader(data))
	}()
	// The upload measured (Put, makeRoom) and found too little: it now waits.
	for calls.Load() < before+2 {
		select {
		case err := <-done:
			t.Fatalf("Put finished while the cleanup ran: %v", err)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	disk.other.Store(0) // what the running cleanup freed
	c.cleanMu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s, _ := c.Stats(ctx); s.EvictedObjects != 0 || s.Objects != 6 {
		t.Errorf("Stats = %+v: the upload should have found the room and evicted nothing", s)
	}
}

func TestOpenRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, dir, &Options{FreeSpace: (&fakeDisk{dir: dir}).space, Log: quiet()})
	if !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("Open(a directory with other files) = %v, want FailedPrecondition", err)
	}
	dir = t.TempDir()
	disk := &fakeDisk{dir: dir}
	disk.capacity.Store(1 << 30)
	c := open(t, dir, disk, Options{})
	defer c.Close()
	_, err = Open(ctx, dir, &Options{FreeSpace: disk.space, Log: quiet()})
	if !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("Open of a directory another cache has open = %v, want FailedPrecondition", err)
	}
	_, err = Open(ctx, t.TempDir(), &Options{Options: cache.Options{MinHeadroom: 5, MaxHeadroom: 5}})
	if !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("Open with MaxHeadroom = MinHeadroom: %v, want InvalidArgument", err)
	}
}

// TestFallocate covers ENOSPC while reserving (clean, retry) and file
// systems without fallocate (write anyway).
func TestFallocate(t *testing.T) {
	cases := []struct {
		name       string
		fail       []error // the results of successive calls
		wantErr    errs.Code
		wantEvicts bool
	}{
		{"supported", []error{nil}, errs.Unknown, false},
		{"not supported", []error{syscall.EOPNOTSUPP}, errs.Unknown, false},
		{"ENOSPC once", []error{syscall.ENOSPC, nil}, errs.Unknown, true},
		{"ENOSPC always", []error{syscall.ENOSPC, syscall.ENOSPC, syscall.ENOSPC, syscall.ENOSPC}, errs.ResourceExhausted, true},
		{"EIO", []error{syscall.EIO}, errs.Unknown + 100, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			disk := &fakeDisk{dir: dir}
			disk.capacity.Store(100 * cachetest.Unit)
			calls := 0
			o := Options{Options: cache.Options{MinHeadroom: 10 * cachetest.Unit, MaxHeadroom: 30 * cachetest.Unit}}
			o.fallocate = func(f *os.File, size int64) error {
				defer func() { calls++ }()
				if calls < len(tc.fail) {
					return tc.fail[calls]
				}
				return nil
			}
			c := open(t, dir, disk, o)
			defer c.Close()
			for i := range 5 {
				calls = len(tc.fail) // the fill works
				put(t, c, tc.name, i)
			}
			calls = 0
			data, d := cachetest.Object(tc.name, 99, cachetest.Unit)
			err := c.Put(ctx, d, bytes.NewReader(data))
			switch {
			case tc.wantErr == errs.Unknown && err != nil:
				t.Fatalf("Put: %v", err)
			case tc.wantErr == errs.Unknown+100 && err == nil:
				t.Fatalf("Put succeeded despite EIO")
			case tc.wantErr == errs.ResourceExhausted && !errs.Is(err, errs.ResourceExhausted):
				t.Fatalf("Put = %v, want ResourceExhausted", err)
			}
			s, _ := c.Stats(ctx)
			if evicted := s.EvictedObjects > 0; evicted != tc.wantEvicts {
				t.Errorf("evicted %d objects; want evictions: %v", s.EvictedObjects, tc.wantEvicts)
			}
			if err == nil {
				if m, _ := c.FindMissing(ctx, []cache.Digest{d}); len(m) != 0 {
					t.Errorf("the object is missing after a successful Put")
				}
			} else if disk.used() != cachetest.Unit*(5-s.EvictedObjects) {
				t.Errorf("a failed Put left %d bytes", disk.used())
			}
		})
	}
}
