package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/fastepp/fastepp/loadgen"
)

// Workload is a loadgen config turned into a fixed-rate open-loop plan: the
// config's arrival law, data and seed, one stage at Rate for Duration.
type Workload struct {
	Config   *loadgen.Config
	Rate     float64
	Duration time.Duration
}

// Build returns the workload's source and request count. The config is
// copied, never modified.
func (w Workload) Build() (Source, int, error) {
	if !(w.Rate > 0) {
		return nil, 0, fmt.Errorf("--target-rate: expected a rate > 0 requests/s, found %g", w.Rate)
	}
	if w.Duration <= 0 {
		return nil, 0, fmt.Errorf("--duration: expected > 0, found %v", w.Duration)
	}
	c := *w.Config
	switch c.Load.Type {
	case "", loadgen.LoadConstant, loadgen.LoadPoisson:
	default:
		return nil, 0, fmt.Errorf("load.type: expected constant or poisson for a plan at a target rate, found %q", c.Load.Type)
	}
	c.Load.Stages = []loadgen.Stage{{Rate: w.Rate, Duration: loadgen.Duration(w.Duration)}}
	n, err := loadgen.CountPlanned(&c)
	if err != nil {
		return nil, 0, err
	}
	s, err := loadgen.NewSchedule(&c)
	if err != nil {
		return nil, 0, err
	}
	return s, n, nil
}

// Point is one replica count of a plan's curve, in the JSON names other
// tooling relies on.
type Point struct {
	Replicas              int     `json:"replicas"`
	TTFT                  Figures `json:"ttft_seconds"`
	TPOT                  Figures `json:"tpot_seconds"`
	GoodputRatio          float64 `json:"goodput_ratio"`
	OutputTokensPerSecond float64 `json:"output_tokens_per_second"`
	// Result is the run behind the point; Elapsed its wall time (neither
	// is in the JSON).
	Result  *Result       `json:"-"`
	Elapsed time.Duration `json:"-"`
}

// Plan is the answer: the fewest replicas meeting the SLO at the target
// rate, and every replica count simulated on the way.
type Plan struct {
	Strategy   string  `json:"strategy"`
	Replicas   int     `json:"replicas"`
	TargetRate float64 `json:"target_rate"`
	Curve      []Point `json:"curve"`
	// Not in the JSON: what the plan was made from.
	SLO      SLO           `json:"-"`
	Requests int           `json:"-"`
	Duration time.Duration `json:"-"`
	Elapsed  time.Duration `json:"-"`
}

// SearchOptions bound the search.
type SearchOptions struct {
	// MaxReplicas is the largest fleet tried (default 1024).
	MaxReplicas int
	// OnPoint is called after every simulation.
	OnPoint func(Point)
}

// Search finds the fewest replicas whose simulated fleet meets opt.SLO at
// the workload's rate: it doubles the fleet from 1 until a run meets the
// SLO, then bisects between the last failing and the first meeting count
// (assuming more replicas never do worse). opt.Replicas is ignored.
func Search(opt Options, w Workload, so SearchOptions) (*Plan, error) {
	if opt.SLO.TTFT <= 0 && opt.SLO.TPOT <= 0 {
		return nil, fmt.Errorf("slo: expected ttft and/or tpot objectives to plan for, found none")
	}
	if so.MaxReplicas == 0 {
		so.MaxReplicas = 1024
	}
	start := time.Now()
	p := &Plan{Strategy: opt.Strategy.Name, TargetRate: w.Rate, SLO: opt.SLO, Duration: w.Duration}
	runs := map[int]*Result{}
	eval := func(n int) (*Result, error) {
		if r, ok := runs[n]; ok {
			return r, nil
		}
		src, count, err := w.Build()
		if err != nil {
			return nil, err
		}
		p.Requests = count
		o := opt
		o.Replicas = n
		t0 := time.Now()
		r, err := Simulate(o, src, count)
		if err != nil {
			return nil, err
		}
		runs[n] = r
		pt := pointOf(r)
		pt.Elapsed = time.Since(t0)
		p.Curve = append(p.Curve, pt)
		if so.OnPoint != nil {
			so.OnPoint(pt)
		}
		return r, nil
	}
	lo, hi := 0, 0 // lo fails (0: none tried), hi meets
	for n := 1; ; n = min(2*n, so.MaxReplicas) {
		r, err := eval(n)
		if err != nil {
			return nil, err
		}
		if r.MeetsSLO {
			hi = n
			break
		}
		lo = n
		if n >= so.MaxReplicas {
			slices.SortFunc(p.Curve, func(a, b Point) int { return a.Replicas - b.Replicas })
			p.Elapsed = time.Since(start)
			return p, fmt.Errorf("%d replicas (--max-replicas): expected a fleet meeting the SLO (%s) at %g req/s, found none", n, opt.SLO, w.Rate)
		}
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		r, err := eval(mid)
		if err != nil {
			return nil, err
		}
		if r.MeetsSLO {
			hi = mid
		} else {
			lo = mid
		}
	}
	p.Replicas = hi
	slices.SortFunc(p.Curve, func(a, b Point) int { return a.Replicas - b.Replicas })
	p.Elapsed = time.Since(start)
	return p, nil
}

func pointOf(r *Result) Point {
	return Point{Replicas: r.Replicas, TTFT: r.TTFT, TPOT: r.TPOT, GoodputRatio: r.GoodputRatio,
		OutputTokensPerSecond: r.OutputTokensPerSecond, Result: r}
}

// WriteJSON writes the plan as indented JSON (strategy, replicas,
// target_rate, curve).
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// Header is the curve table's header line.
func Header() string {
	return fmt.Sprintf("%8s %10s %10s %10s %10s %8s %10s %8s %s", "replicas", "TTFT p50", "TTFT p90", "TPOT p50", "TPOT p90",
		"goodput", "out tok/s", "SLO", "")
}

// Row is one curve line.
func (pt Point) Row() string {
	slo, note := "met", ""
	if pt.Result != nil {
		if !pt.Result.MeetsSLO {
			slo = "missed"
		}
		if pt.Result.StoppedEarly {
			note = "(stopped early: figures are lower bounds)"
		} else if pt.Result.Failed > 0 {
			note = fmt.Sprintf("(%d of %d failed)", pt.Result.Failed, pt.Result.Requests)
		}
	}
	return fmt.Sprintf("%8d %8.0fms %8.0fms %8.1fms %8.1fms %8.3f %10.0f %8s %s", pt.Replicas, pt.TTFT.P50*1000, pt.TTFT.P90*1000,
		pt.TPOT.P50*1000, pt.TPOT.P90*1000, pt.GoodputRatio, pt.OutputTokensPerSecond, slo, note)
}

// WriteText writes the curve and the answer.
func (p *Plan) WriteText(w io.Writer) {
	fmt.Fprintln(w, Header())
	for _, pt := range p.Curve {
		fmt.Fprintln(w, pt.Row())
	}
	if p.Replicas > 0 {
		fmt.Fprintf(w, "replicas: %d for %g req/s under %s (strategy %s)\n", p.Replicas, p.TargetRate, p.SLO, p.Strategy)
	}
}
