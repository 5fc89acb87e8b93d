package scorers

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
	"github.com/fastepp/fastepp/simulator/engine"
)

// gpu builds a present GPUState with the given fields.
func gpu(product string, f func(g *scheduler.GPUState)) scheduler.GPUState {
	g := scheduler.GPUState{Present: true, Count: 1, Product: product, ReadAt: time.Now()}
	f(&g)
	return g
}

func withAct(a float64) func(*scheduler.GPUState) {
	return func(g *scheduler.GPUState) { g.Has |= scheduler.GPUActivity; g.GfxActivity = a }
}

// TestGPUHeadroomFormula pins the formula of GPUHeadroomScorerType with
// the default parameters (weights 1/1, powerKnee 0.9, junction 105 °C,
// memory 95 °C, margin 15 °C, clock busy 0.5, deficit 0.3, neutral 0.5).
func TestGPUHeadroomFormula(t *testing.T) {
	const mi300 = "AMD Instinct MI300X"
	p := defaultGPUHeadroomParams()
	all := func(a, pw, capW, tj, tm, sclk float64) func(*scheduler.GPUState) {
		return func(g *scheduler.GPUState) {
			g.Has = scheduler.GPUActivity | scheduler.GPUPower | scheduler.GPUJunctionTemp | scheduler.GPUMemoryTemp | scheduler.GPUSclk
			g.GfxActivity, g.PowerWatts, g.JunctionCelsius, g.MemoryCelsius, g.SclkHz = a, pw, tj, tm, sclk
			if capW > 0 {
				g.Has |= scheduler.GPUPowerCap
				g.PowerCapWatts = capW
			}
		}
	}
	for _, tc := range []struct {
		name string
		g    scheduler.GPUState
		want float64
	}{
		{"absent telemetry is neutral", scheduler.GPUState{}, 0.5},
		{"present but no field is neutral", gpu(mi300, func(*scheduler.GPUState) {}), 0.5},
		{"idle, cool: full headroom", gpu(mi300, all(0, 140, 0, 40, 40, 735e6)), 1},
		{"activity only: 1 − a (throttle left out)", gpu("unknown", withAct(0.25)), 0.75},
		{"busy, no throttle: (0 + 1)/2", gpu(mi300, all(1, 600, 0, 80, 70, 2100e6)), 0.5},
		{"power at cap from data sheet (no cap in telemetry)", gpu(mi300, all(0.5, 750, 0, 40, 40, 2100e6)), 0.25},
		{"power cap from telemetry wins", gpu(mi300, all(0.5, 750, 1000, 40, 40, 2100e6)), 0.75},
		{"power half way through the knee", gpu(mi300, all(0.5, 712.5, 0, 40, 40, 2100e6)), 0.5},
		{"junction at limit", gpu(mi300, all(0.5, 300, 0, 105, 40, 2100e6)), 0.25},
		{"junction 5 °C into the margin", gpu(mi300, all(0, 300, 0, 95, 40, 2100e6)), (1 + (1 - 5.0/15)) / 2},
		{"memory temperature over limit", gpu(mi300, all(0, 300, 0, 40, 99, 2100e6)), 0.5},
		{"busy with clocks 15% below max", gpu(mi300, all(0.6, 300, 0, 40, 40, 0.85*2100e6)), (0.4 + 0.5) / 2},
		{"idle clocks down: no throttle", gpu(mi300, all(0.2, 300, 0, 40, 40, 0.35*2100e6)), (0.8 + 1) / 2},
		{"unknown product: no cap, no max clock, temps count", gpu("X", all(0.6, 900, 0, 40, 40, 1e9)), (0.4 + 1) / 2},
		{"worst throttle signal counts, not the sum", gpu(mi300, all(0, 750, 0, 105, 95, 2100e6)), 0.5},
	} {
		if got := p.headroom(&tc.g); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	q := p
	q.neutral = 1
	if got := q.headroom(&scheduler.GPUState{}); got != 1 {
		t.Errorf("neutralScore 1: %v", got)
	}
	q = p
	q.throttleWeight = 0
	if got := q.headroom(ptr(gpu(mi300, all(0.5, 750, 0, 105, 95, 2100e6)))); got != 0.5 {
		t.Errorf("throttleWeight 0: %v, want 1 − a = 0.5", got)
	}
}

func ptr[T any](v T) *T { return &v }

// TestGPUHeadroomParams: bad parameters say what was expected.
func TestGPUHeadroomParams(t *testing.T) {
	f, _ := NewRegistry().Lookup(GPUHeadroomScorerType)
	for _, tc := range []struct {
		p    scheduler.MapParams
		want string
	}{
		{scheduler.MapParams{"powerKnee": 1.0}, "powerKnee: expected a fraction"},
		{scheduler.MapParams{"neutralScore": 2.0}, "neutralScore: expected a score in [0, 1]"},
		{scheduler.MapParams{"activityWeight": 0.0, "throttleWeight": 0.0}, "expected at least one above 0"},
		{scheduler.MapParams{"temperatureMarginCelsius": 0.0}, "temperatureMarginCelsius"},
	} {
		if _, err := f.New("", tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.p, err, tc.want)
		}
	}
}

