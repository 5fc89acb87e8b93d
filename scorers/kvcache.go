package scorers

import "github.com/fastepp/fastepp/scheduler"

// Interface guard: what the registry checks at start-up, checked at compile time.
var _ scheduler.LoadScorer = (*kvScorer)(nil)

// KVCacheScorerType scores 1 − KV-cache usage (precomputed per snapshot).
const KVCacheScorerType = "kv-cache-utilization-scorer"

type kvScorer struct{ base }

func registerKVCache(r *scheduler.Registry) {
	r.MustRegister(KVCacheScorerType, scheduler.Factory{
		Kind:  scheduler.KindScorer,
		Proto: (*kvScorer)(nil),
		Doc:   "prefers endpoints with free KV cache: 1 − usage",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &kvScorer{newBase(KVCacheScorerType, name)}, nil
		},
	})
}

func (s *kvScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	eps := c.Snap.Endpoints
	for i, e := range cands {
		out[i] = eps[e].KVScore
	}
}

// LoadKind implements scheduler.LoadScorer: Score is exactly
// scheduler.LoadKV, so the scheduler's fast path computes it itself.
func (s *kvScorer) LoadKind() scheduler.LoadKind { return scheduler.LoadKV }
