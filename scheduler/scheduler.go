package scheduler

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Errors Pick returns; the ext_proc layer maps them to HTTP statuses.
var (
	// ErrNoEndpoints: the pool (or the subset hint) leaves no candidate → 503.
	ErrNoEndpoints = errors.New("no candidate endpoints")
	// ErrNoCapacity: filters removed every candidate → 429.
	ErrNoCapacity = errors.New("no endpoint left after filters")
	// ErrShed: a sheddable request (priority < 0) while the pool is saturated → 429.
	ErrShed = errors.New("pool saturated: sheddable request dropped")
	// ErrNoPlan: the scheduler was made without a plan (New(nil)) → 500.
	ErrNoPlan = errors.New("scheduler has no plan")
)

// Scheduler runs one plan over the current snapshot. Pick is safe for
// concurrent use (each caller with its own Cycle); Publish may run during
// picks: a pick sees either the old snapshot or the new one, whole, with the
// per-snapshot values its plugins prepared for it.
type Scheduler struct {
	plan  *Plan
	cur   atomic.Pointer[published]
	pubMu sync.Mutex        // serialises Publish (PrepareSnapshot calls never overlap)
	onPub []func(*Snapshot) // OnPublish callbacks (pubMu)
	seed  atomic.Uint64
	// fastMin is the live pool size from which the fast path is used
	// (fastMinLive; fastMinLoad for plans without a sparse scorer); tests
	// lower both; 0 turns the fast path off. Set before the first Publish.
	fastMin, fastMinLoad int
}

// published is a snapshot with what the plan's SnapshotPreparers made of it.
type published struct {
	snap     *Snapshot
	prepared []any      // by plugin slot; nil where the plugin prepares nothing
	load     *loadIndex // the fast path's index; nil: plain loop only
}

// New returns a scheduler running plan (no endpoints until Publish). The plan
// must not be given to another scheduler: its plugins' per-snapshot state
// follows this scheduler's snapshots. A nil plan makes a scheduler that only
// holds snapshots (Pick fails with ErrNoPlan).
func New(plan *Plan) *Scheduler {
	s := &Scheduler{plan: plan, fastMin: fastMinLive, fastMinLoad: fastMinLoadOnly}
	s.seed.Store(uint64(time.Now().UnixNano()))
	return s
}

// SetSeed makes the cycles created from now on draw their random numbers
// (tie-breaks, random pickers) from seed instead of the clock: simulations
// and tests that must repeat exactly call it before their first NewCycle.
func (s *Scheduler) SetSeed(seed uint64) { s.seed.Store(seed) }

// Publish makes snap the snapshot future picks see. Before the swap, on the
// caller's goroutine, each SnapshotPreparer of the plan prepares its
// per-snapshot value. snap must not be modified afterwards; publishing one
// snapshot to several schedulers is fine. Calls are serialised.
func (s *Scheduler) Publish(snap *Snapshot) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	prev := s.cur.Load()
	pub := &published{snap: snap}
	if s.plan != nil && len(s.plan.preparers) > 0 {
		pub.prepared = make([]any, s.plan.slots)
		for _, sp := range s.plan.preparers {
			var old any
			if prev != nil {
				old = prev.prepared[sp.slot]
			}
			pub.prepared[sp.slot] = sp.p.PrepareSnapshot(snap, old)
		}
	}
	var prevLoad *loadIndex
	if prev != nil {
		prevLoad = prev.load
	}
	if s.fastFor(len(snap.Live)) {
		pub.load = newLoadIndex(s, snap, prevLoad)
	} else if prevLoad != nil {
		prevLoad.detach()
	}
	for _, f := range s.onPub {
		f(snap)
	}
	s.cur.Store(pub)
}

// fastFor reports whether a snapshot of live endpoints gets a fast-path index.
func (s *Scheduler) fastFor(live int) bool {
	if s.plan == nil || s.plan.fast == nil || s.fastMin <= 0 {
		return false
	}
	if s.plan.fast.sparse == nil {
		return live >= s.fastMinLoad
	}
	return live >= s.fastMin
}

// OnPublish makes f run in every later Publish, on the publisher's
// goroutine, after the plugins prepared snap and before picks can see it:
// the place for per-snapshot work outside the plan (the ext_proc server's
// set of known model names). If a snapshot is already published, f runs
// once with it now. f must not call Publish or OnPublish.
func (s *Scheduler) OnPublish(f func(*Snapshot)) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	s.onPub = append(s.onPub, f)
	if p := s.cur.Load(); p != nil {
		f(p.snap)
	}
}

// Snapshot returns the current snapshot (nil before the first Publish).
func (s *Scheduler) Snapshot() *Snapshot {
	if p := s.cur.Load(); p != nil {
		return p.snap
	}
	return nil
}

// Plan returns the scheduler's plan.
func (s *Scheduler) Plan() *Plan { return s.plan }

