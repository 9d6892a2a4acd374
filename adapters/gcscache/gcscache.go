// Package gcscache implements the cache port on a Cloud Storage bucket:
// the artifact cache in Google Cloud mode, used directly by workers and by
// the cache_cleanup function.
//
// Objects live at {prefix}cas/{hash}, refs at {prefix}refs/{name} (content
// and metadata "digest": the digest they point at), the cleanup lease at
// {prefix}locks/cleanup. An object's access time is its Custom-Time: set
// at upload, and moved forward when the object is used, but only when it
// is older than TouchInterval, because metadata updates are limited to one
// per second per object and each is a billed Class A operation. So access
// times are precise to TouchInterval, and a cleanup never evicts objects
// used within TouchInterval of its start.
//
// There is no per-upload quota check beyond the object size: the byte
// quota is enforced by Cleanup, run on a schedule (the cache_cleanup
// function): between runs the bucket may exceed the quota by what is
// uploaded meanwhile. Cleanup:
//
//  1. takes the lease (an object created only if absent, with its expiry in
//     its metadata; a stale one is taken over with a generation
//     precondition, a live one makes the run answer Busy);
//  2. lists the refs (few), then the objects in one listing pass (16
//     listings by the hash's first digit, in parallel, so millions of
//     objects fit in an event function's 540 s), summing bytes per
//     access-time bucket (cache.Histogram) to find the cutoff in memory
//     proportional to the buckets, not the objects, while keeping the
//     oldest objects (up to MaxCandidates) as candidates;
//  3. deletes the objects used before the cutoff, each with its listed
//     generation and metageneration as preconditions: an object used
//     (touched) or replaced since the listing fails the precondition and
//     survives. If the candidates kept do not reach the cutoff, a second
//     listing pass finds the rest;
//  4. removes refs pointing at evicted or missing objects and refs used
//     before the cutoff, each with its own preconditions.
//
// A dry run lists and reports, without the lease and without deleting.
//
// Turn soft delete off on the bucket, or evicted objects stay billed for
// the retention period (7 days by default).
package gcscache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/clock"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/metrics"
)

// Options configure a Cache. Quota is required.
type Options struct {
	// MinHeadroom and MaxHeadroom under the quota: default 2 GB and 10 GB.
	cache.Options
	// Quota is the most bytes of objects the bucket should hold.
	Quota int64
	// Prefix is prepended to every object name, to share a bucket
	// (for example "cache/"; default none).
	Prefix string
	// TouchInterval is the least time between two refreshes of an object's
	// access time (default 1 hour). It is also the youngest a cleanup
	// evicts: nothing used within TouchInterval is evicted.
	TouchInterval time.Duration
	// BucketWidth is the granularity of the access-time histogram (default
	// 1 minute): a cleanup may evict up to one bucket's worth too much.
	BucketWidth time.Duration
	// LeaseTTL is how long the cleanup lease lasts without renewal
	// (default 10 minutes; the holder renews it every third of that).
	LeaseTTL time.Duration
	// MaxCandidates bounds the oldest objects a cleanup keeps in memory
	// while listing (default 100,000, about 15 MB); a cleanup that evicts
	// more lists a second time.
	MaxCandidates int
	// Concurrency bounds parallel requests of FindMissing and Cleanup
	// (default 16).
	Concurrency int
	// Holder names this process in the lease (default host-pid-random).
	Holder  string
	Clock   clock.Clock     // default: real
	Log     *slog.Logger    // default: slog.Default()
	Metrics metrics.Metrics // default: none

	// afterList, if set, runs after a cleanup's listing, before it deletes.
	afterList func()
}

// Cache is a cache.Cache on a bucket. Safe for concurrent use, also by
// several processes: every write that could race is conditional.
type Cache struct {
	o      Options
	bucket string
	bkt    *storage.BucketHandle
	clock  clock.Clock
	log    *slog.Logger
	quota  atomic.Int64

	evictedObjects atomic.Int64
	evictedBytes   atomic.Int64
}

var _ cache.Cache = (*Cache)(nil)

const (
	casDir    = "cas/"
	refsDir   = "refs/"
	leaseName = "locks/cleanup"
	// metaDigest is the ref metadata key holding its target, so listing
	// the refs tells the targets without reading them.
	metaDigest = "digest"
	maxChunk   = 16 << 20
	minChunk   = 256 << 10
)

