package scorers

import (
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// pickMany runs n picks with a constant-score plan and the given picker and
// counts primaries and list lengths.
func pickMany(t *testing.T, pk scheduler.Picker, sc scheduler.Scorer, states []scheduler.EndpointState, n int) (map[string]int, []int) {
	t.Helper()
	plan, err := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
		Name: "p", Scorers: []scheduler.WeightedScorer{{Scorer: sc, Weight: 1}}, Picker: pk,
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := scheduler.New(plan)
	s.Publish(scheduler.NewSnapshot(states, time.Now(), 0))
	c := s.NewCycle()
	count := map[string]int{}
	var lens []int
	for i := 0; i < n; i++ {
		res, err := s.Pick(c, &scheduler.Request{Model: "m"})
		if err != nil {
			t.Fatal(err)
		}
		count[res.Endpoints[0].Name]++
		lens = append(lens, len(res.Endpoints))
		seen := map[*scheduler.Handle]bool{}
		for _, h := range res.Endpoints {
			if seen[h] {
				t.Fatalf("endpoint %s twice in one result", h)
			}
			seen[h] = true
		}
		res.Release()
	}
	return count, lens
}

func newPicker(t *testing.T, typ string, n int) scheduler.Picker {
	f, _ := NewRegistry().Lookup(typ)
	p, err := f.New("", scheduler.MapParams{"maxNumOfEndpoints": n})
	if err != nil {
		t.Fatal(err)
	}
	return p.(scheduler.Picker)
}

func TestMaxScorePicker(t *testing.T) {
	now := time.Now()
	kv := mustPlugin(t, KVCacheScorerType).(scheduler.Scorer)
	// e1 is best, e0 and e2 tie second, e3 last.
	st := endpoints(now, scheduler.Metrics{KVUsage: 0.5}, scheduler.Metrics{KVUsage: 0.1}, scheduler.Metrics{KVUsage: 0.5}, scheduler.Metrics{KVUsage: 0.9})
	count, lens := pickMany(t, newPicker(t, MaxScorePickerType, 1), kv, st, 50)
	if count["e1"] != 50 || lens[0] != 1 {
		t.Fatalf("max-score: primaries %v lens %v, want e1 always, 1 endpoint", count, lens[0])
	}
	// Fallbacks: 3 endpoints ordered by score; ties broken at random.
	plan, _ := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
		Name: "p", Scorers: []scheduler.WeightedScorer{{Scorer: kv, Weight: 1}}, Picker: newPicker(t, MaxScorePickerType, 3),
	}}, nil, nil)
	s := scheduler.New(plan)
	s.Publish(scheduler.NewSnapshot(st, now, 0))
	c := s.NewCycle()
	second := map[string]int{}
	for i := 0; i < 400; i++ {
		res, err := s.Pick(c, &scheduler.Request{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Endpoints) != 3 || res.Endpoints[0].Name != "e1" {
			t.Fatalf("fallback list %v, want e1 then the two tied", res.Endpoints)
		}
		if res.Endpoints[2].Name == "e3" {
			t.Fatalf("e3 (worst) in the top 3: %v", res.Endpoints)
		}
		second[res.Endpoints[1].Name]++
		res.Release()
	}
	if second["e0"] < 140 || second["e2"] < 140 {
		t.Errorf("tie-break between e0 and e2 not uniform: %v", second)
	}
}

func TestMaxScoreTieBreakUniform(t *testing.T) {
	now := time.Now()
	st := endpoints(now, make([]scheduler.Metrics, 4)...)
	kv := mustPlugin(t, KVCacheScorerType).(scheduler.Scorer)
	count, _ := pickMany(t, newPicker(t, MaxScorePickerType, 1), kv, st, 4000)
	for ep, n := range count {
		if n < 850 || n > 1150 {
			t.Errorf("%s picked %d of 4000 on an all-tie, want ~1000", ep, n)
		}
	}
}

