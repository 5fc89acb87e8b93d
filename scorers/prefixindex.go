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

// hashSet is an insert-only open-addressing set of non-zero uint64 hashes
// (linear probing, load kept <= 1/2).
type hashSet struct {
	slots []atomic.Uint64
	mask  uint64
	n     int // writer-only
}

const minSetSlots = 64

func newHashSet(slots int) *hashSet {
	return &hashSet{slots: make([]atomic.Uint64, slots), mask: uint64(slots - 1)}
}

func (s *hashSet) contains(h uint64) bool {
	i := h & s.mask
	for probes := uint64(0); probes <= s.mask; probes++ {
		v := s.slots[i].Load()
		if v == h {
			return true
		}
		if v == 0 {
			return false
		}
		i = (i + 1) & s.mask
	}
	return false
}

// add inserts h; the caller guarantees room (n < len/2).
func (s *hashSet) add(h uint64) bool {
	i := h & s.mask
	for {
		v := s.slots[i].Load()
		if v == h {
			return false
		}
		if v == 0 {
			s.slots[i].Store(h)
			s.n++
			return true
		}
		i = (i + 1) & s.mask
	}
}

func (s *hashSet) reset() {
	for i := range s.slots {
		s.slots[i].Store(0)
	}
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
func (t *prefixTable) Insert(hashes []uint64) {
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
			if p := t.prev.Load(); p == nil || !p.contains(h) {
				t.stored.Add(1)
			}
		}
	}
}

// grow doubles cur (rehash into a new table; readers of the old one are fine).
func (t *prefixTable) grow(cur *hashSet) *hashSet {
	nt := newHashSet(2 * len(cur.slots))
	for i := range cur.slots {
		if v := cur.slots[i].Load(); v != 0 {
			nt.add(v)
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
	dropped := int64(0)
	if old != nil {
		for i := range old.slots {
			if v := old.slots[i].Load(); v != 0 && !cur.contains(v) {
				dropped++
			}
		}
	}
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
	t.stored.Add(-dropped)
	return nc
}
