package diskcache

import (
	"crypto/sha256"
	"encoding/hex"
	"path"

	"github.com/tollgate-ci/tollgate/core/cache"
)

// refIndex keeps the refs in memory, in access order (head: most recently
// used), and by target, so that evicting an object finds its refs and
// removing refs older than a time costs only the refs removed.
type refIndex struct {
	byName   map[string]*refEntry
	byTarget map[[32]byte][]*refEntry
	head     *refEntry
	tail     *refEntry
}

type refEntry struct {
	name       string
	d          cache.Digest
	target     [32]byte
	atime      int64
	saved      int64
	prev, next *refEntry
}

func newRefIndex() *refIndex {
	return &refIndex{byName: map[string]*refEntry{}, byTarget: map[[32]byte][]*refEntry{}}
}

// refFile is where a ref is kept: flat, under a hash of its name, so
// names like "a" and "a/b" never collide as file and directory.
func refFile(name string) string {
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])
	return path.Join(refsDir, h[:2], h)
}

// set points name at d as its most recent use and returns the entry.
func (x *refIndex) set(name string, d cache.Digest, now, saved int64) *refEntry {
	e := x.byName[name]
	if e == nil {
		e = &refEntry{name: name}
		x.byName[name] = e
	} else {
		x.untarget(e)
		x.unlink(e)
	}
	e.d, e.target, e.saved = d, d.Sum(), saved
	e.atime = max(e.atime, now)
	x.byTarget[e.target] = append(x.byTarget[e.target], e)
	x.pushFront(e)
	return e
}

func (x *refIndex) touch(e *refEntry, now int64) {
	e.atime = max(e.atime, now)
	if x.head != e {
		x.unlink(e)
		x.pushFront(e)
	}
}

func (x *refIndex) remove(e *refEntry) {
	x.untarget(e)
	x.unlink(e)
	delete(x.byName, e.name)
}

func (x *refIndex) untarget(e *refEntry) {
	list := x.byTarget[e.target]
	for i, o := range list {
		if o == e {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(x.byTarget, e.target)
	} else {
		x.byTarget[e.target] = list
	}
}

func (x *refIndex) pushFront(e *refEntry) {
	e.prev, e.next = nil, x.head
	if x.head != nil {
		x.head.prev = e
	}
	x.head = e
	if x.tail == nil {
		x.tail = e
	}
}

func (x *refIndex) unlink(e *refEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else if x.head == e {
		x.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else if x.tail == e {
		x.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
