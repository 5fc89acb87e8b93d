package scorers

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guards: what the registry checks at start-up, checked at compile time.
var (
	_ scheduler.Scorer           = (*PrefixScorer)(nil)
	_ scheduler.PickObserver     = (*PrefixScorer)(nil)
	_ scheduler.CycleStater      = (*PrefixScorer)(nil)
	_ scheduler.SnapshotPreparer = (*PrefixScorer)(nil)
	_ scheduler.StatsReporter    = (*PrefixScorer)(nil)
	_ scheduler.SparseScorer     = (*PrefixScorer)(nil)
	_ scheduler.ProbeScorer      = (*PrefixScorer)(nil)
)

// PrefixScorerType scores how much of the prompt's leading blocks an endpoint
// has probably cached: matched leading blocks ÷ prompt blocks.
//
// Blocks are blockSizeTokens×4 bytes of the prompt (bytes straight from the
// request body; a block may straddle two prompt spans). Each whole block is
// hashed on its own with blockHash (prefixhash.go: a keyed multiply-fold,
// the wyhash construction) under a key drawn at random for each scorer
// instance, then the hashes are chained: h(i) = chain(h(i−1), blockHash(block
// i)), starting from hash/maphash of the model name under another per-instance
// key (mixed with cache_salt when given), so h(i) identifies the whole prefix
// up to block i, like GIE's chained block hash. The values differ from GIE's
// and between processes (the index is private to this process): the key is
// what keeps a client from crafting prompts whose hashes pile into one run of
// index slots (with an unkeyed hash, 25,000 crafted prompts made picks 80×
// slower). For the default 64-byte blocks the fold is written out in
// hashPrompt's loop, where a call would spill every register, and the chain
// runs in the same loop: a 2 KB prompt hashes in ~140 ns (BenchmarkHashPrompt;
// ~210 ns with hash/maphash per block, which uses the CPU's AES instructions
// but costs a call per block; BenchmarkBlockHash compares the block hashes
// alone: maphash ~178 ns, the fold as a call ~150 ns, xxhash64 ~305 ns per
// 2 KB on this project's shared 2-vCPU VM). At most maxPrefixBlocksToMatch
// blocks are considered (maxPrefixTokensToMatch / blockSizeTokens when
// maxPrefixTokensToMatch is set, GIE's token bound). The deprecated blockSize
// is ignored, as GIE v1.5.0 ignores it (a note says so). Each endpoint
// remembers the blocks of the prompts sent to it, bounded by
// lruCapacityPerServer blocks, or with autoTune by the server's num_gpu_blocks
// × block_size / blockSizeTokens when it reports them (GIE's autoTune also
// hashes with the server's block_size; fastepp keeps blockSizeTokens). The
// chosen endpoint's table is updated inside Pick (Picked), so the next request
// with the same prefix sees it. The tables aligned with a snapshot's endpoint
// indices are prepared when the snapshot is published (PrepareSnapshot), so a
// pick never builds them.
//
// fullScoreMatchBlocks (ours; default 0 = GIE behaviour) fixes GIE issue 2561,
// where a one-block prompt matching one block scores 1.0 and all short prompts
// pile onto one endpoint: the score becomes matched ÷ max(promptBlocks,
// fullScoreMatchBlocks), so a short match weighs by its absolute length.
const PrefixScorerType = "prefix-cache-scorer"

// Defaults of the GIE prefix plugin.
const (
	defaultBlockSizeTokens = 16
	defaultMaxBlocks       = 256
	defaultLRUCapacity     = 31250
	bytesPerToken          = 4
)

// PrefixConfig are the prefix-cache-scorer parameters (all but
// FullScoreMatchBlocks are also approx-prefix-cache-producer's).
type PrefixConfig struct {
	BlockSizeTokens        int
	MaxPrefixBlocksToMatch int
	// MaxPrefixTokensToMatch, when > 0, bounds the blocks considered by
	// tokens instead: MaxPrefixTokensToMatch / BlockSizeTokens blocks (GIE's
	// meaning; it takes precedence over MaxPrefixBlocksToMatch).
	MaxPrefixTokensToMatch int
	LRUCapacityPerServer   int
	AutoTune               bool
	FullScoreMatchBlocks   int
}

