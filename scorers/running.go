package scorers

import "github.com/fastepp/fastepp/scheduler"

// Interface guard: what the registry checks at start-up, checked at compile time.
var _ scheduler.Scorer = (*runningScorer)(nil)

// RunningScorerType scores by running requests with the same min-max as the
// queue scorer (running includes the in-flight delta since the scrape).
const RunningScorerType = "running-requests-size-scorer"

type runningScorer struct{ base }

func registerRunning(r *scheduler.Registry) {
	r.MustRegister(RunningScorerType, scheduler.Factory{
		Kind:  scheduler.KindScorer,
		Proto: (*runningScorer)(nil),
		Doc:   "prefers endpoints with fewer running requests (min-max normalised)",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &runningScorer{newBase(RunningScorerType, name)}, nil
		},
	})
}

func (s *runningScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	for i, e := range cands {
		out[i] = c.Running(e)
	}
	minMaxInvert(out)
}
