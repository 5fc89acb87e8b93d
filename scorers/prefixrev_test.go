package scorers

import "testing"

// TestPrefixRevInvariant drives many distinct prompts through picks on
// small tables (so they rotate and the reverse index rebuilds), then checks
// the reverse index's invariant for every first block ever sent: each
// endpoint whose table holds it is listed under it. It also checks that
// rebuilds kept the index near what the tables hold.
func TestPrefixRevInvariant(t *testing.T) {
	cfg := DefaultPrefixConfig()
	cfg.AutoTune, cfg.LRUCapacityPerServer, cfg.BlockSizeTokens = false, 50, 2
	const n = 6
	r := newRig(t, cfg, n)
	var firsts []uint64
	seen := map[uint64]bool{}
	st := &prefixState{}
	for i := range 3000 {
		p := text(8*(1+i%5), uint64(i%700)) // 700 distinct stems, repeated
		rq := req("m", p)
		hs := r.p.hashPrompt(st, rq)
		if !seen[hs[0]] {
			seen[hs[0]] = true
			firsts = append(firsts, hs[0])
		}
		res, err := r.s.Pick(r.c, rq)
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
	}
	held, listed := 0, 0
	for _, h := range firsts {
		ids, ok := r.p.rev.lookup(h, nil, 1<<20)
		if !ok {
			t.Fatal("lookup over the limit")
		}
		for _, s := range r.states {
			tb := r.p.tables[s.H.ID()]
			if !tb.Contains(h) {
				continue
			}
			held++
			found := false
			for _, id := range ids {
				found = found || id == s.H.ID()
			}
			if !found {
				t.Fatalf("endpoint %s holds first block %x but the reverse index does not list it", s.H, h)
			}
		}
		listed += len(ids)
	}
	entries, bytes := r.p.rev.size()
	t.Logf("%d first blocks sent, %d (block, endpoint) pairs held, %d listed, %d entries, %d bytes", len(firsts), held, listed, entries, bytes)
	if held == 0 {
		t.Fatal("no table holds any first block: the test exercises nothing")
	}
	// Stale pairs are dropped at rebuilds: at most what the tables can hold
	// (2 × capacity per endpoint) plus the inserts since the last rebuild.
	if max := 2 * cfg.LRUCapacityPerServer * n * 2; listed > max {
		t.Errorf("%d pairs listed, want <= %d (rebuilds should drop pairs no table holds)", listed, max)
	}
}
