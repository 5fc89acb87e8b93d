package scorers

import "github.com/fastepp/fastepp/scheduler"

// Interface guard: what the registry checks at start-up, checked at compile time.
var _ scheduler.LoadScorer = (*queueScorer)(nil)

// QueueScorerType scores by waiting requests: (maxQ − q)/(maxQ − minQ) over
// the candidates, 1 for all when they are equal. q includes the requests this
// picker dispatched since the last scrape (see scheduler.Cycle.Waiting).
const QueueScorerType = "queue-scorer"

type queueScorer struct{ base }

func registerQueue(r *scheduler.Registry) {
	r.MustRegister(QueueScorerType, scheduler.Factory{
		Kind:  scheduler.KindScorer,
		Proto: (*queueScorer)(nil),
		Doc:   "prefers endpoints with fewer waiting requests (min-max normalised)",
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

// LoadKind implements scheduler.LoadScorer: Score is exactly
// scheduler.LoadQueue, so the scheduler's fast path computes it itself.
func (s *queueScorer) LoadKind() scheduler.LoadKind { return scheduler.LoadQueue }
