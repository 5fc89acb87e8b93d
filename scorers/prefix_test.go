package scorers

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

func newPrefix(t testing.TB, cfg PrefixConfig) *PrefixScorer {
	t.Helper()
	p, err := NewPrefixScorer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// prefixRig runs picks through a prefix-only plan over n idle endpoints.
type prefixRig struct {
	p      *PrefixScorer
	s      *scheduler.Scheduler
	c      *scheduler.Cycle
	states []scheduler.EndpointState
}

func newRig(t testing.TB, cfg PrefixConfig, n int) *prefixRig {
	p := newPrefix(t, cfg)
	plan, err := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
		Name: "p", Scorers: []scheduler.WeightedScorer{{Scorer: p, Weight: 1}}, Picker: NewMaxScorePicker(1),
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r := &prefixRig{p: p, s: scheduler.New(plan), states: endpoints(now, make([]scheduler.Metrics, n)...)}
	r.s.Publish(scheduler.NewSnapshot(r.states, now, 0))
	r.c = r.s.NewCycle()
	return r
}

// pick returns the chosen endpoint name and every endpoint's prefix score.
func (r *prefixRig) pick(t testing.TB, req *scheduler.Request) (string, map[string]float64) {
	t.Helper()
	req.Explain = true
	res, err := r.s.Pick(r.c, req)
	if err != nil {
		t.Fatal(err)
	}
	res.Release()
	sc := map[string]float64{}
	for _, e := range res.Explain {
		sc[e.Endpoint[:2]] = e.Scores[0].Score
	}
	return res.Endpoints[0].Name, sc
}

func text(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return b
}

func req(model string, prompt []byte) *scheduler.Request {
	r := &scheduler.Request{Model: model}
	r.SetPrompt(prompt)
	return r
}

func TestPrefixScoreFormula(t *testing.T) {
	cfg := DefaultPrefixConfig() // 16 tokens × 4 = 64-byte blocks
	r := newRig(t, cfg, 4)
	p := text(64*10, 1)
	first, _ := r.pick(t, req("m", p))
	// Same prompt again: the winner has all 10 blocks (seen synchronously).
	second, sc := r.pick(t, req("m", p))
	if second != first || sc[first] != 1 {
		t.Fatalf("repeat went to %s (score %v), want %s with 1.0", second, sc[first], first)
	}
	for ep, v := range sc {
		if ep != first && v != 0 {
			t.Errorf("%s scores %v for a prompt it never saw", ep, v)
		}
	}
	cases := []struct {
		name   string
		prompt []byte
		model  string
		want   float64
	}{
		{"first 4 of 8 blocks", append(append([]byte{}, p[:64*4]...), text(64*4, 2)...), "m", 4.0 / 8},
		{"whole 10 of 20", append(append([]byte{}, p...), text(640, 3)...), "m", 10.0 / 20},
		{"partial last block ignored", p[:64*3+10], "m", 1},
		{"other model: no match", p, "other", 0},
		{"different first block", append(text(64, 4), p[64:]...), "m", 0},
		{"shorter than a block", p[:63], "m", 0},
		{"empty prompt", nil, "m", 0},
	}
	for _, tc := range cases {
		// Score without picking (the pick would record the prompt): use a
		// fresh cycle on the same scorer via a rig sharing the index.
		_, sc := r.pick(t, req(tc.model, tc.prompt))
		if sc[first] != tc.want {
			t.Errorf("%s: score on %s = %v, want %v", tc.name, first, sc[first], tc.want)
		}
	}
}

func TestPrefixCacheSalt(t *testing.T) {
	r := newRig(t, DefaultPrefixConfig(), 2)
	p := text(64*4, 9)
	a := req("m", p)
	a.CacheSalt = []byte("tenant-a")
	first, _ := r.pick(t, a)
	b := req("m", p)
	b.CacheSalt = []byte("tenant-b")
	_, sc := r.pick(t, b)
	if sc[first] != 0 {
		t.Errorf("another cache_salt matched %v of the prefix, want 0", sc[first])
	}
	_, sc = r.pick(t, a)
	if sc[first] != 1 {
		t.Errorf("same cache_salt matched %v, want 1", sc[first])
	}
}

// TestPrefixSpansStraddle: hashes depend on the bytes, not on how the prompt
// is split into spans.
func TestPrefixSpansStraddle(t *testing.T) {
	p := newPrefix(t, DefaultPrefixConfig())
	body := text(64*5+17, 5)
	one := &scheduler.Request{Model: "m"}
	one.SetPrompt(body)
	want := p.hashPrompt(&prefixState{}, one)
	if len(want) != 5 {
		t.Fatalf("%d blocks, want 5", len(want))
	}
	// The same bytes as spans of odd sizes inside a larger body with gaps.
	var big bytes.Buffer
	var spans []scheduler.Span
	for off, k := 0, 1; off < len(body); k = k*3 + 1 {
		n := min(k, len(body)-off)
		big.WriteString(`","`)
		spans = append(spans, scheduler.Span{Start: big.Len(), End: big.Len() + n})
		big.Write(body[off : off+n])
		off += n
	}
	split := &scheduler.Request{Model: "m", Body: big.Bytes(), Spans: spans}
	got := p.hashPrompt(&prefixState{}, split)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("split spans hash %v, want %v", got, want)
	}
	// A bad span (out of range) is skipped, never a panic.
	bad := &scheduler.Request{Model: "m", Body: body, Spans: []scheduler.Span{{Start: 0, End: len(body) + 5}, {Start: 3, End: 1}}}
	if got := p.hashPrompt(&prefixState{}, bad); len(got) != 0 {
		t.Errorf("invalid spans produced %d blocks", len(got))
	}
}

