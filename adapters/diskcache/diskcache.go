// Package diskcache implements the cache port in a local directory: the
// embedded runtime's artifact cache (`tollgate up`), BuildStream's CAS
// server cleanup without its full scans.
//
// Layout under the directory:
//
//	TOLLGATE-CACHE      marker: Open refuses a non-empty directory without it,
//	                    since eviction deletes files
//	LOCK                flock'ed while open: one process per directory
//	cas/{hh}/{hash}     objects, named by their hex SHA-256 ({hh}: its first
//	                    two digits); the file's mtime is the access time
//	refs/{hh}/{sha256 of the name}
//	                    refs: "hash/size\nname\n"; mtime is the access time
//	tmp/                uploads in progress (emptied at Open)
//
// Space is the file system's: free space comes from statvfs (f_bavail) and
// a cleanup starts when a Put would leave less than MinHeadroom free, or
// when Cleanup (run on a schedule) finds less; it evicts least recently
// used objects until MaxHeadroom is free. One cleanup runs at a time; an
// upload that needs room while one runs waits for it and checks again, so
// it proceeds at once if the cleanup freed enough. An upload's space is
// reserved with fallocate before its content is received; on ENOSPC it
// cleans and tries again.
//
// The LRU order lives in an in-memory index (index.go), rebuilt at Open by a
// parallel scan of cas/ and sorted once by mtime. Uses touch the index in
// O(1); eviction pops the index's tail in O(evicted) and never walks the
// directory. Access times are persisted lazily, as the file's mtime at most
// once per PersistEvery, so a restart keeps the LRU order to within that.
// Files removed behind the index's back are noticed when used (FindMissing
// and Get check the file) and dropped from the index.
//
// Object files are only created (by rename) and deleted with the index
// lock held, so the index and the directory never disagree about an object
// a concurrent Put just wrote. Refs are removed when their object is
// evicted, and, as in BuildStream, when they were last used before the
// newest evicted object; a ref read whose object is gone removes the ref.
package diskcache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
)

const (
	casDir     = "cas"
	refsDir    = "refs"
	tmpDir     = "tmp"
	markerFile = "TOLLGATE-CACHE"
	lockFile   = "LOCK"
	markerText = "tollgate disk cache, format 1\n"

	// evictBatch is how many objects one hold of the index lock evicts, so
	// uses interleave with a long eviction.
	evictBatch = 64
	// maxEvictRounds bounds how often a cleanup measures the free space
	// again and evicts more, when other writers eat what it freed.
	maxEvictRounds = 8
	// fallocateRetries bounds the clean-and-retry rounds on ENOSPC.
	fallocateRetries = 3
)

var errNoFallocate = errors.New("fallocate is not supported here")

// Space is a file system's size and the free space a writer may use.
type Space struct {
	Free, Total int64
}

// Options configure a Cache. The zero value works.
type Options struct {
	// MinHeadroom and MaxHeadroom: default 2 GB and 10 GB.
	cache.Options
	// FreeSpace measures the file system (default: statvfs of the
	// directory). Tests inject their own.
	FreeSpace func() (Space, error)
	// BlockSize is the unit of disk usage, used to estimate what evicting
	// an object frees (default: the file system's fragment size, or 4096
	// with FreeSpace set).
	BlockSize int64
	// PersistEvery is the most often a use writes an object's access time
	// to its file (default 10 minutes): the LRU order a restart recovers
	// is that precise.
	PersistEvery time.Duration
	// ScanWorkers is how many goroutines scan the directory at Open
	// (default: twice the CPUs, within 4 to 16).
	ScanWorkers int
	// Unlinkers is how many goroutines delete evicted files (default 4;
	// 1 deletes them one by one, which bazel-remote found faster on XFS).
	Unlinkers int
	Clock     clock.Clock     // default: real
	Log       *slog.Logger    // default: slog.Default()
	Metrics   metrics.Metrics // default: none

	// fallocate replaces the system call in tests.
	fallocate func(f *os.File, size int64) error
}

