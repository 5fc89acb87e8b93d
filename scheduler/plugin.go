package scheduler

import "time"

// Kind classifies plugin types.
type Kind string

// Plugin kinds, matching the GIE configuration's roles.
const (
	KindFilter         Kind = "filter"
	KindScorer         Kind = "scorer"
	KindPicker         Kind = "picker"
	KindProfileHandler Kind = "profile-handler"
	KindSaturation     Kind = "saturation-detector"
	KindDataLayer      Kind = "data-layer"
)

// Plugin is anything a config can instantiate.
type Plugin interface {
	// Type is the GIE type name, e.g. "queue-scorer".
	Type() string
	// Name is the instance name from the config (defaults to the type).
	Name() string
}

// Filter narrows the candidate set. It filters cands in place and returns the
// kept prefix; it must not allocate.
type Filter interface {
	Plugin
	Filter(c *Cycle, cands []int32) []int32
}

// Scorer scores each candidate in 0..1 (values outside are clamped).
// out has len(cands); out[i] scores cands[i]. It must not allocate.
type Scorer interface {
	Plugin
	Score(c *Cycle, cands []int32, out []float64)
}

// Picker chooses endpoints from scored candidates: it writes snapshot indices
// into out (primary first, then fallbacks) and returns the filled prefix.
type Picker interface {
	Plugin
	Pick(c *Cycle, cands []int32, scores []float64, out []int32) []int32
}

// ProfileHandler chooses which profile serves a request.
type ProfileHandler interface {
	Plugin
	// Select returns the index of the profile whose result is used.
	Select(c *Cycle, profiles []*Profile) int
	// Validate rejects profile sets the handler cannot run.
	Validate(profiles []*Profile) error
}

// SaturationDetector tells whether the pool is saturated (sheddable requests
// are then refused with 429).
type SaturationDetector interface {
	Plugin
	// Saturation returns the pool's saturation; >= 1 means saturated.
	Saturation(snap *Snapshot, now time.Time) float64
}

// PickObserver is told which endpoint won, synchronously inside Pick (the
// prefix index records the prompt there, so the next request sees it).
type PickObserver interface {
	Picked(c *Cycle, chosen int32)
}

// CycleStater is implemented by plugins that need per-cycle scratch space.
// The plan assigns each such plugin a slot; Cycle.State(slot) returns the
// value NewCycleState made for that cycle.
type CycleStater interface {
	NewCycleState() any
	SetStateSlot(slot int)
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

// Plan is an immutable, validated configuration ready to run.
type Plan struct {
	Profiles   []*Profile
	Handler    ProfileHandler
	Saturation SaturationDetector // nil: never shed
	// Plugins are all instantiated plugins, in config order.
	Plugins []Plugin

	staters []CycleStater
}

// NewPlan validates and seals a plan: it wires pick observers and cycle-state
// slots. Each profile needs a picker.
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
	var pr *Profile
	add := func(x any) {
		if o, ok := x.(PickObserver); ok {
			pr.observers = append(pr.observers, o)
		}
		if seen[x] {
			return
		}
		seen[x] = true
		if st, ok := x.(CycleStater); ok {
			st.SetStateSlot(len(p.staters))
			p.staters = append(p.staters, st)
		}
	}
	for _, pr = range profiles {
		pr.observers = pr.observers[:0]
		if pr.Picker == nil {
			return nil, &InputError{What: "profile " + pr.Name, Expected: "a picker", Found: "none"}
		}
		for _, f := range pr.Filters {
			add(f)
		}
		for _, s := range pr.Scorers {
			add(s.Scorer)
		}
		add(pr.Picker)
	}
	return p, nil
}