// MaxBlocks is the number of leading prompt blocks considered:
// MaxPrefixTokensToMatch / BlockSizeTokens when MaxPrefixTokensToMatch is
// set, else MaxPrefixBlocksToMatch.
func (c PrefixConfig) MaxBlocks() int {
	if c.MaxPrefixTokensToMatch > 0 && c.BlockSizeTokens > 0 {
		return c.MaxPrefixTokensToMatch / c.BlockSizeTokens
	}
	return c.MaxPrefixBlocksToMatch
}

// sameIndex reports whether c and o describe the same prefix index (every
// parameter but the scorer-only FullScoreMatchBlocks).
func (c PrefixConfig) sameIndex(o PrefixConfig) bool {
	c.FullScoreMatchBlocks, o.FullScoreMatchBlocks = 0, 0
	return c == o
}

// String lists the index parameters as a config would spell them.
func (c PrefixConfig) String() string {
	return fmt.Sprintf("blockSizeTokens %d, maxPrefixBlocksToMatch %d, maxPrefixTokensToMatch %d, lruCapacityPerServer %d, autoTune %t",
		c.BlockSizeTokens, c.MaxPrefixBlocksToMatch, c.MaxPrefixTokensToMatch, c.LRUCapacityPerServer, c.AutoTune)
}

// DefaultPrefixConfig is GIE's default.
func DefaultPrefixConfig() PrefixConfig {
	return PrefixConfig{
		BlockSizeTokens:        defaultBlockSizeTokens,
		MaxPrefixBlocksToMatch: defaultMaxBlocks,
		LRUCapacityPerServer:   defaultLRUCapacity,
		AutoTune:               true,
	}
}

// PrefixScorer is the prefix-cache-scorer plugin; its index is per instance.
type PrefixScorer struct {
	base
	cfg       PrefixConfig
	blockSize int          // bytes
	maxBlocks int          // cfg.MaxBlocks()
	key       maphash.Seed // per instance, secret: keys the model name's hash
	bkey      blockKey     // per instance, secret: keys every block hash
	slot      int
	notes     []string // how the parameters were read (Noter)

	// mu guards tables and stamp; only PrepareSnapshot (the publisher) and
	// AppendStats take it, never a pick.
	mu     sync.Mutex
	tables map[uint32]*prefixTable // by Handle.ID
	stamp  uint64                  // PrepareSnapshot calls, to find tables that left

	// Prompt blocks of picked requests / of those, blocks the chosen
	// endpoint already had: the index hit ratio.
	lookups, hits atomic.Uint64

	// rev maps a prompt's first block to the endpoints that may hold it
	// (ScoreHits, the scheduler's fast path).
	rev prefixRev
}

// prefixView aligns tables with one snapshot's endpoint indices; every
// endpoint of the snapshot has a table. Made by PrepareSnapshot, read-only.
type prefixView struct {
	tables []*prefixTable
	ids    []uint32         // Handle IDs by snapshot index
	byID   map[uint32]int32 // snapshot index by Handle ID
}

// inPrev flags a match count whose blocks were partly found only in the
// previous generation (they must be touched on insert).
const inPrev = int32(1) << 30

// prefixState is per-cycle scratch: the prompt's block hashes and matches.
type prefixState struct {
	carry   []byte // a block straddling two spans
	hashes  []uint64
	matched []int32 // per snapshot index, valid for this cycle's candidates
	view    *prefixView
	// sparse: ScoreHits (not match) scored this cycle; matched is then valid
	// for the endpoints in hitIdx only, every other endpoint matched 0.
	sparse bool
	hitIdx []int32
	ids    []uint32 // reverse index lookup scratch
	// declined: ScoreHits declined this cycle (hashes, view and matched are
	// set for ProbeBound and ProbeOne).
	declined bool
}

func registerPrefix(r *scheduler.Registry) {
	r.MustRegister(PrefixScorerType, scheduler.Factory{
		Kind:   scheduler.KindScorer,
		Proto:  (*PrefixScorer)(nil),
		Params: append(prefixIndexParams(), "fullScoreMatchBlocks"),
		Doc:    "prefers endpoints that probably cached the prompt's prefix",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			cfg, notes, err := readPrefixConfig(p)
			if err != nil {
				return nil, err
			}
			if cfg.FullScoreMatchBlocks, err = p.Int("fullScoreMatchBlocks", 0); err != nil {
				return nil, err
			}
			s, err := NewPrefixScorer(name, cfg)
			if err != nil {
				return nil, err
			}
			s.notes = notes
			return s, nil
		},
	})
}