func TestPrefixMaxBlocks(t *testing.T) {
	cfg := DefaultPrefixConfig()
	cfg.MaxPrefixBlocksToMatch = 3
	p := newPrefix(t, cfg)
	if got := p.hashPrompt(&prefixState{}, req("m", text(64*10, 1))); len(got) != 3 {
		t.Errorf("%d blocks hashed, want maxPrefixBlocksToMatch = 3", len(got))
	}
}

// TestPrefixShortPromptsSpread is GIE issue 2561: with the GIE ratio, a
// one-block prompt matching one block scores 1.0, so short prompts sharing a
// first block pile onto one endpoint. fullScoreMatchBlocks weighs the match by
// its absolute length.
func TestPrefixShortPromptsSpread(t *testing.T) {
	for _, tc := range []struct {
		full     int
		want     float64
		spreadOK bool
	}{{0, 1, false}, {32, 1.0 / 32, true}} {
		cfg := DefaultPrefixConfig()
		cfg.FullScoreMatchBlocks = tc.full
		p := newPrefix(t, cfg)
		q := mustPlugin(t, QueueScorerType).(scheduler.Scorer)
		plan, _ := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
			Name: "p", Scorers: []scheduler.WeightedScorer{{Scorer: q, Weight: 2}, {Scorer: p, Weight: 3}}, Picker: NewMaxScorePicker(1),
		}}, nil, nil)
		now := time.Now()
		st := endpoints(now, make([]scheduler.Metrics, 4)...)
		s := scheduler.New(plan)
		s.Publish(scheduler.NewSnapshot(st, now, 0))
		c := s.NewCycle()
		shared := text(64, 11) // every prompt is this one block + a short tail
		used := map[string]int{}
		for i := 0; i < 40; i++ {
			r := req("m", append(append([]byte{}, shared...), text(20, uint64(100+i))...))
			r.Explain = i == 39
			res, err := s.Pick(c, r)
			if err != nil {
				t.Fatal(err)
			}
			used[res.Endpoints[0].Name]++ // stays in flight: queue grows
			if r.Explain {
				for _, e := range res.Explain {
					if e.Endpoint[:2] == res.Endpoints[0].Name && e.Scores[1].Score != 0 && e.Scores[1].Score != tc.want {
						t.Errorf("full=%d: prefix score %v, want %v", tc.full, e.Scores[1].Score, tc.want)
					}
				}
			}
		}
		maxShare := 0
		for _, n := range used {
			maxShare = max(maxShare, n)
		}
		if spread := maxShare <= 12; spread != tc.spreadOK {
			t.Errorf("fullScoreMatchBlocks=%d: distribution %v (spread %v, want %v)", tc.full, used, spread, tc.spreadOK)
		}
	}
}