// TestCapacityQueueScorer: the queue is divided by the capacity weight of
// the endpoint's GPU product (built in, or the capacities parameter), then
// min-max inverted; an endpoint whose telemetry is momentarily absent keeps
// its last known weight; an unknown one gets defaultCapacity.
func TestCapacityQueueScorer(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name     string
		params   scheduler.MapParams
		products []string
		waiting  []int
		want     []float64
	}{
		{"equal GPUs: plain queue-scorer", nil, []string{"AMD Instinct MI300X", "AMD Instinct MI300X"}, []int{2, 4}, []float64{1, 0}},
		{"MI300X with 6 waiting beats H100 with 4 (6/1 < 4/0.632)", nil,
			[]string{"AMD Instinct MI300X", "NVIDIA H100 80GB HBM3"}, []int{6, 4}, []float64{1, 0}},
		{"three GPUs", scheduler.MapParams{"capacities": "A=2, B=1,C=0.5"}, []string{"A", "B", "C"}, []int{4, 2, 1}, []float64{1, 1, 1}},
		{"min-max over q/w", scheduler.MapParams{"capacities": "A=2,B=1"}, []string{"A", "B", ""}, []int{8, 1, 3}, []float64{0, 1, (4 - 3.0) / 3}},
		{"defaultCapacity for the unknown", scheduler.MapParams{"capacities": "A=2", "defaultCapacity": 0.5}, []string{"A", "?"}, []int{4, 1}, []float64{1, 1}},
		{"tensor parallel 2 doubles the weight", scheduler.MapParams{"capacities": "A=1,T2=1"}, []string{"A", "T2"}, []int{2, 3}, []float64{0, 1}},
		{"scaleByGPUCount false", scheduler.MapParams{"capacities": "A=1,T2=1", "scaleByGPUCount": false}, []string{"A", "T2"}, []int{2, 3}, []float64{1, 0}},
	} {
		ms := make([]scheduler.Metrics, len(tc.waiting))
		for i, w := range tc.waiting {
			ms[i].Waiting = w
		}
		st := endpoints(now, ms...)
		for i, p := range tc.products {
			if p != "" {
				st[i].GPU = scheduler.GPUState{Present: true, Product: p, Count: 1}
				if p == "T2" {
					st[i].GPU.Product, st[i].GPU.Count = "T2", 2
				}
			}
		}
		s := newPluginWith(t, CapacityQueueScorerType, tc.params).(*capacityQueueScorer)
		got := scoreWith(t, s, st, now)
		for i := range got {
			if math.Abs(got[i]-tc.want[i]) > 1e-9 {
				t.Errorf("%s: scores %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
	// Last known weight survives a snapshot without telemetry.
	s := newPluginWith(t, CapacityQueueScorerType, scheduler.MapParams{"capacities": "A=4"}).(*capacityQueueScorer)
	st := endpoints(now, scheduler.Metrics{}, scheduler.Metrics{})
	st[0].GPU = scheduler.GPUState{Present: true, Product: "A"}
	p1 := s.PrepareSnapshot(scheduler.NewSnapshot(st, now, 0), nil)
	st[0].GPU = scheduler.GPUState{}
	p2 := s.PrepareSnapshot(scheduler.NewSnapshot(st, now, 0), p1).(*capacityPrepared)
	if p2.inv[0] != 0.25 || p2.inv[1] != 1 {
		t.Errorf("inverse weights %v, want [0.25 1]", p2.inv)
	}
	f, _ := NewRegistry().Lookup(CapacityQueueScorerType)
	for _, bad := range []scheduler.MapParams{{"capacities": "A"}, {"capacities": "A=0"}, {"defaultCapacity": -1.0}} {
		if _, err := f.New("", bad); err == nil || !strings.Contains(err.Error(), "expected") {
			t.Errorf("%v: %v, want an error saying what was expected", bad, err)
		}
	}
}

// scoreWith returns s's score of every endpoint of st (fewer than 10),
// read through a real pick (prepared values included).
func scoreWith(t *testing.T, s scheduler.Scorer, st []scheduler.EndpointState, _ time.Time) []float64 {
	t.Helper()
	m := scoresOf(t, s, st, req("m", text(64, 1)))
	out := make([]float64, len(st))
	for i := range st {
		out[i] = m[st[i].H.Name[:2]]
	}
	return out
}

// TestGPUProductsMatchSimulatorProfiles: the built-in product table is
// derived from configs/simulator/gpus.yaml (power cap = TDP, max clock,
// capacity = hbm_tbps·mbu relative to the MI300X).
func TestGPUProductsMatchSimulatorProfiles(t *testing.T) {
	p, err := engine.DefaultProfiles()
	if err != nil {
		t.Fatal(err)
	}
	ref := p.GPUs["mi300x"]
	for name, g := range p.GPUs {
		got, ok := GPUProducts[g.CardModel]
		if !ok {
			t.Errorf("profile %s (%q) missing from GPUProducts", name, g.CardModel)
			continue
		}
		want := GPUProduct{PowerCapWatts: g.TDPWatts, MaxSclkHz: g.MaxSclkMHz * 1e6, Capacity: g.HBMTBps * g.MBU / (ref.HBMTBps * ref.MBU)}
		if math.Abs(got.PowerCapWatts-want.PowerCapWatts) > 1e-9 || math.Abs(got.MaxSclkHz-want.MaxSclkHz) > 1e-3 || math.Abs(got.Capacity-want.Capacity) > 1e-9 {
			t.Errorf("%s: %+v, want %+v", g.CardModel, got, want)
		}
	}
}

// TestGPUScorersAllocs: a pick through gpu-headroom-scorer and
// capacity-queue-scorer allocates nothing (their per-snapshot work is in
// PrepareSnapshot).
func TestGPUScorersAllocs(t *testing.T) {
	now := time.Now()
	st := endpoints(now, make([]scheduler.Metrics, 16)...)
	for i := range st {
		st[i].M.Waiting = i % 5
		st[i].GPU = gpu("AMD Instinct MI300X", withAct(float64(i)/16))
	}
	h := newPluginWith(t, GPUHeadroomScorerType, nil).(scheduler.Scorer)
	cq := newPluginWith(t, CapacityQueueScorerType, nil).(scheduler.Scorer)
	plan, err := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
		Name: "p", Scorers: []scheduler.WeightedScorer{{Scorer: h, Weight: 1}, {Scorer: cq, Weight: 2}}, Picker: NewMaxScorePicker(1),
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := scheduler.New(plan)
	s.Publish(scheduler.NewSnapshot(st, now, 0))
	c := s.NewCycle()
	r := req("m", text(400, 1))
	pick := func() {
		res, err := s.Pick(c, r)
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
	}
	pick()
	if a := testing.AllocsPerRun(200, pick); a != 0 {
		t.Errorf("pick through the GPU scorers: %v allocs, want 0", a)
	}
}
