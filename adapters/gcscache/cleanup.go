package gcscache

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/errs"
)

// listed is an object as the listing saw it: what a conditional delete needs.
type listed struct {
	name        string
	hash        string
	size        int64
	gen, metagn int64
	at          int64 // access time, unix nanoseconds
}

// refListed is a ref as the listing saw it.
type refListed struct {
	listed
	target string // the hash it points at; "" if unreadable
}

// Cleanup implements cache.Cache; see the package comment.
func (c *Cache) Cleanup(ctx context.Context, o cache.CleanupOptions) (*cache.CleanupReport, error) {
	const op = "gcscache.Cleanup"
	began := time.Now()
	start := c.clock.Now()
	rep := &cache.CleanupReport{DryRun: o.DryRun}
	if !o.DryRun {
		l, err := c.acquire(ctx)
		if errs.Is(err, errs.Aborted) {
			rep.Busy = true
			c.log.InfoContext(ctx, "cache cleanup skipped: another one runs", "err", err)
			return rep, nil
		}
		if err != nil {
			return nil, err
		}
		defer l.release()
		ctx = l.ctx
	}

	refs, err := c.listRefs(ctx)
	if err != nil {
		return nil, err
	}
	// targets: the access time of each object a ref points at (-1: absent).
	targets := make(map[string]int64, len(refs))
	for _, r := range refs {
		if r.target != "" {
			targets[r.target] = -1
		}
	}

	quota := c.quota.Load()
	hist := cache.NewHistogram(c.o.BucketWidth)
	cands := newCandidates(c.o.MaxCandidates, c.o.BucketWidth)
	err = c.listCAS(ctx, func(a *storage.ObjectAttrs) error {
		v, ok := c.listedObject(a)
		if !ok {
			return nil
		}
		hist.Add(time.Unix(0, v.at), v.size)
		cands.add(v)
		if _, ok := targets[v.hash]; ok {
			targets[v.hash] = v.at
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	objects, bytes := hist.Totals()
	rep.Capacity, rep.FreeBefore, rep.FreeAfter = quota, quota-bytes, quota-bytes
	rep.Objects, rep.Bytes = objects, bytes
	rep.OldestKept = hist.Oldest()

	if rep.FreeBefore >= c.o.MinHeadroom {
		c.finish(ctx, rep, began, start, 0, 0)
		return rep, nil
	}
	// Evict down to MaxHeadroom free, never what was used within TouchInterval.
	cut := hist.Cutoff(bytes-(quota-c.o.MaxHeadroom), start.Add(-c.o.TouchInterval))
	rep.Cutoff, rep.OldestKept, rep.Short = cut.Cutoff, cut.OldestKept, cut.Short
	cutoff := cut.Cutoff.UnixNano()
	if cut.Cutoff.IsZero() {
		cutoff = math.MinInt64
	}
	// Refs to remove: used before the cutoff, or pointing at an object that
	// is missing or will be evicted.
	var doomed []refListed
	byTarget := map[string][]refListed{}
	for _, r := range refs {
		at := targets[r.target]
		switch {
		case r.at < cutoff, r.target == "", at < 0:
			doomed = append(doomed, r)
		case at < cutoff:
			byTarget[r.target] = append(byTarget[r.target], r) // goes if its object goes
		}
	}

	if o.DryRun {
		rep.EvictedObjects, rep.EvictedBytes = cut.Objects, cut.Bytes
		rep.RefsRemoved = int64(len(doomed))
		for _, rs := range byTarget {
			rep.RefsRemoved += int64(len(rs))
		}
		rep.FreeAfter = quota - (bytes - cut.Bytes)
		rep.Objects, rep.Bytes = objects-cut.Objects, bytes-cut.Bytes
		c.finish(ctx, rep, began, start, 0, 0)
		return rep, nil
	}
	if c.o.afterList != nil {
		c.o.afterList()
	}

	var (
		evObjs, evBytes, survived, refsRemoved atomic.Int64
		failed                                 atomic.Pointer[error]
	)
	victims := make(chan listed, c.o.Concurrency)
	var wg sync.WaitGroup
	for range c.o.Concurrency {
		wg.Go(func() {
			for v := range victims {
				ok, err := c.deleteListed(ctx, v)
				switch {
				case err != nil:
					failed.CompareAndSwap(nil, &err)
				case !ok:
					survived.Add(1)
				default:
					evObjs.Add(1)
					evBytes.Add(v.size)
					for _, r := range byTarget[v.hash] {
						if ok, _ := c.deleteListed(ctx, r.listed); ok {
							refsRemoved.Add(1)
						}
					}
				}
			}
		})
	}
	feed := func(v listed) error {
		if v.at >= cutoff {
			return nil
		}
		select {
		case victims <- v:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var feedErr error
	if cands.covers(cutoff) {
		for _, vs := range cands.byBucket {
			for _, v := range vs {
				if feedErr = feed(v); feedErr != nil {
					break
				}
			}
		}
	} else {
		// More to evict than the candidates kept: list again.
		c.log.InfoContext(ctx, "cache cleanup lists a second time", "candidates", c.o.MaxCandidates, "to_evict", cut.Objects)
		feedErr = c.listCAS(ctx, func(a *storage.ObjectAttrs) error {
			if v, ok := c.listedObject(a); ok {
				return feed(v)
			}
			return nil
		})
	}
	close(victims)
	wg.Wait()
	for _, r := range doomed {
		if ok, err := c.deleteListed(ctx, r.listed); err == nil && ok {
			refsRemoved.Add(1)
		}
	}
	rep.EvictedObjects, rep.EvictedBytes = evObjs.Load(), evBytes.Load()
	rep.Survived, rep.RefsRemoved = survived.Load(), refsRemoved.Load()
	rep.FreeAfter = quota - (bytes - rep.EvictedBytes)
	rep.Objects, rep.Bytes = objects-rep.EvictedObjects, bytes-rep.EvictedBytes
	rep.Short = rep.Short || rep.FreeAfter < c.o.MaxHeadroom
	c.evictedObjects.Add(rep.EvictedObjects)
	c.evictedBytes.Add(rep.EvictedBytes)
	c.finish(ctx, rep, began, start, rep.EvictedObjects, rep.EvictedBytes)
	if p := failed.Load(); p != nil {
		return rep, errs.Wrap(errs.CodeOf(*p), op, *p)
	}
	if feedErr != nil {
		return rep, mapErr(op, feedErr)
	}
	return rep, nil
}

// finish logs the run and writes the metrics (not for a dry run).
func (c *Cache) finish(ctx context.Context, rep *cache.CleanupReport, began, now time.Time, evObjs, evBytes int64) {
	rep.Duration = time.Since(began)
	c.log.InfoContext(ctx, "cache cleanup", "dry_run", rep.DryRun, "free_before", rep.FreeBefore, "free_after", rep.FreeAfter,
		"evicted_objects", rep.EvictedObjects, "evicted_bytes", rep.EvictedBytes, "survived", rep.Survived,
		"refs_removed", rep.RefsRemoved, "objects", rep.Objects, "cutoff", rep.Cutoff, "short", rep.Short, "duration", rep.Duration)
	if !rep.DryRun {
		cache.Emit(ctx, c.o.Metrics, c.log, cache.Sample{Objects: rep.Objects, Bytes: rep.Bytes,
			EvictedObjects: evObjs, EvictedBytes: evBytes, OldestAccess: rep.OldestKept, Now: now})
	}
}

// listedObject reads a cas/ listing entry; false for names that are not objects.
func (c *Cache) listedObject(a *storage.ObjectAttrs) (listed, bool) {
	hash := strings.TrimPrefix(a.Name, c.o.Prefix+casDir)
	if _, err := cache.NewDigest(hash, 0); err != nil {
		return listed{}, false
	}
	return listed{name: a.Name, hash: hash, size: a.Size, gen: a.Generation, metagn: a.Metageneration,
		at: accessTime(a).UnixNano()}, true
}

// listRefs lists the refs with their targets.
func (c *Cache) listRefs(ctx context.Context) ([]refListed, error) {
	var refs []refListed
	err := c.list(ctx, refsDir, true, func(a *storage.ObjectAttrs) error {
		r := refListed{listed: listed{name: a.Name, size: a.Size, gen: a.Generation, metagn: a.Metageneration,
			at: accessTime(a).UnixNano()}}
		if d, err := c.refTarget(ctx, a); err == nil {
			r.target = d.Hash
		}
		refs = append(refs, r)
		return nil
	})
	return refs, err
}

// deleteListed deletes an object if it is still as listed. It reports
// false if it changed since (used or replaced: it stays) or is gone.
func (c *Cache) deleteListed(ctx context.Context, v listed) (bool, error) {
	err := c.object(v.name).If(storage.Conditions{GenerationMatch: v.gen, MetagenerationMatch: v.metagn}).Delete(ctx)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, storage.ErrObjectNotExist), isStatus(err, http.StatusPreconditionFailed):
		return false, nil
	}
	return false, mapErr("gcscache: delete "+v.name, err)
}

// candidates keeps the oldest listed objects, at most max, whole access-time
// buckets at a time: when it would exceed max it drops its newest bucket
// and keeps nothing from that bucket on.
type candidates struct {
	max      int
	n        int
	byBucket map[int64][]listed
	keys     bucketHeap // a max-heap of the buckets kept
	horizon  int64      // objects at or after this time are not kept
	width    int64
}

func newCandidates(limit int, width time.Duration) *candidates {
	return &candidates{max: limit, byBucket: map[int64][]listed{}, horizon: math.MaxInt64, width: max(int64(width), 1)}
}

func (c *candidates) add(v listed) {
	if v.at >= c.horizon {
		return
	}
	b := floorDiv(v.at, c.width)
	if _, ok := c.byBucket[b]; !ok {
		heap.Push(&c.keys, b)
	}
	c.byBucket[b] = append(c.byBucket[b], v)
	c.n++
	for c.n > c.max && len(c.keys) > 0 {
		top := heap.Pop(&c.keys).(int64)
		c.n -= len(c.byBucket[top])
		delete(c.byBucket, top)
		c.horizon = top * c.width
	}
}

// covers reports whether every object used before cutoff was kept.
func (c *candidates) covers(cutoff int64) bool { return cutoff <= c.horizon }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

type bucketHeap []int64

func (h bucketHeap) Len() int           { return len(h) }
func (h bucketHeap) Less(i, j int) bool { return h[i] > h[j] }
func (h bucketHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *bucketHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *bucketHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// lease is the cleanup lease, held while a cleanup runs.
type lease struct {
	c       *Cache
	ctx     context.Context // cancelled if the lease is lost
	cancel  context.CancelFunc
	gen     atomic.Int64
	stop    chan struct{}
	stopped sync.WaitGroup
}

type leaseBody struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// acquire takes the lease: creates it if absent, or takes over one that
// expired. Aborted if another holder has it.
func (c *Cache) acquire(ctx context.Context) (*lease, error) {
	const op = "gcscache.Cleanup: lease"
	name := c.o.Prefix + leaseName
	gen, err := c.writeLease(ctx, storage.Conditions{DoesNotExist: true})
	if isStatus(err, http.StatusPreconditionFailed) {
		a, aerr := c.object(name).Attrs(ctx)
		switch {
		case errors.Is(aerr, storage.ErrObjectNotExist):
			gen, err = c.writeLease(ctx, storage.Conditions{DoesNotExist: true}) // released meanwhile
		case aerr != nil:
			return nil, mapErr(op, aerr)
		default:
			exp, perr := time.Parse(time.RFC3339Nano, a.Metadata["expires"])
			if perr == nil && c.clock.Now().Before(exp) {
				return nil, errs.E(errs.Aborted, op, "held by %s until %s", a.Metadata["holder"], exp.Format(time.RFC3339))
			}
			c.log.WarnContext(ctx, "taking over an expired cache cleanup lease", "holder", a.Metadata["holder"], "expired", a.Metadata["expires"])
			gen, err = c.writeLease(ctx, storage.Conditions{GenerationMatch: a.Generation})
		}
	}
	if isStatus(err, http.StatusPreconditionFailed) {
		return nil, errs.E(errs.Aborted, op, "another cleanup took the lease first")
	}
	if err != nil {
		return nil, mapErr(op, err)
	}
	l := &lease{c: c, stop: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(ctx)
	l.gen.Store(gen)
	l.stopped.Go(l.renew)
	return l, nil
}

// writeLease writes the lease object under cond and returns its generation.
func (c *Cache) writeLease(ctx context.Context, cond storage.Conditions) (int64, error) {
	body := leaseBody{Holder: c.o.Holder, Expires: c.clock.Now().Add(c.o.LeaseTTL).UTC()}
	w := c.object(c.o.Prefix + leaseName).If(cond).NewWriter(ctx)
	w.ContentType = "application/json"
	w.ChunkSize = minChunk
	w.Metadata = map[string]string{"holder": body.Holder, "expires": body.Expires.Format(time.RFC3339Nano)}
	b, _ := json.Marshal(body)
	if _, err := w.Write(b); err != nil {
		w.Close()
		return 0, err
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	return w.Attrs().Generation, nil
}

// renew extends the lease every third of its TTL; if that fails with a
// precondition (someone took it over), the cleanup's context is cancelled.
func (l *lease) renew() {
	t := time.NewTicker(l.c.o.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			gen, err := l.c.writeLease(l.ctx, storage.Conditions{GenerationMatch: l.gen.Load()})
			switch {
			case err == nil:
				l.gen.Store(gen)
			case isStatus(err, http.StatusPreconditionFailed):
				l.c.log.Error("cache cleanup lost its lease; stopping", "holder", l.c.o.Holder)
				l.cancel()
				return
			default:
				l.c.log.Warn("cannot renew the cache cleanup lease", "err", err)
			}
		}
	}
}

// release stops renewing and deletes the lease if it is still ours.
func (l *lease) release() {
	close(l.stop)
	l.stopped.Wait()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), 30*time.Second)
	defer cancel()
	err := l.c.object(l.c.o.Prefix + leaseName).If(storage.Conditions{GenerationMatch: l.gen.Load()}).Delete(ctx)
	if err != nil && !errors.Is(err, storage.ErrObjectNotExist) && !isStatus(err, http.StatusPreconditionFailed) {
		l.c.log.Warn("cannot release the cache cleanup lease; it expires by itself", "err", err)
	}
	l.cancel()
}