// prefixIndexParams are the parameters GIE's prefix plugins share
// (prefix-cache-scorer and approx-prefix-cache-producer), in the order they
// are read and printed.
func prefixIndexParams() []string {
	return []string{"blockSizeTokens", "blockSize", "maxPrefixBlocksToMatch", "maxPrefixTokensToMatch", "lruCapacityPerServer", "autoTune"}
}

// readPrefixConfig reads the parameters of prefixIndexParams with GIE's
// defaults. The deprecated blockSize (characters per block) is read, so a
// value of the wrong type is an error, and ignored as GIE v1.5.0 ignores it:
// its blocks are blockSizeTokens tokens (default 16) whether or not
// blockSize is given. A note says so.
func readPrefixConfig(p scheduler.Params) (PrefixConfig, []string, error) {
	cfg := DefaultPrefixConfig()
	var notes []string
	var err error
	if cfg.BlockSizeTokens, err = p.Int("blockSizeTokens", cfg.BlockSizeTokens); err != nil {
		return cfg, nil, err
	}
	if p.Has("blockSize") {
		b, err := p.Int("blockSize", 0)
		if err != nil {
			return cfg, nil, err
		}
		if p.Has("blockSizeTokens") {
			notes = append(notes, fmt.Sprintf("blockSize %d (deprecated, in characters) is ignored because blockSizeTokens is set, as in GIE; blocks are %d tokens", b, cfg.BlockSizeTokens))
		} else {
			notes = append(notes, fmt.Sprintf("blockSize %d (deprecated, in characters) is ignored, as GIE v1.5.0 ignores it; blocks are blockSizeTokens = %d tokens; write blockSizeTokens: %d for blocks of %d characters", b, cfg.BlockSizeTokens, max(b/bytesPerToken, 1), max(b/bytesPerToken, 1)*bytesPerToken))
		}
	}
	if cfg.MaxPrefixBlocksToMatch, err = p.Int("maxPrefixBlocksToMatch", cfg.MaxPrefixBlocksToMatch); err != nil {
		return cfg, nil, err
	}
	if cfg.MaxPrefixTokensToMatch, err = p.Int("maxPrefixTokensToMatch", 0); err != nil {
		return cfg, nil, err
	}
	if cfg.LRUCapacityPerServer, err = p.Int("lruCapacityPerServer", cfg.LRUCapacityPerServer); err != nil {
		return cfg, nil, err
	}
	if cfg.AutoTune, err = p.Bool("autoTune", cfg.AutoTune); err != nil {
		return cfg, nil, err
	}
	return cfg, notes, cfg.validate()
}

// validate checks the parameters; errors name the parameter.
func (c PrefixConfig) validate() error {
	const maxBlocks = 1 << 20
	switch {
	case c.BlockSizeTokens < 1 || c.BlockSizeTokens > 1<<20:
		return fmt.Errorf("blockSizeTokens: expected 1..1048576 tokens, found %d", c.BlockSizeTokens)
	case c.MaxPrefixBlocksToMatch < 1 || c.MaxPrefixBlocksToMatch > maxBlocks:
		return fmt.Errorf("maxPrefixBlocksToMatch: expected 1..%d, found %d", maxBlocks, c.MaxPrefixBlocksToMatch)
	case c.MaxPrefixTokensToMatch < 0:
		return fmt.Errorf("maxPrefixTokensToMatch: expected 0 (use maxPrefixBlocksToMatch) or a number of tokens, found %d", c.MaxPrefixTokensToMatch)
	case c.MaxPrefixTokensToMatch > 0 && c.MaxPrefixTokensToMatch < c.BlockSizeTokens:
		return fmt.Errorf("maxPrefixTokensToMatch: expected 0 (use maxPrefixBlocksToMatch) or at least one block of blockSizeTokens = %d tokens, found %d (no block would be matched)", c.BlockSizeTokens, c.MaxPrefixTokensToMatch)
	case c.MaxBlocks() > maxBlocks:
		return fmt.Errorf("maxPrefixTokensToMatch: expected at most %d blocks of %d tokens (%d tokens), found %d", maxBlocks, c.BlockSizeTokens, maxBlocks*c.BlockSizeTokens, c.MaxPrefixTokensToMatch)
	case c.LRUCapacityPerServer < 1 || c.LRUCapacityPerServer > 1<<26:
		return fmt.Errorf("lruCapacityPerServer: expected 1..67108864 blocks, found %d", c.LRUCapacityPerServer)
	case c.FullScoreMatchBlocks < 0:
		return fmt.Errorf("fullScoreMatchBlocks: expected 0 (off) or a positive number of blocks, found %d", c.FullScoreMatchBlocks)
	}
	return nil
}