// Cache is a cache.Cache in a directory. Safe for concurrent use.
type Cache struct {
	o    Options
	dir  string
	root *os.Root
	// cas holds a Root per cas/{hh} directory: a file call through it is
	// one system call, where the top Root opens each directory on the way.
	cas   [256]*os.Root
	lock  *os.File
	clock clock.Clock
	log   *slog.Logger

	// mu guards the indexes, and object and ref file creation and removal.
	mu   sync.Mutex
	idx  *index
	refs *refIndex

	// cleanMu: one cleanup at a time.
	cleanMu sync.Mutex

	evictedObjects atomic.Int64
	evictedBytes   atomic.Int64
	rebuildTime    time.Duration
}

var _ cache.Cache = (*Cache)(nil)

// Open opens the cache in dir, creating it if needed, and rebuilds the
// index by scanning it. FailedPrecondition if dir holds other files or
// another process has the cache open; InvalidArgument for bad options.
func Open(ctx context.Context, dir string, o *Options) (*Cache, error) {
	const op = "diskcache.Open"
	var opts Options
	if o != nil {
		opts = *o
	}
	opts.Options = opts.Options.WithDefaults()
	if err := opts.Options.Validate(); err != nil {
		return nil, err
	}
	if opts.PersistEvery <= 0 {
		opts.PersistEvery = 10 * time.Minute
	}
	if opts.ScanWorkers <= 0 {
		opts.ScanWorkers = min(max(2*runtime.NumCPU(), 4), 16)
	}
	if opts.Unlinkers <= 0 {
		opts.Unlinkers = 4
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.fallocate == nil {
		opts.fallocate = fallocate
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, op, err)
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = 4096
		if opts.FreeSpace == nil {
			if _, bs, err := statSpace(abs); err == nil && bs > 0 {
				opts.BlockSize = bs
			}
		}
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, mapErr(op, err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, mapErr(op, err)
	}
	c := &Cache{o: opts, dir: abs, root: root, clock: opts.Clock, log: opts.Log.With("cache", abs), refs: newRefIndex()}
	if err := c.init(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// init claims the directory, lays it out and rebuilds the indexes.
func (c *Cache) init(ctx context.Context) error {
	const op = "diskcache.Open"
	if err := c.claim(); err != nil {
		return err
	}
	for _, d := range []string{casDir, refsDir} {
		for i := range 256 {
			if err := c.root.MkdirAll(fmt.Sprintf("%s/%02x", d, i), 0o755); err != nil {
				return mapErr(op, err)
			}
		}
	}
	for i := range c.cas {
		r, err := c.root.OpenRoot(fmt.Sprintf("%s/%02x", casDir, i))
		if err != nil {
			return mapErr(op, err)
		}
		c.cas[i] = r
	}
	// Uploads that were in progress when the last process stopped.
	if err := c.root.RemoveAll(tmpDir); err != nil {
		return mapErr(op, err)
	}
	if err := c.root.Mkdir(tmpDir, 0o755); err != nil {
		return mapErr(op, err)
	}
	if _, err := c.space(); err != nil {
		return errs.Wrap(errs.FailedPrecondition, op+": free space", err)
	}
	start := time.Now()
	objs, err := c.scan(ctx)
	if err != nil {
		return err
	}
	c.idx = rebuild(objs, c.o.BlockSize)
	refs, dropped := c.scanRefs()
	c.rebuildTime = time.Since(start)
	c.log.Info("cache opened", "objects", c.idx.count, "bytes", c.idx.bytes, "refs", refs,
		"dangling_refs_removed", dropped, "rebuild", c.rebuildTime.Round(time.Millisecond))
	return nil
}

// claim checks the directory is the cache's (or empty) and locks it.
func (c *Cache) claim() error {
	const op = "diskcache.Open"
	marker, err := c.root.ReadFile(markerFile)
	switch {
	case err == nil && string(marker) != markerText:
		return errs.E(errs.FailedPrecondition, op, "%s: unknown cache format %q", c.dir, strings.TrimSpace(string(marker)))
	case errors.Is(err, fs.ErrNotExist):
		entries, err := fs.ReadDir(c.root.FS(), ".")
		if err != nil {
			return mapErr(op, err)
		}
		if len(entries) > 0 {
			return errs.E(errs.FailedPrecondition, op, "%s is not empty and is not a cache directory (no %s): refusing to evict its files", c.dir, markerFile)
		}
		if err := c.root.WriteFile(markerFile, []byte(markerText), 0o644); err != nil {
			return mapErr(op, err)
		}
	case err != nil:
		return mapErr(op, err)
	}
	lock, err := c.root.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return mapErr(op, err)
	}
	if err := lockDir(lock); err != nil {
		lock.Close()
		return errs.E(errs.FailedPrecondition, op, "%s is in use by another process: %v", c.dir, err)
	}
	c.lock = lock
	return nil
}

// scan reads cas/ with ScanWorkers goroutines, one subdirectory at a time.
func (c *Cache) scan(ctx context.Context) ([]scanned, error) {
	const op = "diskcache.Open: scan"
	subs := make(chan int, 256)
	for i := range 256 {
		subs <- i
	}
	close(subs)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      []scanned
		firstErr error
		skipped  atomic.Int64
	)
	for range c.o.ScanWorkers {
		wg.Go(func() {
			var mine []scanned
			for i := range subs {
				if ctx.Err() != nil {
					break
				}
				sub := fmt.Sprintf("%s/%02x", casDir, i)
				entries, err := fs.ReadDir(c.root.FS(), sub)
				if err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, mapErr(op, err))
					mu.Unlock()
					continue
				}
				for _, e := range entries {
					name := e.Name()
					d, err := cache.NewDigest(name, 0)
					if err != nil || name[:2] != sub[len(casDir)+1:] || !e.Type().IsRegular() {
						skipped.Add(1)
						continue
					}
					info, err := e.Info()
					if err != nil {
						continue // removed since the listing
					}
					mine = append(mine, scanned{sum: d.Sum(), size: info.Size(), mtime: info.ModTime().UnixNano()})
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, op, err)
	}
	if n := skipped.Load(); n > 0 {
		c.log.Warn("cache directory has files that are not objects; ignoring them", "count", n)
	}
	return all, firstErr
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// scanRefs loads the refs, dropping those whose object is gone.
func (c *Cache) scanRefs() (kept, dropped int) {
	type found struct {
		file, name string
		d          cache.Digest
		mtime      int64
	}
	var all []found
	for i := range 256 {
		sub := fmt.Sprintf("%s/%02x", refsDir, i)
		entries, err := fs.ReadDir(c.root.FS(), sub)
		if err != nil {
			continue
		}
		for _, e := range entries {
			file := path.Join(sub, e.Name())
			data, err := c.root.ReadFile(file)
			info, ierr := e.Info()
			if err != nil || ierr != nil {
				continue
			}
			ds, name, ok := parseRef(data)
			d, derr := cache.ParseDigest(ds)
			if !ok || derr != nil || cache.ValidRefName(name) != nil || refFile(name) != file {
				c.root.Remove(file)
				dropped++
				continue
			}
			if j, ok := c.idx.get(d.Sum()); !ok || c.idx.nodes[j].size != d.Size {
				c.root.Remove(file)
				dropped++
				continue
			}
			all = append(all, found{file, name, d, info.ModTime().UnixNano()})
		}
	}
	slices.SortFunc(all, func(a, b found) int { return int(min(max(a.mtime-b.mtime, -1), 1)) })
	for _, f := range all {
		c.refs.set(f.name, f.d, f.mtime, f.mtime)
	}
	return len(all), dropped
}

func parseRef(data []byte) (digest, name string, ok bool) {
	digest, rest, ok := strings.Cut(string(data), "\n")
	if !ok {
		return "", "", false
	}
	name, rest, ok = strings.Cut(rest, "\n")
	return digest, name, ok && rest == ""
}

// RebuildTime is how long Open took to scan the directory and rebuild the index.
func (c *Cache) RebuildTime() time.Duration { return c.rebuildTime }

// Close releases the directory. The index is not saved: the files' mtimes are.
func (c *Cache) Close() error {
	for _, r := range c.cas {
		if r != nil {
			r.Close()
		}
	}
	if c.lock != nil {
		c.lock.Close()
	}
	return c.root.Close()
}

func (c *Cache) space() (Space, error) {
	if c.o.FreeSpace != nil {
		return c.o.FreeSpace()
	}
	sp, _, err := statSpace(c.dir)
	return sp, err
}

func casPath(hash string) string { return casDir + "/" + hash[:2] + "/" + hash }

// casFile returns the Root of an object's directory and its name there.
func (c *Cache) casFile(hash string) (*os.Root, string) {
	b, _ := hex.DecodeString(hash[:2])
	return c.cas[b[0]], hash
}

// use marks a node used at now and reports whether its access time is
// due to be written to its file. The caller holds mu.
func (c *Cache) use(i int32, now int64) bool {
	c.idx.touch(i, now)
	n := &c.idx.nodes[i]
	if now-n.saved >= int64(c.o.PersistEvery) {
		n.saved = now
		return true
	}
	return false
}

// present reports, for each digest, whether its object is in the cache,
// counting each present one as used. The index answers; the file is
// checked too, outside the lock (writing its access time when due), so a
// file deleted behind the index's back reads as missing.
func (c *Cache) present(ds []cache.Digest) []bool {
	now := c.clock.Now()
	ns := now.UnixNano()
	found := make([]bool, len(ds))
	persist := make([]bool, len(ds))
	c.mu.Lock()
	for k, d := range ds {
		if i, ok := c.idx.get(d.Sum()); ok && c.idx.nodes[i].size == d.Size {
			found[k] = true
			persist[k] = c.use(i, ns)
		}
	}
	c.mu.Unlock()
	for k, d := range ds {
		if !found[k] {
			continue
		}
		var err error
		r, name := c.casFile(d.Hash)
		if persist[k] {
			err = r.Chtimes(name, now, now)
		} else {
			_, err = r.Lstat(name)
		}
		if err != nil && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
			found[k] = c.recheck(d)
		}
	}
	return found
}

// recheck looks at d's file again under the lock, where no Put or eviction
// can change it, and drops the object from the index if the file is gone.
func (c *Cache) recheck(d cache.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, name := c.casFile(d.Hash)
	info, err := r.Lstat(name)
	if err == nil && info.Mode().IsRegular() && info.Size() == d.Size {
		return true
	}
	if i, ok := c.idx.get(d.Sum()); ok {
		c.log.Warn("cache object vanished behind the index; forgetting it", "digest", d.String())
		c.idx.remove(i)
		if err == nil {
			r.Remove(name) // the wrong size: not the object
		}
	}
	return false
}

// FindMissing implements cache.Access.
func (c *Cache) FindMissing(ctx context.Context, digests []cache.Digest) ([]cache.Digest, error) {
	for _, d := range digests {
		if err := d.Validate(); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, "diskcache.FindMissing", err)
	}
	uniq := make([]cache.Digest, 0, len(digests))
	seen := make(map[cache.Digest]bool, len(digests))
	for _, d := range digests {
		if !seen[d] {
			seen[d] = true
			uniq = append(uniq, d)
		}
	}
	found := c.present(uniq)
	var missing []cache.Digest
	for k, d := range uniq {
		if !found[k] {
			missing = append(missing, d)
		}
	}
	return missing, nil
}

// Put implements cache.Access.
func (c *Cache) Put(ctx context.Context, d cache.Digest, r io.Reader) error {
	const op = "diskcache.Put"
	if err := d.Validate(); err != nil {
		return err
	}
	sp, err := c.space()
	if err != nil {
		return errs.Wrap(errs.Unavailable, op+": free space", err)
	}
	if d.Size > sp.Total-c.o.MinHeadroom {
		return errs.E(errs.ResourceExhausted, op, "object of %d bytes does not fit in %d bytes less the %d of head room",
			d.Size, sp.Total, c.o.MinHeadroom)
	}
	if c.present([]cache.Digest{d})[0] {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return errs.Wrap(errs.Unavailable, op, err)
	}
	need := c.idx.diskUsage(d.Size)
	if err := c.makeRoom(ctx, need); err != nil {
		return err
	}
	tmp := tmpDir + "/" + randomName()
	f, err := c.root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return mapErr(op, err)
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			c.root.Remove(tmp)
		}
	}()
	if err := c.reserve(ctx, f, d.Size, need); err != nil {
		return err
	}
	if err := cache.CopyVerified(f, cache.ContextReader(ctx, r), d); err != nil {
		return mapErr(op, err)
	}
	if err := f.Sync(); err != nil {
		return mapErr(op, err)
	}
	if err := f.Close(); err != nil {
		return mapErr(op, err)
	}
	committed = true // closed: from here on, a failure removes tmp itself
	now := c.clock.Now()
	if err := c.root.Chtimes(tmp, now, now); err != nil {
		c.root.Remove(tmp)
		return mapErr(op, err)
	}
	c.mu.Lock()
	err = c.root.Rename(tmp, casPath(d.Hash))
	if err == nil {
		c.idx.add(d.Sum(), d.Size, now.UnixNano(), now.UnixNano())
	}
	c.mu.Unlock()
	if err != nil {
		c.root.Remove(tmp)
		return mapErr(op, err)
	}
	return nil
}

