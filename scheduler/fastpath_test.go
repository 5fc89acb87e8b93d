package scheduler_test

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
	"github.com/fastepp/fastepp/scorers"
)

// fastPlans are plans the fast path takes: the default plan, queue+kv, and
// the same scorers in other orders and weights (the totals must be summed in
// profile order to be bitwise equal).
func fastPlans(tb testing.TB) map[string]func(testing.TB) *scheduler.Plan {
	custom := func(order []string, weights []float64, prefix scheduler.MapParams) func(testing.TB) *scheduler.Plan {
		return func(tb testing.TB) *scheduler.Plan {
			reg := scorers.NewRegistry()
			mk := func(typ string, p scheduler.MapParams) scheduler.Plugin {
				f, _ := reg.Lookup(typ)
				pl, err := f.New("", p)
				if err != nil {
					tb.Fatal(err)
				}
				return pl
			}
			var ws []scheduler.WeightedScorer
			for i, typ := range order {
				var p scheduler.MapParams
				if typ == scorers.PrefixScorerType {
					p = prefix
				}
				ws = append(ws, scheduler.WeightedScorer{Scorer: mk(typ, p).(scheduler.Scorer), Weight: weights[i]})
			}
			plan, err := scheduler.NewPlan(mk(scorers.SingleProfileHandlerType, nil).(scheduler.ProfileHandler), []*scheduler.Profile{{
				Name: "p", Scorers: ws, Picker: mk(scorers.MaxScorePickerType, nil).(scheduler.Picker),
			}}, nil, nil)
			if err != nil {
				tb.Fatal(err)
			}
			return plan
		}
	}
	return map[string]func(testing.TB) *scheduler.Plan{
		"default":  defaultPlan,
		"queue-kv": queueKVPlan,
		"prefix-first": custom([]string{scorers.PrefixScorerType, scorers.KVCacheScorerType, scorers.QueueScorerType},
			[]float64{1, 0.5, 3}, scheduler.MapParams{"blockSizeTokens": 4, "lruCapacityPerServer": 40, "autoTune": false}),
		"prefix-only": custom([]string{scorers.PrefixScorerType}, []float64{1}, scheduler.MapParams{"blockSizeTokens": 2}),
		"odd-weights": custom([]string{scorers.QueueScorerType, scorers.PrefixScorerType, scorers.KVCacheScorerType},
			[]float64{0.1, 0.7, 0.3}, scheduler.MapParams{"blockSizeTokens": 4, "fullScoreMatchBlocks": 5}),
	}
}

// TestFastPathCrossCheck is the fast path's property test: on random pools
// (1..300 endpoints, some stale or unhealthy), random metrics drawn from
// small sets (so totals tie), random in-flight counts (picks not yet
// released, releases in random order, Acquire/Release outside Pick as the
// ext_proc server does), random prompts sharing prefixes of random lengths,
// and snapshots republished with new metrics and membership, the fast
// path's best total and the totals of its prefix hits are bitwise the plain
// loop's, and its tied-best set is exactly the plain loop's.
func TestFastPathCrossCheck(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 4
	}
	for name, mkPlan := range fastPlans(t) {
		for seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", name, seed), func(t *testing.T) {
				crossCheck(t, mkPlan(t), uint64(seed))
			})
		}
	}
}