// NewPrefixScorer validates cfg and returns a scorer with an empty index.
func NewPrefixScorer(name string, cfg PrefixConfig) (*PrefixScorer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &PrefixScorer{
		base:   newBase(PrefixScorerType, name),
		key:    maphash.MakeSeed(),
		bkey:   newBlockKey(),
		tables: map[uint32]*prefixTable{},
	}
	p.rev.holds = p.holds
	p.setConfig(cfg)
	return p, nil
}

// setConfig sets the parameters of a scorer whose index is still empty (at
// construction, or when an approx-prefix-cache-producer binds it).
func (p *PrefixScorer) setConfig(cfg PrefixConfig) {
	p.cfg = cfg
	p.blockSize = cfg.BlockSizeTokens * bytesPerToken
	p.maxBlocks = cfg.MaxBlocks()
}

// Notes implements Noter: how the parameters were read.
func (p *PrefixScorer) Notes() []string { return p.notes }

// PrepareSnapshot implements scheduler.SnapshotPreparer: it aligns a table
// with each endpoint of snap (creating tables for new endpoints, applying
// autoTune capacities from the latest metrics) and forgets endpoints that
// left the pool.
func (p *PrefixScorer) PrepareSnapshot(snap *scheduler.Snapshot, prev any) any {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stamp++
	v := &prefixView{
		tables: make([]*prefixTable, len(snap.Endpoints)),
		ids:    make([]uint32, len(snap.Endpoints)),
	}
	same := false // the same endpoints at the same indices as prev
	if pv, _ := prev.(*prefixView); pv != nil && len(pv.ids) == len(snap.Endpoints) {
		same = true
		for i := range snap.Endpoints {
			if pv.ids[i] != snap.Endpoints[i].H.ID() {
				same = false
				break
			}
		}
		if same {
			v.byID = pv.byID // read-only once built: share it
		}
	}
	if !same {
		v.byID = make(map[uint32]int32, len(snap.Endpoints))
	}
	for i := range snap.Endpoints {
		e := &snap.Endpoints[i]
		v.ids[i] = e.H.ID()
		if !same {
			v.byID[e.H.ID()] = int32(i)
		}
		t := p.tables[e.H.ID()]
		if t == nil {
			t = newPrefixTable(p.capacityFor(&e.M))
			p.tables[e.H.ID()] = t
		} else {
			t.setCapacity(p.capacityFor(&e.M))
		}
		t.stamp = p.stamp
		v.tables[i] = t
	}
	if len(p.tables) > len(snap.Endpoints) {
		for id, t := range p.tables {
			if t.stamp != p.stamp {
				delete(p.tables, id)
			}
		}
	}
	return v
}

// Config returns the scorer's parameters.
func (p *PrefixScorer) Config() PrefixConfig { return p.cfg }

// NewCycleState implements scheduler.CycleStater.
func (p *PrefixScorer) NewCycleState() any {
	st := &prefixState{hashes: make([]uint64, 0, 64)}
	return st
}

// SetSlot implements scheduler.Stateful.
func (p *PrefixScorer) SetSlot(slot int) { p.slot = slot }

// Score implements scheduler.Scorer.
func (p *PrefixScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	st := c.State(p.slot).(*prefixState)
	v, _ := c.Prepared(p.slot).(*prefixView)
	nb := p.match(st, v, c.Req, cands)
	if v == nil || nb == 0 { // no index to consult, or no whole block
		clear(out)
		return
	}
	denom := float64(max(nb, p.cfg.FullScoreMatchBlocks))
	for i, e := range cands {
		out[i] = float64(st.matched[e]&^inPrev) / denom
	}
}

