package scorers

import (
	"fmt"
	"math"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guards: what the registry checks at start-up, checked at compile time.
var (
	_ scheduler.SaturationDetector = (*utilization)(nil)
	_ scheduler.Filter             = (*utilization)(nil)
)

// UtilizationDetectorType is the saturation detector: the pool's saturation is
// the mean over endpoints of max(waiting/queueDepthThreshold,
// kvUsage/kvCacheUtilThreshold), an endpoint whose metrics are older than
// metricsStalenessThreshold counting as saturated (1). The pool is saturated
// at >= 1. Used in a profile it is also a filter that keeps the endpoints
// with fresh metrics below both limits, waiting < queueDepthThreshold × (1 +
// headroom) and kvUsage < kvCacheUtilThreshold × (1 + headroom), keeping all
// when none is. headroom (default 0, GIE's meaning) is a fraction: 0.2 lets
// the filter send an endpoint 20% above the thresholds, for affinity's sake,
// while the pool's saturation still uses the thresholds themselves.
const UtilizationDetectorType = "utilization-detector"

type utilization struct {
	base
	queue, kv           float64
	stale               time.Duration
	headroom            float64
	queueLimit, kvLimit float64 // the filter's: thresholds × (1 + headroom)
}

func registerUtilization(r *scheduler.Registry) {
	r.MustRegister(UtilizationDetectorType, scheduler.Factory{
		Kind:   scheduler.KindSaturation,
		Proto:  (*utilization)(nil),
		Params: []string{"queueDepthThreshold", "kvCacheUtilThreshold", "metricsStalenessThreshold", "headroom"},
		Doc:    "pool saturation from queue depth and KV usage; as a filter drops saturated endpoints",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			q, err := p.Float("queueDepthThreshold", 5)
			if err != nil {
				return nil, err
			}
			kv, err := p.Float("kvCacheUtilThreshold", 0.8)
			if err != nil {
				return nil, err
			}
			st, err := p.Duration("metricsStalenessThreshold", 200*time.Millisecond)
			if err != nil {
				return nil, err
			}
			h, err := p.Float("headroom", 0)
			if err != nil {
				return nil, err
			}
			if !(q > 0) || math.IsInf(q, 0) {
				return nil, fmt.Errorf("queueDepthThreshold: expected a positive number, found %v", q)
			}
			if !(kv > 0 && kv <= 1) {
				return nil, fmt.Errorf("kvCacheUtilThreshold: expected a number in (0, 1], found %v", kv)
			}
			if st <= 0 {
				return nil, fmt.Errorf("metricsStalenessThreshold: expected a positive duration, found %v", st)
			}
			if !(h >= 0) || math.IsInf(h, 0) {
				return nil, fmt.Errorf("headroom: expected a fraction of 0 or more (0.2 = 20%% above the thresholds), found %v", h)
			}
			return &utilization{base: newBase(UtilizationDetectorType, name), queue: q, kv: kv, stale: st,
				headroom: h, queueLimit: q * (1 + h), kvLimit: kv * (1 + h)}, nil
		},
	})
}

// fresh reports whether e's metrics are usable: healthy and at most
// metricsStalenessThreshold old.
func (u *utilization) fresh(e *scheduler.EndpointState, now time.Time) bool {
	return e.Healthy && !e.M.UpdatedAt.IsZero() && now.Sub(e.M.UpdatedAt) <= u.stale
}

// endpointSaturation is one endpoint's max(waiting/q, kv/kvThr), 1 when stale.
func (u *utilization) endpointSaturation(e *scheduler.EndpointState, waiting float64, now time.Time) float64 {
	if !u.fresh(e, now) {
		return 1
	}
	return max(waiting/u.queue, e.M.KVUsage/u.kv)
}

func (u *utilization) Saturation(snap *scheduler.Snapshot, now time.Time) float64 {
	if len(snap.Endpoints) == 0 {
		return 1
	}
	sum := 0.0
	for i := range snap.Endpoints {
		e := &snap.Endpoints[i]
		sum += u.endpointSaturation(e, float64(e.M.Waiting), now)
	}
	return sum / float64(len(snap.Endpoints))
}

// Filter keeps fresh endpoints below both limits (all of them when none is).
// Compaction writes only kept entries, so when none is kept cands is intact.
func (u *utilization) Filter(c *scheduler.Cycle, cands []int32) []int32 {
	eps := c.Snap.Endpoints
	now := c.Now()
	out := cands[:0]
	for _, e := range cands {
		st := &eps[e]
		if u.fresh(st, now) && c.Waiting(e) < u.queueLimit && st.M.KVUsage < u.kvLimit {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return cands
	}
	return out
}
