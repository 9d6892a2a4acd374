// Package cache defines the artifact cache port: a content-addressed store
// that jobs share (objects named by SHA-256 digest and size) plus named refs
// pointing at objects, kept inside its space by least-recently-used
// eviction with head-room hysteresis (BuildStream's CAS server is the model).
//
// Eviction works on objects and ignores refs; refs are cleaned up after
// the objects they point at, and a ref read whose object is gone answers
// NotFound and removes the ref, so readers never need to care about
// dangling refs. Cleanup never walks and sorts the whole store on the hot
// path: the disk backend keeps an in-memory LRU index, the Cloud Storage
// backend finds its cutoff from a histogram of access times.
//
// The package also holds what every transport shares: the HTTP protocol
// (Handler, HTTPClient) that the worker API and the worker's local proxy
// speak, the `tollgate cache` command (RunCommand), and the metric names.
package cache

import (
	"context"
	"io"
	"time"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// Access is the part of the cache that workers and jobs use. Every method
// is safe for concurrent use and safe to retry. Invalid digests and ref
// names are refused with InvalidArgument before storage is touched.
//
// "Using" an object (FindMissing finding it, Put of a present object, Get,
// SetRef, ResolveRef) refreshes its access time, which is what eviction
// orders by. A backend may record access times coarsely: the Cloud Storage
// one writes an object's at most once per TouchInterval, so its LRU order
// is exact to that interval, and it never evicts what was used within it.
type Access interface {
	// FindMissing returns the digests that are not in the cache, in the
	// order given (duplicates once). Present ones count as used.
	FindMissing(ctx context.Context, digests []Digest) ([]Digest, error)

	// Put stores r's content as d. It reads at most d.Size+1 bytes; unless
	// they are exactly d's content, Put fails with InvalidArgument and
	// nothing is kept. An object that cannot fit even in an empty cache
	// (larger than the space minus MinHeadroom) is refused with
	// ResourceExhausted before r is read. If d is already present, Put
	// counts as a use and may return without reading r. Put is atomic:
	// readers see the whole object or none, and a failed Put leaves nothing.
	Put(ctx context.Context, d Digest, r io.Reader) error

	// Get opens d's content for reading; NotFound if it is not in the
	// cache. The caller closes the reader. Counts as a use.
	Get(ctx context.Context, d Digest) (io.ReadCloser, error)

	// SetRef points the ref name (ValidRefName) at d, replacing where it
	// pointed before. d must be in the cache: FailedPrecondition otherwise.
	// Counts as a use of d.
	SetRef(ctx context.Context, name string, d Digest) error

	// ResolveRef returns the digest name points at; NotFound if there is no
	// such ref, or if its object was evicted, in which case the ref is
	// removed too. Counts as a use of the ref and its object.
	ResolveRef(ctx context.Context, name string) (Digest, error)
}

// Cache is the whole port: Access plus what the operator's side runs.
type Cache interface {
	Access

	// Cleanup makes room if the cache is short of it: when the free space
	// (disk free space, or quota minus bytes stored) is below MinHeadroom,
	// it evicts least-recently-used objects until the free space is at
	// least MaxHeadroom; otherwise it does nothing (the hysteresis keeps
	// cleanups rare). Refs pointing at evicted objects, and refs last used
	// before the newest evicted object, are removed with them. One cleanup
	// runs at a time per cache: a backend shared by several processes
	// answers a report with Busy set when another one is running. With
	// DryRun, nothing is removed and the report says what would have been.
	// Objects used while a cleanup runs are not lost: a backend either
	// serialises uses against eviction or deletes only objects unchanged
	// since it chose them.
	Cleanup(ctx context.Context, o CleanupOptions) (*CleanupReport, error)

	// Stats describes the cache now. It may cost a listing (Cloud Storage).
	Stats(ctx context.Context) (*Stats, error)

	// Close releases the backend's resources.
	Close() error
}

// Default head-room thresholds, BuildStream's: clean when less than 2 GB
// is free, and then until 10 GB is.
const (
	DefaultMinHeadroom int64 = 2e9
	DefaultMaxHeadroom int64 = 10e9
)

// Options are the eviction thresholds every backend shares.
type Options struct {
	// MinHeadroom: a cleanup starts when the free space falls below it
	// (default 2 GB).
	MinHeadroom int64
	// MaxHeadroom: a cleanup evicts until the free space is at least this
	// (default 10 GB). Must be more than MinHeadroom: the gap is what makes
	// cleanups rare instead of one per upload.
	MaxHeadroom int64
}

// WithDefaults returns o with zero fields set to the defaults.
func (o Options) WithDefaults() Options {
	if o.MinHeadroom == 0 {
		o.MinHeadroom = DefaultMinHeadroom
	}
	if o.MaxHeadroom == 0 {
		o.MaxHeadroom = DefaultMaxHeadroom
	}
	return o
}

// Validate reports InvalidArgument unless 0 <= MinHeadroom < MaxHeadroom.
// Call it on WithDefaults' result.
func (o Options) Validate() error {
	if o.MinHeadroom < 0 {
		return errs.E(errs.InvalidArgument, "cache.Options", "MinHeadroom %d is negative", o.MinHeadroom)
	}
	if o.MaxHeadroom <= o.MinHeadroom {
		return errs.E(errs.InvalidArgument, "cache.Options", "MaxHeadroom %d must exceed MinHeadroom %d", o.MaxHeadroom, o.MinHeadroom)
	}
	return nil
}

// CleanupOptions configure one Cleanup.
type CleanupOptions struct {
	// DryRun reports what would be evicted and removes nothing.
	DryRun bool `json:"dry_run,omitempty"`
}

// CleanupReport says what a Cleanup did (or, in a dry run, would do).
type CleanupReport struct {
	DryRun bool `json:"dry_run,omitempty"`
	// Busy: another cleanup holds the lease; this one did nothing.
	Busy bool `json:"busy,omitempty"`
	// Capacity is the disk size or the quota; FreeBefore and FreeAfter the
	// free space before and after (estimated, in a dry run).
	Capacity   int64 `json:"capacity"`
	FreeBefore int64 `json:"free_before"`
	FreeAfter  int64 `json:"free_after"`
	// Objects and Bytes are what the cache holds after the run.
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
	// EvictedObjects and EvictedBytes count the objects removed.
	EvictedObjects int64 `json:"evicted_objects"`
	EvictedBytes   int64 `json:"evicted_bytes"`
	// RefsRemoved counts refs removed with them.
	RefsRemoved int64 `json:"refs_removed"`
	// Survived counts objects chosen for eviction but kept because they
	// were used (or replaced) while the cleanup ran.
	Survived int64 `json:"survived,omitempty"`
	// Cutoff: objects last used before it were evicted (zero if none).
	Cutoff time.Time `json:"cutoff,omitzero"`
	// OldestKept is the access time of the least recently used object
	// kept (zero if the cache is empty): the cache's retention in practice.
	OldestKept time.Time `json:"oldest_kept,omitzero"`
	// Short: the target could not be reached (everything evictable is
	// gone, or only recently used objects are left).
	Short    bool          `json:"short,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Stats describe a cache.
type Stats struct {
	Objects int64 `json:"objects"`
	// Bytes is the sum of the objects' sizes.
	Bytes int64 `json:"bytes"`
	Refs  int64 `json:"refs"`
	// Capacity is the disk size or the quota; Free the free space now.
	Capacity int64 `json:"capacity"`
	Free     int64 `json:"free"`
	// OldestAccess is the access time of the least recently used object.
	OldestAccess time.Time `json:"oldest_access,omitzero"`
	// EvictedObjects and EvictedBytes count evictions since the process
	// opened the cache (zero where cleanups run elsewhere).
	EvictedObjects int64 `json:"evicted_objects"`
	EvictedBytes   int64 `json:"evicted_bytes"`
}
