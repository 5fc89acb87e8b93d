package scorers

import (
	"iter"
	"sync"
	"sync/atomic"
	"unsafe"
)

// prefixRev is the prefix index's reverse index: from a prompt's first
// chained block hash h(0) to the endpoints (Handle IDs) whose table may hold
// it. Only an endpoint holding h(0) can match any block (matching counts
// leading blocks), so a pick scores these endpoints alone instead of probing
// every table (PrefixScorer.ScoreHits, the scheduler's fast path).
//
// Invariant: whenever an endpoint's table holds h(0), the pair (h(0), its ID)
// is here (record adds it right after inserting into the table). The index
// may hold more (pairs whose block the table has since rotated out, endpoints
// that left): ScoreHits verifies each pair on the table itself, so a stale
// pair costs one probe, never a wrong score.
//
// Layout: open addressing with linear probing over entries of one key and up
// to revIDs IDs; a key held by more endpoints takes further entries along its
// run. Readers take no lock (atomic slots; an entry's IDs are stored before
// its key). Writers hold mu (one per scorer, taken in Picked only when the
// chosen endpoint did not hold the prompt's first block in its current
// generation). When the table is half full it is rebuilt with only the pairs
// still true (the endpoint's table still holds h(0)), into 4-8× as many
// 32-byte slots as surviving entries: memory follows the (first block,
// endpoint) pairs the tables hold, plus the pairs added since the last
// rebuild and one spare table. With prompts of 32 blocks that is about 8
// bytes per stored block (the tables take 16-34); with one-block prompts it
// can exceed the tables (TestPrefixRevInvariant logs the figures). Rebuilds
// reuse the table before last when it has the right size, so steady state
// allocates nothing. A rebuild (amortised over the inserts since the last
// one) holds mu for one pass over the table; lookups never wait for it.
type prefixRev struct {
	// holds reports whether an endpoint's table holds a hash now (rebuilds
	// keep those pairs only); set once at construction, called with mu held.
	holds func(id uint32, h uint64) bool
	mu    sync.Mutex
	tab   atomic.Pointer[revTable]
	spare *revTable // the previous table, reused by the next rebuild (mu)
}

const (
	revIDs     = 6
	revMinSize = 64
)

type revEntry struct {
	key atomic.Uint64
	ids [revIDs]atomic.Uint32 // filled in order; 0 = free
	_   uint32
}

type revTable struct {
	ents []revEntry
	mask uint64
	n    int // entries in use (mu)
}

func newRevTable(size int) *revTable {
	return &revTable{ents: make([]revEntry, size), mask: uint64(size - 1)}
}

// entriesOf yields the entries of key h along its probe run.
func (t *revTable) entriesOf(h uint64) iter.Seq[*revEntry] {
	return func(yield func(*revEntry) bool) {
		for i, probes := h&t.mask, uint64(0); probes <= t.mask; i, probes = (i+1)&t.mask, probes+1 {
			e := &t.ents[i]
			k := e.key.Load()
			if k == 0 {
				return
			}
			if k == h && !yield(e) {
				return
			}
		}
	}
}

// lookup appends to ids the IDs stored for key h. It returns false, with ids
// partly filled, when there are more than limit of them.
func (r *prefixRev) lookup(h uint64, ids []uint32, limit int) ([]uint32, bool) {
	t := r.tab.Load()
	if t == nil {
		return ids, true
	}
	n := 0
	for e := range t.entriesOf(h) {
		for s := range e.ids {
			id := e.ids[s].Load()
			if id == 0 {
				break
			}
			if n++; n > limit {
				return ids, false
			}
			ids = append(ids, id)
		}
	}
	return ids, true
}

// add records that the endpoint with Handle ID id holds h.
func (r *prefixRev) add(h uint64, id uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tab.Load()
	if t == nil {
		t = newRevTable(revMinSize)
		r.tab.Store(t)
	}
	if t.put(h, id) {
		return
	}
	if 2*(t.n+1) > len(t.ents) {
		t = r.rebuild(t)
		if t.put(h, id) {
			return
		}
	}
	t.insertEntry(h, id)
}

// put stores id in an existing entry of h with room (or finds it there).
func (t *revTable) put(h uint64, id uint32) bool {
	var free *atomic.Uint32
	for e := range t.entriesOf(h) {
		for s := range e.ids {
			v := e.ids[s].Load()
			if v == id {
				return true
			}
			if v == 0 {
				if free == nil {
					free = &e.ids[s]
				}
				break
			}
		}
	}
	if free != nil {
		free.Store(id)
		return true
	}
	return false
}

// insertEntry starts a new entry for h holding id (the caller ensured room).
func (t *revTable) insertEntry(h uint64, id uint32) {
	i := h & t.mask
	for t.ents[i].key.Load() != 0 {
		i = (i + 1) & t.mask
	}
	t.ents[i].ids[0].Store(id)
	t.ents[i].key.Store(h) // last: a reader that sees the key sees the ID
	t.n++
}

// rebuild copies the pairs still true into a table sized for them.
func (r *prefixRev) rebuild(old *revTable) *revTable {
	holds := r.holds
	live := 0
	for i := range old.ents {
		e := &old.ents[i]
		k := e.key.Load()
		if k == 0 {
			continue
		}
		// Count the entries the surviving pairs need (old is not compacted
		// in place: readers may be walking it).
		c := 0
		for s := range e.ids {
			id := e.ids[s].Load()
			if id == 0 {
				break
			}
			if holds(id, k) {
				c++
			}
		}
		live += (c + revIDs - 1) / revIDs
	}
	size := revMinSize
	for size < 4*(live+1) {
		size *= 2
	}
	var nt *revTable
	if sp := r.spare; sp != nil && len(sp.ents) == size {
		for i := range sp.ents {
			e := &sp.ents[i]
			e.key.Store(0)
			for s := range e.ids {
				e.ids[s].Store(0)
			}
		}
		sp.n = 0
		nt = sp
	} else {
		nt = newRevTable(size)
	}
	for i := range old.ents {
		e := &old.ents[i]
		k := e.key.Load()
		if k == 0 {
			continue
		}
		for s := range e.ids {
			id := e.ids[s].Load()
			if id == 0 {
				break
			}
			if holds(id, k) && !nt.put(k, id) {
				nt.insertEntry(k, id)
			}
		}
	}
	r.tab.Store(nt)
	r.spare = old
	return nt
}

// size reports the entries in use and the memory held (current and spare
// tables), for tests and the index's byte statistic.
func (r *prefixRev) size() (entries int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	const entryBytes = int64(unsafe.Sizeof(revEntry{}))
	if t := r.tab.Load(); t != nil {
		entries, bytes = t.n, int64(len(t.ents))*entryBytes
	}
	if r.spare != nil {
		bytes += int64(len(r.spare.ents)) * entryBytes
	}
	return entries, bytes
}