// TestPrefixTableBound: the table keeps at least the capacity most recent
// blocks and at most 2×capacity, in 16–34 bytes per stored block.
func TestPrefixTableBound(t *testing.T) {
	for _, capacity := range []int{100, 1000, 31250} {
		tb := newPrefixTable(capacity)
		r := rand.New(rand.NewPCG(1, 2))
		var recent []uint64
		for i := 0; i < 5*capacity; i++ {
			h := r.Uint64() | 1
			tb.Insert([]uint64{h})
			recent = append(recent, h)
		}
		stored := tb.stored.Load()
		if stored < int64(capacity) || stored > int64(2*capacity) {
			t.Errorf("cap %d: %d stored, want between cap and 2×cap", capacity, stored)
		}
		for _, h := range recent[len(recent)-capacity:] {
			if !tb.Contains(h) {
				t.Fatalf("cap %d: one of the %d most recent blocks was evicted", capacity, capacity)
			}
		}
		per := float64(tb.bytes.Load()) / float64(stored)
		t.Logf("capacity %d: %d blocks stored, %.1f bytes per stored block", capacity, stored, per)
		if per > 34 {
			t.Errorf("cap %d: %.1f bytes per stored block, want <= 34", capacity, per)
		}
		// Re-touching old blocks keeps them (LRU, not FIFO).
		keep := recent[len(recent)-capacity]
		for i := 0; i < 3*capacity; i++ {
			tb.Insert([]uint64{r.Uint64() | 1})
			if i%(capacity/4+1) == 0 {
				tb.Insert([]uint64{keep})
			}
		}
		if !tb.Contains(keep) {
			t.Errorf("cap %d: a block touched regularly was evicted", capacity)
		}
	}
}

func TestPrefixAutoTuneAndRemoval(t *testing.T) {
	r := newRig(t, DefaultPrefixConfig(), 2)
	r.states[0].M.NumGPUBlocks, r.states[0].M.BlockSize = 1000, 16 // 1000 of our 16-token blocks
	r.s.Publish(scheduler.NewSnapshot(r.states, time.Now(), 0))
	r.pick(t, req("m", text(64*2, 1)))
	if tb := r.p.tables[r.states[0].H.ID()]; tb == nil || tb.capacity != 1000 {
		t.Fatalf("autoTune capacity not applied: %+v", tb)
	}
	if tb := r.p.tables[r.states[1].H.ID()]; tb == nil || tb.capacity != defaultLRUCapacity {
		t.Fatalf("default capacity not applied to a server without cache info")
	}
	// Endpoint e1 leaves the pool: its table is forgotten when the snapshot
	// is published, before any pick.
	r.s.Publish(scheduler.NewSnapshot(r.states[:1], time.Now(), 0))
	if _, ok := r.p.tables[r.states[1].H.ID()]; ok {
		t.Error("table of a removed endpoint kept")
	}
	r.pick(t, req("m", text(64*2, 2)))
	st := r.p.IndexStats()
	if st.Endpoints != 1 || st.StoredBlocks == 0 || st.Bytes == 0 {
		t.Errorf("stats %+v", st)
	}
	// The same figures as statistics, under stable names.
	stats := r.p.AppendStats(nil)
	want := []string{"inference_extension_prefix_indexer_size", "inference_extension_prefix_indexer_hit_ratio", "fastepp_prefix_indexer_bytes"}
	if len(stats) != len(want) {
		t.Fatalf("AppendStats: %d stats, want %d", len(stats), len(want))
	}
	for i, w := range want {
		if stats[i].Name != w || stats[i].Help == "" {
			t.Errorf("stat %d = %+v, want name %s with help", i, stats[i], w)
		}
	}
	if stats[0].Value != float64(st.StoredBlocks) || stats[2].Value != float64(st.Bytes) {
		t.Errorf("stats %+v disagree with %+v", stats, st)
	}
}

func TestPrefixConfigErrors(t *testing.T) {
	for _, cfg := range []PrefixConfig{
		{BlockSizeTokens: 0, MaxPrefixBlocksToMatch: 1, LRUCapacityPerServer: 1},
		{BlockSizeTokens: 16, MaxPrefixBlocksToMatch: 0, LRUCapacityPerServer: 1},
		{BlockSizeTokens: 16, MaxPrefixBlocksToMatch: 1, LRUCapacityPerServer: 0},
		{BlockSizeTokens: 16, MaxPrefixBlocksToMatch: 1, LRUCapacityPerServer: 1, FullScoreMatchBlocks: -1},
	} {
		if _, err := NewPrefixScorer("", cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// TestPrefixConcurrent hammers lookups and inserts on shared tables (-race).
func TestPrefixConcurrent(t *testing.T) {
	tb := newPrefixTable(500)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			hs := make([]uint64, 8)
			for i := 0; i < 5000; i++ {
				for j := range hs {
					hs[j] = r.Uint64N(4000) + 1
				}
				if i%2 == 0 {
					tb.Insert(hs)
				} else {
					for _, h := range hs {
						tb.Contains(h)
					}
				}
			}
		}()
	}
	wg.Wait()
	if s := tb.stored.Load(); s > 1000 || s < 1 {
		t.Errorf("stored %d after concurrent use, want 1..1000", s)
	}
}

// BenchmarkPrefixIndexConcurrent: lookups of 32-block prefixes with one
// insert per 4 lookups, from every P (run with -cpu 1,2).
func BenchmarkPrefixIndexConcurrent(b *testing.B) {
	const endpoints = 16
	tables := make([]*prefixTable, endpoints)
	for i := range tables {
		tables[i] = newPrefixTable(defaultLRUCapacity)
	}
	groups := make([][]uint64, 64)
	r := rand.New(rand.NewPCG(3, 3))
	for g := range groups {
		groups[g] = make([]uint64, 32)
		for i := range groups[g] {
			groups[g][i] = r.Uint64() | 1
		}
		tables[g%endpoints].Insert(groups[g])
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			hs := groups[i%len(groups)]
			t := tables[i%endpoints]
			if i%4 == 0 {
				t.Insert(hs)
			} else {
				m := 0
				for m < len(hs) && t.Contains(hs[m]) {
					m++
				}
			}
			i++
		}
	})
}

