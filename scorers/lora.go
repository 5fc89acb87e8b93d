package scorers

import (
	"slices"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guard: what the registry checks at start-up, checked at compile time.
var _ scheduler.Scorer = (*loraScorer)(nil)

// LoRAScorerType scores LoRA adapter affinity for the request's target model:
// 1.0 adapter loaded (running); 0.8 room to load it (active + waiting < max);
// 0.6 adapter waiting to load; else 0. Evaluated in that order.
const LoRAScorerType = "lora-affinity-scorer"

type loraScorer struct{ base }

func registerLoRA(r *scheduler.Registry) {
	r.MustRegister(LoRAScorerType, scheduler.Factory{
		Kind:  scheduler.KindScorer,
		Proto: (*loraScorer)(nil),
		Doc:   "prefers endpoints that already run the requested LoRA adapter",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &loraScorer{newBase(LoRAScorerType, name)}, nil
		},
	})
}

func (s *loraScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	model := c.Req.Model
	eps := c.Snap.Endpoints
	for i, e := range cands {
		out[i] = loraScore(&eps[e].M, model)
	}
}

func loraScore(m *scheduler.Metrics, model string) float64 {
	switch {
	case slices.Contains(m.ActiveAdapters, model):
		return 1
	case len(m.ActiveAdapters)+len(m.WaitingAdapters) < m.MaxLoRA:
		return 0.8
	case slices.Contains(m.WaitingAdapters, model):
		return 0.6
	}
	return 0
}
