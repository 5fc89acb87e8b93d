package scorers

import (
	"fmt"
	"math"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guards: what the registry and config check, checked at compile time.
var (
	_ scheduler.Filter           = (*prefixAffinity)(nil)
	_ scheduler.CycleStater      = (*prefixAffinity)(nil)
	_ scheduler.SnapshotPreparer = (*prefixAffinity)(nil)
	_ scheduler.PickObserver     = (*prefixAffinity)(nil)
	_ Binder                     = (*prefixAffinity)(nil)
)

// PrefixAffinityFilterType is GIE's prefix-cache affinity filter: it narrows
// the candidates to the "sticky" ones, whose prefix match (matched leading
// blocks ÷ prompt blocks, GIE's prefix score without fastepp's
// fullScoreMatchBlocks) is at least affinityThreshold (default 0.8), keeping
// every candidate when none is sticky, when there is at most one candidate,
// or, with probability explorationProbability (default 0.01), to explore.
// affinityThreshold <= 0 turns it off. GIE also keeps every candidate when the
// best sticky endpoint's predicted TTFT exceeds the best other one's by more
// than maxTTFTPenaltyMs (default 5000); that needs GIE's latency predictor,
// which fastepp does not run, so, as in GIE without a predictor, the gate
// never opens: the parameter is validated (>= 0) and has no effect.
//
// The match data: GIE's filter reads what the approx-prefix-cache-producer
// wrote before scheduling. fastepp's filters run before its scorers, so the
// filter computes the match itself, with no allocation, against the index of
// the configuration's first prefix-cache-scorer (the same keyed hashes and
// tables; Bind finds it). The prompt is therefore hashed twice per pick when
// both are in a profile (about 4 ns per 64-byte block). When that scorer is
// not in the filter's profile its index would never learn the picks, so the
// filter records them itself (Picked). With no prefix-cache-scorer but an
// approx-prefix-cache-producer, the filter keeps its own index with the
// producer's parameters; with neither there is no prefix data (as in GIE),
// and the filter keeps every candidate, with a note.
const PrefixAffinityFilterType = "prefix-cache-affinity-filter"

type prefixAffinity struct {
	base
	threshold, explore, maxTTFTPenaltyMs float64

	// Set by Bind, before the plan runs; read-only afterwards.
	idx    *PrefixScorer // whose index is read; nil: none (the filter keeps all)
	own    bool          // idx is the filter's own: it prepares it per snapshot
	record bool          // the filter records picks in idx (Picked)

	slot int
}

func registerPrefixAffinity(r *scheduler.Registry) {
	r.MustRegister(PrefixAffinityFilterType, scheduler.Factory{
		Kind:   scheduler.KindFilter,
		Proto:  (*prefixAffinity)(nil),
		Params: []string{"affinityThreshold", "explorationProbability", "maxTTFTPenaltyMs"},
		Doc:    "keeps the endpoints that probably cached most of the prompt's prefix (all when none did)",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			f := &prefixAffinity{base: newBase(PrefixAffinityFilterType, name)}
			var err error
			if f.threshold, err = p.Float("affinityThreshold", 0.8); err != nil {
				return nil, err
			}
			if f.explore, err = p.Float("explorationProbability", 0.01); err != nil {
				return nil, err
			}
			if f.maxTTFTPenaltyMs, err = p.Float("maxTTFTPenaltyMs", 5000); err != nil {
				return nil, err
			}
			switch {
			case !(f.threshold <= 1) || math.IsInf(f.threshold, 0):
				return nil, fmt.Errorf("affinityThreshold: expected a prefix score of at most 1 (0 or less turns the filter off), found %v", f.threshold)
			case !(f.explore >= 0 && f.explore <= 1):
				return nil, fmt.Errorf("explorationProbability: expected a probability in 0..1, found %v", f.explore)
			case !(f.maxTTFTPenaltyMs >= 0) || math.IsInf(f.maxTTFTPenaltyMs, 0):
				return nil, fmt.Errorf("maxTTFTPenaltyMs: expected 0 or more milliseconds, found %v", f.maxTTFTPenaltyMs)
			}
			return f, nil
		},
	})
}