// TestFastPathLookAlikes: in pools whose endpoints look the same (an idle
// fleet: no queue, no KV use; or two groups of such), the tied best set is
// most of the pool. The fast path must still give the plain loop's tied set
// and best total, with prefix hits inside the tie (their own totals are
// higher) and in-flight counts moving, while its search leaves O(log N) runs
// of tied ranks instead of one entry per endpoint; sizes that are not powers
// of two check the tree's padding.
func TestFastPathLookAlikes(t *testing.T) {
	for _, n := range []int{17, 100, 1000, 1024} {
		for _, groups := range []int{1, 2} {
			t.Run(fmt.Sprintf("n=%d/groups=%d", n, groups), func(t *testing.T) {
				now := time.Now()
				st := make([]scheduler.EndpointState, n)
				for i := range st {
					h := scheduler.NewHandle(scheduler.Endpoint{Name: fmt.Sprintf("e%d", i), Addr: netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), Port: 8000})
					st[i] = scheduler.EndpointState{H: h, Healthy: true, M: scheduler.Metrics{UpdatedAt: now, KVUsage: 0.5 * float64(i%groups)}}
				}
				s := scheduler.New(defaultPlan(t))
				s.Publish(scheduler.NewSnapshot(st, now, 0))
				pc, fc, c := s.NewCycle(), s.NewCycle(), s.NewCycle()
				r := rand.New(rand.NewPCG(uint64(n), uint64(groups)))
				var held []*scheduler.Result
				maxRuns, maxHeld := 0, 0
				for step := range 200 {
					var req scheduler.Request
					req.Model = "m"
					req.SetPrompt(append([]byte(fmt.Sprintf("conversation %d: ", r.IntN(8))), randText(r, r.IntN(300))...))
					win, best, hits, ok := scheduler.FastEval(s, fc, &req)
					if !ok {
						t.Fatalf("step %d: the fast path did not apply", step)
					}
					maxRuns = max(maxRuns, scheduler.FastRuns(fc))
					cands, totals := scheduler.PlainTotals(s, pc, &req)
					compareDecision(t, step, cands, totals, win, best, hits)
					res, err := s.Pick(c, &req)
					if err != nil {
						t.Fatal(err)
					}
					if r.IntN(4) == 0 { // keep some in flight: their endpoints leave the tie
						held = append(held, res)
						maxHeld = max(maxHeld, len(held))
					} else {
						res.Release()
					}
					if len(held) > 0 && r.IntN(3) == 0 {
						k := r.IntN(len(held))
						held[k].Release()
						held = slices.Delete(held, k, k+1)
					}
				}
				for _, res := range held {
					res.Release()
				}
				// Runs: at most two subtrees per tree level, around each of
				// the endpoints that differ (in flight, or a group's edge).
				if limit := 2 * bits.Len(uint(n)) * (maxHeld + groups); maxRuns > limit {
					t.Errorf("the search left up to %d runs of tied ranks, want at most %d (O(log N) per differing endpoint)", maxRuns, limit)
				}
				t.Logf("%d endpoints, %d groups: at most %d runs (%d in flight at most)", n, groups, maxRuns, maxHeld)
			})
		}
	}
}

// TestFastPathCrossCheckCrowded is TestFastPathCrossCheck with a long system
// prompt common to every prompt, warmed onto more than an eighth of the pool
// (the whole pool for even seeds) through subset-hinted picks, and kept there
// by re-warming after some republishes: the prefix index declines to list
// the holders of the first block, and the fast path probes (ProbeScorer).
// The same checks as TestFastPathCrossCheck; the probing path must be taken.
func TestFastPathCrossCheckCrowded(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 4
	}
	for name, mkPlan := range fastPlans(t) {
		if name == "queue-kv" {
			continue
		}
		probed := 0
		for seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", name, seed), func(t *testing.T) {
				probed += crossCheckOpts(t, mkPlan(t), uint64(seed), true)
			})
		}
		// Per seed it may not be: a pool of at most 8 live endpoints is
		// never crowded, and some seeds draw a common prompt shorter than
		// a block.
		if probed == 0 {
			t.Errorf("%s: the probing path was never taken", name)
		}
		t.Logf("%s: %d decisions probed", name, probed)
	}
}

func crossCheck(t *testing.T, plan *scheduler.Plan, seed uint64) {
	crossCheckOpts(t, plan, seed, false)
}

