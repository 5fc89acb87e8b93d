package scorers

import "github.com/fastepp/fastepp/scheduler"

// QueueScorerType scores by waiting requests: (maxQ − q)/(maxQ − minQ) over
// the candidates, 1 for all when they are equal. q includes the requests this
// picker dispatched since the last scrape (see scheduler.Cycle.Waiting).
const QueueScorerType = "queue-scorer"

type queueScorer struct{ base }

func registerQueue(r *scheduler.Registry) {
	r.Register(QueueScorerType, scheduler.Factory{
		Kind: scheduler.KindScorer,
		Doc:  "prefers endpoints with fewer waiting requests (min-max normalised)",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &queueScorer{newBase(QueueScorerType, name)}, nil
		},
	})
}

func (s *queueScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	for i, e := range cands {
		out[i] = c.Waiting(e)
	}
	minMaxInvert(out)
}

// minMaxInvert maps each v to (max − v)/(max − min), or 1 when all are equal.
func minMaxInvert(v []float64) {
	if len(v) == 0 {
		return
	}
	lo, hi := v[0], v[0]
	for _, x := range v[1:] {
		if x < lo {
			lo = x
		}
		if x > hi {
			hi = x
		}
	}
	if hi == lo {
		for i := range v {
			v[i] = 1
		}
		return
	}
	inv := 1 / (hi - lo)
	for i, x := range v {
		v[i] = (hi - x) * inv
	}
}