// TestHashSetReuse: a set emptied by reset (a tag change, and a real clear
// when the tags wrap) holds exactly what was added since, over 300 reuses of
// one set (more than two wraps), with the previous generation's hashes and
// hashes that differ only outside the tag bits absent.
func TestHashSetReuse(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	s := newHashSet(256)
	var prev []uint64
	for gen := 0; gen < 300; gen++ {
		s.reset()
		n := 1 + r.IntN(127)
		cur := make([]uint64, n)
		for i := range cur {
			cur[i] = r.Uint64()
			if !s.add(cur[i]) && !slicesContainsSameBlock(cur[:i], cur[i]) {
				t.Fatalf("generation %d: add of a new hash reported it present", gen)
			}
		}
		if s.n > n {
			t.Fatalf("generation %d: n = %d after %d adds", gen, s.n, n)
		}
		for _, h := range cur {
			if !s.contains(h) {
				t.Fatalf("generation %d: added hash %#x missing", gen, h)
			}
			if !s.contains(h ^ tagBits) {
				t.Fatalf("generation %d: hash %#x with other tag bits missing (the tag bits are not part of a block's identity)", gen, h)
			}
		}
		for _, h := range prev {
			if s.contains(h) && !slicesContainsSameBlock(cur, h) {
				t.Fatalf("generation %d: hash %#x of the previous generation still present", gen, h)
			}
		}
		occupied := 0
		for i := range s.slots {
			if s.occupied(i) {
				occupied++
			}
		}
		if occupied != s.n {
			t.Fatalf("generation %d: %d occupied slots, n = %d", gen, occupied, s.n)
		}
		prev = cur
	}
}

// slicesContainsSameBlock reports whether hs holds h up to the tag bits.
func slicesContainsSameBlock(hs []uint64, h uint64) bool {
	for _, x := range hs {
		if x&^tagBits == h&^tagBits {
			return true
		}
	}
	return false
}

// TestPrefixTableMemory: bytes per stored block over a full rotation cycle
// (the README's figure), and memory that follows a capacity that shrinks.
func TestPrefixTableMemory(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, capacity := range []int{1000, 31250} {
		tb := newPrefixTable(capacity)
		for i := 0; i < 4*capacity; i++ { // warm: two rotations
			tb.Insert([]uint64{r.Uint64() | 1})
		}
		lo, hi := math.Inf(1), 0.0
		for i := 0; i < 2*capacity; i++ { // two more: every phase of a cycle
			tb.Insert([]uint64{r.Uint64() | 1})
			per := float64(tb.bytes.Load()) / float64(tb.stored.Load())
			lo, hi = min(lo, per), max(hi, per)
		}
		t.Logf("capacity %d: %.1f to %.1f bytes per stored block over a rotation cycle", capacity, lo, hi)
		if lo < 8 || hi > 48 {
			t.Errorf("capacity %d: %.1f..%.1f bytes per stored block, want within 8..48", capacity, lo, hi)
		}
	}

	// Shrink: a table that held 100,000 blocks, capped at 2,000, gives its
	// memory back within two rotations.
	tb := newPrefixTable(100000)
	for i := 0; i < 100000; i++ {
		tb.Insert([]uint64{r.Uint64() | 1})
	}
	big := tb.bytes.Load()
	tb.setCapacity(2000)
	for i := 0; i < 3*2000; i++ {
		tb.Insert([]uint64{r.Uint64() | 1})
	}
	limit := int64(2 * tb.maxSlots() * 8) // two generations at the largest size for 2,000
	if got := tb.bytes.Load(); got > limit {
		t.Errorf("after shrinking to 2,000 blocks: %d bytes held (was %d), want <= %d", got, big, limit)
	}
	if got := tb.stored.Load(); got < 2000 || got > 4000 {
		t.Errorf("after shrinking: %d blocks stored, want 2,000..4,000", got)
	}
}