// reserve allocates size bytes for f. On ENOSPC it evicts at least need
// bytes and tries again; where fallocate is not supported it does nothing
// (the write itself then finds a full disk).
func (c *Cache) reserve(ctx context.Context, f *os.File, size, need int64) error {
	const op = "diskcache.Put: reserve space"
	for attempt := 0; ; attempt++ {
		err := c.o.fallocate(f, size)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errNoFallocate), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
			return nil
		case errors.Is(err, syscall.ENOSPC) && attempt < fallocateRetries:
			c.cleanMu.Lock()
			res := c.evictAtLeast(need)
			res.refs += c.removeOldRefs(res.newest)
			c.cleanMu.Unlock()
			c.finishEviction(ctx, "ENOSPC while reserving space", res)
			if res.objects == 0 {
				return errs.Wrap(errs.ResourceExhausted, op+": the disk is full and the cache is empty", err)
			}
		default:
			return mapErr(op, err)
		}
	}
}

// makeRoom ensures need bytes can be written leaving MinHeadroom free. If
// not, it takes the cleanup lock (waiting for a running cleanup), checks
// again, and evicts until MaxHeadroom plus need is free.
func (c *Cache) makeRoom(ctx context.Context, need int64) error {
	const op = "diskcache.Put"
	sp, err := c.space()
	if err != nil {
		return errs.Wrap(errs.Unavailable, op+": free space", err)
	}
	if sp.Free-need >= c.o.MinHeadroom {
		return nil
	}
	c.cleanMu.Lock()
	sp, err = c.space()
	if err != nil || sp.Free-need >= c.o.MinHeadroom {
		c.cleanMu.Unlock() // another cleanup made the room
		return errs.Wrap(errs.Unavailable, op+": free space", err)
	}
	res, sp, err := c.evictTo(c.o.MaxHeadroom + need)
	c.cleanMu.Unlock()
	c.finishEviction(ctx, "an upload needs room", res)
	if err != nil {
		return errs.Wrap(errs.Unavailable, op+": free space", err)
	}
	if sp.Free-need < c.o.MinHeadroom {
		return errs.E(errs.ResourceExhausted, op, "no room for %d bytes: %d free after evicting %d objects, and %d must stay free",
			need, sp.Free, res.objects, c.o.MinHeadroom)
	}
	return nil
}

