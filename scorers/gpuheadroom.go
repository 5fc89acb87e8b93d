package scorers

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guards: what the registry checks at start-up, checked at compile time.
var (
	_ scheduler.Scorer           = (*gpuHeadroomScorer)(nil)
	_ scheduler.SnapshotPreparer = (*gpuHeadroomScorer)(nil)
	_ scheduler.Scorer           = (*capacityQueueScorer)(nil)
	_ scheduler.SnapshotPreparer = (*capacityQueueScorer)(nil)
)

// GPUHeadroomScorerType is fastepp's scorer (not a GIE type) of GPU headroom
// from the endpoint's GPU telemetry (scheduler.EndpointState.GPU, filled by
// the gpu-metrics-source data-layer plugin): how much of its nominal speed
// the GPU has lost to throttling, optionally blended with idle compute.
//
//	score = (wA·(1 − a) + wT·(1 − θ)) / (wA + wT), over the terms present
//	a     = compute (gfx) activity 0..1 (wA = activityWeight, default 0)
//	θ     = max of the throttle signals present (wT = throttleWeight, default 1):
//	        clock    a ≥ clockBusyActivity: clamp(loss / clockDeficitFull),
//	                 loss = 1 − min(1, (sclk/maxSclk) / a)
//	        power    only when the clock term cannot be formed (no sclk, no
//	                 activity or no known maximum clock):
//	                 clamp((P/cap − powerKnee) / (1 − powerKnee))
//	        junction clamp((Tj − (junctionLimit − margin)) / margin)
//	        memory   clamp((Tmem − (memoryLimit − margin)) / margin)
//
// The clock term is the capacity actually lost: an engine clock below its
// maximum while the GPU is busy. loss is the smallest deficit the reading
// proves: a GPU busy a of the window and idle (at any clock ≥ 0) the rest
// averages at least its busy clock × a, so a deficit up to 1 − a may be
// idling, not throttling. Below clockBusyActivity (default 0.9) clocks say
// nothing (exporters average activity but sample the clock; a part-idle GPU
// clocks down by design). Power at the cap is the cause of a power throttle
// and the clock its effect: a GPU at its cap at full clock loses nothing, so
// power stands in only where the clock cannot be read. Temperatures near the
// product's limit are counted always (the part throttles, or is about to).
//
// Activity is left out by default (activityWeight 0): it is load, which the
// queue and KV-cache scorers already count, and a vLLM server with any batch
// reads near 100%, so it mostly penalises the fastest GPUs, which are busy
// because they are given the most work.
//
// A term whose input is absent is left out (its weight too), not zeroed; the
// power cap comes from the telemetry, else the product's data sheet
// (GPUProducts), the maximum clock from the data sheet. Missing or stale telemetry, or no term at all,
// scores neutralScore (default 0.5). VRAM is no input: vLLM preallocates
// gpu_memory_utilization of HBM at start, so used VRAM is flat and says
// nothing of load (the KV-cache scorer reads the real occupancy).
const GPUHeadroomScorerType = "gpu-headroom-scorer"

// CapacityQueueScorerType is fastepp's capacity-normalised queue scorer (not
// a GIE type; GIE's queue-scorer keeps its meaning): the expected delay of
// the request on each endpoint, the shortest-expected-delay rule for servers
// of different speeds,
//
//	d = (q + r) / w, r = 1 if includeRequest (default) else 0
//
// min-max normalised and inverted like queue-scorer. q is the waiting queue
// (scraped plus dispatched since the scrape, as queue-scorer reads it), w the
// endpoint's capacity weight: the product's (GPUProducts, or the capacities
// parameter) times its GPU count (scaleByGPUCount, default true: a
// tensor-parallel server's HBM bandwidth adds up). A GPU twice as fast is
// charged half per queued request, and r counts the request being placed:
// its own service takes 1/w too, so between equal queues (all empty, the
// common case below saturation) the faster server wins instead of a tie.
// With includeRequest false the score is q/w (equal queues tie).
const CapacityQueueScorerType = "capacity-queue-scorer"

