package scheduler

import (
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
)

// The fast path: picks that do not grow with the pool.
//
// The plain pick scores every candidate with every scorer (O(N) per pick, and
// the prefix scorer probes every endpoint's table). For the common plan shape
// the fast path finds the same winner without visiting every endpoint:
//
//   - Load scores (queue-scorer, kv-cache-utilization-scorer, declared with
//     LoadScorer) are request-independent. A loadIndex per published snapshot
//     keeps the live endpoints ranked by KVScore (descending, fixed for the
//     snapshot) as the leaves of a segment tree whose nodes hold the min and
//     max waiting queue q (Cycle.Waiting) below them. Handle.Acquire and
//     Handle.Release mark the endpoint's leaf dirty (one atomic OR, no
//     lock); the next pick re-reads the marked endpoints' queues and updates
//     their leaves (O(N/64 + changed · log N), under the index's mutex), so
//     the tree follows in-flight counts without visiting every endpoint. A pick
//     reads lo, hi = min, max q at the root (the min-max normalisation of
//     queue-scorer), then searches the tree depth-first, higher KV first,
//     pruning every subtree whose bound f(min q, max KV) is below the best
//     total found: f is the plain loop's weighted total of an endpoint
//     without a prefix hit, computed with the same float operations in the
//     same order, and it is monotone (non-increasing in q, non-decreasing in
//     KV), so the bound is exact and ties are kept. A subtree whose
//     endpoints all have the same q and KV (min q = max q, equal KV at its
//     ends) is one total: it is taken whole, as a run of tied ranks, and
//     the winner is drawn from the runs by counting (fastScratch.winner).
//     Cost: O(F · log N), F the endpoints on the (q, KV) Pareto front near
//     the best total, plus O(log N) runs per endpoint that differs from its
//     tied neighbours (an idle pool of look-alikes costs O(log N), not N).
//   - Sparse scores (prefix-cache-scorer, declared with SparseScorer) are 0
//     for all but a few endpoints the scorer lists itself (the prefix index
//     keeps a reverse index from a prompt's first block to the endpoints that
//     may hold it). Each listed endpoint is scored in full, as the plain loop
//     would. An endpoint with a non-zero sparse score totals at least its
//     no-hit formula (float addition is monotone), so the winners are the
//     listed endpoints with the best total T plus, when the tree's best equals
//     T, the unlisted endpoints tied there.
//   - When the sparse scorer cannot list its hits cheaply (the prefix index
//     declines when a first block is held by more than an eighth of the pool:
//     a system prompt common to all traffic) and declares ProbeScorer, the
//     search runs with the sparse term at its upper bound in every node's
//     bound (fastProbe): each leaf it reaches is scored exactly (ProbeOne,
//     one probe run on the endpoint's table), and subtrees whose bound is
//     below the best exact total are pruned. Roughly, only the endpoints
//     whose load part is within P·(blocks − matched) of the best are probed
//     (P the sparse weight per block); all of them when every load part ties.
//   - The winner is drawn uniformly among the tied set, as max-score-picker
//     does (not with the same random numbers: the same set, the same odds).
//
// So a pick costs O(hits + N/64 + (F + runs + changed) · log N) instead of
// O(N): hits are the endpoints the sparse scorer lists (each verified on its
// table), N/64 the scan of the dirty-mark words (16 loads at 1024
// endpoints), changed the endpoints whose in-flight count moved since the
// last pick (usually the previous pick's and the requests that ended).
//
// Eligibility (fastPlan, checked once by NewPlan; then per pick): one
// profile, no filters, every scorer a LoadScorer or (at most one)
// SparseScorer with a finite weight >= 0, a picker that declares
// MaxScoreSingle, at least fastMinLive live endpoints (fastMinLoadOnly
// without a sparse scorer; below that the plain loop is as fast), handles not watched by another scheduler's index,
// and per request no subset hint, no Explain, and a sparse scorer able to
// list its hits or, when it declines, to probe (ProbeScorer). Everything
// else runs the plain loop, unchanged.