// evicted sums up an eviction.
type evicted struct {
	objects, bytes, usage int64
	refs                  int64
	newest                int64 // access time of the most recently used object evicted
	short                 bool
}

// evictTo evicts until target bytes are free, measuring again after each
// round since the index's sizes are estimates and other writers share the
// disk. The caller holds cleanMu.
func (c *Cache) evictTo(target int64) (evicted, Space, error) {
	var res evicted
	sp, err := c.space()
	for round := 0; err == nil && sp.Free < target; round++ {
		if round == maxEvictRounds {
			res.short = true
			break
		}
		r := c.evictAtLeast(target - sp.Free)
		res.add(r)
		if r.objects == 0 {
			res.short = true // nothing left to evict
			break
		}
		sp, err = c.space()
	}
	res.refs += c.removeOldRefs(res.newest)
	return res, sp, err
}

func (e *evicted) add(o evicted) {
	e.objects += o.objects
	e.bytes += o.bytes
	e.usage += o.usage
	e.refs += o.refs
	e.newest = max(e.newest, o.newest)
}

// evictAtLeast pops least recently used objects worth at least need bytes
// of disk and deletes their files and the refs pointing at them, a batch
// per hold of the lock. The caller holds cleanMu.
func (c *Cache) evictAtLeast(need int64) evicted {
	var res evicted
	buf := make([]victim, 0, evictBatch)
	for res.usage < need {
		c.mu.Lock()
		var freed int64
		buf, freed = c.idx.popOldest(need-res.usage, evictBatch, buf[:0])
		c.unlink(buf)
		for _, v := range buf {
			res.objects++
			res.bytes += v.size
			res.newest = max(res.newest, v.atime)
			for _, e := range slices.Clone(c.refs.byTarget[v.sum]) {
				c.removeRef(e)
				res.refs++
			}
		}
		c.mu.Unlock()
		if len(buf) == 0 {
			break
		}
		res.usage += freed
	}
	c.evictedObjects.Add(res.objects)
	c.evictedBytes.Add(res.bytes)
	return res
}