// GPUProduct is what the scorers know of a GPU product from its data sheet.
type GPUProduct struct {
	// PowerCapWatts is the board power limit (used when the telemetry has
	// no cap: AMD's exporter publishes none).
	PowerCapWatts float64
	// MaxSclkHz is the peak engine clock.
	MaxSclkHz float64
	// Capacity is the relative serving throughput, MI300X = 1: peak HBM
	// bandwidth × the simulator's bandwidth efficiency (decode, which
	// dominates serving time, is memory-bound).
	Capacity float64
}

// GPUProducts are the products of configs/simulator/gpus.yaml, keyed by the
// product name the exporters report (card_model / modelName). Power and
// clocks are the data sheets' (sources in gpus.yaml); Capacity is
// hbm_tbps·mbu relative to the MI300X (5.3 TB/s × 0.70).
var GPUProducts = map[string]GPUProduct{
	"AMD Instinct MI300X":   {PowerCapWatts: 750, MaxSclkHz: 2100e6, Capacity: 1},
	"AMD Instinct MI325X":   {PowerCapWatts: 1000, MaxSclkHz: 2100e6, Capacity: 6.0 / 5.3},
	"AMD Instinct MI355X":   {PowerCapWatts: 1400, MaxSclkHz: 2400e6, Capacity: 8.0 / 5.3},
	"NVIDIA H100 80GB HBM3": {PowerCapWatts: 700, MaxSclkHz: 1980e6, Capacity: 3.35 / 5.3},
	"NVIDIA H200":           {PowerCapWatts: 700, MaxSclkHz: 1980e6, Capacity: 4.8 / 5.3},
}

// gpuHeadroomParams are the formula's parameters (see GPUHeadroomScorerType).
type gpuHeadroomParams struct {
	activityWeight, throttleWeight float64
	powerKnee                      float64
	junctionLimit, memoryLimit     float64 // °C
	margin                         float64 // °C
	clockBusyActivity              float64
	clockDeficitFull               float64
	neutral                        float64
}

func defaultGPUHeadroomParams() gpuHeadroomParams {
	return gpuHeadroomParams{
		activityWeight: 0, throttleWeight: 1,
		powerKnee:     0.9,
		junctionLimit: 105, memoryLimit: 95, margin: 15,
		clockBusyActivity: 0.9, clockDeficitFull: 0.3,
		neutral: 0.5,
	}
}

type gpuHeadroomScorer struct {
	base
	p    gpuHeadroomParams
	slot int
}

// gpuScores is what the scorers prepare per snapshot: one score per
// endpoint index.
type gpuScores struct{ s []float64 }

func registerGPUHeadroom(r *scheduler.Registry) {
	names := []string{"activityWeight", "throttleWeight", "powerKnee", "junctionLimitCelsius", "memoryLimitCelsius",
		"temperatureMarginCelsius", "clockBusyActivity", "clockDeficitFull", "neutralScore"}
	r.MustRegister(GPUHeadroomScorerType, scheduler.Factory{
		Kind:   scheduler.KindScorer,
		Proto:  (*gpuHeadroomScorer)(nil),
		Params: names,
		Doc:    "fastepp: prefers GPUs that are not throttling (clocks below max while busy, else power at cap; junction/memory temperature near the limit), optionally with idle compute (activityWeight); needs gpu-metrics-source",
		New: func(name string, ps scheduler.Params) (scheduler.Plugin, error) {
			p := defaultGPUHeadroomParams()
			for _, f := range []struct {
				name     string
				dst      *float64
				lo, hi   float64
				expected string
			}{
				{"activityWeight", &p.activityWeight, 0, 1e6, "a weight >= 0"},
				{"throttleWeight", &p.throttleWeight, 0, 1e6, "a weight >= 0"},
				{"powerKnee", &p.powerKnee, 0, 0.999, "a fraction of the power cap in [0, 1)"},
				{"junctionLimitCelsius", &p.junctionLimit, 1, 200, "a temperature in (0, 200] °C"},
				{"memoryLimitCelsius", &p.memoryLimit, 1, 200, "a temperature in (0, 200] °C"},
				{"temperatureMarginCelsius", &p.margin, 0.1, 100, "a margin in (0, 100] °C"},
				{"clockBusyActivity", &p.clockBusyActivity, 0, 1, "an activity fraction in [0, 1]"},
				{"clockDeficitFull", &p.clockDeficitFull, 0.01, 1, "a clock deficit fraction in (0, 1]"},
				{"neutralScore", &p.neutral, 0, 1, "a score in [0, 1]"},
			} {
				v, err := ps.Float(f.name, *f.dst)
				if err != nil {
					return nil, err
				}
				if v < f.lo || v > f.hi || v != v {
					return nil, fmt.Errorf("%s: expected %s, found %g", f.name, f.expected, v)
				}
				*f.dst = v
			}
			if p.activityWeight+p.throttleWeight == 0 {
				return nil, fmt.Errorf("activityWeight, throttleWeight: expected at least one above 0, found both 0")
			}
			return &gpuHeadroomScorer{base: newBase(GPUHeadroomScorerType, name), p: p}, nil
		},
	})
}