func TestRandomPickers(t *testing.T) {
	now := time.Now()
	kv := mustPlugin(t, KVCacheScorerType).(scheduler.Scorer)
	st := endpoints(now, scheduler.Metrics{KVUsage: 0}, scheduler.Metrics{KVUsage: 0.5}, scheduler.Metrics{KVUsage: 1})
	// random-picker ignores scores.
	count, lens := pickMany(t, newPicker(t, RandomPickerType, 2), kv, st, 3000)
	for _, ep := range []string{"e0", "e1", "e2"} {
		if count[ep] < 850 || count[ep] > 1150 {
			t.Errorf("random-picker: %s %d of 3000, want ~1000", ep, count[ep])
		}
	}
	if lens[0] != 2 {
		t.Errorf("random-picker returned %d endpoints, want 2", lens[0])
	}
	// weighted-random: P(e0) = 1/1.5, P(e1) = 0.5/1.5, e2 (score 0) never.
	count, _ = pickMany(t, newPicker(t, WeightedRandomPickerType, 1), kv, st, 3000)
	if count["e2"] != 0 {
		t.Errorf("weighted-random picked a zero-score endpoint %d times", count["e2"])
	}
	if count["e0"] < 1850 || count["e0"] > 2150 {
		t.Errorf("weighted-random: e0 %d of 3000, want ~2000", count["e0"])
	}
}

func TestPickerParams(t *testing.T) {
	f, _ := NewRegistry().Lookup(MaxScorePickerType)
	if _, err := f.New("", scheduler.MapParams{"maxNumOfEndpoints": 0}); err == nil {
		t.Error("maxNumOfEndpoints 0 accepted")
	}
}

func TestUtilizationDetector(t *testing.T) {
	now := time.Now()
	u := mustPlugin(t, UtilizationDetectorType).(*utilization)
	cases := []struct {
		name string
		ms   []scheduler.Metrics
		want float64
	}{
		{"idle", []scheduler.Metrics{{}, {}}, 0},
		{"queue dominates", []scheduler.Metrics{{Waiting: 5, KVUsage: 0.4}, {Waiting: 0, KVUsage: 0.4}}, (1 + 0.5) / 2},
		{"kv dominates", []scheduler.Metrics{{Waiting: 1, KVUsage: 0.8}}, 1},
		{"stale counts saturated", []scheduler.Metrics{{UpdatedAt: now.Add(-time.Second)}, {}}, 0.5},
		{"overloaded", []scheduler.Metrics{{Waiting: 10}, {Waiting: 10}}, 2},
	}
	for _, tc := range cases {
		snap := scheduler.NewSnapshot(endpoints(now, tc.ms...), now, 0)
		if got := u.Saturation(snap, now); !near(got, tc.want) {
			t.Errorf("%s: saturation %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := u.Saturation(scheduler.NewSnapshot(nil, now, 0), now); got != 1 {
		t.Errorf("empty pool: %v, want 1 (saturated)", got)
	}
}

// TestShedWhenSaturated: a sheddable request is refused on a saturated pool,
// a normal one is served; as a filter the detector drops saturated endpoints.
func TestShedWhenSaturated(t *testing.T) {
	now := time.Now()
	u := mustPlugin(t, UtilizationDetectorType).(*utilization)
	kv := mustPlugin(t, KVCacheScorerType).(scheduler.Scorer)
	plan, err := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
		Name: "p", Filters: []scheduler.Filter{u}, Scorers: []scheduler.WeightedScorer{{Scorer: kv, Weight: 1}}, Picker: NewMaxScorePicker(1),
	}}, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := scheduler.New(plan)
	c := s.NewCycle()
	s.Publish(scheduler.NewSnapshot(endpoints(now, scheduler.Metrics{Waiting: 9, KVUsage: 0.1}, scheduler.Metrics{Waiting: 9, KVUsage: 0.2}), now, 0))
	if _, err := s.Pick(c, &scheduler.Request{Priority: -1}); err != scheduler.ErrShed {
		t.Fatalf("sheddable on saturated pool: %v, want ErrShed", err)
	}
	res, err := s.Pick(c, &scheduler.Request{Priority: 0})
	if err != nil {
		t.Fatalf("normal request on saturated pool: %v", err)
	}
	res.Release()
	// Filter: e0 saturated (queue), e1 not, although e0 has more free KV.
	s.Publish(scheduler.NewSnapshot(endpoints(now, scheduler.Metrics{Waiting: 6, KVUsage: 0}, scheduler.Metrics{Waiting: 1, KVUsage: 0.5}), now, 0))
	for i := 0; i < 10; i++ {
		res, err := s.Pick(c, &scheduler.Request{})
		if err != nil || res.Endpoints[0].Name != "e1" {
			t.Fatalf("filter kept a saturated endpoint: %v %v", res, err)
		}
		res.Release()
	}
}