// unlink deletes the victims' files with Unlinkers goroutines: unlinks are
// most of an eviction's time, and they overlap well across the 256
// directories (on ext4, 4 goroutines on 2 cores evict 1.6 times faster).
// The caller holds mu.
func (c *Cache) unlink(vs []victim) {
	rm := func(v victim) {
		if err := c.cas[v.sum[0]].Remove(hex.EncodeToString(v.sum[:])); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("cannot remove an evicted object", "err", err)
		}
	}
	n := min(c.o.Unlinkers, len(vs))
	if n <= 1 {
		for _, v := range vs {
			rm(v)
		}
		return
	}
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			for k := g; k < len(vs); k += n {
				rm(vs[k])
			}
		})
	}
	wg.Wait()
}

// removeOldRefs removes the refs last used before t (BuildStream's
// heuristic: they probably point at evicted objects), oldest first.
func (c *Cache) removeOldRefs(t int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for e := c.refs.tail; e != nil && e.atime < t; {
		prev := e.prev
		c.removeRef(e)
		n++
		e = prev
	}
	return n
}

// removeRef deletes a ref's file and entry. The caller holds mu.
func (c *Cache) removeRef(e *refEntry) {
	if err := c.root.Remove(refFile(e.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("cannot remove a ref", "ref", e.name, "err", err)
	}
	c.refs.remove(e)
}

// finishEviction logs an eviction and writes the metrics.
func (c *Cache) finishEviction(ctx context.Context, why string, res evicted) {
	if res.objects > 0 || res.short {
		c.log.InfoContext(ctx, "cache cleanup", "why", why, "evicted_objects", res.objects, "evicted_bytes", res.bytes,
			"refs_removed", res.refs, "short", res.short)
	}
	c.emit(ctx, res)
}

func (c *Cache) emit(ctx context.Context, res evicted) {
	c.mu.Lock()
	s := cache.Sample{Objects: c.idx.count, Bytes: c.idx.bytes, EvictedObjects: res.objects, EvictedBytes: res.bytes,
		Now: c.clock.Now()}
	if a := c.idx.oldestAfter(0); a != 0 {
		s.OldestAccess = time.Unix(0, a).UTC()
	}
	c.mu.Unlock()
	cache.Emit(ctx, c.o.Metrics, c.log, s)
}

// Get implements cache.Access.
func (c *Cache) Get(ctx context.Context, d cache.Digest) (io.ReadCloser, error) {
	const op = "diskcache.Get"
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, op, err)
	}
	now := c.clock.Now()
	c.mu.Lock()
	i, ok := c.idx.get(d.Sum())
	ok = ok && c.idx.nodes[i].size == d.Size
	persist := ok && c.use(i, now.UnixNano())
	c.mu.Unlock()
	if !ok {
		return nil, errs.E(errs.NotFound, op, "%s is not in the cache", d)
	}
	// An open file keeps its content even if the object is evicted meanwhile.
	r, name := c.casFile(d.Hash)
	f, err := r.Open(name)
	if err == nil {
		var info fs.FileInfo
		if info, err = f.Stat(); err == nil && (!info.Mode().IsRegular() || info.Size() != d.Size) {
			err = fs.ErrNotExist
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !c.recheck(d) {
			return nil, errs.E(errs.NotFound, op, "%s is not in the cache", d)
		}
		return nil, mapErr(op, err)
	}
	if persist {
		r.Chtimes(name, now, now)
	}
	return f, nil
}