// LoadKind names a request-independent score the fast path computes itself.
type LoadKind int

const (
	// LoadNone: not a load score.
	LoadNone LoadKind = iota
	// LoadQueue: (max q − q)/(max q − min q) over the candidates, 1 for all
	// when equal, with q = Cycle.Waiting (queue-scorer).
	LoadQueue
	// LoadKV: EndpointState.KVScore (kv-cache-utilization-scorer).
	LoadKV
)

// LoadScorer is implemented by scorers whose Score is exactly one of the
// LoadKind formulas; the fast path then computes it without calling Score.
type LoadScorer interface {
	Scorer
	LoadKind() LoadKind
}

// Hit is one endpoint a SparseScorer scores above 0: Index is its snapshot
// index, Score its score (as Score would write it, before Pick's clamp).
type Hit struct {
	Index int32
	Score float64
}

// SparseScorer is implemented by scorers that score 0 for all but a few
// endpoints and can list those without visiting every endpoint.
//
// ScoreHits appends to hits every endpoint of c.Snap (live or not) whose
// Score would be non-zero for c.Req over the live candidates, with that score,
// and returns ok = true; or returns ok = false when it cannot do that
// cheaply, and the pick then probes (ProbeScorer) or runs the plain loop
// (which calls Score). A
// superset is not allowed: listed scores must equal Score's. It runs
// concurrently like Score and must not block or allocate beyond hits'
// capacity (len(c.Snap.Endpoints)). After ScoreHits returned ok, the scorer's
// PickObserver (if any) must handle any live endpoint as chosen.
type SparseScorer interface {
	Scorer
	ScoreHits(c *Cycle, hits []Hit) ([]Hit, bool)
}

// ProbeScorer is implemented by SparseScorers that, when ScoreHits declines
// (too many endpoints may score above 0 to list them cheaply), can still
// bound and score endpoints one at a time. The fast path then searches the
// load tree with the bound added to every endpoint and scores exactly only
// the endpoints whose bound reaches the best total found.
//
// ProbeBound is called on the cycle right after ScoreHits returned ok =
// false: it returns an upper bound of Score over every endpoint of c.Snap for
// c.Req (as Score would write it, before Pick's clamp) and ok = true, or ok =
// false (the pick then runs the plain loop). ProbeOne then returns the Score
// of live endpoint e exactly (bitwise what Score would write); it is called
// at most once per endpoint per cycle, with the scheduler's index locked: it
// must not block or allocate in steady state. The scorer's PickObserver must
// handle as chosen any endpoint ProbeOne was called on.
type ProbeScorer interface {
	SparseScorer
	ProbeBound(c *Cycle) (float64, bool)
	ProbeOne(c *Cycle, e int32) float64
}

// MaxScorePicker is implemented by pickers; MaxScoreSingle reports whether
// the picker returns exactly one endpoint, the one with the highest total,
// drawn uniformly at random among ties (max-score-picker with
// maxNumOfEndpoints 1).
type MaxScorePicker interface {
	Picker
	MaxScoreSingle() bool
}

// fastMinLive is the pool size from which the fast path is used. Below it
// the plain loop is as cheap. At 16 endpoints the two measured within ±10%
// of each other (in-process, interleaved, min of 80 rounds: default 437 vs
// 473 ns plain, default-unique 635 vs 675, default-churn 580 vs 606, other
// runs closer or reversed): the prompt hash, common to both, is most of
// either.
const fastMinLive = 16

// fastMinLoadOnly is fastMinLive for plans without a sparse scorer
// (queue-kv): their plain loop is cheap enough to stay ahead at 16 endpoints
// (106 vs 119 ns in-process, interleaved), while at 32 the fast path is
// (144 vs 217 ns).
const fastMinLoadOnly = 32