// Bind implements Binder: it chooses the prefix index the filter reads.
func (f *prefixAffinity) Bind(plugins []scheduler.Plugin, profiles []*scheduler.Profile) ([]string, error) {
	f.idx, f.own, f.record = nil, false, false
	var notes []string
	var scorers []*PrefixScorer
	var producer *prefixProducer
	for _, pl := range plugins {
		switch x := pl.(type) {
		case *PrefixScorer:
			scorers = append(scorers, x)
		case *prefixProducer:
			if producer == nil {
				producer = x
			}
		}
	}
	switch {
	case len(scorers) > 0:
		f.idx = scorers[0]
		if len(scorers) > 1 {
			notes = append(notes, fmt.Sprintf("reads the prefix index of prefix-cache-scorer %q, the first of %d (fastepp keeps one index per scorer)", f.idx.Name(), len(scorers)))
		}
		for _, pr := range profiles {
			if hasFilter(pr, f) && !hasScorer(pr, f.idx) {
				f.record = true // the scorer's Picked does not run there
			}
		}
	case producer != nil:
		idx, err := NewPrefixScorer(f.Name(), producer.cfg)
		if err != nil {
			return nil, err
		}
		f.idx, f.own, f.record = idx, true, true
	default:
		notes = append(notes, "no prefix-cache-scorer or approx-prefix-cache-producer in the configuration: there is no prefix data to read, so the filter keeps every endpoint (as in GIE, where nothing produces the match data then)")
	}
	return notes, nil
}

func hasFilter(p *scheduler.Profile, f scheduler.Filter) bool {
	for _, x := range p.Filters {
		if x == f {
			return true
		}
	}
	return false
}

func hasScorer(p *scheduler.Profile, s scheduler.Scorer) bool {
	for _, x := range p.Scorers {
		if x.Scorer == s {
			return true
		}
	}
	return false
}

// SetSlot implements scheduler.Stateful.
func (f *prefixAffinity) SetSlot(slot int) { f.slot = slot }

// NewCycleState implements scheduler.CycleStater: the prompt's hashes and
// matches, as the prefix scorer keeps them.
func (f *prefixAffinity) NewCycleState() any {
	return &prefixState{hashes: make([]uint64, 0, 64)}
}

// PrepareSnapshot implements scheduler.SnapshotPreparer: the filter's own
// index is aligned with each snapshot; a scorer's index is prepared by the
// scorer (nil here).
func (f *prefixAffinity) PrepareSnapshot(snap *scheduler.Snapshot, prev any) any {
	if !f.own {
		return nil
	}
	return f.idx.PrepareSnapshot(snap, prev)
}

// Filter implements scheduler.Filter.
func (f *prefixAffinity) Filter(c *scheduler.Cycle, cands []int32) []int32 {
	st := c.State(f.slot).(*prefixState)
	st.view = nil // nothing for Picked unless matched below
	if f.idx == nil || f.threshold <= 0 {
		return cands
	}
	gate := len(cands) > 1 && !(f.explore > 0 && c.Float64() < f.explore)
	if !gate && !f.record {
		return cands
	}
	vslot := f.idx.slot
	if f.own {
		vslot = f.slot
	}
	v, _ := c.Prepared(vslot).(*prefixView)
	nb := f.idx.match(st, v, c.Req, cands)
	if !gate || nb == 0 {
		return cands
	}
	// Compaction writes only kept entries, so when none is kept cands is intact.
	out := cands[:0]
	for _, e := range cands {
		if float64(st.matched[e]&^inPrev)/float64(nb) >= f.threshold {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return cands
	}
	return out
}

// Picked implements scheduler.PickObserver: when the filter reads an index no
// scorer of its profile updates (its own, or a scorer's outside the profile),
// it records the prompt on the chosen endpoint.
func (f *prefixAffinity) Picked(c *scheduler.Cycle, chosen int32) {
	if !f.record {
		return
	}
	f.idx.record(c.State(f.slot).(*prefixState), chosen)
}