// SetRef implements cache.Access.
func (c *Cache) SetRef(ctx context.Context, name string, d cache.Digest) error {
	const op = "diskcache.SetRef"
	if err := cache.ValidRefName(name); err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return errs.Wrap(errs.Unavailable, op, err)
	}
	if !c.present([]cache.Digest{d})[0] {
		return errs.E(errs.FailedPrecondition, op, "%s is not in the cache", d)
	}
	tmp := tmpDir + "/" + randomName()
	if err := c.root.WriteFile(tmp, []byte(d.String()+"\n"+name+"\n"), 0o644); err != nil {
		c.root.Remove(tmp)
		return mapErr(op, err)
	}
	now := c.clock.Now()
	if err := c.root.Chtimes(tmp, now, now); err != nil {
		c.root.Remove(tmp)
		return mapErr(op, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The object may have been evicted since present said yes.
	if i, ok := c.idx.get(d.Sum()); !ok || c.idx.nodes[i].size != d.Size {
		c.root.Remove(tmp)
		return errs.E(errs.FailedPrecondition, op, "%s is not in the cache", d)
	}
	if err := c.root.Rename(tmp, refFile(name)); err != nil {
		c.root.Remove(tmp)
		return mapErr(op, err)
	}
	c.refs.set(name, d, now.UnixNano(), now.UnixNano())
	return nil
}

// ResolveRef implements cache.Access.
func (c *Cache) ResolveRef(ctx context.Context, name string) (cache.Digest, error) {
	const op = "diskcache.ResolveRef"
	if err := cache.ValidRefName(name); err != nil {
		return cache.Digest{}, err
	}
	if err := ctx.Err(); err != nil {
		return cache.Digest{}, errs.Wrap(errs.Unavailable, op, err)
	}
	now := c.clock.Now()
	ns := now.UnixNano()
	c.mu.Lock()
	e := c.refs.byName[name]
	if e == nil {
		c.mu.Unlock()
		return cache.Digest{}, errs.E(errs.NotFound, op, "no ref %s", name)
	}
	d := e.d
	i, ok := c.idx.get(e.target)
	if ok {
		// Under the lock the file cannot change: this is authoritative.
		r, name := c.casFile(d.Hash)
		info, err := r.Lstat(name)
		if err != nil || info.Size() != d.Size {
			c.idx.remove(i)
			ok = false
		}
	}
	if !ok {
		c.removeRef(e)
		c.mu.Unlock()
		return cache.Digest{}, errs.E(errs.NotFound, op, "ref %s points at %s, which was evicted; the ref is removed", name, d)
	}
	persistObj := c.use(i, ns)
	c.refs.touch(e, ns)
	persistRef := ns-e.saved >= int64(c.o.PersistEvery)
	if persistRef {
		e.saved = ns
	}
	c.mu.Unlock()
	if persistObj {
		r, name := c.casFile(d.Hash)
		r.Chtimes(name, now, now)
	}
	if persistRef {
		c.root.Chtimes(refFile(name), now, now)
	}
	return d, nil
}

// Cleanup implements cache.Cache.
func (c *Cache) Cleanup(ctx context.Context, o cache.CleanupOptions) (*cache.CleanupReport, error) {
	const op = "diskcache.Cleanup"
	start := time.Now()
	c.cleanMu.Lock()
	defer c.cleanMu.Unlock()
	sp, err := c.space()
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, op+": free space", err)
	}
	rep := &cache.CleanupReport{DryRun: o.DryRun, Capacity: sp.Total, FreeBefore: sp.Free, FreeAfter: sp.Free}
	var res evicted
	switch {
	case sp.Free >= c.o.MinHeadroom:
		// Enough room: the hysteresis keeps cleanups rare.
	case o.DryRun:
		res = c.dryRun(c.o.MaxHeadroom - sp.Free)
		rep.FreeAfter = sp.Free + res.usage
	default:
		res, sp, err = c.evictTo(c.o.MaxHeadroom)
		if err != nil {
			return nil, errs.Wrap(errs.Unavailable, op+": free space", err)
		}
		rep.FreeAfter = sp.Free
	}
	rep.EvictedObjects, rep.EvictedBytes, rep.RefsRemoved, rep.Short = res.objects, res.bytes, res.refs, res.short
	if res.objects > 0 {
		rep.Cutoff = time.Unix(0, res.newest+1).UTC()
	}
	c.mu.Lock()
	rep.Objects, rep.Bytes = c.idx.count, c.idx.bytes
	skip := int64(0)
	if o.DryRun {
		rep.Objects, rep.Bytes, skip = rep.Objects-res.objects, rep.Bytes-res.bytes, res.objects
	}
	if a := c.idx.oldestAfter(skip); a != 0 {
		rep.OldestKept = time.Unix(0, a).UTC()
	}
	c.mu.Unlock()
	rep.Duration = time.Since(start)
	if !o.DryRun {
		c.emit(ctx, res)
	}
	c.log.InfoContext(ctx, "cache cleanup", "dry_run", o.DryRun, "free_before", rep.FreeBefore, "free_after", rep.FreeAfter,
		"evicted_objects", rep.EvictedObjects, "evicted_bytes", rep.EvictedBytes, "refs_removed", rep.RefsRemoved,
		"objects", rep.Objects, "short", rep.Short, "duration", rep.Duration)
	return rep, nil
}

