package scheduler

import "time"

// The plugin contract.
//
// A plan's plugins are shared by every request: Pick runs concurrently on
// many goroutines (one per ext_proc stream), and every call below may run
// concurrently with any other call on the same instance, except where a
// comment says otherwise. So, for every method called from Pick (Filter,
// Score, Pick, Select, Saturation, Picked):
//
//   - It must not block: no I/O, no channel waits, no locks that a slow
//     holder could keep (an uncontended per-endpoint mutex held for a few
//     instructions, as the prefix index's writers do, is the limit; the
//     prefix scorer's reverse index also takes its own writer mutex in
//     Picked when a prompt's first block is new to the chosen endpoint).
//   - Optional interfaces let the scheduler decide without visiting every
//     endpoint (LoadScorer, SparseScorer, ProbeScorer, MaxScorePicker in
//     fastpath.go); a plan whose plugins do not all declare one runs the
//     plain loop.
//   - It must not allocate in steady state. Scratch space comes from the
//     slices it is handed and from its cycle state (CycleStater); anything
//     that depends on the pool but not on the request is computed once per
//     snapshot in PrepareSnapshot (SnapshotPreparer), never lazily here.
//   - It reads the Snapshot and the Request and never modifies them; both
//     are valid only during the call (do not keep pointers into them).
//   - It writes only the slices it is handed, in the ranges described on each
//     method, and its own cycle state. Its own instance fields are read-only
//     after construction, unless it synchronises them itself (atomics).
//
// A plugin instance belongs to one Plan, and a Plan to one Scheduler.

// Kind classifies plugin types: the role a config may give them. Each kind
// promises one interface (Kind.Check); a type registered under a kind must
// implement it, and Registry.Register verifies that.
type Kind string

// Plugin kinds, matching the GIE configuration's roles.
const (
	KindFilter         Kind = "filter"              // implements Filter
	KindScorer         Kind = "scorer"              // implements Scorer
	KindPicker         Kind = "picker"              // implements Picker
	KindProfileHandler Kind = "profile-handler"     // implements ProfileHandler
	KindSaturation     Kind = "saturation-detector" // implements SaturationDetector (and may be a Filter)
	KindDataLayer      Kind = "data-layer"          // configures the data layer (package endpoints); Plugin only
	// KindRequestControl: GIE's request-control types fastepp accepts that
	// take no part in a pick (data producers fastepp does inherently, the
	// request parser, response plugins); Plugin only.
	KindRequestControl Kind = "request-control"
)

// Check reports whether p implements the interface kind k promises.
func (k Kind) Check(p Plugin) bool {
	switch k {
	case KindFilter:
		_, ok := p.(Filter)
		return ok
	case KindScorer:
		_, ok := p.(Scorer)
		return ok
	case KindPicker:
		_, ok := p.(Picker)
		return ok
	case KindProfileHandler:
		_, ok := p.(ProfileHandler)
		return ok
	case KindSaturation:
		_, ok := p.(SaturationDetector)
		return ok
	case KindDataLayer, KindRequestControl:
		return p != nil
	}
	return false
}

// Plugin is anything a config can instantiate. Type and Name are constant
// for the instance's life and safe to call from any goroutine.
type Plugin interface {
	// Type is the GIE type name, e.g. "queue-scorer".
	Type() string
	// Name is the instance name from the config (defaults to the type).
	Name() string
}

// Filter narrows the candidate set.
//
// Filter may run concurrently on one instance and must not block or
// allocate. cands holds snapshot indices (c.Snap.Endpoints[i]); Filter
// compacts the ones it keeps to the front of cands, in any order, and returns
// that prefix. It may overwrite cands but must not grow it. Returning an
// empty slice ends the pick with ErrNoCapacity (429); a filter that prefers
// "some endpoint" to none returns cands unchanged.
type Filter interface {
	Plugin
	Filter(c *Cycle, cands []int32) []int32
}