// match hashes r's prompt into st and, for each candidate, counts the leading
// blocks its table in v holds: st.matched[e] by snapshot index, flagged
// inPrev when some were found only in the previous generation. It returns
// the number of prompt blocks (0 when v is nil: no index to consult). Shared
// by Score and the prefix-cache-affinity-filter; no allocation in steady
// state.
func (p *PrefixScorer) match(st *prefixState, v *prefixView, r *scheduler.Request, cands []int32) int {
	st.view, st.sparse, st.declined = v, false, false
	if v == nil {
		st.hashes = st.hashes[:0]
		return 0
	}
	st.hashes = p.hashPrompt(st, r)
	if cap(st.matched) < len(v.tables) {
		st.matched = make([]int32, len(v.tables))
	}
	st.matched = st.matched[:len(v.tables)]
	nb := len(st.hashes)
	if nb == 0 {
		for _, e := range cands {
			st.matched[e] = 0
		}
		return 0
	}
	for _, e := range cands {
		st.matched[e] = matchTable(v.tables[e], st.hashes)
	}
	return nb
}

// matchTable counts the leading hashes t holds, flagged inPrev when some
// were found only in the previous generation.
func matchTable(t *prefixTable, hashes []uint64) int32 {
	// One load of each generation and of its tag per endpoint, not per
	// block; the current generation's probe is written out (hashSet.contains
	// as a call costs a third of a matched block's time).
	cur, prev := t.cur.Load(), t.prev.Load()
	tag, slots, mask := cur.tag.Load(), cur.slots, cur.mask
	m, flags := 0, int32(0)
	for ; m < len(hashes); m++ {
		h := tagged(hashes[m], tag)
		i := h & mask
		for probes := uint64(0); ; probes++ {
			v := slots[i].Load()
			if v == h {
				break
			}
			if v&tagBits != tag || probes == mask {
				if prev == nil || !prev.contains(hashes[m]) {
					return int32(m) | flags
				}
				flags = inPrev
				break
			}
			i = (i + 1) & mask
		}
	}
	return int32(m) | flags
}

// ScoreHits implements scheduler.SparseScorer: the endpoints whose score is
// above 0 are those holding the prompt's first block, which the reverse index
// lists (a superset, each verified on its table, so the scores are Score's
// exactly). It declines (false) when more than an eighth of the pool (at
// least 8 endpoints) may hold the first block: probing them one by one would
// cost about what the plain loop does (the fast path then probes only the
// endpoints its bound cannot exclude: ProbeBound, ProbeOne). Cost: the prompt
// hash plus one probe run per listed endpoint.
func (p *PrefixScorer) ScoreHits(c *scheduler.Cycle, hits []scheduler.Hit) ([]scheduler.Hit, bool) {
	st := c.State(p.slot).(*prefixState)
	v, _ := c.Prepared(p.slot).(*prefixView)
	st.view, st.sparse, st.declined = v, true, false
	st.hitIdx = st.hitIdx[:0]
	if v == nil {
		st.hashes = st.hashes[:0]
		return hits, true
	}
	st.hashes = p.hashPrompt(st, c.Req)
	nb := len(st.hashes)
	if nb == 0 {
		return hits, true
	}
	if cap(st.matched) < len(v.tables) {
		st.matched = make([]int32, len(v.tables))
	}
	st.matched = st.matched[:len(v.tables)]
	ids, ok := p.rev.lookup(st.hashes[0], st.ids[:0], max(8, len(v.tables)/8))
	st.ids = ids[:0]
	if !ok {
		st.sparse, st.declined = false, true
		return hits, false
	}
	denom := float64(max(nb, p.cfg.FullScoreMatchBlocks))
	for _, id := range ids {
		e, ok := v.byID[id]
		if !ok {
			continue
		}
		m := matchTable(v.tables[e], st.hashes)
		if m&^inPrev == 0 {
			continue
		}
		st.matched[e] = m
		st.hitIdx = append(st.hitIdx, e)
		hits = append(hits, scheduler.Hit{Index: e, Score: float64(m&^inPrev) / denom})
	}
	return hits, true
}

// ProbeBound implements scheduler.ProbeScorer: after ScoreHits declined (a
// crowded first block), no endpoint scores more than all prompt blocks
// matched, nb ÷ max(nb, fullScoreMatchBlocks). From here on matched is valid
// for the endpoints ProbeOne listed in hitIdx (with a non-zero match); every
// other endpoint is recorded as matching 0, and only probed endpoints may be
// chosen.
func (p *PrefixScorer) ProbeBound(c *scheduler.Cycle) (float64, bool) {
	st := c.State(p.slot).(*prefixState)
	if !st.declined || st.view == nil || len(st.hashes) == 0 {
		return 0, false
	}
	st.declined = false
	st.sparse = true
	st.hitIdx = st.hitIdx[:0]
	if cap(st.hitIdx) < len(st.view.tables) {
		st.hitIdx = make([]int32, 0, len(st.view.tables))
	}
	nb := len(st.hashes)
	return float64(nb) / float64(max(nb, p.cfg.FullScoreMatchBlocks)), true
}