// fastTerm is one weighted scorer of a fast plan, in profile order.
type fastTerm struct {
	kind   LoadKind // LoadNone: the sparse scorer
	w      float64
	sparse SparseScorer
}

// fastPlan is what NewPlan found a plan's single profile to be.
type fastPlan struct {
	terms  []fastTerm
	sparse SparseScorer // nil when none
	probe  ProbeScorer  // sparse as a ProbeScorer; nil when it is not one
}

// newFastPlan returns the fast form of p, or nil when p is not eligible.
func newFastPlan(p *Plan) *fastPlan {
	if len(p.Profiles) != 1 {
		return nil
	}
	pr := p.Profiles[0]
	if len(pr.Filters) != 0 {
		return nil
	}
	if mp, ok := pr.Picker.(MaxScorePicker); !ok || !mp.MaxScoreSingle() {
		return nil
	}
	fp := &fastPlan{}
	for _, ws := range pr.Scorers {
		if !(ws.Weight >= 0) || math.IsInf(ws.Weight, 1) {
			return nil
		}
		if ls, ok := ws.Scorer.(LoadScorer); ok && ls.LoadKind() != LoadNone {
			fp.terms = append(fp.terms, fastTerm{kind: ls.LoadKind(), w: ws.Weight})
			continue
		}
		sp, ok := ws.Scorer.(SparseScorer)
		if !ok || fp.sparse != nil {
			return nil
		}
		fp.sparse = sp
		fp.probe, _ = sp.(ProbeScorer)
		fp.terms = append(fp.terms, fastTerm{w: ws.Weight, sparse: sp})
	}
	return fp
}

// waiting is Cycle.Waiting of e: scraped waiting requests plus the in-flight
// change since the scrape, at least 0.
func waiting(e *EndpointState) float64 {
	v := float64(e.M.Waiting) + float64(e.H.inflight.Load()-e.M.InflightAtScrape)
	if v < 0 {
		return 0
	}
	return v
}

// loadWatch ties a Handle to its leaf in a loadIndex.
type loadWatch struct {
	ix   *loadIndex
	rank int32
}

// loadIndex is the fast path's view of the live endpoints' load scores for
// one published snapshot: ranks by KVScore (descending) and a segment tree of
// min/max q over ranks, updated by the endpoints' Handles.
type loadIndex struct {
	owner *Scheduler
	snap  *Snapshot

	mu      sync.Mutex      // guards q, mn, mx, snap's replacement (reuse)
	dirty   []atomic.Uint64 // by rank: in-flight count changed since the last flush
	n, size int             // live endpoints; leaves (a power of two >= n)
	rankOf  []int32         // snapshot index → rank, -1 when not live
	idxOf   []int32         // rank → snapshot index
	kv      []float64       // by rank, descending
	q       []float64       // by rank: waiting (Cycle.Waiting) as last refreshed
	mn, mx  []float64       // tree nodes 1..2·size−1; leaf of rank r at size+r
	watches []loadWatch
}

