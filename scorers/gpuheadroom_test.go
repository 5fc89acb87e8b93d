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
// the default parameters (activity weight 0, throttle weight 1, powerKnee
// 0.9, junction 105 °C, memory 95 °C, margin 15 °C, clock busy 0.9, deficit
// 0.3, neutral 0.5).
func TestGPUHeadroomFormula(t *testing.T) {
	const mi300 = "AMD Instinct MI300X"
	const max300 = 2100e6
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
	noClock := func(a, pw, capW float64) func(*scheduler.GPUState) {
		return func(g *scheduler.GPUState) {
			all(a, pw, capW, 40, 40, 0)(g)
			g.Has &^= scheduler.GPUSclk
		}
	}
	for _, tc := range []struct {
		name string
		g    scheduler.GPUState
		want float64
	}{
		{"absent telemetry is neutral", scheduler.GPUState{}, 0.5},
		{"present but no field is neutral", gpu(mi300, func(*scheduler.GPUState) {}), 0.5},
		{"activity alone is no term by default", gpu(mi300, withAct(0.25)), 0.5},
		{"idle, cool: full headroom", gpu(mi300, all(0, 140, 0, 40, 40, 0.35*max300)), 1},
		{"busy at full clock and at the power cap: no loss", gpu(mi300, all(1, 750, 0, 80, 70, max300)), 1},
		{"busy, clocks 15% below max: loss 0.15 of 0.3", gpu(mi300, all(1, 750, 0, 80, 70, 0.85*max300)), 0.5},
		{"95% busy at 95% clock: the deficit may be idle time", gpu(mi300, all(0.95, 700, 0, 80, 70, 0.95*max300)), 1},
		{"95% busy at 76% clock: busy clock ≤ 0.8", gpu(mi300, all(0.95, 700, 0, 80, 70, 0.76*max300)), 1 - 0.2/0.3},
		{"the simulator's DVFS (clock 0.35 + 0.65a) is no throttle", gpu(mi300, all(0.9, 690, 0, 80, 0, (0.35+0.65*0.9)*max300)), 1},
		{"part idle: low clock says nothing", gpu(mi300, all(0.6, 500, 0, 60, 50, 0.35*max300)), 1},
		{"no clock: power at the data sheet's cap stands in", gpu(mi300, noClock(0.5, 750, 0)), 0},
		{"no clock: power half way through the knee", gpu(mi300, noClock(0.5, 712.5, 0)), 0.5},
		{"no clock: power cap from telemetry wins", gpu(mi300, noClock(0.5, 750, 1000)), 1},
		{"unknown product: no max clock, no cap: temperatures count", gpu("X", all(0.95, 900, 0, 40, 40, 1e9)), 1},
		{"unknown product: power against the telemetry's cap", gpu("X", all(0.95, 950, 1000, 40, 40, 1e9)), 0.5},
		{"junction at limit", gpu(mi300, all(0.5, 300, 0, 105, 40, max300)), 0},
		{"junction 5 °C into the margin", gpu(mi300, all(0, 300, 0, 95, 40, max300)), 1 - 5.0/15},
		{"memory temperature over limit", gpu(mi300, all(0, 300, 0, 40, 99, max300)), 0},
		{"worst throttle signal counts, not the sum", gpu(mi300, all(1, 750, 0, 95, 40, 0.85*max300)), 0.5},
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
	q.activityWeight = 1
	if got := q.headroom(ptr(gpu(mi300, all(0.5, 300, 0, 40, 40, 0.5*max300)))); got != 0.75 {
		t.Errorf("activityWeight 1: %v, want (1 − a + 1 − θ)/2 = 0.75", got)
	}
	if got := q.headroom(ptr(gpu("unknown", withAct(0.25)))); got != 0.75 {
		t.Errorf("activityWeight 1, activity only: %v, want 1 − a = 0.75", got)
	}
	q.throttleWeight = 0
	if got := q.headroom(ptr(gpu(mi300, all(0.5, 750, 0, 105, 95, max300)))); got != 0.5 {
		t.Errorf("throttleWeight 0: %v, want 1 − a = 0.5", got)
	}
	q = p
	q.clockBusyActivity = 0
	if got := q.headroom(ptr(gpu(mi300, all(0, 140, 0, 40, 40, 0.35*max300)))); got != 1 {
		t.Errorf("clockBusyActivity 0, idle: %v, want 1 (no division by a = 0)", got)
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

// TestCapacityQueueScorer: the queue plus the request being placed
// (includeRequest) is divided by the capacity weight of the endpoint's GPU
// product (built in, or the capacities parameter), then min-max inverted; an endpoint whose telemetry is momentarily absent keeps
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
		{"MI300X with 6 waiting beats H100 with 4 ((6+1)/1 < (4+1)/0.632)", nil,
			[]string{"AMD Instinct MI300X", "NVIDIA H100 80GB HBM3"}, []int{6, 4}, []float64{1, 0}},
		{"three GPUs, q/w", scheduler.MapParams{"capacities": "A=2, B=1,C=0.5", "includeRequest": false}, []string{"A", "B", "C"}, []int{4, 2, 1}, []float64{1, 1, 1}},
		{"min-max over q/w", scheduler.MapParams{"capacities": "A=2,B=1", "includeRequest": false}, []string{"A", "B", ""}, []int{8, 1, 3}, []float64{0, 1, (4 - 3.0) / 3}},
		{"defaultCapacity for the unknown", scheduler.MapParams{"capacities": "A=2", "defaultCapacity": 0.5, "includeRequest": false}, []string{"A", "?"}, []int{4, 1}, []float64{1, 1}},
		{"tensor parallel 2 doubles the weight", scheduler.MapParams{"capacities": "A=1,T2=1"}, []string{"A", "T2"}, []int{2, 3}, []float64{0, 1}},
		{"scaleByGPUCount false", scheduler.MapParams{"capacities": "A=1,T2=1", "scaleByGPUCount": false}, []string{"A", "T2"}, []int{2, 3}, []float64{1, 0}},
		{"empty queues: the faster GPU wins (1/w)", scheduler.MapParams{"capacities": "T2=1"}, []string{"AMD Instinct MI300X", "AMD Instinct MI355X", "T2"}, []int{0, 0, 0},
			[]float64{0, (1 - 1/(8.0/5.3)) / (1 - 0.5), 1}},
		{"includeRequest false: empty queues tie", scheduler.MapParams{"includeRequest": false}, []string{"AMD Instinct MI300X", "AMD Instinct MI355X"}, []int{0, 0}, []float64{1, 1}},
		{"shortest expected delay: (2+1)/2 beats (1+1)/1", scheduler.MapParams{"capacities": "A=2,B=1"}, []string{"A", "B"}, []int{2, 1}, []float64{1, 0}},
		{"(3+1)/2 ties (1+1)/1", scheduler.MapParams{"capacities": "A=2,B=1"}, []string{"A", "B"}, []int{3, 1}, []float64{1, 1}},
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
	// A pool of equal servers: exactly queue-scorer's scores (min-max is
	// shift- and scale-invariant), with or without telemetry.
	for _, waiting := range [][]int{{0, 0, 0}, {0, 3, 1}, {5, 2, 7, 2}} {
		for _, tele := range []bool{true, false} {
			ms := make([]scheduler.Metrics, len(waiting))
			for i, w := range waiting {
				ms[i].Waiting = w
			}
			st := endpoints(now, ms...)
			if tele {
				for i := range st {
					st[i].GPU = scheduler.GPUState{Present: true, Product: "NVIDIA H100 80GB HBM3", Count: 4}
				}
			}
			want := scoreWith(t, newPluginWith(t, QueueScorerType, nil).(scheduler.Scorer), st, now)
			got := scoreWith(t, newPluginWith(t, CapacityQueueScorerType, nil).(scheduler.Scorer), st, now)
			for i := range got {
				if math.Abs(got[i]-want[i]) > 1e-9 {
					t.Errorf("equal servers, waiting %v, telemetry %v: %v, want queue-scorer's %v", waiting, tele, got, want)
					break
				}
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
	for _, bad := range []scheduler.MapParams{{"capacities": "A"}, {"capacities": "A=0"}, {"defaultCapacity": -1.0}, {"includeRequest": "yes"}} {
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