// dryRun counts what evicting need bytes would remove, removing nothing.
func (c *Cache) dryRun(need int64) evicted {
	c.mu.Lock()
	defer c.mu.Unlock()
	var res evicted
	var sums [][32]byte
	res.objects, res.bytes, res.usage = c.idx.peekOldest(need, func(n *node) {
		sums = append(sums, n.sum)
		res.newest = max(res.newest, n.atime)
	})
	res.short = res.usage < need
	for e := c.refs.tail; e != nil && e.atime < res.newest; e = e.prev {
		res.refs++
	}
	for _, s := range sums {
		for _, e := range c.refs.byTarget[s] {
			if e.atime >= res.newest {
				res.refs++
			}
		}
	}
	return res
}

// Stats implements cache.Cache.
func (c *Cache) Stats(ctx context.Context) (*cache.Stats, error) {
	sp, err := c.space()
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, "diskcache.Stats: free space", err)
	}
	c.mu.Lock()
	s := &cache.Stats{Objects: c.idx.count, Bytes: c.idx.bytes, Refs: int64(len(c.refs.byName)),
		Capacity: sp.Total, Free: sp.Free}
	if a := c.idx.oldestAfter(0); a != 0 {
		s.OldestAccess = time.Unix(0, a).UTC()
	}
	c.mu.Unlock()
	s.EvictedObjects, s.EvictedBytes = c.evictedObjects.Load(), c.evictedBytes.Load()
	return s, nil
}

// mapErr gives a filesystem error its code: the one place this adapter does.
func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errs.CodeOf(err) != errs.Unknown:
		return errs.Wrap(errs.CodeOf(err), op, err)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return errs.Wrap(errs.NotFound, op, err)
	case errors.Is(err, fs.ErrPermission):
		return errs.Wrap(errs.PermissionDenied, op, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return errs.Wrap(errs.ResourceExhausted, op, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.Wrap(errs.Unavailable, op, err)
	default:
		return errs.Wrap(errs.Unknown, op, err)
	}
}

func randomName() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
