package scorers

import (
	"sync"
	"sync/atomic"
)

// prefixTable remembers the block hashes one endpoint has been sent, bounded
// by capacity. It approximates LRU with two generations: new and touched
// blocks go into cur; when cur holds capacity blocks it becomes prev and an
// emptied table becomes cur. So the table always holds at least the capacity
// most recently used blocks and at most 2×capacity.
//
// Readers (Contains) take no lock: slots are atomic, tables are insert-only
// within a generation, and a reader racing a rotation can only miss a block
// (a false negative costs one prefix score, never correctness).
// Writers (Insert) hold mu; each endpoint has its own table, so writers to
// different endpoints never contend.
type prefixTable struct {
	mu       sync.Mutex
	cur      atomic.Pointer[hashSet]
	prev     atomic.Pointer[hashSet]
	capacity int
	stamp    uint64       // PrefixScorer.stamp when last in a snapshot (PrefixScorer.mu)
	stored   atomic.Int64 // blocks in cur + prev
	bytes    atomic.Int64 // slot memory held (cur + prev)
}

// hashSet is an insert-only open-addressing set of uint64 hashes (linear
// probing, load kept <= 1/2). A slot holds a hash with bits 56–62 replaced by
// the set's generation tag (1..127); a slot whose tag is not the set's is
// empty. So emptying a set for reuse is one tag change, not a store to every
// slot (on amd64 an atomic store is a locked exchange: clearing 64Ki slots
// that way cost more than the inserts that filled them). A set is cleared for
// real only when its tag wraps, once in 127 reuses. Two hashes that differ
// only in those 7 bits are the same block to the set (57 bits remain).
type hashSet struct {
	slots []atomic.Uint64
	mask  uint64
	tag   atomic.Uint64 // the generation tag, in place (tagBits)
	n     int           // writer-only
}

const (
	minSetSlots = 64
	tagShift    = 56
	tagBits     = uint64(0x7F) << tagShift
	maxTag      = 0x7F
)

func newHashSet(slots int) *hashSet {
	s := &hashSet{slots: make([]atomic.Uint64, slots), mask: uint64(slots - 1)}
	s.tag.Store(1 << tagShift)
	return s
}

// tagged is h as s stores it under tag.
func tagged(h, tag uint64) uint64 { return h&^tagBits | tag }

func (s *hashSet) contains(h uint64) bool {
	tag := s.tag.Load()
	h = tagged(h, tag)
	i := h & s.mask
	for probes := uint64(0); probes <= s.mask; probes++ {
		v := s.slots[i].Load()
		if v == h {
			return true
		}
		if v&tagBits != tag {
			return false
		}
		i = (i + 1) & s.mask
	}
	return false
}

// add inserts h; the caller (the one writer) guarantees room (n < len/2).
func (s *hashSet) add(h uint64) bool {
	tag := s.tag.Load()
	h = tagged(h, tag)
	i := h & s.mask
	for {
		v := s.slots[i].Load()
		if v == h {
			return false
		}
		if v&tagBits != tag {
			s.slots[i].Store(h)
			s.n++
			return true
		}
		i = (i + 1) & s.mask
	}
}

// occupied reports whether slot i holds a hash of the current generation.
func (s *hashSet) occupied(i int) bool {
	return s.slots[i].Load()&tagBits == s.tag.Load()
}

// reset empties s by moving to the next tag; when the tags wrap, every slot
// is cleared (a slot left from 127 reuses ago would otherwise look current).
// A reader still probing s may then miss blocks: a false negative.
func (s *hashSet) reset() {
	next := s.tag.Load()>>tagShift + 1
	if next > maxTag {
		for i := range s.slots {
			s.slots[i].Store(0)
		}
		next = 1
	}
	s.tag.Store(next << tagShift)
	s.n = 0
}

func newPrefixTable(capacity int) *prefixTable {
	t := &prefixTable{capacity: max(capacity, 1)}
	t.cur.Store(newHashSet(minSetSlots))
	t.bytes.Store(minSetSlots * 8)
	return t
}

// maxSlots is the table size that holds capacity entries at load <= 1/2.
func (t *prefixTable) maxSlots() int {
	n := minSetSlots
	for n < 2*t.capacity {
		n *= 2
	}
	return n
}

// setCapacity changes the bound (autoTune learns num_gpu_blocks after the
// first scrape); it takes effect at the next insert.
func (t *prefixTable) setCapacity(c int) {
	c = max(c, 1)
	t.mu.Lock()
	t.capacity = c
	t.mu.Unlock()
}

// Contains reports whether h is remembered (lock-free).
func (t *prefixTable) Contains(h uint64) bool {
	if t.cur.Load().contains(h) {
		return true
	}
	if p := t.prev.Load(); p != nil {
		return p.contains(h)
	}
	return false
}

// Insert records hashes (in order) as most recently used.
func (t *prefixTable) Insert(hashes []uint64) { t.insert(hashes, true) }

// InsertNew is Insert for blocks that follow the first block the caller
// found in neither generation (a pick's unmatched tail). It skips the lookup
// in the previous generation that only keeps stored exact: a chained hash
// there would mean its prefix was evicted before it, which only a rotation in
// the middle of one prompt's insert can cause. Such a block is counted twice
// in stored until the next rotation recounts it (an overstatement of at most
// the blocks of one prompt, and only in the index-size metric).
func (t *prefixTable) InsertNew(hashes []uint64) { t.insert(hashes, false) }

func (t *prefixTable) insert(hashes []uint64, checkPrev bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, h := range hashes {
		cur := t.cur.Load()
		if cur.n >= t.capacity || 2*(cur.n+1) > len(cur.slots) {
			// No room: rotate or grow, unless h is already current. With
			// room, add's one probe run finds h if present.
			if cur.contains(h) {
				continue
			}
			if cur.n >= t.capacity {
				cur = t.rotate()
			} else {
				cur = t.grow(cur)
			}
		}
		if cur.add(h) {
			if p := t.prev.Load(); !checkPrev || p == nil || !p.contains(h) {
				t.stored.Add(1)
			}
		}
	}
}

// grow doubles cur (rehash into a new table; readers of the old one are fine).
func (t *prefixTable) grow(cur *hashSet) *hashSet {
	nt := newHashSet(2 * len(cur.slots))
	for i := range cur.slots {
		if cur.occupied(i) {
			nt.add(cur.slots[i].Load())
		}
	}
	t.cur.Store(nt)
	t.bytes.Add(int64(len(nt.slots)-len(cur.slots)) * 8)
	return nt
}

// rotate retires prev, makes cur the new prev and starts an empty cur,
// reusing the retired table's memory when its size suits the capacity. A
// table sized for a larger, older capacity is dropped, so memory follows the
// capacity down within two rotations.
func (t *prefixTable) rotate() *hashSet {
	old := t.prev.Load()
	cur := t.cur.Load()
	t.prev.Store(cur)
	limit := t.maxSlots()
	var nc *hashSet
	switch {
	case old != nil && len(old.slots) >= limit/2 && len(old.slots) <= limit:
		old.reset()
		nc = old
	default:
		if old != nil {
			t.bytes.Add(-int64(len(old.slots)) * 8)
		}
		nc = newHashSet(min(max(minSetSlots, len(cur.slots)/2), limit))
		t.bytes.Add(int64(len(nc.slots)) * 8)
	}
	t.cur.Store(nc)
	// What is stored is now the old cur: each of its n blocks was added once.
	t.stored.Store(int64(cur.n))
	return nc
}