// Open returns a cache on bucket, through client (which the caller keeps
// and closes). It does not contact the bucket. InvalidArgument for bad options.
func Open(client *storage.Client, bucket string, o *Options) (*Cache, error) {
	const op = "gcscache.Open"
	var opts Options
	if o != nil {
		opts = *o
	}
	opts.Options = opts.Options.WithDefaults()
	if err := opts.Options.Validate(); err != nil {
		return nil, err
	}
	if opts.Quota <= opts.MaxHeadroom {
		return nil, errs.E(errs.InvalidArgument, op, "Quota %d must exceed MaxHeadroom %d", opts.Quota, opts.MaxHeadroom)
	}
	if client == nil || bucket == "" {
		return nil, errs.E(errs.InvalidArgument, op, "a client and a bucket are required")
	}
	if opts.Prefix != "" && !strings.HasSuffix(opts.Prefix, "/") {
		return nil, errs.E(errs.InvalidArgument, op, "Prefix %q must end with '/'", opts.Prefix)
	}
	if opts.TouchInterval <= 0 {
		opts.TouchInterval = time.Hour
	}
	if opts.BucketWidth <= 0 {
		opts.BucketWidth = time.Minute
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 10 * time.Minute
	}
	if opts.MaxCandidates <= 0 {
		opts.MaxCandidates = 100_000
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	if opts.Holder == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		opts.Holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	c := &Cache{o: opts, bucket: bucket, bkt: client.Bucket(bucket), clock: opts.Clock,
		log: opts.Log.With("cache", "gs://"+bucket+"/"+opts.Prefix)}
	c.quota.Store(opts.Quota)
	return c, nil
}

// SetQuota changes the quota, for the next Put and Cleanup.
func (c *Cache) SetQuota(n int64) { c.quota.Store(n) }

// Close does nothing: the client is the caller's.
func (c *Cache) Close() error { return nil }

func (c *Cache) casName(hash string) string { return c.o.Prefix + casDir + hash }
func (c *Cache) refName(name string) string { return c.o.Prefix + refsDir + name }
func (c *Cache) object(name string) *storage.ObjectHandle {
	return c.bkt.Object(name)
}

// accessTime is an object's Custom-Time, or its last update for objects
// written without one.
func accessTime(a *storage.ObjectAttrs) time.Time {
	switch {
	case !a.CustomTime.IsZero():
		return a.CustomTime
	case !a.Updated.IsZero():
		return a.Updated
	}
	return a.Created
}

// touch reports whether the object name exists with size bytes (size < 0:
// any), and refreshes its access time if that is older than TouchInterval.
// The refresh is conditional on the metageneration read, so it never
// resurrects or overwrites anything, and it bumps the metageneration, which
// is what makes a concurrent cleanup's delete fail. A refresh refused
// because someone else just refreshed (412, 429) still counts as present.
func (c *Cache) touch(ctx context.Context, name string, size int64, now time.Time) (*storage.ObjectAttrs, bool, error) {
	o := c.object(name)
	a, err := o.Attrs(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, mapErr("gcscache: stat "+name, err)
	}
	if size >= 0 && a.Size != size {
		// Not the object its name says: drop it, so an upload can replace it.
		c.log.Warn("cache object has the wrong size; deleting it", "object", name, "size", a.Size, "want", size)
		o.If(storage.Conditions{GenerationMatch: a.Generation}).Delete(ctx)
		return nil, false, nil
	}
	if now.Sub(accessTime(a)) < c.o.TouchInterval {
		return a, true, nil
	}
	na, err := o.If(storage.Conditions{MetagenerationMatch: a.Metageneration}).Update(ctx, storage.ObjectAttrsToUpdate{CustomTime: now})
	switch {
	case err == nil:
		return na, true, nil
	case errors.Is(err, storage.ErrObjectNotExist):
		return nil, false, nil // deleted since the read: evicted
	case isStatus(err, http.StatusPreconditionFailed), isStatus(err, http.StatusTooManyRequests):
		return a, true, nil // changed since the read: someone used it
	default:
		c.log.Warn("cannot refresh a cache object's access time", "object", name, "err", err)
		return a, true, nil
	}
}

// FindMissing implements cache.Access, Concurrency digests at a time.
func (c *Cache) FindMissing(ctx context.Context, digests []cache.Digest) ([]cache.Digest, error) {
	for _, d := range digests {
		if err := d.Validate(); err != nil {
			return nil, err
		}
	}
	uniq := make([]cache.Digest, 0, len(digests))
	seen := make(map[cache.Digest]bool, len(digests))
	for _, d := range digests {
		if !seen[d] {
			seen[d] = true
			uniq = append(uniq, d)
		}
	}
	now := c.clock.Now()
	found := make([]bool, len(uniq))
	errsSeen := make([]error, len(uniq))
	sem := make(chan struct{}, c.o.Concurrency)
	var wg sync.WaitGroup
	for k, d := range uniq {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, found[k], errsSeen[k] = c.touch(ctx, c.casName(d.Hash), d.Size, now)
		})
	}
	wg.Wait()
	var missing []cache.Digest
	for k, d := range uniq {
		if errsSeen[k] != nil {
			return nil, fmt.Errorf("gcscache.FindMissing: %w", errsSeen[k])
		}
		if !found[k] {
			missing = append(missing, d)
		}
	}
	return missing, nil
}