// SetSlot implements scheduler.Stateful.
func (s *gpuHeadroomScorer) SetSlot(slot int) { s.slot = slot }

// PrepareSnapshot implements scheduler.SnapshotPreparer: the score of every
// endpoint, computed once per snapshot (it depends on no request).
func (s *gpuHeadroomScorer) PrepareSnapshot(snap *scheduler.Snapshot, _ any) any {
	out := &gpuScores{s: make([]float64, len(snap.Endpoints))}
	for i := range snap.Endpoints {
		out.s[i] = s.p.headroom(&snap.Endpoints[i].GPU)
	}
	return out
}

// Score reads the prepared scores.
func (s *gpuHeadroomScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	pr, _ := c.Prepared(s.slot).(*gpuScores)
	for i, e := range cands {
		if pr == nil || int(e) >= len(pr.s) {
			out[i] = s.p.neutral
			continue
		}
		out[i] = pr.s[e]
	}
}

// headroom is the formula of GPUHeadroomScorerType for one endpoint.
func (p *gpuHeadroomParams) headroom(g *scheduler.GPUState) float64 {
	if !g.Present {
		return p.neutral
	}
	prod, known := GPUProducts[g.Product]
	var num, den float64
	a, hasA := 0.0, g.Has&scheduler.GPUActivity != 0
	if hasA {
		a = clampUnit(g.GfxActivity)
		if p.activityWeight > 0 {
			num += p.activityWeight * (1 - a)
			den += p.activityWeight
		}
	}
	theta, hasT := 0.0, false
	term := func(v float64) {
		theta, hasT = max(theta, clampUnit(v)), true
	}
	maxSclk := 0.0
	if known {
		maxSclk = prod.MaxSclkHz
	}
	if g.Has&scheduler.GPUSclk != 0 && hasA && maxSclk > 0 {
		if a >= p.clockBusyActivity && a > 0 {
			// The busy clock is at least the average ÷ a (idle time at
			// clock 0); only the deficit beyond that is throttling.
			term((1 - min(1, g.SclkHz/maxSclk/a)) / p.clockDeficitFull)
		} else {
			term(0) // a part-idle GPU clocks down by design: no throttling shown
		}
	} else if g.Has&scheduler.GPUPower != 0 {
		capW := 0.0
		if g.Has&scheduler.GPUPowerCap != 0 && g.PowerCapWatts > 0 {
			capW = g.PowerCapWatts
		} else if known {
			capW = prod.PowerCapWatts
		}
		if capW > 0 {
			term((g.PowerWatts/capW - p.powerKnee) / (1 - p.powerKnee))
		}
	}
	if g.Has&scheduler.GPUJunctionTemp != 0 {
		term((g.JunctionCelsius - (p.junctionLimit - p.margin)) / p.margin)
	}
	if g.Has&scheduler.GPUMemoryTemp != 0 {
		term((g.MemoryCelsius - (p.memoryLimit - p.margin)) / p.margin)
	}
	if hasT && p.throttleWeight > 0 {
		num += p.throttleWeight * (1 - theta)
		den += p.throttleWeight
	}
	if den == 0 {
		return p.neutral
	}
	return num / den
}

