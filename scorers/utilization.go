package scorers

import (
	"fmt"
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
// at >= 1. Used in a profile it is also a filter that drops endpoints that are
// saturated themselves (keeping all when all are).
const UtilizationDetectorType = "utilization-detector"

type utilization struct {
	base
	queue, kv float64
	stale     time.Duration
}

func registerUtilization(r *scheduler.Registry) {
	r.MustRegister(UtilizationDetectorType, scheduler.Factory{
		Kind:   scheduler.KindSaturation,
		Proto:  (*utilization)(nil),
		Params: []string{"queueDepthThreshold", "kvCacheUtilThreshold", "metricsStalenessThreshold"},
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
			if !(q > 0) {
				return nil, fmt.Errorf("queueDepthThreshold: expected a positive number, found %v", q)
			}
			if !(kv > 0 && kv <= 1) {
				return nil, fmt.Errorf("kvCacheUtilThreshold: expected a number in (0, 1], found %v", kv)
			}
			if st <= 0 {
				return nil, fmt.Errorf("metricsStalenessThreshold: expected a positive duration, found %v", st)
			}
			return &utilization{newBase(UtilizationDetectorType, name), q, kv, st}, nil
		},
	})
}

// endpointSaturation is one endpoint's max(waiting/q, kv/kvThr), 1 when stale.
func (u *utilization) endpointSaturation(e *scheduler.EndpointState, waiting float64, now time.Time) float64 {
	if !e.Healthy || e.M.UpdatedAt.IsZero() || now.Sub(e.M.UpdatedAt) > u.stale {
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

// Filter keeps endpoints below saturation (all of them when none is).
// Compaction writes only kept entries, so when none is kept cands is intact.
func (u *utilization) Filter(c *scheduler.Cycle, cands []int32) []int32 {
	eps := c.Snap.Endpoints
	out := cands[:0]
	for _, e := range cands {
		if u.endpointSaturation(&eps[e], c.Waiting(e), c.Now()) < 1 {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return cands
	}
	return out
}