// Result is the outcome of one pick. It lives in its Cycle and is valid until
// the cycle's next Pick.
type Result struct {
	// Endpoints are the chosen endpoints, primary first then fallbacks.
	Endpoints []*Handle
	// Tokens is the estimated prompt tokens charged to the primary's
	// in-flight counters; pass it to Release.
	Tokens int64
	// Profile is the name of the profile that decided.
	Profile string
	// Explain lists every candidate's scores when the request asked for it.
	Explain []Explanation
}

// Release ends the request's in-flight accounting on the primary endpoint.
// Call it exactly once per successful Pick (response end, error or cancel).
func (r *Result) Release() {
	if len(r.Endpoints) > 0 {
		r.Endpoints[0].Release(r.Tokens)
	}
}

// Explanation is one candidate's scores in one decision.
type Explanation struct {
	Endpoint string
	Total    float64
	Scores   []ScorerScore
}

// ScorerScore is one scorer's contribution.
type ScorerScore struct {
	Scorer string
	Weight float64
	Score  float64
}

// Cycle is per-caller scratch space for Pick. Keep one per goroutine (or per
// stream) and reuse it: after warm-up, Pick does not allocate. Not safe for
// concurrent use: plugins may mutate what Cycle.State returns without locks
// because a Cycle is only ever used by one goroutine at a time.
type Cycle struct {
	// Snap and Req are valid during Pick (plugins read them, never write).
	Snap *Snapshot
	Req  *Request

	prepared []any     // the current pick's published values, by slot
	now      time.Time // read lazily: the clock is not free on every VM
	rng      rand.PCG
	cands    []int32
	total    []float64
	tmp      []float64
	picked   []int32
	mark     []uint32
	epoch    uint32
	fast     fastScratch
	states   []any
	plan     *Plan
	res      Result
}

// NewCycle returns scratch space for Pick.
func (s *Scheduler) NewCycle() *Cycle {
	c := &Cycle{}
	c.rng.Seed(s.seed.Add(0x9e3779b97f4a7c15), 0x2545F4914F6CDD1D)
	return c
}

// Now is the time of this pick, read from the clock on first use.
func (c *Cycle) Now() time.Time {
	if c.now.IsZero() {
		c.now = time.Now()
	}
	return c.now
}

// Uint64 is a per-cycle pseudo-random number (tie-breaks, random pickers).
func (c *Cycle) Uint64() uint64 { return c.rng.Uint64() }

// Float64 is a pseudo-random number in [0, 1).
func (c *Cycle) Float64() float64 { return float64(c.rng.Uint64()>>11) / (1 << 53) }

// State returns the cycle state of the plugin in slot (see CycleStater).
func (c *Cycle) State(slot int) any { return c.states[slot] }

// Prepared returns what the plugin in slot prepared for the snapshot this
// pick sees (see SnapshotPreparer); nil when it prepared nothing. Read-only.
func (c *Cycle) Prepared(slot int) any {
	if slot < len(c.prepared) {
		return c.prepared[slot]
	}
	return nil
}

// Waiting is endpoint i's queue: scraped waiting requests plus what this
// picker dispatched there since the scrape (net of what finished).
func (c *Cycle) Waiting(i int32) float64 { return waiting(&c.Snap.Endpoints[i]) }

// Running is endpoint i's running requests plus the in-flight delta since the scrape.
func (c *Cycle) Running(i int32) float64 {
	e := &c.Snap.Endpoints[i]
	v := float64(e.M.Running) + float64(e.H.inflight.Load()-e.M.InflightAtScrape)
	if v < 0 {
		return 0
	}
	return v
}

// saturated reports whether the plan's saturation detector finds c's
// snapshot saturated (sheddable requests are then dropped).
func (p *Plan) saturated(c *Cycle) bool {
	return p.Saturation != nil && p.Saturation.Saturation(c.Snap, c.Now()) >= 1
}

// bindPlan gives c fresh per-cycle states for plan's stateful plugins.
func (c *Cycle) bindPlan(plan *Plan) {
	c.states = grow(c.states, plan.slots)
	clear(c.states)
	for _, st := range plan.staters {
		c.states[st.slot] = st.p.NewCycleState()
	}
	c.plan = plan
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, n+n/4)
	}
	return s[:n]
}

// Pick chooses endpoints for req with cycle c. Pickers may overwrite the
// scores slice they are given. On success the primary's
// in-flight counters are charged; call Result.Release when the request ends.
//
// Plans and requests the fast path can reproduce exactly are decided without
// visiting every endpoint (fastpath.go); the rest, and any request the fast
// path declines, take the plain loop over every candidate.
func (s *Scheduler) Pick(c *Cycle, req *Request) (*Result, error) {
	pub := s.cur.Load()
	plan := s.plan
	c.res.Endpoints = c.res.Endpoints[:0]
	c.res.Explain = nil
	c.res.Tokens = 0
	c.res.Profile = ""
	if plan == nil {
		return nil, ErrNoPlan
	}
	if pub == nil || len(pub.snap.Live) == 0 {
		return nil, ErrNoEndpoints
	}
	snap := pub.snap
	if c.plan != plan {
		c.bindPlan(plan)
	}
	c.Snap, c.Req, c.prepared, c.now = snap, req, pub.prepared, time.Time{}
	defer func() { c.Snap, c.Req, c.prepared = nil, nil, nil }()

	if pub.load != nil && !req.HasSubset && !req.Explain {
		if req.Priority < 0 && plan.saturated(c) {
			return nil, ErrShed
		}
		pi := plan.Handler.Select(c, plan.Profiles)
		if chosen, ok := s.fastPick(c, plan.fast, pub.load); ok {
			return s.finish(c, req, plan.Profiles[pi], chosen), nil
		}
		return s.plainPick(c, req, plan, snap, pi)
	}
	return s.plainPick(c, req, plan, snap, -1)
}

