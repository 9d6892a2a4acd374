package diskcache

import (
	"slices"
)

// index is the in-memory LRU index of the objects: a doubly linked list in
// access order (head: most recently used) threaded through a slab of nodes,
// plus a map from hash to node. Touch, add and remove are O(1); eviction
// pops from the tail in O(evicted). Links are int32 slab positions rather
// than pointers, so the slab holds no pointers and the garbage collector
// never scans it: at millions of objects that is most of the GC's work
// saved. Not safe for concurrent use; the Cache holds its mutex.
type index struct {
	nodes    []node
	freeHead int32 // first free slab position, linked through next
	byHash   map[[32]byte]int32
	head     int32
	tail     int32
	count    int64
	bytes    int64 // sum of sizes
	usage    int64 // sum of estimated disk usage
	block    int64 // disk usage is counted in whole blocks of this size
}

// node is one object. 64 bytes.
type node struct {
	sum   [32]byte
	size  int64
	atime int64 // unix nanoseconds of the last use, kept in memory
	saved int64 // the access time last written to the file (its mtime)
	prev  int32 // towards head (more recent); nilNode at the head
	next  int32 // towards tail (older); nilNode at the tail
}

const nilNode int32 = -1

func newIndex(capacity int, block int64) *index {
	return &index{
		nodes:    make([]node, 0, capacity),
		freeHead: nilNode,
		byHash:   make(map[[32]byte]int32, capacity),
		head:     nilNode,
		tail:     nilNode,
		block:    max(block, 1),
	}
}

// diskUsage estimates the disk space an object of size bytes takes.
func (x *index) diskUsage(size int64) int64 {
	return (size + x.block - 1) / x.block * x.block
}

func (x *index) get(sum [32]byte) (int32, bool) {
	i, ok := x.byHash[sum]
	return i, ok
}

// add inserts an object as the most recently used, or, if present,
// updates it and moves it to the head.
func (x *index) add(sum [32]byte, size, atime, saved int64) int32 {
	if i, ok := x.byHash[sum]; ok {
		n := &x.nodes[i]
		x.bytes += size - n.size
		x.usage += x.diskUsage(size) - x.diskUsage(n.size)
		n.size, n.saved = size, saved
		x.touch(i, atime)
		return i
	}
	var i int32
	if x.freeHead != nilNode {
		i = x.freeHead
		x.freeHead = x.nodes[i].next
	} else {
		i = int32(len(x.nodes))
		x.nodes = append(x.nodes, node{})
	}
	x.nodes[i] = node{sum: sum, size: size, atime: atime, saved: saved, prev: nilNode, next: nilNode}
	x.pushFront(i)
	x.byHash[sum] = i
	x.count++
	x.bytes += size
	x.usage += x.diskUsage(size)
	return i
}

// touch makes i the most recently used, at time now (the access time never
// goes back, should the clock).
func (x *index) touch(i int32, now int64) {
	n := &x.nodes[i]
	n.atime = max(n.atime, now)
	if x.head == i {
		return
	}
	x.unlink(i)
	x.pushFront(i)
}

// remove drops i from the index.
func (x *index) remove(i int32) {
	n := &x.nodes[i]
	x.unlink(i)
	delete(x.byHash, n.sum)
	x.count--
	x.bytes -= n.size
	x.usage -= x.diskUsage(n.size)
	*n = node{next: x.freeHead, prev: nilNode}
	x.freeHead = i
}

func (x *index) pushFront(i int32) {
	n := &x.nodes[i]
	n.prev, n.next = nilNode, x.head
	if x.head != nilNode {
		x.nodes[x.head].prev = i
	}
	x.head = i
	if x.tail == nilNode {
		x.tail = i
	}
}

func (x *index) unlink(i int32) {
	n := &x.nodes[i]
	if n.prev != nilNode {
		x.nodes[n.prev].next = n.next
	} else {
		x.head = n.next
	}
	if n.next != nilNode {
		x.nodes[n.next].prev = n.prev
	} else {
		x.tail = n.prev
	}
	n.prev, n.next = nilNode, nilNode
}

// victim is an object popped for eviction.
type victim struct {
	sum   [32]byte
	size  int64
	atime int64
}

// popOldest removes least recently used objects until their estimated
// disk usage adds up to at least need, or max objects were taken, and
// appends them to out. It costs O(taken), whatever the index's size.
func (x *index) popOldest(need int64, max int, out []victim) ([]victim, int64) {
	var freed int64
	for taken := 0; freed < need && taken < max && x.tail != nilNode; taken++ {
		i := x.tail
		n := &x.nodes[i]
		out = append(out, victim{sum: n.sum, size: n.size, atime: n.atime})
		freed += x.diskUsage(n.size)
		x.remove(i)
	}
	return out, freed
}

// peekOldest walks, without removing, the least recently used objects
// whose usage adds up to at least need, calling fn on each (a dry run).
func (x *index) peekOldest(need int64, fn func(n *node)) (objects, bytes, usage int64) {
	for i := x.tail; i != nilNode && usage < need; i = x.nodes[i].prev {
		n := &x.nodes[i]
		fn(n)
		objects++
		bytes += n.size
		usage += x.diskUsage(n.size)
	}
	return objects, bytes, usage
}

// oldest returns the least recently used node's access time (0 if empty),
// skipping the first skip nodes.
func (x *index) oldestAfter(skip int64) int64 {
	i := x.tail
	for ; i != nilNode && skip > 0; skip-- {
		i = x.nodes[i].prev
	}
	if i == nilNode {
		return 0
	}
	return x.nodes[i].atime
}

// scanned is an object found on disk at start.
type scanned struct {
	sum   [32]byte
	size  int64
	mtime int64
}

// rebuild returns an index of the scanned objects in the order of their
// modification times (the access times persisted before the restart).
// Sorting here, once at start, is what lets eviction never sort.
func rebuild(objs []scanned, block int64) *index {
	slices.SortFunc(objs, func(a, b scanned) int {
		switch {
		case a.mtime < b.mtime:
			return -1
		case a.mtime > b.mtime:
			return 1
		}
		return 0
	})
	x := newIndex(len(objs), block)
	for _, o := range objs {
		x.add(o.sum, o.size, o.mtime, o.mtime)
	}
	return x
}
