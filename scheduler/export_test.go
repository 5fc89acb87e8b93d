package scheduler

// Test hooks for the fast path (fastpath_test.go, package scheduler_test).

// SetFastMin sets the live pool size from which s uses the fast path, for
// every plan (0: never).
func SetFastMin(s *Scheduler, n int) { s.fastMin, s.fastMinLoad = n, n }

// begin prepares c for a decision on s's current snapshot, as Pick does.
func begin(s *Scheduler, c *Cycle, req *Request) *published {
	pub := s.cur.Load()
	plan := s.plan
	if c.plan != plan {
		c.bindPlan(plan)
	}
	c.Snap, c.Req, c.prepared = pub.snap, req, pub.prepared
	return pub
}

// FastEval runs the fast path's decision for req without picking: the tied
// best set (snapshot indices, in the order the pick's draw indexes it:
// fastScratch.winner), the best total, the hits' totals by snapshot
// index, and ok = false when the fast path does not apply or declines.
func FastEval(s *Scheduler, c *Cycle, req *Request) (win []int32, best float64, hits map[int32]float64, ok bool) {
	pub := begin(s, c, req)
	defer func() { c.Snap, c.Req, c.prepared = nil, nil, nil }()
	if pub.load == nil || req.HasSubset || req.Explain {
		return nil, 0, nil, false
	}
	if !fastDecide(c, s.plan.fast, pub.load) {
		return nil, 0, nil, false
	}
	hits = map[int32]float64{}
	for j, h := range c.fast.hits {
		if t := c.fast.hitTot[j]; t == t {
			hits[h.Index] = t
		}
	}
	for j := range c.fast.count() {
		win = append(win, c.fast.winner(pub.load, uint64(j)))
	}
	return win, c.fast.best, hits, true
}

// PlainTotals scores req the plain way (every live candidate, every scorer of
// the single profile) without picking: candidates and their totals.
func PlainTotals(s *Scheduler, c *Cycle, req *Request) ([]int32, []float64) {
	pub := begin(s, c, req)
	defer func() { c.Snap, c.Req, c.prepared = nil, nil, nil }()
	cands := append([]int32(nil), pub.snap.Live...)
	prof := s.plan.Profiles[0]
	total := make([]float64, len(cands))
	tmp := make([]float64, len(cands))
	for _, ws := range prof.Scorers {
		ws.Score(c, cands, tmp)
		w := ws.Weight
		for i, v := range tmp {
			if !(v >= 0) {
				v = 0
			} else if v > 1 {
				v = 1
			}
			total[i] += w * v
		}
	}
	return cands, total
}

// FastIndexOK reports whether s's current snapshot has a fast-path index and,
// if so, whether every live endpoint's indexed queue equals Cycle.Waiting now.
func FastIndexOK(s *Scheduler) (indexed, consistent bool) {
	pub := s.cur.Load()
	ix := pub.load
	if ix == nil {
		return false, true
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.flush()
	for r, i := range ix.idxOf {
		if ix.q[r] != waiting(&pub.snap.Endpoints[i]) {
			return true, false
		}
	}
	for k := ix.size - 1; k >= 1; k-- {
		if ix.mn[k] != min(ix.mn[2*k], ix.mn[2*k+1]) || ix.mx[k] != max(ix.mx[2*k], ix.mx[2*k+1]) {
			return true, false
		}
	}
	return true, true
}

// FastProbed reports whether c's last fast-path decision probed the sparse
// scorer endpoint by endpoint (ProbeScorer: ScoreHits declined).
func FastProbed(c *Cycle) bool { return c.fast.probed }

// FastRuns is the number of runs the last fast decision's search left for
// the no-hit winners (what the pick's draw walks).
func FastRuns(c *Cycle) int { return len(c.fast.runs) }