// finish records a fast-path decision as Pick records a plain one.
func (s *Scheduler) finish(c *Cycle, req *Request, prof *Profile, chosen int32) *Result {
	c.res.Endpoints = append(c.res.Endpoints, c.Snap.Endpoints[chosen].H)
	c.res.Profile = prof.Name
	c.res.Tokens = req.EstimatedTokens()
	for _, o := range prof.observers {
		o.Picked(c, chosen)
	}
	c.res.Endpoints[0].Acquire(c.res.Tokens)
	return &c.res
}

// plainPick is the O(N) pick: every candidate through every filter and
// scorer, then the picker. pi is the profile already selected (and the
// saturation check already done), or -1.
func (s *Scheduler) plainPick(c *Cycle, req *Request, plan *Plan, snap *Snapshot, pi int) (*Result, error) {
	cands := c.candidates(snap, req)
	if len(cands) == 0 {
		return nil, ErrNoEndpoints
	}
	if pi < 0 {
		if req.Priority < 0 && plan.saturated(c) {
			return nil, ErrShed
		}
		pi = plan.Handler.Select(c, plan.Profiles)
	}
	prof := plan.Profiles[pi]
	for _, f := range prof.Filters {
		cands = f.Filter(c, cands)
		if len(cands) == 0 {
			return nil, ErrNoCapacity
		}
	}
	n := len(cands)
	c.total = grow(c.total, n)
	c.tmp = grow(c.tmp, n)
	total, tmp := c.total, c.tmp
	clear(total)
	var ex []Explanation
	if req.Explain {
		ex = make([]Explanation, n)
		for i, ci := range cands {
			ex[i].Endpoint = snap.Endpoints[ci].H.String()
		}
	}
	for _, ws := range prof.Scorers {
		ws.Score(c, cands, tmp)
		w := ws.Weight
		for i, v := range tmp {
			if !(v >= 0) { // negative or NaN
				v = 0
			} else if v > 1 {
				v = 1
			}
			total[i] += w * v
		}
		if ex != nil {
			for i, v := range tmp {
				ex[i].Scores = append(ex[i].Scores, ScorerScore{Scorer: ws.Name(), Weight: w, Score: clamp01(v)})
			}
		}
	}
	if ex != nil {
		for i := range ex {
			ex[i].Total = total[i]
		}
		c.res.Explain = ex
	}
	c.picked = grow(c.picked, n)
	picked := prof.Picker.Pick(c, cands, total, c.picked[:0])
	if len(picked) == 0 {
		return nil, ErrNoCapacity
	}
	for _, p := range picked {
		c.res.Endpoints = append(c.res.Endpoints, snap.Endpoints[p].H)
	}
	c.res.Profile = prof.Name
	c.res.Tokens = req.EstimatedTokens()
	for _, o := range prof.observers {
		o.Picked(c, picked[0])
	}
	// Charge last: a plugin that panics anywhere above (the ext_proc server
	// recovers and answers 500) leaves no in-flight count behind.
	c.res.Endpoints[0].Acquire(c.res.Tokens)
	return &c.res, nil
}

// candidates copies the live set, applying the subset hint (match by IP).
func (c *Cycle) candidates(snap *Snapshot, req *Request) []int32 {
	c.cands = grow(c.cands, len(snap.Live))
	if !req.HasSubset {
		copy(c.cands, snap.Live)
		return c.cands
	}
	// Mark allowed endpoints with a fresh epoch, then keep live ones marked.
	c.mark = grow(c.mark, len(snap.Endpoints))
	c.epoch++
	if c.epoch == 0 {
		clear(c.mark)
		c.epoch = 1
	}
	for _, a := range req.Subset {
		for _, i := range snap.byAddr[a.Unmap()] {
			c.mark[i] = c.epoch
		}
	}
	out := c.cands[:0]
	for _, i := range snap.Live {
		if c.mark[i] == c.epoch {
			out = append(out, i)
		}
	}
	if len(out) == 0 && !snap.AllStale {
		// Every allowed endpoint is stale: a stale guess beats a 503.
		for i := range snap.Endpoints {
			if c.mark[i] == c.epoch {
				out = append(out, int32(i))
			}
		}
	}
	return out
}
