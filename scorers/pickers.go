package scorers

import (
	"fmt"
	"math"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guard: what the registry checks at start-up, checked at compile time.
var _ scheduler.MaxScorePicker = (*picker)(nil)

// Picker types. Each takes maxNumOfEndpoints (default 1): the number of
// endpoints returned, primary first, the rest as the gateway's fallbacks.
const (
	// MaxScorePickerType: highest total score, uniform random tie-break.
	MaxScorePickerType = "max-score-picker"
	// RandomPickerType: uniform among candidates, scores ignored.
	RandomPickerType = "random-picker"
	// WeightedRandomPickerType: A-Res weighted sampling without replacement,
	// key U^(1/score); zero scores are never picked while others remain.
	WeightedRandomPickerType = "weighted-random-picker"
)

type pickerKind int

const (
	maxScore pickerKind = iota
	uniform
	weighted
)

type picker struct {
	base
	kind pickerKind
	n    int
}

func registerPickers(r *scheduler.Registry) {
	add := func(typ, doc string, k pickerKind) {
		r.MustRegister(typ, scheduler.Factory{
			Kind:   scheduler.KindPicker,
			Proto:  (*picker)(nil),
			Params: []string{"maxNumOfEndpoints"},
			Doc:    doc,
			New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
				n, err := p.Int("maxNumOfEndpoints", 1)
				if err != nil {
					return nil, err
				}
				if n < 1 {
					return nil, fmt.Errorf("maxNumOfEndpoints: expected 1 or more, found %d", n)
				}
				return &picker{newBase(typ, name), k, n}, nil
			},
		})
	}
	add(MaxScorePickerType, "picks the highest total score (random tie-break)", maxScore)
	add(RandomPickerType, "picks uniformly at random", uniform)
	add(WeightedRandomPickerType, "picks at random weighted by score (A-Res)", weighted)
}

// NewMaxScorePicker returns a max-score-picker returning n endpoints.
func NewMaxScorePicker(n int) scheduler.Picker {
	return &picker{newBase(MaxScorePickerType, ""), maxScore, max(n, 1)}
}

// MaxScoreSingle implements scheduler.MaxScorePicker: a max-score-picker
// returning one endpoint (the scheduler's fast path reproduces it).
func (p *picker) MaxScoreSingle() bool { return p.kind == maxScore && p.n == 1 }

func (p *picker) Pick(c *scheduler.Cycle, cands []int32, scores []float64, out []int32) []int32 {
	n := min(p.n, len(cands))
	switch p.kind {
	case uniform:
		// Partial Fisher–Yates over a copy of the candidates.
		out = append(out[:0], cands...)
		for i := 0; i < n; i++ {
			j := i + int(c.Uint64()%uint64(len(out)-i))
			out[i], out[j] = out[j], out[i]
		}
		return out[:n]
	case weighted:
		for i, s := range scores {
			if s > 0 {
				// log of the A-Res key U^(1/s): monotone, avoids Pow.
				u := c.Float64()
				if u == 0 {
					u = math.SmallestNonzeroFloat64
				}
				scores[i] = math.Log(u) / s // in (−∞, 0]
			} else {
				scores[i] = math.Inf(-1)
			}
		}
	}
	if n == 1 && len(cands) > 0 {
		return best1(c, cands, scores, out)
	}
	return topN(c, cands, scores, n, out)
}

// best1 appends the single best candidate (uniform random tie-break).
func best1(c *scheduler.Cycle, cands []int32, scores []float64, out []int32) []int32 {
	best, ties := 0, 1
	for i := 1; i < len(scores); i++ {
		s := scores[i]
		if s > scores[best] {
			best, ties = i, 1
		} else if s == scores[best] {
			ties++
			if c.Uint64()%uint64(ties) == 0 {
				best = i
			}
		}
	}
	return append(out, cands[best])
}

// topN appends the n best candidates by score (uniform random tie-break),
// marking taken ones with NaN. Equal −Inf scores still tie fairly.
func topN(c *scheduler.Cycle, cands []int32, scores []float64, n int, out []int32) []int32 {
	for k := 0; k < n; k++ {
		best, ties := -1, 0
		for i, s := range scores {
			if s != s { // taken
				continue
			}
			switch {
			case best < 0 || s > scores[best]:
				best, ties = i, 1
			case s == scores[best]:
				ties++
				if c.Uint64()%uint64(ties) == 0 {
					best = i
				}
			}
		}
		if best < 0 {
			break
		}
		out = append(out, cands[best])
		scores[best] = math.NaN()
	}
	return out
}
