package scorers

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// affinityRig is a plan of [prefix-cache-affinity-filter] → [scorers] →
// max-score-picker(all), bound as config binds it, over n idle endpoints.
type affinityRig struct {
	f     *prefixAffinity
	s     *scheduler.Scheduler
	c     *scheduler.Cycle
	notes []string
}

func newAffinityRig(t *testing.T, params scheduler.MapParams, scorers []scheduler.Scorer, others []scheduler.Plugin, n int) *affinityRig {
	t.Helper()
	f := newPluginWith(t, PrefixAffinityFilterType, params).(*prefixAffinity)
	prof := &scheduler.Profile{Name: "p", Filters: []scheduler.Filter{f}, Picker: NewMaxScorePicker(n)}
	plugins := []scheduler.Plugin{f}
	for _, s := range scorers {
		prof.Scorers = append(prof.Scorers, scheduler.WeightedScorer{Scorer: s, Weight: 1})
		plugins = append(plugins, s)
	}
	plugins = append(plugins, others...)
	var notes []string
	for _, p := range plugins {
		if b, ok := p.(Binder); ok {
			ns, err := b.Bind(plugins, []*scheduler.Profile{prof})
			if err != nil {
				t.Fatal(err)
			}
			notes = append(notes, ns...)
		}
	}
	plan, err := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{prof}, nil, plugins)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r := &affinityRig{f: f, s: scheduler.New(plan), notes: notes}
	r.s.Publish(scheduler.NewSnapshot(endpoints(now, make([]scheduler.Metrics, n)...), now, 0))
	r.c = r.s.NewCycle()
	return r
}

// keep picks req through the rig and returns the kept endpoints (sorted) and
// the primary.
func (r *affinityRig) keep(t *testing.T, req *scheduler.Request) ([]string, string) {
	t.Helper()
	res, err := r.s.Pick(r.c, req)
	if err != nil {
		t.Fatal(err)
	}
	res.Release()
	var names []string
	for _, h := range res.Endpoints {
		names = append(names, h.Name)
	}
	slices.Sort(names)
	return names, res.Endpoints[0].Name
}

// TestPrefixAffinityFilter: GIE's sticky gate. The prompt is first sent to
// one endpoint (recorded by the scorer's Picked); then the filter keeps the
// endpoints whose match ratio reaches affinityThreshold, or all of them.
func TestPrefixAffinityFilter(t *testing.T) {
	all := []string{"e0", "e1", "e2", "e3"}
	p := text(64*10, 21)
	cases := []struct {
		name   string
		params scheduler.MapParams
		prompt []byte
		sticky bool // only the endpoint that saw the prompt is kept
	}{
		{"same prompt: sticky", scheduler.MapParams{"explorationProbability": 0.0}, p, true},
		{"8 of 10 blocks meets 0.8", scheduler.MapParams{"explorationProbability": 0.0}, append(append([]byte{}, p[:64*8]...), text(128, 22)...), true},
		{"7 of 10 blocks misses 0.8: all kept", scheduler.MapParams{"explorationProbability": 0.0}, append(append([]byte{}, p[:64*7]...), text(192, 23)...), false},
		{"7 of 10 meets 0.7", scheduler.MapParams{"explorationProbability": 0.0, "affinityThreshold": 0.7}, append(append([]byte{}, p[:64*7]...), text(192, 24)...), true},
		{"unseen prompt: all kept", scheduler.MapParams{"explorationProbability": 0.0}, text(640, 25), false},
		{"no whole block: all kept", scheduler.MapParams{"explorationProbability": 0.0}, p[:60], false},
		{"threshold 0: off", scheduler.MapParams{"explorationProbability": 0.0, "affinityThreshold": 0.0}, p, false},
		{"negative threshold: off (GIE)", scheduler.MapParams{"explorationProbability": 0.0, "affinityThreshold": -1.0}, p, false},
		{"exploration 1: always all", scheduler.MapParams{"explorationProbability": 1.0}, p, false},
		{"TTFT gate needs predictions: never opens", scheduler.MapParams{"explorationProbability": 0.0, "maxTTFTPenaltyMs": 0.0}, p, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc := newPrefix(t, DefaultPrefixConfig())
			r := newAffinityRig(t, tc.params, []scheduler.Scorer{sc}, nil, 4)
			if r.f.idx != sc || r.f.own || r.f.record {
				t.Fatalf("bound to %p own %v record %v, want the scorer's index, recorded by the scorer", r.f.idx, r.f.own, r.f.record)
			}
			_, first := r.keep(t, req("m", p)) // all kept: nothing cached yet
			got, _ := r.keep(t, req("m", tc.prompt))
			want := all
			if tc.sticky {
				want = []string{first}
			}
			if !slices.Equal(got, want) {
				t.Errorf("kept %v, want %v", got, want)
			}
		})
	}
}