// ProbeOne implements scheduler.ProbeScorer: endpoint e's Score, by probing
// its table as match does (one probe run).
func (p *PrefixScorer) ProbeOne(c *scheduler.Cycle, e int32) float64 {
	st := c.State(p.slot).(*prefixState)
	m := matchTable(st.view.tables[e], st.hashes)
	st.matched[e] = m
	if m&^inPrev == 0 {
		return 0
	}
	st.hitIdx = append(st.hitIdx, e)
	nb := len(st.hashes)
	return float64(m&^inPrev) / float64(max(nb, p.cfg.FullScoreMatchBlocks))
}

// holds reports whether the endpoint with Handle ID id holds h now (the
// reverse index's rebuilds).
func (p *PrefixScorer) holds(id uint32, h uint64) bool {
	p.mu.Lock()
	t := p.tables[id]
	p.mu.Unlock()
	return t != nil && t.Contains(h)
}

// Picked records the prompt's blocks on the chosen endpoint.
func (p *PrefixScorer) Picked(c *scheduler.Cycle, chosen int32) {
	p.record(c.State(p.slot).(*prefixState), chosen)
}

// record inserts the blocks match found in st into chosen's table (chosen
// must be one of the candidates match saw).
func (p *PrefixScorer) record(st *prefixState, chosen int32) {
	if len(st.hashes) == 0 || st.view == nil {
		return
	}
	mv := st.matched[chosen]
	if st.sparse && !slices.Contains(st.hitIdx, chosen) {
		mv = 0
	}
	m := mv &^ inPrev
	p.lookups.Add(uint64(len(st.hashes)))
	p.hits.Add(uint64(m))
	t := st.view.tables[chosen]
	if mv&inPrev != 0 {
		t.Insert(st.hashes) // touch the blocks found in the old generation
	} else if int(m) < len(st.hashes) {
		t.InsertNew(st.hashes[m:]) // the matched prefix is already current
	}
	if m == 0 || mv&inPrev != 0 {
		// The first block is new or touched here: keep the reverse index's
		// invariant (a table holding h(0) is listed under it). When it was
		// already current, it was listed when it was inserted.
		p.rev.add(st.hashes[0], st.view.ids[chosen])
	}
}

// hashPrompt fills st.hashes with the prefix hash at the end of each whole
// block of the prompt (spans concatenated), up to PrefixConfig.MaxBlocks:
// h(i) = chain(h(i−1), blockHash(bkey, block i)), h(−1) = maphash of the
// model name (and cache_salt). Whole blocks inside one span are hashed
// straight from the body; a block that straddles two spans is assembled in a
// small buffer.
func (p *PrefixScorer) hashPrompt(st *prefixState, r *scheduler.Request) []uint64 {
	hs := st.hashes[:0]
	h := maphash.String(p.key, r.Model)
	if len(r.CacheSalt) > 0 {
		h = chain(h, maphash.Bytes(p.key, r.CacheSalt))
	}
	bs := p.blockSize
	limit := p.maxBlocks
	if cap(st.carry) < bs {
		st.carry = make([]byte, 0, bs)
	}
	carry := st.carry[:0]
	for _, sp := range r.Spans {
		if sp.Start < 0 || sp.End > len(r.Body) || sp.Start >= sp.End {
			continue
		}
		b := r.Body[sp.Start:sp.End]
		if len(carry) > 0 {
			k := min(bs-len(carry), len(b))
			carry = append(carry, b[:k]...)
			b = b[k:]
			if len(carry) < bs {
				continue
			}
			if len(hs) >= limit {
				break
			}
			h = chain(h, blockHash(&p.bkey, carry))
			hs = append(hs, nonZero(h))
			carry = carry[:0]
		}
		if bs == 64 {
			// hash64, written out: a call here spills every register.
			k := &p.bkey
			for len(b) >= 64 && len(hs) < limit {
				w := b[:64:64]
				h1, l1 := bits.Mul64(binary.LittleEndian.Uint64(w[0:])^k[0], binary.LittleEndian.Uint64(w[8:])^k[1])
				h2, l2 := bits.Mul64(binary.LittleEndian.Uint64(w[16:])^k[2], binary.LittleEndian.Uint64(w[24:])^k[3])
				h3, l3 := bits.Mul64(binary.LittleEndian.Uint64(w[32:])^k[4], binary.LittleEndian.Uint64(w[40:])^k[5])
				h4, l4 := bits.Mul64(binary.LittleEndian.Uint64(w[48:])^k[6], binary.LittleEndian.Uint64(w[56:])^k[7])
				h = chain(h, foldMix((h1^l1)+(h2^l2)+(h3^l3)+(h4^l4)+64, k[8]))
				hs = append(hs, nonZero(h))
				b = b[64:]
			}
		}
		for len(b) >= bs && len(hs) < limit {
			h = chain(h, blockHash(&p.bkey, b[:bs]))
			hs = append(hs, nonZero(h))
			b = b[bs:]
		}
		if len(hs) >= limit {
			break
		}
		carry = append(carry, b...)
	}
	st.carry = carry[:0]
	return hs
}