// Put implements cache.Access. The upload is created only if absent and
// aborted (so nothing is created) unless the content matches d.
func (c *Cache) Put(ctx context.Context, d cache.Digest, r io.Reader) error {
	const op = "gcscache.Put"
	if err := d.Validate(); err != nil {
		return err
	}
	if q := c.quota.Load(); d.Size > q-c.o.MinHeadroom {
		return errs.E(errs.ResourceExhausted, op, "object of %d bytes does not fit in the quota of %d bytes less the %d of head room",
			d.Size, q, c.o.MinHeadroom)
	}
	now := c.clock.Now()
	name := c.casName(d.Hash)
	if _, ok, err := c.touch(ctx, name, d.Size, now); err != nil {
		return err
	} else if ok {
		return nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := c.object(name).If(storage.Conditions{DoesNotExist: true}).NewWriter(wctx)
	w.ContentType = "application/octet-stream"
	w.CustomTime = now
	w.ChunkSize = int(min(max((d.Size+minChunk)/minChunk*minChunk, minChunk), maxChunk))
	if err := cache.CopyVerified(w, cache.ContextReader(ctx, r), d); err != nil {
		cancel() // before Close: the upload is abandoned, not finalized
		w.Close()
		return mapErr(op, err)
	}
	if err := w.Close(); err != nil {
		if isStatus(err, http.StatusPreconditionFailed) {
			return nil // uploaded meanwhile by someone else: same content
		}
		return mapErr(op, err)
	}
	return nil
}

// Get implements cache.Access.
func (c *Cache) Get(ctx context.Context, d cache.Digest) (io.ReadCloser, error) {
	const op = "gcscache.Get"
	if err := d.Validate(); err != nil {
		return nil, err
	}
	name := c.casName(d.Hash)
	a, ok, err := c.touch(ctx, name, d.Size, c.clock.Now())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errs.E(errs.NotFound, op, "%s is not in the cache", d)
	}
	rd, err := c.object(name).Generation(a.Generation).NewReader(ctx)
	if err != nil {
		return nil, mapErr(op, err)
	}
	return rd, nil
}

// SetRef implements cache.Access. Cloud Storage takes at most one write
// per second to one name: a ref set faster than that fails with
// ResourceExhausted (transient).
func (c *Cache) SetRef(ctx context.Context, name string, d cache.Digest) error {
	const op = "gcscache.SetRef"
	if err := cache.ValidRefName(name); err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return err
	}
	now := c.clock.Now()
	if _, ok, err := c.touch(ctx, c.casName(d.Hash), d.Size, now); err != nil {
		return err
	} else if !ok {
		return errs.E(errs.FailedPrecondition, op, "%s is not in the cache", d)
	}
	w := c.object(c.refName(name)).NewWriter(ctx)
	w.ContentType = "text/plain; charset=utf-8"
	w.CustomTime = now
	w.Metadata = map[string]string{metaDigest: d.String()}
	w.ChunkSize = minChunk
	if _, err := io.WriteString(w, d.String()); err != nil {
		w.Close()
		return mapErr(op, err)
	}
	return mapErr(op, w.Close())
}

// ResolveRef implements cache.Access.
func (c *Cache) ResolveRef(ctx context.Context, name string) (cache.Digest, error) {
	const op = "gcscache.ResolveRef"
	if err := cache.ValidRefName(name); err != nil {
		return cache.Digest{}, err
	}
	now := c.clock.Now()
	ra, ok, err := c.touch(ctx, c.refName(name), -1, now)
	if err != nil {
		return cache.Digest{}, err
	}
	if !ok {
		return cache.Digest{}, errs.E(errs.NotFound, op, "no ref %s", name)
	}
	d, err := c.refTarget(ctx, ra)
	if err != nil {
		return cache.Digest{}, err
	}
	_, ok, err = c.touch(ctx, c.casName(d.Hash), d.Size, now)
	if err != nil {
		return cache.Digest{}, err
	}
	if !ok {
		// Only this version of the ref: a SetRef since then stays.
		err := c.object(ra.Name).If(storage.Conditions{GenerationMatch: ra.Generation}).Delete(ctx)
		if err != nil && !errors.Is(err, storage.ErrObjectNotExist) && !isStatus(err, http.StatusPreconditionFailed) {
			c.log.Warn("cannot remove a dangling ref", "ref", name, "err", err)
		}
		return cache.Digest{}, errs.E(errs.NotFound, op, "ref %s points at %s, which was evicted; the ref is removed", name, d)
	}
	return d, nil
}

