package scorers

import (
	"fmt"
	"math"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guards: what the registry checks at start-up, checked at compile time.
var (
	_ scheduler.SaturationDetector = (*concurrency)(nil)
	_ scheduler.Filter             = (*concurrency)(nil)
)

// ConcurrencyDetectorType is GIE's concurrency saturation detector: it judges
// load by what the picker itself has in flight on each endpoint, not by
// scraped metrics, so it reacts to a burst before the next scrape.
//
// concurrencyMode "requests" (default) counts in-flight requests
// (Handle.Inflight) against maxConcurrency (default 100) per endpoint;
// "tokens" counts in-flight tokens against maxTokenConcurrency (default
// 1000000), estimated as GIE's inflight-load-producer does: input plus 1.5 ×
// input for the output (see gieTokens).
//
// Saturation (used to shed sheddable requests) is the pool's total in-flight
// load over its total capacity, n × max; an empty pool is saturated (1).
// As a filter in a profile it drops the endpoints whose own load has reached
// max × (1 + headroom) (headroom default 0, a fraction: 0.2 allows a 20%
// burst above the ideal capacity for affinity's sake). Unlike
// utilization-detector, and as in GIE, it keeps none when all have: the pick
// then fails with 429.
//
// In GIE the detector reads the load the inflight-load-producer writes, and
// sees none unless that plugin is configured; fastepp counts in flight on
// every Handle, so it works either way.
const ConcurrencyDetectorType = "concurrency-detector"

// GIE's defaults.
const (
	defaultMaxConcurrency      = 100
	defaultMaxTokenConcurrency = 1000000
)

type concurrency struct {
	base
	tokens   bool    // mode "tokens"
	capacity float64 // per endpoint: maxConcurrency or maxTokenConcurrency
	limit    float64 // the filter's per-endpoint limit: int64(capacity × (1 + headroom)), as GIE
}

func registerConcurrency(r *scheduler.Registry) {
	r.MustRegister(ConcurrencyDetectorType, scheduler.Factory{
		Kind:   scheduler.KindSaturation,
		Proto:  (*concurrency)(nil),
		Params: []string{"concurrencyMode", "maxConcurrency", "maxTokenConcurrency", "headroom"},
		Doc:    "pool saturation from in-flight requests or tokens; as a filter drops endpoints at their limit",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			mode, err := p.String("concurrencyMode", "requests")
			if err != nil {
				return nil, err
			}
			maxReq, err := p.Int("maxConcurrency", defaultMaxConcurrency)
			if err != nil {
				return nil, err
			}
			maxTok, err := p.Int("maxTokenConcurrency", defaultMaxTokenConcurrency)
			if err != nil {
				return nil, err
			}
			headroom, err := p.Float("headroom", 0)
			if err != nil {
				return nil, err
			}
			switch {
			case mode != "requests" && mode != "tokens":
				return nil, fmt.Errorf("concurrencyMode: expected requests or tokens, found %q", mode)
			case maxReq <= 0:
				return nil, fmt.Errorf("maxConcurrency: expected a positive number of requests, found %d", maxReq)
			case maxTok <= 0:
				return nil, fmt.Errorf("maxTokenConcurrency: expected a positive number of tokens, found %d", maxTok)
			case !(headroom >= 0) || math.IsInf(headroom, 0):
				return nil, fmt.Errorf("headroom: expected a fraction of 0 or more (0.2 = 20%% above the limit), found %v", headroom)
			}
			return newConcurrency(name, mode == "tokens", maxReq, maxTok, headroom), nil
		},
	})
}

func newConcurrency(name string, tokens bool, maxReq, maxTok int, headroom float64) *concurrency {
	d := &concurrency{base: newBase(ConcurrencyDetectorType, name), tokens: tokens, capacity: float64(maxReq)}
	if tokens {
		d.capacity = float64(maxTok)
	}
	d.limit = math.Trunc(d.capacity * (1 + headroom))
	return d
}

// load is endpoint h's in-flight requests or (estimated) tokens.
func (d *concurrency) load(h *scheduler.Handle) float64 {
	if d.tokens {
		return gieTokens(h)
	}
	return float64(h.Inflight())
}

// Saturation implements scheduler.SaturationDetector: total in-flight load
// over total capacity.
func (d *concurrency) Saturation(snap *scheduler.Snapshot, _ time.Time) float64 {
	if len(snap.Endpoints) == 0 {
		return 1
	}
	sum := 0.0
	for i := range snap.Endpoints {
		sum += d.load(snap.Endpoints[i].H)
	}
	return sum / (d.capacity * float64(len(snap.Endpoints)))
}

// Filter implements scheduler.Filter: it keeps the endpoints below their
// limit, possibly none.
func (d *concurrency) Filter(c *scheduler.Cycle, cands []int32) []int32 {
	eps := c.Snap.Endpoints
	out := cands[:0]
	for _, e := range cands {
		if d.load(eps[e].H) < d.limit {
			out = append(out, e)
		}
	}
	return out
}