// TestPrefixAffinityExploration: with explorationProbability 0.5 about half
// the picks skip the gate.
func TestPrefixAffinityExploration(t *testing.T) {
	r := newAffinityRig(t, scheduler.MapParams{"explorationProbability": 0.5}, []scheduler.Scorer{newPrefix(t, DefaultPrefixConfig())}, nil, 4)
	p := text(640, 31)
	r.keep(t, req("m", p))
	open := 0
	for i := 0; i < 1000; i++ {
		if got, _ := r.keep(t, req("m", p)); len(got) == 4 {
			open++
		}
	}
	if open < 430 || open > 570 {
		t.Errorf("gate skipped %d of 1000 picks, want about 500", open)
	}
}

// TestPrefixAffinityBinding: which index the filter reads, and who records
// picks in it.
func TestPrefixAffinityBinding(t *testing.T) {
	p := text(640, 41)
	zero := scheduler.MapParams{"explorationProbability": 0.0}

	// The scorer is in the plan but not in the filter's profile: the filter
	// records the picks itself.
	sc := newPrefix(t, DefaultPrefixConfig())
	r := newAffinityRig(t, zero, nil, []scheduler.Plugin{sc}, 4)
	if r.f.idx != sc || r.f.own || !r.f.record {
		t.Fatalf("scorer outside the profile: own %v record %v, want the scorer's index, recorded by the filter", r.f.own, r.f.record)
	}
	_, first := r.keep(t, req("m", p))
	if got, _ := r.keep(t, req("m", p)); !slices.Equal(got, []string{first}) {
		t.Errorf("scorer outside the profile: kept %v, want [%s]", got, first)
	}

	// No scorer, a producer: the filter's own index, with the producer's
	// parameters.
	prod := newPluginWith(t, PrefixProducerType, scheduler.MapParams{"blockSizeTokens": 8}).(*prefixProducer)
	r = newAffinityRig(t, zero, nil, []scheduler.Plugin{prod}, 4)
	if r.f.idx == nil || !r.f.own || !r.f.record || r.f.idx.Config().BlockSizeTokens != 8 {
		t.Fatalf("producer only: idx %v own %v record %v", r.f.idx, r.f.own, r.f.record)
	}
	_, first = r.keep(t, req("m", p))
	if got, _ := r.keep(t, req("m", p)); !slices.Equal(got, []string{first}) {
		t.Errorf("own index: kept %v, want [%s]", got, first)
	}

	// Neither: no data, every endpoint kept, and a note.
	r = newAffinityRig(t, zero, nil, nil, 4)
	r.keep(t, req("m", p))
	if got, _ := r.keep(t, req("m", p)); len(got) != 4 || r.f.idx != nil {
		t.Errorf("no index: kept %v, want all", got)
	}
	if len(r.notes) != 1 || !strings.Contains(r.notes[0], "no prefix-cache-scorer or approx-prefix-cache-producer") {
		t.Errorf("no index: notes %q", r.notes)
	}

	// Two scorers: the first, with a note.
	a, b := newPrefix(t, DefaultPrefixConfig()), newPrefix(t, DefaultPrefixConfig())
	r = newAffinityRig(t, zero, []scheduler.Scorer{a, b}, nil, 4)
	if r.f.idx != a || len(r.notes) != 1 || !strings.Contains(r.notes[0], "the first of 2") {
		t.Errorf("two scorers: bound to the first %v, notes %q", r.f.idx == a, r.notes)
	}
}

func TestPrefixAffinityParams(t *testing.T) {
	f, _ := NewRegistry().Lookup(PrefixAffinityFilterType)
	for _, tc := range []struct {
		p    scheduler.MapParams
		want string
	}{
		{scheduler.MapParams{"affinityThreshold": 1.5}, "affinityThreshold: expected a prefix score of at most 1"},
		{scheduler.MapParams{"explorationProbability": -0.1}, "explorationProbability: expected a probability in 0..1, found -0.1"},
		{scheduler.MapParams{"explorationProbability": 2}, "explorationProbability: expected a probability in 0..1, found 2"},
		{scheduler.MapParams{"maxTTFTPenaltyMs": -1}, "maxTTFTPenaltyMs: expected 0 or more milliseconds, found -1"},
	} {
		if _, err := f.New("", tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.p, err, tc.want)
		}
	}
}

// TestPrefixAffinityAllocs: a pick through the filter and the prefix scorer,
// and one through the filter's own index, allocate nothing.
func TestPrefixAffinityAllocs(t *testing.T) {
	prod := newPluginWith(t, PrefixProducerType, nil)
	for name, r := range map[string]*affinityRig{
		"with scorer": newAffinityRig(t, nil, []scheduler.Scorer{newPrefix(t, DefaultPrefixConfig())}, nil, 16),
		"own index":   newAffinityRig(t, nil, nil, []scheduler.Plugin{prod}, 16),
	} {
		ps := [][]byte{text(2048, 51), text(2048, 52), text(2048, 53)}
		var q scheduler.Request
		q.Model = "m"
		for _, p := range ps {
			q.SetPrompt(p)
			r.keep(t, &q)
		}
		i := 0
		a := testing.AllocsPerRun(300, func() {
			q.SetPrompt(ps[i%len(ps)])
			i++
			res, err := r.s.Pick(r.c, &q)
			if err != nil {
				t.Fatal(err)
			}
			res.Release()
		})
		if a != 0 {
			t.Errorf("%s: %v allocs per pick, want 0", name, a)
		}
	}
}