// crossCheckOpts returns the number of decisions compared that probed.
func crossCheckOpts(t *testing.T, plan *scheduler.Plan, seed uint64, crowded bool) int {
	r := rand.New(rand.NewPCG(seed, 99))
	now := time.Now()
	n := 1 + r.IntN(300)
	if seed%3 == 0 {
		n = 1 + r.IntN(12)
	}
	handles := make([]*scheduler.Handle, n+20)
	for i := range handles {
		handles[i] = scheduler.NewHandle(scheduler.Endpoint{
			Name: fmt.Sprintf("e%d", i), Addr: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Port: 8000,
		})
	}
	kvs := []float64{0, 0.25, 0.5, 0.5, 0.75, 1}
	var last []scheduler.EndpointState
	states := func() []scheduler.EndpointState {
		if last != nil && r.IntN(3) == 0 {
			// Same endpoints, same KV, new queues: what most scrapes give
			// (the index and the prefix view reuse their previous layout).
			for j := range last {
				last[j].M.Waiting = r.IntN(4)
				last[j].M.InflightAtScrape = last[j].H.Inflight()
			}
			return last
		}
		// A random subset of the handles, in random order, random metrics.
		perm := r.Perm(len(handles))[:max(1, n-5+r.IntN(10))]
		st := make([]scheduler.EndpointState, len(perm))
		defer func() { last = st }()
		for j, i := range perm {
			h := handles[i]
			m := scheduler.Metrics{Waiting: r.IntN(4), KVUsage: kvs[r.IntN(len(kvs))], UpdatedAt: now, InflightAtScrape: h.Inflight()}
			if r.IntN(3) == 0 {
				m.Waiting = r.IntN(40)
				m.KVUsage = r.Float64()
			}
			if r.IntN(8) == 0 {
				m.InflightAtScrape += int64(r.IntN(5)) // more finished than dispatched: clamped at 0
			}
			if r.IntN(10) == 0 {
				m.UpdatedAt = now.Add(-time.Minute) // stale
			}
			st[j] = scheduler.EndpointState{H: h, M: m, Healthy: r.IntN(15) != 0}
		}
		return st
	}
	s := scheduler.New(plan)
	scheduler.SetFastMin(s, 1)
	s.Publish(scheduler.NewSnapshot(states(), now, 2*time.Second))
	pc, fc, c := s.NewCycle(), s.NewCycle(), s.NewCycle()

	// Prompts: a few shared stems, each continued randomly, random lengths
	// (shorter than one block too).
	stems := make([][]byte, 6)
	for i := range stems {
		stems[i] = randText(r, 16+r.IntN(200))
	}
	var common []byte
	if crowded {
		common = randText(r, 64+r.IntN(600))
		if r.IntN(4) == 0 {
			common = common[:r.IntN(24)] // one block or none in some plans
		}
	}
	prompt := func() []byte {
		p := slices.Clone(stems[r.IntN(len(stems))])
		p = p[:r.IntN(len(p)+1)]
		if crowded && r.IntN(10) != 0 {
			p = append(slices.Clone(common), p...)
		}
		return append(p, randText(r, r.IntN(100))...)
	}
	// warm sends the common prompt (and a random tail) to every handle (even
	// seeds) or to a random share of them, one subset-hinted pick each.
	warm := func() {
		if !crowded {
			return
		}
		share := len(handles)
		if seed%2 == 1 {
			share = len(handles)/8 + 1 + r.IntN(len(handles))
		}
		var req scheduler.Request
		req.Model = "m"
		for _, i := range r.Perm(len(handles)) {
			if share == 0 {
				break
			}
			share--
			req.SetPrompt(append(slices.Clone(common), randText(r, r.IntN(200))...))
			req.Subset, req.HasSubset = []netip.Addr{handles[i].Addr}, true
			if res, err := s.Pick(c, &req); err == nil {
				res.Release()
			}
		}
	}
	warm()
	probed := 0

	type held struct {
		res    *scheduler.Result
		h      *scheduler.Handle
		tokens int64
	}
	var open []held
	checked, declined := 0, 0
	for step := range 400 {
		switch a := r.IntN(20); {
		case a < 12: // compare, then pick for real
			var req scheduler.Request
			req.Model = "m"
			req.SetPrompt(prompt())
			win, best, hits, ok := scheduler.FastEval(s, fc, &req)
			cands, totals := scheduler.PlainTotals(s, pc, &req)
			if ok {
				checked++
				if scheduler.FastProbed(fc) {
					probed++
				}
				compareDecision(t, step, cands, totals, win, best, hits)
			} else {
				declined++
			}
			res, err := s.Pick(c, &req)
			if err != nil {
				t.Fatal(err)
			}
			res2 := *res
			res2.Endpoints = slices.Clone(res.Endpoints)
			open = append(open, held{res: &res2})
		case a < 15 && len(open) > 0: // release one
			k := r.IntN(len(open))
			if open[k].res != nil {
				open[k].res.Release()
			} else {
				open[k].h.Release(open[k].tokens)
			}
			open = slices.Delete(open, k, k+1)
		case a < 17: // Acquire outside Pick (ext_proc re-accounting)
			h := handles[r.IntN(len(handles))]
			h.Acquire(3)
			open = append(open, held{h: h, tokens: 3})
		default: // a new snapshot
			s.Publish(scheduler.NewSnapshot(states(), now, 2*time.Second))
			if r.IntN(3) == 0 {
				warm()
			}
		}
		if indexed, consistent := scheduler.FastIndexOK(s); indexed && !consistent {
			t.Fatalf("step %d: the load index disagrees with Cycle.Waiting", step)
		}
	}
	for _, o := range open {
		if o.res != nil {
			o.res.Release()
		} else {
			o.h.Release(o.tokens)
		}
	}
	if indexed, consistent := scheduler.FastIndexOK(s); indexed && !consistent {
		t.Fatal("after every release: the load index disagrees with Cycle.Waiting")
	}
	if checked == 0 {
		t.Fatalf("the fast path never applied (%d declined)", declined)
	}
	t.Logf("%d endpoints: %d decisions compared (%d probed: a crowded first block), %d declined", n, checked, probed, declined)
	return probed
}