// newLoadIndex builds the index of snap's live endpoints and points their
// handles at it (and prev's departed handles at nothing), or moves prev to
// snap when it can (reuse). It returns nil when a handle is watched by
// another scheduler's index (handles shared between schedulers) or appears
// twice in snap: that snapshot then uses the plain loop.
func newLoadIndex(s *Scheduler, snap *Snapshot, prev *loadIndex) *loadIndex {
	if prev != nil && prev.reuse(snap) {
		return prev
	}
	n := len(snap.Live)
	ix := &loadIndex{owner: s, snap: snap, n: n, size: 1}
	for ix.size < n {
		ix.size *= 2
	}
	ix.rankOf = make([]int32, len(snap.Endpoints))
	for i := range ix.rankOf {
		ix.rankOf[i] = -1
	}
	ix.idxOf = rankOrder(snap, prev)
	ix.kv = make([]float64, n)
	ix.q = make([]float64, n)
	ix.mn = make([]float64, 2*ix.size)
	ix.mx = make([]float64, 2*ix.size)
	ix.watches = make([]loadWatch, n)
	ix.dirty = make([]atomic.Uint64, (n+63)/64)
	for r, i := range ix.idxOf {
		ix.rankOf[i] = int32(r)
		ix.kv[r] = snap.Endpoints[i].KVScore
		ix.watches[r] = loadWatch{ix: ix, rank: int32(r)}
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	// Point the handles here first, then read their counts: an Acquire or
	// Release either sees this index (and marks its leaf dirty) or happened
	// before the read below.
	ok := true
	for r, i := range ix.idxOf {
		h := snap.Endpoints[i].H
		for {
			old := h.watch.Load()
			if old != nil && (old.ix.owner != s || old.ix == ix) {
				ok = false // another scheduler's, or a handle listed twice
				break
			}
			if h.watch.CompareAndSwap(old, &ix.watches[r]) {
				break
			}
		}
	}
	if prev != nil {
		for r := range prev.watches {
			h := prev.snap.Endpoints[prev.idxOf[r]].H
			h.watch.CompareAndSwap(&prev.watches[r], nil)
		}
	}
	if !ok {
		for r, i := range ix.idxOf {
			snap.Endpoints[i].H.watch.CompareAndSwap(&ix.watches[r], nil)
		}
		return nil
	}
	for r := range ix.mn[ix.size:] {
		ix.mn[ix.size+r], ix.mx[ix.size+r] = math.Inf(1), math.Inf(-1)
	}
	for r, i := range ix.idxOf {
		q := waiting(&snap.Endpoints[i])
		ix.q[r], ix.mn[ix.size+r], ix.mx[ix.size+r] = q, q, q
	}
	for k := ix.size - 1; k >= 1; k-- {
		ix.mn[k] = min(ix.mn[2*k], ix.mn[2*k+1])
		ix.mx[k] = max(ix.mx[2*k], ix.mx[2*k+1])
	}
	return ix
}

// reuse moves ix to snap when snap has the same endpoints at the same
// indices, the same live set, and KV figures in the same rank order (a
// republish after a scrape, the common case): then only the KV and queue
// figures change, in place, with no allocation and no handle pointer swap.
// Picks still on the previous snapshot then read the new figures: a pick
// racing a publish may see either. Called on the publisher's goroutine (the
// only writer of ix.snap).
func (ix *loadIndex) reuse(snap *Snapshot) bool {
	old := ix.snap
	if len(snap.Endpoints) != len(old.Endpoints) || len(snap.Live) != ix.n {
		return false
	}
	for i := range snap.Endpoints {
		if snap.Endpoints[i].H != old.Endpoints[i].H {
			return false
		}
	}
	for _, i := range snap.Live {
		if ix.rankOf[i] < 0 {
			return false
		}
	}
	eps := snap.Endpoints
	for r := 1; r < ix.n; r++ {
		a, b := ix.idxOf[r-1], ix.idxOf[r]
		if ka, kb := eps[a].KVScore, eps[b].KVScore; !(ka > kb || ka == kb && a < b) {
			return false
		}
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.snap = snap
	for r, i := range ix.idxOf {
		q := waiting(&eps[i])
		ix.kv[r], ix.q[r] = eps[i].KVScore, q
		ix.mn[ix.size+r], ix.mx[ix.size+r] = q, q
	}
	for k := ix.size - 1; k >= 1; k-- {
		ix.mn[k] = min(ix.mn[2*k], ix.mn[2*k+1])
		ix.mx[k] = max(ix.mx[2*k], ix.mx[2*k+1])
	}
	return true
}

// rankOrder returns snap's live endpoints by KVScore, highest first (ties by
// snapshot index). When prev ranked the same live endpoints and their order
// still holds (a republish with unchanged KV figures, the common case) it is
// reused after one O(N) check instead of a sort.
func rankOrder(snap *Snapshot, prev *loadIndex) []int32 {
	eps := snap.Endpoints
	less := func(a, b int32) bool { // a ranks before b
		ka, kb := eps[a].KVScore, eps[b].KVScore
		return ka > kb || ka == kb && a < b
	}
	if prev != nil && len(prev.idxOf) == len(snap.Live) && len(prev.snap.Endpoints) == len(eps) {
		order := slices.Clone(prev.idxOf)
		ok := true
		for r, i := range order {
			if eps[i].H != prev.snap.Endpoints[i].H || !eps[i].Fresh && !snap.AllStale ||
				r > 0 && !less(order[r-1], i) {
				ok = false
				break
			}
		}
		if ok {
			return order
		}
	}
	type kvIdx struct {
		kv float64
		i  int32
	}
	tmp := make([]kvIdx, len(snap.Live))
	for j, i := range snap.Live {
		tmp[j] = kvIdx{eps[i].KVScore, i}
	}
	slices.SortFunc(tmp, func(a, b kvIdx) int {
		switch {
		case a.kv > b.kv || a.kv == b.kv && a.i < b.i:
			return -1
		case a.kv == b.kv && a.i == b.i:
			return 0
		}
		return 1
	})
	order := make([]int32, len(tmp))
	for r, x := range tmp {
		order[r] = x.i
	}
	return order
}

// markDirty records that the endpoint at rank r changed its in-flight count
// (Handle.Acquire, Release): one atomic OR, no lock. The next pick on ix
// re-reads its queue (flush) before deciding.
func (ix *loadIndex) markDirty(r int32) {
	ix.dirty[r>>6].Or(1 << (r & 63))
}

// flush re-reads the queues of the endpoints marked dirty and updates their
// leaves (O(N/64 + changed·log N)). Caller holds ix.mu. A mark set after a
// word was swapped stays for the next flush; one set before it is seen, and
// the count it announces was added before it: q is never older than the
// marks flushed.
func (ix *loadIndex) flush() {
	for w := range ix.dirty {
		if ix.dirty[w].Load() == 0 {
			continue
		}
		for bits := ix.dirty[w].Swap(0); bits != 0; bits &= bits - 1 {
			ix.update(int32(w<<6 + bits0(bits)))
		}
	}
}

// update re-reads the waiting queue of the endpoint at rank r. Caller holds
// ix.mu.
func (ix *loadIndex) update(r int32) {
	q := waiting(&ix.snap.Endpoints[ix.idxOf[r]])
	if q != ix.q[r] {
		ix.q[r] = q
		k := ix.size + int(r)
		ix.mn[k], ix.mx[k] = q, q
		for k /= 2; k >= 1; k /= 2 {
			ix.mn[k] = min(ix.mn[2*k], ix.mn[2*k+1])
			ix.mx[k] = max(ix.mx[2*k], ix.mx[2*k+1])
		}
	}
}

// detach stops ix's handles from updating it (a later snapshot has no index).
func (ix *loadIndex) detach() {
	for r := range ix.watches {
		ix.snap.Endpoints[ix.idxOf[r]].H.watch.CompareAndSwap(&ix.watches[r], nil)
	}
}

// fastScratch is a Cycle's scratch space for the fast path.
type fastScratch struct {
	hits     []Hit
	hitTot   []float64 // totals of hits (NaN: not live, or a repeat)
	best     float64
	ties     []int32  // fastProbe: ranks tied for the best total
	runs     []tieRun // search: runs of ranks tied for the best no-hit total, in rank order
	ntie     int      // the runs' ranks that are not hits': the no-hit winners
	win      []int32  // snapshot indices of the winners (search: the winning hits)
	hitRanks []int32  // the hits' live ranks, each once (sorted once search is done)
	mark     []uint32
	epoch    uint32
	stack    []int32
	pstack   []probeNode // the probing search's stack
	probed   bool        // the last decision probed (ScoreHits declined)
}

// tieRun is a run of consecutive ranks tied for the best no-hit total.
type tieRun struct{ first, n int32 }

// probeNode is a tree node on the probing search's stack with its bound.
type probeNode struct {
	k int32
	b float64
}

// totaler computes one endpoint's weighted total as Pick's loop does: the
// same terms, in profile order, the same float operations (clamp, multiply,
// add), with the queue's min-max bounds of the pick.
type totaler struct {
	terms  []fastTerm
	hi, lo float64
	inv    float64
	eq     bool
}

// totaler flushes pending queue updates and returns the load formula over
// the pool's current queue range. Caller holds ix.mu.
func (ix *loadIndex) totaler(fp *fastPlan) totaler {
	ix.flush()
	t := totaler{terms: fp.terms, lo: ix.mn[1], hi: ix.mx[1]}
	if t.eq = t.hi == t.lo; !t.eq {
		t.inv = 1 / (t.hi - t.lo)
	}
	return t
}

func (t *totaler) total(q, kv, sparse float64) float64 {
	total := 0.0
	for i := range t.terms {
		tm := &t.terms[i]
		var v float64
		switch tm.kind {
		case LoadQueue:
			if t.eq {
				v = 1
			} else {
				v = (t.hi - q) * t.inv
			}
		case LoadKV:
			v = kv
		default:
			v = sparse
		}
		if !(v >= 0) {
			v = 0
		} else if v > 1 {
			v = 1
		}
		total += tm.w * v
	}
	return total
}

// fastPick is the fast path's decision: it returns the primary's snapshot
// index, or ok = false when the request must take the plain loop.
func (s *Scheduler) fastPick(c *Cycle, fp *fastPlan, ix *loadIndex) (int32, bool) {
	if !fastDecide(c, fp, ix) {
		return 0, false
	}
	return c.fast.winner(ix, c.Uint64()%uint64(c.fast.count())), true
}

// count is the size of the tied best set: the winning hits (win) and the
// no-hit winners (ntie ranks in runs, the hits' ranks left out).
func (fs *fastScratch) count() int { return len(fs.win) + fs.ntie }

// winner returns the j-th endpoint (snapshot index) of the tied best set,
// j < count(): the winning hits first, then the no-hit winners in rank
// order, the order in which the set was once listed one by one.
func (fs *fastScratch) winner(ix *loadIndex, j uint64) int32 {
	if j < uint64(len(fs.win)) {
		return fs.win[j]
	}
	return ix.idxOf[fs.tieRank(int(j)-len(fs.win))]
}

// hitsIn returns the bounds in fs.hitRanks (sorted) of the hits' ranks that
// fall inside run.
func (fs *fastScratch) hitsIn(run tieRun) (lo, hi int) {
	lo, _ = slices.BinarySearch(fs.hitRanks, run.first)
	hi, _ = slices.BinarySearch(fs.hitRanks, run.first+run.n)
	return lo, hi
}

// tieRank returns the j-th rank of the runs that is not a hit's (fs.hitRanks,
// sorted), j < ntie: O(runs · log hits).
func (fs *fastScratch) tieRank(j int) int32 {
	for _, run := range fs.runs {
		lo, hi := fs.hitsIn(run)
		if eff := int(run.n) - (hi - lo); j >= eff {
			j -= eff
			continue
		}
		r := run.first + int32(j)
		for _, m := range fs.hitRanks[lo:hi] { // skip the hits at or before r
			if m > r {
				break
			}
			r++
		}
		return r
	}
	panic("scheduler: tieRank beyond the tied set") // a bug: j >= ntie
}

// fastDecide leaves in c.fast.win the snapshot indices of the endpoints tied
// for the best total (what max-score-picker draws from), in c.fast.best that
// total and in c.fast.hitTot the totals of c.fast.hits (NaN for hits that
// are not live or repeat). It returns false when the request must take the
// plain loop.
func fastDecide(c *Cycle, fp *fastPlan, ix *loadIndex) bool {
	fs := &c.fast
	fs.hits = fs.hits[:0]
	fs.probed = false
	var sMax float64 // probing: the sparse score's upper bound
	if fp.sparse != nil {
		if cap(fs.hits) < len(c.Snap.Endpoints) {
			fs.hits = make([]Hit, 0, len(c.Snap.Endpoints))
		}
		var ok bool
		if fs.hits, ok = fp.sparse.ScoreHits(c, fs.hits); !ok {
			if fp.probe == nil {
				return false
			}
			if sMax, ok = fp.probe.ProbeBound(c); !ok || !(sMax >= 0) {
				return false
			}
			fs.probed = true
			fs.hits = fs.hits[:0]
		}
	}
	if cap(fs.hitTot) < cap(fs.hits) {
		fs.hitTot = make([]float64, len(fs.hits), cap(fs.hits))
	}
	fs.hitTot = fs.hitTot[:len(fs.hits)]
	if fs.probed {
		return fastProbe(c, fp, ix, sMax)
	}
	if len(fs.mark) < ix.size {
		fs.mark = make([]uint32, ix.size)
		fs.epoch = 0
	}
	fs.epoch++
	if fs.epoch == 0 {
		clear(fs.mark)
		fs.epoch = 1
	}
	ix.mu.Lock()
	t := ix.totaler(fp)
	// Best total among the hits.
	best := math.Inf(-1)
	fs.win = fs.win[:0]
	fs.hitRanks = fs.hitRanks[:0]
	for j, h := range fs.hits {
		fs.hitTot[j] = math.NaN()
		r := ix.rankOf[h.Index]
		if r < 0 || fs.mark[r] == fs.epoch {
			continue
		}
		fs.mark[r] = fs.epoch
		fs.hitRanks = append(fs.hitRanks, r)
		v := t.total(ix.q[r], ix.kv[r], h.Score)
		fs.hitTot[j] = v
		if v > best {
			best = v
			fs.win = fs.win[:0]
		}
		if v == best {
			fs.win = append(fs.win, h.Index)
		}
	}
	// Best no-hit total over the tree (hits included: theirs is a lower bound).
	nb := ix.search(&t, fs)
	if nb > best {
		best = nb
		fs.win = fs.win[:0]
	}
	fs.ntie = 0
	if nb == best {
		// The runs' ranks win, but for the hits' (their own totals, which
		// are at least nb, are in win when they equal best).
		slices.Sort(fs.hitRanks)
		for _, run := range fs.runs {
			lo, hi := fs.hitsIn(run)
			fs.ntie += int(run.n) - (hi - lo)
		}
	} else {
		fs.runs = fs.runs[:0]
	}
	ix.mu.Unlock()
	fs.best = best
	return fs.count() > 0 // always: the tree holds every live endpoint
}

// search returns the best no-hit total over the live endpoints and leaves the
// ranks that reach it in fs.runs, in rank order. A subtree whose live leaves
// all have the same queue and KV figures (min q = max q, and the KV of its
// first and last live ranks equal: KV is sorted) has one total for all of
// them, so it is taken whole as one run, not leaf by leaf: a pool whose
// endpoints look the same (idle, say) costs O(log N) runs, not N leaves.
// Caller holds ix.mu.
func (ix *loadIndex) search(t *totaler, fs *fastScratch) float64 {
	best := math.Inf(-1)
	fs.runs = fs.runs[:0]
	// Depth-first, left (higher KV) first; a node is pushed with its first
	// rank's offset implied by its position: node k at level L covers ranks
	// (k − 2^L)·width .. +width.
	stack := append(fs.stack[:0], 1)
	for len(stack) > 0 {
		k := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		mn := ix.mn[k]
		if math.IsInf(mn, 1) {
			continue // padding only
		}
		// First rank under k and k's width: shift k down to the leaf level.
		first, width := int(k), 1
		for first < ix.size {
			first *= 2
			width *= 2
		}
		first -= ix.size
		b := t.total(mn, ix.kv[first], 0)
		if b < best {
			continue
		}
		// A leaf, or a subtree of equal leaves: b is the total of each.
		if last := min(first+width, ix.n) - 1; int(k) >= ix.size || mn == ix.mx[k] && ix.kv[first] == ix.kv[last] {
			if b > best {
				best = b
				fs.runs = fs.runs[:0]
			}
			if n := len(fs.runs); n > 0 && int(fs.runs[n-1].first+fs.runs[n-1].n) == first {
				fs.runs[n-1].n += int32(last - first + 1) // adjacent: one run
			} else {
				fs.runs = append(fs.runs, tieRun{first: int32(first), n: int32(last - first + 1)})
			}
			continue
		}
		stack = append(stack, 2*k+1, 2*k) // left popped first
	}
	fs.stack = stack
	return best
}

// fastProbe is fastDecide for a request whose sparse scores ScoreHits could
// not list: every endpoint's total is bounded by its load formula with the
// sparse score at its bound sMax (monotone in each argument, as search's
// bound), so a depth-first search, the child with the higher bound first,
// prunes every subtree whose bound is below the best exact total found and
// scores exactly (ProbeOne) only the leaves it reaches. Ties survive (only
// bounds strictly below the best are pruned). The probed endpoints with a
// non-zero sparse score are left in fs.hits with their totals in fs.hitTot.
func fastProbe(c *Cycle, fp *fastPlan, ix *loadIndex, sMax float64) bool {
	fs := &c.fast
	ix.mu.Lock()
	t := ix.totaler(fp)
	best := math.Inf(-1)
	fs.ties = fs.ties[:0]
	stack := fs.pstack[:0]
	if !math.IsInf(ix.mn[1], 1) {
		stack = append(stack, probeNode{1, t.total(ix.mn[1], ix.kv[0], sMax)})
	}
	for len(stack) > 0 {
		nd := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if nd.b < best {
			continue
		}
		k := int(nd.k)
		if k >= ix.size { // leaf: score it exactly
			r := k - ix.size
			e := ix.idxOf[r]
			sv := fp.probe.ProbeOne(c, e)
			v := t.total(ix.q[r], ix.kv[r], sv)
			if sv != 0 {
				fs.hits = append(fs.hits, Hit{Index: e, Score: sv})
				fs.hitTot = append(fs.hitTot, v)
			}
			if v > best {
				best = v
				fs.ties = fs.ties[:0]
			}
			if v == best {
				fs.ties = append(fs.ties, int32(r))
			}
			continue
		}
		// First ranks of the children: k's first rank, and that plus half
		// k's width.
		first, width := k, 1
		for first < ix.size {
			first *= 2
			width *= 2
		}
		first -= ix.size
		l, rt := probeNode{k: int32(2 * k), b: math.Inf(-1)}, probeNode{k: int32(2*k + 1), b: math.Inf(-1)}
		if !math.IsInf(ix.mn[l.k], 1) {
			l.b = t.total(ix.mn[l.k], ix.kv[first], sMax)
		}
		if !math.IsInf(ix.mn[rt.k], 1) {
			rt.b = t.total(ix.mn[rt.k], ix.kv[first+width/2], sMax)
		}
		// Higher bound popped first (left on equal bounds).
		if rt.b > l.b {
			l, rt = rt, l
		}
		if rt.b >= best && !math.IsInf(rt.b, -1) {
			stack = append(stack, rt)
		}
		if l.b >= best && !math.IsInf(l.b, -1) {
			stack = append(stack, l)
		}
	}
	fs.pstack = stack
	fs.win = fs.win[:0]
	for _, r := range fs.ties {
		fs.win = append(fs.win, ix.idxOf[r])
	}
	fs.runs, fs.ntie = fs.runs[:0], 0 // every winner is in win
	ix.mu.Unlock()
	fs.best = best
	return len(fs.win) > 0
}

// bits0 is the index of the lowest set bit of x (x != 0).
func bits0(x uint64) int { return bits.TrailingZeros64(x) }
