package scorers

import (
	"fmt"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guard: what the registry checks at start-up, checked at compile time.
var _ scheduler.Scorer = (*tokenLoadScorer)(nil)

// TokenLoadScorerType scores 1 − min(tokens, threshold)/threshold, where
// tokens are what this picker has in flight on the endpoint, estimated as
// GIE's inflight-load-producer does (gieTokens: input plus 1.5 × input for
// the output). Parameter queueThresholdTokens (default 4194304).
const TokenLoadScorerType = "token-load-scorer"

// gieOutputRatio is GIE's estimate of output tokens per input token
// (inflightload.SimpleTokenEstimator.OutputRatio). GIE does not read
// max_tokens: a request costs input × (1 + 1.5) tokens.
const gieOutputRatio = 1.5

// gieTokens is GIE's estimate of the tokens h's in-flight requests cost:
// input + 1.5 × input. The input is what Pick charged the Handle, prompt
// bytes ÷ 4 per request (scheduler.Request.EstimatedTokens); GIE takes whole
// body bytes ÷ 4, a little more (the JSON around the prompt). Per request GIE
// rounds the output to a whole token; this multiplies the sum, which differs
// by less than half a token per request.
func gieTokens(h *scheduler.Handle) float64 {
	return float64(h.InflightTokens()) * (1 + gieOutputRatio)
}

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
				return nil, fmt.Errorf("queueThresholdTokens: expected a positive number of tokens (GIE reads 0 or less as the default; omit it for %d), found %d", defaultTokenThreshold, t)
			}
			return &tokenLoadScorer{newBase(TokenLoadScorerType, name), float64(t)}, nil
		},
	})
}

func (s *tokenLoadScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	eps := c.Snap.Endpoints
	for i, e := range cands {
		v := gieTokens(eps[e].H)
		out[i] = 1 - min(max(v, 0), s.threshold)/s.threshold
	}
}