func compareDecision(t *testing.T, step int, cands []int32, totals []float64, win []int32, best float64, hits map[int32]float64) {
	t.Helper()
	pbest := math.Inf(-1)
	byIdx := map[int32]float64{}
	for i, e := range cands {
		pbest = max(pbest, totals[i])
		byIdx[e] = totals[i]
	}
	var ptie []int32
	for i, e := range cands {
		if totals[i] == pbest {
			ptie = append(ptie, e)
		}
	}
	if math.Float64bits(best) != math.Float64bits(pbest) {
		t.Fatalf("step %d: fast best %v (%x), plain %v (%x)", step, best, math.Float64bits(best), pbest, math.Float64bits(pbest))
	}
	for e, v := range hits {
		pv, ok := byIdx[e]
		if !ok {
			t.Fatalf("step %d: hit %d is not a live candidate", step, e)
		}
		if math.Float64bits(v) != math.Float64bits(pv) {
			t.Fatalf("step %d: hit %d total %v, plain %v", step, e, v, pv)
		}
	}
	win = slices.Clone(win)
	slices.Sort(win)
	slices.Sort(ptie)
	if !slices.Equal(win, ptie) {
		t.Fatalf("step %d: fast tied set %v, plain %v (best %v)", step, win, ptie, pbest)
	}
}

func randText(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(3)) // small alphabet: blocks repeat
	}
	return b
}

// TestFastPickAllocs: a fast-path pick allocates nothing (default plan over
// 128 and 1024 endpoints, and 1024 idle ones whose ties form runs; repeated
// and unique prompts, and the first pick after a publish).
func TestFastPickAllocs(t *testing.T) {
	for _, tc := range []struct {
		n     int
		setup func(testing.TB, *scheduler.Plan, int) (*scheduler.Scheduler, *scheduler.Cycle, [][]byte)
	}{{128, benchSetup}, {1024, benchSetup}, {1024, benchSetupIdle}} {
		n := tc.n
		s, c, ps := tc.setup(t, defaultPlan(t), n)
		var req scheduler.Request
		req.Model = "meta-llama/Llama-3.1-8B-Instruct"
		req.SetPrompt(ps[0])
		if _, _, _, ok := scheduler.FastEval(s, s.NewCycle(), &req); !ok {
			t.Fatalf("%d endpoints: the fast path does not apply", n)
		}
		buf := make([]byte, len(ps[0]))
		churn := newChurner(s.Snapshot())
		snaps := []*scheduler.Snapshot{churn.next(), churn.next()}
		i := 0
		for _, mode := range []string{"repeat", "unique", "publish"} {
			allocs := testing.AllocsPerRun(300, func() {
				p := ps[i%len(ps)]
				if mode != "repeat" {
					p = uniqueTail(buf, p, uint64(i))
				}
				if mode == "publish" {
					s.Publish(snaps[i%2])
				}
				i++
				req.SetPrompt(p)
				if mode == "publish" {
					// The publish allocates (publisher's goroutine); count
					// only the pick after it.
					return
				}
				pickRelease(t, s, c, &req)
			})
			if mode == "publish" {
				allocs = testing.AllocsPerRun(1, func() {
					pickRelease(t, s, c, &req)
				})
			}
			if allocs != 0 {
				t.Errorf("%d endpoints, %s: %v allocs per fast pick, want 0", n, mode, allocs)
			}
		}
	}
}