func clampUnit(v float64) float64 {
	if v < 0 || v != v {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

// capacityQueueScorer is CapacityQueueScorerType.
type capacityQueueScorer struct {
	base
	weights map[string]float64 // product → capacity weight per GPU
	def     float64
	byCount bool    // multiply by the endpoint's GPU count
	self    float64 // r: 1 when the request being placed counts, else 0
	slot    int
}

// capacityPrepared is the per-snapshot inverse capacity of each endpoint,
// and the last weight known per handle (telemetry that goes stale for a
// moment does not flip an endpoint to the default weight).
type capacityPrepared struct {
	inv   []float64
	known map[*scheduler.Handle]float64
}

func registerCapacityQueue(r *scheduler.Registry) {
	r.MustRegister(CapacityQueueScorerType, scheduler.Factory{
		Kind:   scheduler.KindScorer,
		Proto:  (*capacityQueueScorer)(nil),
		Params: []string{"capacities", "defaultCapacity", "scaleByGPUCount", "includeRequest"},
		Doc:    "fastepp: prefers the endpoint with the shortest expected delay, (waiting + 1) ÷ capacity weight of its GPU product (min-max normalised); needs gpu-metrics-source",
		New: func(name string, ps scheduler.Params) (scheduler.Plugin, error) {
			s := &capacityQueueScorer{base: newBase(CapacityQueueScorerType, name), weights: map[string]float64{}}
			for k, v := range GPUProducts {
				s.weights[k] = v.Capacity
			}
			var err error
			if s.def, err = ps.Float("defaultCapacity", 1); err != nil {
				return nil, err
			}
			if !(s.def > 0) {
				return nil, fmt.Errorf("defaultCapacity: expected a weight > 0, found %g", s.def)
			}
			if s.byCount, err = ps.Bool("scaleByGPUCount", true); err != nil {
				return nil, err
			}
			self, err := ps.Bool("includeRequest", true)
			if err != nil {
				return nil, err
			}
			if self {
				s.self = 1
			}
			list, err := ps.String("capacities", "")
			if err != nil {
				return nil, err
			}
			if err := parseCapacities(list, s.weights); err != nil {
				return nil, err
			}
			return s, nil
		},
	})
}

// parseCapacities reads "product=weight,product=weight" into m.
func parseCapacities(list string, m map[string]float64) error {
	if strings.TrimSpace(list) == "" {
		return nil
	}
	for _, item := range strings.Split(list, ",") {
		k, v, ok := strings.Cut(item, "=")
		k = strings.TrimSpace(k)
		w, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || k == "" || err != nil || !(w > 0) {
			return fmt.Errorf("capacities: expected product=weight entries with weights > 0, separated by commas (e.g. \"AMD Instinct MI300X=1,NVIDIA H100 80GB HBM3=0.63\"), found %q", item)
		}
		m[k] = w
	}
	return nil
}

// SetSlot implements scheduler.Stateful.
func (s *capacityQueueScorer) SetSlot(slot int) { s.slot = slot }

// weight is the capacity weight of a product; ok is false when unknown.
func (s *capacityQueueScorer) weight(product string) (float64, bool) {
	w, ok := s.weights[product]
	return w, ok
}

// PrepareSnapshot implements scheduler.SnapshotPreparer: 1 / capacity per
// endpoint, from its GPU product (the last known one when its telemetry is
// absent now), else defaultCapacity.
func (s *capacityQueueScorer) PrepareSnapshot(snap *scheduler.Snapshot, prev any) any {
	old, _ := prev.(*capacityPrepared)
	out := &capacityPrepared{inv: make([]float64, len(snap.Endpoints)), known: make(map[*scheduler.Handle]float64, len(snap.Endpoints))}
	for i := range snap.Endpoints {
		e := &snap.Endpoints[i]
		w, ok := 0.0, false
		if e.GPU.Present && e.GPU.Product != "" {
			if w, ok = s.weight(e.GPU.Product); ok && s.byCount && e.GPU.Count > 1 {
				w *= float64(e.GPU.Count) // tensor parallel: bandwidth adds up
			}
		}
		if !ok && old != nil {
			w, ok = old.known[e.H]
		}
		if ok {
			out.known[e.H] = w
		} else {
			w = s.def
		}
		out.inv[i] = 1 / w
	}
	return out
}

// Score is queue-scorer's min-max inversion over (waiting + r) ÷ capacity.
func (s *capacityQueueScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	pr, _ := c.Prepared(s.slot).(*capacityPrepared)
	for i, e := range cands {
		inv := 1 / s.def
		if pr != nil && int(e) < len(pr.inv) {
			inv = pr.inv[e]
		}
		out[i] = (c.Waiting(e) + s.self) * inv
	}
	minMaxInvert(out)
}
