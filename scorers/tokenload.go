package scorers

import (
	"fmt"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guard: what the registry checks at start-up, checked at compile time.
var _ scheduler.Scorer = (*tokenLoadScorer)(nil)

// TokenLoadScorerType scores 1 − min(inflightTokens, threshold)/threshold,
// where inflightTokens are the estimated prompt tokens this picker has in
// flight on the endpoint. Parameter queueThresholdTokens (default 4194304).
const TokenLoadScorerType = "token-load-scorer"

const defaultTokenThreshold = 4194304

type tokenLoadScorer struct {
	base
	threshold float64
}

func registerTokenLoad(r *scheduler.Registry) {
	r.MustRegister(TokenLoadScorerType, scheduler.Factory{
		Kind:   scheduler.KindScorer,
		Proto:  (*tokenLoadScorer)(nil),
		Params: []string{"queueThresholdTokens"},
		Doc:    "prefers endpoints with fewer in-flight prompt tokens",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			t, err := p.Int("queueThresholdTokens", defaultTokenThreshold)
			if err != nil {
				return nil, err
			}
			if t <= 0 {
				return nil, fmt.Errorf("queueThresholdTokens: expected a positive number of tokens, found %d", t)
			}
			return &tokenLoadScorer{newBase(TokenLoadScorerType, name), float64(t)}, nil
		},
	})
}

func (s *tokenLoadScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	eps := c.Snap.Endpoints
	for i, e := range cands {
		v := float64(eps[e].H.InflightTokens())
		out[i] = 1 - min(max(v, 0), s.threshold)/s.threshold
	}
}