// TestFastPickAllocsCrowded: a fast-path pick that probes (the whole pool
// holds the prompts' first block: benchSetupCommon) allocates nothing.
func TestFastPickAllocsCrowded(t *testing.T) {
	for _, n := range []int{128, 1024} {
		s, c, ps := benchSetupCommon(t, defaultPlan(t), n)
		var req scheduler.Request
		req.Model = "meta-llama/Llama-3.1-8B-Instruct"
		req.SetPrompt(ps[0])
		fc := s.NewCycle()
		if _, _, _, ok := scheduler.FastEval(s, fc, &req); !ok || !scheduler.FastProbed(fc) {
			t.Fatalf("%d endpoints: the probing fast path does not apply", n)
		}
		i := 0
		allocs := testing.AllocsPerRun(300, func() {
			req.SetPrompt(ps[i%len(ps)])
			i++
			pickRelease(t, s, c, &req)
		})
		if allocs != 0 {
			t.Errorf("%d endpoints: %v allocs per probing fast pick, want 0", n, allocs)
		}
	}
}

// TestFastPathConcurrent runs fast-path picks and releases on several
// goroutines while snapshots are republished and handles are acquired and
// released outside Pick (meaningful under -race); at the end every count is
// back to zero and the index agrees with Cycle.Waiting.
func TestFastPathConcurrent(t *testing.T) {
	now := time.Now()
	s := scheduler.New(defaultPlan(t))
	scheduler.SetFastMin(s, 1)
	states := pool(64, now)
	s.Publish(scheduler.NewSnapshot(states, now, 0))
	pickConcurrently(t, s, states, true, 5)
	s.Publish(scheduler.NewSnapshot(states, time.Now(), 0))
	if indexed, consistent := scheduler.FastIndexOK(s); !indexed || !consistent {
		t.Errorf("index present %v, consistent %v; want both", indexed, consistent)
	}
}

// TestFastPathSharedHandles: a second scheduler over the same handles (or a
// snapshot listing one handle twice) gets no index and picks the plain way;
// the first keeps its index, consistent.
func TestFastPathSharedHandles(t *testing.T) {
	now := time.Now()
	states := pool(64, now)
	a, b := scheduler.New(defaultPlan(t)), scheduler.New(defaultPlan(t))
	a.Publish(scheduler.NewSnapshot(states, now, 0))
	b.Publish(scheduler.NewSnapshot(states, now, 0))
	if ix, _ := scheduler.FastIndexOK(a); !ix {
		t.Fatal("first scheduler: no fast-path index")
	}
	if ix, _ := scheduler.FastIndexOK(b); ix {
		t.Fatal("second scheduler over the same handles: has an index, want the plain loop")
	}
	ca, cb := a.NewCycle(), b.NewCycle()
	var req scheduler.Request
	req.Model = "m"
	for i, p := range prompts(4, 4) {
		req.SetPrompt(p)
		ra, err := a.Pick(ca, &req)
		if err != nil {
			t.Fatal(err)
		}
		rb, err := b.Pick(cb, &req)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			ra.Release()
			rb.Release()
		}
	}
	if ix, ok := scheduler.FastIndexOK(a); !ix || !ok {
		t.Fatalf("first scheduler after picks on both: index %v, consistent %v", ix, ok)
	}
	fresh := pool(40, now)
	dup := append(fresh, fresh[0])
	c := scheduler.New(defaultPlan(t))
	c.Publish(scheduler.NewSnapshot(dup, now, 0))
	if ix, _ := scheduler.FastIndexOK(c); ix {
		t.Fatal("snapshot listing a handle twice: has an index, want the plain loop")
	}
}