// refTarget returns the digest a ref points at: from its metadata, or
// from its content for refs written without it.
func (c *Cache) refTarget(ctx context.Context, a *storage.ObjectAttrs) (cache.Digest, error) {
	if s, ok := a.Metadata[metaDigest]; ok {
		return cache.ParseDigest(s)
	}
	rd, err := c.object(a.Name).Generation(a.Generation).NewReader(ctx)
	if err != nil {
		return cache.Digest{}, mapErr("gcscache: read ref "+a.Name, err)
	}
	defer rd.Close()
	b, err := io.ReadAll(io.LimitReader(rd, 1024))
	if err != nil {
		return cache.Digest{}, mapErr("gcscache: read ref "+a.Name, err)
	}
	return cache.ParseDigest(strings.TrimSpace(string(b)))
}

// Stats implements cache.Cache with a listing of the bucket: one Class A
// operation per 1,000 objects.
func (c *Cache) Stats(ctx context.Context) (*cache.Stats, error) {
	s := &cache.Stats{Capacity: c.quota.Load()}
	var oldest time.Time
	err := c.listCAS(ctx, func(a *storage.ObjectAttrs) error {
		s.Objects++
		s.Bytes += a.Size
		if t := accessTime(a); oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = c.list(ctx, refsDir, false, func(*storage.ObjectAttrs) error { s.Refs++; return nil })
	if err != nil {
		return nil, err
	}
	s.Free = s.Capacity - s.Bytes
	s.OldestAccess = oldest.UTC()
	s.EvictedObjects, s.EvictedBytes = c.evictedObjects.Load(), c.evictedBytes.Load()
	return s, nil
}

// list calls fn on each object under the prefix dir, with only the fields
// a cleanup needs (and the metadata, if meta).
func (c *Cache) list(ctx context.Context, dir string, meta bool, fn func(*storage.ObjectAttrs) error) error {
	q := &storage.Query{Prefix: c.o.Prefix + dir, Projection: storage.ProjectionNoACL}
	fields := []string{"Name", "Size", "CustomTime", "Updated", "Created", "Generation", "Metageneration"}
	if meta {
		fields = append(fields, "Metadata")
	}
	if err := q.SetAttrSelection(fields); err != nil {
		return errs.Wrap(errs.InvalidArgument, "gcscache: list", err)
	}
	it := c.bkt.Objects(ctx, q)
	for {
		a, err := it.Next()
		if err == iterator.Done {
			return nil
		}
		if err != nil {
			return mapErr("gcscache: list "+dir, err)
		}
		if err := fn(a); err != nil {
			return err
		}
	}
}

// listCAS lists the objects like list, split by the hash's first hex
// digit into 16 listings run Concurrency at a time, so a pass over
// millions of objects fits in an event function's time limit (540 s).
// Calls of fn are serialized; the order is not the name order.
func (c *Cache) listCAS(ctx context.Context, fn func(*storage.ObjectAttrs) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, min(c.o.Concurrency, 16))
	for _, digit := range "0123456789abcdef" {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := c.list(ctx, casDir+string(digit), false, func(a *storage.ObjectAttrs) error {
				mu.Lock()
				defer mu.Unlock()
				if first != nil {
					return first
				}
				return fn(a)
			})
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// isStatus reports whether err is an HTTP answer of Cloud Storage with code.
func isStatus(err error, code int) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == code
}

// mapErr gives a Cloud Storage error its code: the one place this adapter does.
func mapErr(op string, err error) error {
	var ge *googleapi.Error
	switch {
	case err == nil:
		return nil
	case errs.CodeOf(err) != errs.Unknown:
		return errs.Wrap(errs.CodeOf(err), op, err)
	case errors.Is(err, storage.ErrObjectNotExist), errors.Is(err, storage.ErrBucketNotExist):
		return errs.Wrap(errs.NotFound, op, err)
	case errors.As(err, &ge):
		switch {
		case ge.Code == http.StatusBadRequest:
			return errs.Wrap(errs.InvalidArgument, op, err)
		case ge.Code == http.StatusUnauthorized:
			return errs.Wrap(errs.Unauthenticated, op, err)
		case ge.Code == http.StatusForbidden:
			return errs.Wrap(errs.PermissionDenied, op, err)
		case ge.Code == http.StatusNotFound:
			return errs.Wrap(errs.NotFound, op, err)
		case ge.Code == http.StatusConflict, ge.Code == http.StatusPreconditionFailed:
			return errs.Wrap(errs.FailedPrecondition, op, err)
		case ge.Code == http.StatusTooManyRequests:
			return errs.Wrap(errs.ResourceExhausted, op, err)
		case ge.Code >= 500:
			return errs.Wrap(errs.Unavailable, op, err)
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.Wrap(errs.Unavailable, op, err)
	}
	return errs.Wrap(errs.Unknown, op, err)
}