// Scorer scores each candidate.
//
// Score may run concurrently on one instance and must not block or
// allocate. out has len(cands); Score writes out[i], the score of snapshot
// index cands[i], for every i (out holds garbage on entry). Scores are meant
// in 0..1; Pick clamps others (NaN counts as 0). Score must not modify cands.
type Scorer interface {
	Plugin
	Score(c *Cycle, cands []int32, out []float64)
}

// Picker chooses endpoints from scored candidates.
//
// Pick may run concurrently on one instance and must not block or allocate
// beyond out's capacity (len(cands)). scores[i] is the weighted total of
// cands[i]; Pick may overwrite scores (the slice is scratch) but not cands.
// It appends snapshot indices to out, primary first then fallbacks, each at
// most once, and returns the result. Returning none ends the pick with
// ErrNoCapacity. Random choices use c.Uint64/c.Float64 (per-cycle, no lock).
type Picker interface {
	Plugin
	Pick(c *Cycle, cands []int32, scores []float64, out []int32) []int32
}

// ProfileHandler chooses which profile serves a request.
type ProfileHandler interface {
	Plugin
	// Select returns the index in profiles of the profile whose result is
	// used. It runs concurrently, on every pick, and must not block or
	// allocate; it must not modify profiles.
	Select(c *Cycle, profiles []*Profile) int
	// Validate rejects profile sets the handler cannot run. NewPlan calls it
	// once, before the plan is used.
	Validate(profiles []*Profile) error
}

// SaturationDetector tells whether the pool is saturated (sheddable requests
// are then refused with 429).
type SaturationDetector interface {
	Plugin
	// Saturation returns the pool's saturation; >= 1 means saturated. It runs
	// concurrently, only for sheddable requests (priority < 0), and must not
	// block or allocate; snap is read-only.
	Saturation(snap *Snapshot, now time.Time) float64
}

// PickObserver is told which endpoint won. Picked runs synchronously inside
// Pick, just before the primary is charged, on the picking goroutine and
// concurrently with other picks (the prefix index records the prompt there,
// so the next request sees it). chosen is a snapshot index. It must not block
// (short per-endpoint locks at most) and must not allocate in steady state.
// Plugins of a profile that implement it are wired by NewPlan.
type PickObserver interface {
	Picked(c *Cycle, chosen int32)
}

// Stateful plugins get a slot number from NewPlan, once, before the plan is
// used (each distinct instance of a plan gets its own slot). The slot indexes
// Cycle.State and Cycle.Prepared.
type Stateful interface {
	SetSlot(slot int)
}

// CycleStater is implemented by plugins that need per-caller scratch space
// (hash buffers, per-candidate results handed from Score to Picked).
// NewCycleState is called once per Cycle and plan, on the goroutine that owns
// the Cycle; the value it returns is that cycle's alone (Cycle.State(slot)),
// so the plugin may mutate it without synchronisation during any call that
// receives that Cycle.
type CycleStater interface {
	Stateful
	NewCycleState() any
}

// SnapshotPreparer is implemented by plugins whose work depends on the pool
// but not on the request (per-endpoint tables aligned with snapshot indices,
// request-independent scores). Scheduler.Publish calls PrepareSnapshot for
// each new snapshot on the publisher's goroutine, before picks can see it;
// calls never overlap (Publish serialises them), but they run concurrently
// with picks on earlier snapshots. snap is final and must not be modified.
// prev is what the previous call returned (nil the first time), for
// incremental work. The returned value travels with snap: picks on snap read
// it with Cycle.Prepared(slot), read-only. PrepareSnapshot may allocate and
// lock; it must not block on I/O.
type SnapshotPreparer interface {
	Stateful
	PrepareSnapshot(snap *Snapshot, prev any) any
}

// ResponseHeaderer is implemented by plugins that add a header to the
// response (GIE's ResponseHeader plugins; its conformance tests'
// destination-endpoint-served-verifier is one). The ext_proc server calls
// ResponseHeader on every response-headers message, concurrently, off the
// pick: served is the endpoint the proxy reports having served the request
// (x-gateway-destination-endpoint-served), hasLB whether the proxy sent
// envoy.lb metadata at all. It returns the header to set; an empty key sets
// none. It may allocate; it must not block.
type ResponseHeaderer interface {
	Plugin
	ResponseHeader(served string, hasLB bool) (key, value string)
}