// chain mixes the previous prefix hash with the next block's hash. It is a
// bijection in either argument when the other is fixed (XOR, then a multiply
// by an odd constant), so no two different blocks after the same prefix
// collide, and order matters. One multiply: this is the serial part of
// hashing a prompt (the block hashes are independent), and two multiplies
// cost ~40 ns more per 2 KB prompt. The block hashes are keyed and uniform,
// so the low bits (the index slot) are as random as theirs.
func chain(prev, block uint64) uint64 {
	return (prev ^ block) * 0x9E3779B97F4A7C15
}

// nonZero sets the top bit: 0 marks an empty index slot, and table slots are
// chosen by the low bits, so this costs one bit of the 64 and no branch.
func nonZero(h uint64) uint64 { return h | 1<<63 }

// capacityFor is lruCapacityPerServer, or with autoTune the server's cache in
// our blocks when it reports num_gpu_blocks and block_size.
func (p *PrefixScorer) capacityFor(m *scheduler.Metrics) int {
	if p.cfg.AutoTune && m.NumGPUBlocks > 0 && m.BlockSize > 0 {
		return max(1, m.NumGPUBlocks*m.BlockSize/p.cfg.BlockSizeTokens)
	}
	return p.cfg.LRUCapacityPerServer
}

// PrefixStats describes the index for metrics.
type PrefixStats struct {
	Endpoints     int
	StoredBlocks  int64
	Bytes         int64
	LookupBlocks  uint64
	MatchedBlocks uint64
}

// HitRatio is matched ÷ looked-up blocks of picked requests (0 before any).
func (s PrefixStats) HitRatio() float64 {
	if s.LookupBlocks == 0 {
		return 0
	}
	return float64(s.MatchedBlocks) / float64(s.LookupBlocks)
}

// IndexStats reports the index size and lookup counters.
func (p *PrefixScorer) IndexStats() PrefixStats {
	// The reverse index first, outside p.mu: its rebuilds take p.mu inside
	// its own lock (prefixRev.holds), so the order is rev.mu, then p.mu.
	_, revBytes := p.rev.size()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PrefixStats{Endpoints: len(p.tables), LookupBlocks: p.lookups.Load(), MatchedBlocks: p.hits.Load(), Bytes: revBytes}
	for _, t := range p.tables {
		s.StoredBlocks += t.stored.Load()
		s.Bytes += t.bytes.Load()
	}
	return s
}

// AppendStats implements scheduler.StatsReporter with GIE's prefix indexer
// metric names and ours.
func (p *PrefixScorer) AppendStats(dst []scheduler.Stat) []scheduler.Stat {
	s := p.IndexStats()
	return append(dst,
		scheduler.Stat{Name: "inference_extension_prefix_indexer_size", Help: "Blocks stored in the prefix index.", Value: float64(s.StoredBlocks)},
		scheduler.Stat{Name: "inference_extension_prefix_indexer_hit_ratio", Help: "Share of picked requests' prompt blocks the chosen endpoint already had.", Value: s.HitRatio()},
		scheduler.Stat{Name: "fastepp_prefix_indexer_bytes", Help: "Memory held by the prefix index (tables and reverse index).", Value: float64(s.Bytes)},
	)
}
