package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/fastepp/fastepp/loadgen"
)

// Options tune Run.
type Options struct {
	// Strategies replace the scenario's when non-empty.
	Strategies []Strategy
	// Repeats runs every strategy this many times (default 1), repeat r with
	// workload seed Seed+r; strategies are interleaved within a repeat.
	Repeats int
	// Seed is the first repeat's workload seed (0: the workload's own).
	Seed int64
	// BasePort overrides the scenario's fleet.base_port when > 0.
	BasePort int
	// ExternalTLS dials external pickers over TLS.
	ExternalTLS bool
	// Progress receives live progress lines (nil: none). When it is a
	// terminal, one line is rewritten in place.
	Progress io.Writer
	// Logger receives epp's and the gateway's state changes (nil: discard).
	Logger *slog.Logger
}

// RunResult is one strategy's run (one repeat).
type RunResult struct {
	Strategy string
	Repeat   int
	Seed     int64
	// Names are the servers' names, in fleet order.
	Names []string
	// Loadgen is loadgen's summary of the run.
	Loadgen *loadgen.Summary
	// Stages are the fleet's counters and the machine's figures over each
	// stage's time window (the last one runs to the end of the drain);
	// Total over the whole run.
	Stages []Window
	Total  Window
	// Took is the run's wall time, set-up and drain included.
	Took time.Duration
}

// Window is what the fleet and the machine did in one time window.
type Window struct {
	Seconds       float64
	PerEndpoint   []uint64 // requests finished per server
	PrefixQueries uint64
	PrefixHits    uint64
	Preemptions   uint64
	// CPUSeconds is this process's CPU time (user + system): the fleet,
	// picker, gateway and load generator together.
	CPUSeconds float64
	// LagSeconds is the simulated servers' total real-time lag: time their
	// drivers fell behind the model because they did not get the CPU.
	LagSeconds float64
}

// HitRatio is prefix-cache hits ÷ queries (prompt tokens), vLLM's definition.
func (w Window) HitRatio() float64 {
	if w.PrefixQueries == 0 {
		return 0
	}
	return float64(w.PrefixHits) / float64(w.PrefixQueries)
}

// Cores is the CPU cores this process used on average in the window.
func (w Window) Cores() float64 {
	if w.Seconds <= 0 {
		return 0
	}
	return w.CPUSeconds / w.Seconds
}

// Result is a whole comparison.
type Result struct {
	Scenario   *Scenario
	Strategies []Strategy
	Repeats    int
	// Runs[i][r] is strategy i's repeat r.
	Runs    [][]*RunResult
	Started time.Time
	Took    time.Duration
}

// Run runs every strategy of sc (or opt.Strategies) opt.Repeats times, each
// on a fresh stack, and returns the results. A cancelled ctx stops after the
// current run's in-flight requests are cancelled; the runs finished so far
// are returned with ctx's error.
func Run(ctx context.Context, sc *Scenario, opt Options) (*Result, error) {
	strats := opt.Strategies
	if len(strats) == 0 {
		strats = sc.Strategies
	}
	if opt.Repeats <= 0 {
		opt.Repeats = 1
	}
	seed := opt.Seed
	if seed == 0 {
		seed = sc.Workload.Load.SeedValue()
	}
	res := &Result{Scenario: sc, Strategies: strats, Repeats: opt.Repeats, Started: time.Now(),
		Runs: make([][]*RunResult, len(strats))}
	pr := newProgress(opt.Progress, sc, len(strats)*opt.Repeats)
	defer pr.done()
	var firstErr error
	n := 0
	for r := 0; r < opt.Repeats && ctx.Err() == nil; r++ {
		for i, st := range strats {
			if ctx.Err() != nil {
				break
			}
			if n > 0 && sc.Settle > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(sc.Settle):
				}
			}
			pr.startRun(n, st.Name, r, opt.Repeats)
			rr, err := runOne(ctx, sc, st, r, seed+int64(r), opt, pr)
			n++
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return res, fmt.Errorf("%s (repeat %d): %w", st.Name, r+1, err)
			}
			res.Runs[i] = append(res.Runs[i], rr)
			pr.endRun(rr.Took)
		}
	}
	res.Took = time.Since(res.Started)
	if ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return res, firstErr
}

// runOne runs one strategy once on a fresh stack.
func runOne(ctx context.Context, sc *Scenario, st Strategy, repeat int, seed int64, opt Options, pr *progress) (*RunResult, error) {
	began := time.Now()
	stack, err := StartStack(ctx, sc, st, StackOptions{Seed: uint64(seed), BasePort: opt.BasePort,
		ExternalTLS: opt.ExternalTLS, Logger: opt.Logger})
	if err != nil {
		return nil, err
	}
	defer stack.Close()
	if st.Kind == KindExternal && repeat == 0 {
		pr.note(fmt.Sprintf("%s: fleet at %v (configure the external picker with these endpoints)", st.Name, stack.Endpoints))
	}

	cfg := *sc.Workload
	cfg.Server.BaseURL = stack.URL
	cfg.Load.Seed = &seed
	cfg.Load.BaseSeed = nil
	stages := cfg.Load.Stages

	// Fleet and machine samples at every stage boundary.
	var mu sync.Mutex
	samples := make([]sample, 0, len(stages)+1)
	take := func() {
		s := sample{at: time.Now(), c: stack.Counters(), cpu: cpuSeconds()}
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}
	take()
	start := time.Now().Add(5 * time.Millisecond) // loadgen starts its plan 5 ms after Run
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		at := start
		for _, s := range stages[:len(stages)-1] {
			at = at.Add(time.Duration(s.Duration))
			select {
			case <-stop:
				return
			case <-time.After(time.Until(at)):
				take()
			}
		}
	}()
	pr.startLoad(stages)
	sum, err := loadgen.Run(ctx, &cfg, loadgen.Options{Progress: pr.live})
	close(stop)
	wg.Wait()
	take()
	if err != nil && !errors.Is(err, context.Canceled) {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	if sum == nil {
		return nil, fmt.Errorf("loadgen: no summary: %w", err)
	}
	rr := &RunResult{Strategy: st.Name, Repeat: repeat, Seed: seed, Names: stack.Names, Loadgen: sum}
	for i := 1; i < len(samples); i++ {
		rr.Stages = append(rr.Stages, window(samples[i-1], samples[i]))
	}
	// A run cut short has fewer windows than stages: pad, so indices match.
	for len(rr.Stages) < len(stages) {
		rr.Stages = append(rr.Stages, Window{PerEndpoint: make([]uint64, len(stack.Names))})
	}
	rr.Total = window(samples[0], samples[len(samples)-1])
	rr.Took = time.Since(began)
	return rr, err
}

type sample struct {
	at  time.Time
	c   []ServerCounters
	cpu float64
}

func window(a, b sample) Window {
	w := Window{Seconds: b.at.Sub(a.at).Seconds(), CPUSeconds: b.cpu - a.cpu, PerEndpoint: make([]uint64, len(b.c))}
	for i := range b.c {
		w.PerEndpoint[i] = b.c[i].Requests - a.c[i].Requests
		w.PrefixQueries += b.c[i].PrefixQueries - a.c[i].PrefixQueries
		w.PrefixHits += b.c[i].PrefixHits - a.c[i].PrefixHits
		w.Preemptions += b.c[i].Preemptions - a.c[i].Preemptions
		w.LagSeconds += (b.c[i].Lag - a.c[i].Lag).Seconds()
	}
	return w
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