// Stat is one statistic a plugin exposes (the binary turns each into a
// Prometheus metric labelled with the plugin's name).
type Stat struct {
	// Name is the metric name, e.g. "inference_extension_prefix_indexer_size".
	Name string
	// Help is a one-line description.
	Help string
	// Counter marks a value that only grows (else a gauge).
	Counter bool
	Value   float64
}

// StatsReporter is implemented by plugins with statistics. AppendStats
// appends the current values to dst and returns it; it is called off the
// request path (a metrics scrape), concurrently with picks, so it reads its
// state with atomics or its own locks. It must return the same names, in the
// same order, on every call.
type StatsReporter interface {
	Plugin
	AppendStats(dst []Stat) []Stat
}

// WeightedScorer is a scorer with its profile weight.
type WeightedScorer struct {
	Scorer
	Weight float64
}

// Profile is filters → weighted scorers → picker.
type Profile struct {
	Name    string
	Filters []Filter
	Scorers []WeightedScorer
	Picker  Picker

	observers []PickObserver
}

// Plan is an immutable, validated configuration ready to run. Build it with
// NewPlan; give it to one Scheduler.
type Plan struct {
	Profiles   []*Profile
	Handler    ProfileHandler
	Saturation SaturationDetector // nil: never shed
	// Plugins are all instantiated plugins, in config order.
	Plugins []Plugin

	fast      *fastPlan // nil: the fast path does not apply (fastpath.go)
	slots     int       // stateful plugins (len of Cycle.states, of published.prepared)
	staters   []slotted[CycleStater]
	preparers []slotted[SnapshotPreparer]
}

type slotted[T any] struct {
	p    T
	slot int
}

// NewPlan validates and seals a plan: it checks that each profile has a
// picker, lets the handler validate the profiles, wires pick observers and
// gives each stateful plugin (of the profiles, the handler, the saturation
// detector and plugins) its slot.
func NewPlan(handler ProfileHandler, profiles []*Profile, sat SaturationDetector, plugins []Plugin) (*Plan, error) {
	if len(profiles) == 0 {
		return nil, &InputError{What: "schedulingProfiles", Expected: "at least one profile", Found: "none"}
	}
	if handler == nil {
		return nil, &InputError{What: "profile handler", Expected: "a profile-handler plugin", Found: "none"}
	}
	if err := handler.Validate(profiles); err != nil {
		return nil, err
	}
	p := &Plan{Profiles: profiles, Handler: handler, Saturation: sat, Plugins: plugins}
	seen := map[any]bool{}
	slot := func(x any) {
		if x == nil || seen[x] {
			return
		}
		seen[x] = true
		st, ok := x.(Stateful)
		if !ok {
			return
		}
		st.SetSlot(p.slots)
		if cs, ok := x.(CycleStater); ok {
			p.staters = append(p.staters, slotted[CycleStater]{cs, p.slots})
		}
		if sp, ok := x.(SnapshotPreparer); ok {
			p.preparers = append(p.preparers, slotted[SnapshotPreparer]{sp, p.slots})
		}
		p.slots++
	}
	for _, pr := range profiles {
		if pr.Picker == nil {
			return nil, &InputError{What: "profile " + pr.Name, Expected: "a picker", Found: "none"}
		}
		pr.observers = pr.observers[:0]
		observe := func(x any) {
			if o, ok := x.(PickObserver); ok {
				pr.observers = append(pr.observers, o)
			}
			slot(x)
		}
		for _, f := range pr.Filters {
			observe(f)
		}
		for _, s := range pr.Scorers {
			observe(s.Scorer)
		}
		observe(pr.Picker)
	}
	slot(handler)
	if sat != nil {
		slot(sat)
	}
	for _, pl := range plugins {
		slot(pl)
	}
	p.fast = newFastPlan(p)
	return p, nil
}
