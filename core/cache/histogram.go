package cache

import (
	"slices"
	"time"
)

// Histogram sums object sizes per access-time bucket, so a cleanup over a
// store it can only list (Cloud Storage) finds its cutoff in memory
// proportional to the number of distinct buckets, not objects. The price is
// granularity: a cutoff falls on a bucket boundary, so a cleanup may evict
// up to one bucket more than strictly needed. Not safe for concurrent use.
type Histogram struct {
	width   int64 // nanoseconds
	buckets map[int64]*histBucket
	objects int64
	bytes   int64
}

type histBucket struct {
	objects, bytes int64
	oldest         int64 // unix nanoseconds of the oldest access in the bucket
}

// NewHistogram returns an empty histogram with buckets width wide
// (at least a nanosecond).
func NewHistogram(width time.Duration) *Histogram {
	return &Histogram{width: max(int64(width), 1), buckets: map[int64]*histBucket{}}
}

// bucket returns the index of the bucket holding t (floor division, so
// times before 1970 still land in the right bucket).
func (h *Histogram) bucket(ns int64) int64 {
	b := ns / h.width
	if ns%h.width < 0 {
		b--
	}
	return b
}

// Add counts an object of size bytes last used at t.
func (h *Histogram) Add(t time.Time, size int64) {
	ns := t.UnixNano()
	k := h.bucket(ns)
	b := h.buckets[k]
	if b == nil {
		b = &histBucket{oldest: ns}
		h.buckets[k] = b
	}
	b.objects++
	b.bytes += size
	b.oldest = min(b.oldest, ns)
	h.objects++
	h.bytes += size
}

// Totals returns the objects and bytes counted.
func (h *Histogram) Totals() (objects, bytes int64) { return h.objects, h.bytes }

// Buckets returns how many buckets hold objects (the histogram's memory).
func (h *Histogram) Buckets() int { return len(h.buckets) }

// Oldest returns the oldest access time counted (zero if none).
func (h *Histogram) Oldest() time.Time {
	var o int64
	found := false
	for _, b := range h.buckets {
		if !found || b.oldest < o {
			o, found = b.oldest, true
		}
	}
	if !found {
		return time.Time{}
	}
	return time.Unix(0, o).UTC()
}

// Cut is where a cleanup stops.
type Cut struct {
	// Cutoff: evict every object last used before it (zero: evict nothing).
	Cutoff time.Time
	// Objects and Bytes are what evicting them removes.
	Objects, Bytes int64
	// OldestKept is the oldest access time left (zero if none is left).
	OldestKept time.Time
	// Short: the objects before limit do not add up to need.
	Short bool
}

// Cutoff returns the earliest bucket boundary such that evicting every
// object used before it frees at least need bytes. It never returns a
// cutoff after limit, so objects used since limit are never chosen; if
// that is not enough, Short is set and the cut takes all it may.
func (h *Histogram) Cutoff(need int64, limit time.Time) Cut {
	var c Cut
	if need <= 0 {
		c.OldestKept = h.Oldest()
		return c
	}
	keys := make([]int64, 0, len(h.buckets))
	for k := range h.buckets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	lim := limit.UnixNano()
	i := 0
	for ; i < len(keys); i++ {
		end := (keys[i] + 1) * h.width
		if end > lim {
			break
		}
		b := h.buckets[keys[i]]
		c.Objects += b.objects
		c.Bytes += b.bytes
		c.Cutoff = time.Unix(0, end).UTC()
		if c.Bytes >= need {
			i++
			break
		}
	}
	c.Short = c.Bytes < need
	if i < len(keys) {
		c.OldestKept = time.Unix(0, h.buckets[keys[i]].oldest).UTC()
	}
	return c
}
