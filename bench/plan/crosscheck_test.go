//go:build !race

// The cross-check compares real-time latencies with virtual ones: the race
// detector slows the real stack's Go code several times over and would
// measure itself, so this file is left out of -race builds; `make test` runs
// it in its second, uninstrumented pass (-run 'Allocs|CrossCheck').

package plan

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/fastepp/fastepp/bench"
	"github.com/fastepp/fastepp/loadgen"
	"github.com/fastepp/fastepp/simulator"
)

// crossCheckConfig is the cross-check's workload: a constant 6 req/s for
// 10 s (60 requests, fixed seed), random prompts of 500-2500 tokens (mean
// 1500), 100 output tokens, streamed chat. Prompts are not shared, so TTFT
// is the engine's prefill rather than a prefix-cache hit of a few ms, which
// the real stack's proxy hops (~3 ms, not modelled) would dominate.
const crossCheckConfig = `
load: {type: constant, stages: [{rate: 6, duration: 10}], seed: 11, request_timeout: 30s}
api: {type: chat, streaming: true}
server: {base_url: "http://127.0.0.1:1", model_name: meta-llama/Llama-3.1-8B-Instruct, ignore_eos: true}
data:
  type: random
  input_distribution: {min: 500, max: 2500, mean: 1500, std_dev: 500}
  output_distribution: {min: 100, max: 100, mean: 100, std_dev: 0}
slo: {ttft: 1s, tpot: 50ms, percentile: 90}
report: {percentiles: [50, 90], formats: []}
`

// TestCrossCheckRealTime runs one workload twice on 4 MI300X replicas
// behind epp: in virtual time here, and in real time through the bench's
// in-process stack (simulator fleet + epp + gateway + loadgen over
// sockets). The virtual clock must agree with the real one within 25% on
// p50 and p90 TTFT and on output throughput. It takes ~12 s of wall time.
func TestCrossCheckRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time run (~12 s); skipped with -short")
	}
	cfg, err := loadgen.ParseConfig([]byte(crossCheckConfig))
	if err != nil {
		t.Fatal(err)
	}
	n, err := loadgen.CountPlanned(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Virtual time.
	srv, err := ServerConfig("mi300x", "llama-3.1-8b", 1, cfg.Server.ModelName)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseStrategy(EPP, "")
	if err != nil {
		t.Fatal(err)
	}
	sched, err := loadgen.NewSchedule(cfg)
	if err != nil {
		t.Fatal(err)
	}
	virt, err := Simulate(Options{Server: srv, Replicas: 4, Strategy: st, SLO: SLOFrom(cfg.SLO), NoEarlyStop: true}, sched, n)
	if err != nil {
		t.Fatal(err)
	}

	// Real time: the bench's stack with the same epp config.
	spec := simulator.DefaultSpec()
	spec.Model = cfg.Server.ModelName
	sc := &bench.Scenario{Name: "cross-check", Fleet: []simulator.ServerSpec{spec, spec, spec, spec},
		EPP: bench.EPPOptions{RefreshInterval: 50 * time.Millisecond, StalenessThreshold: 2 * time.Second}}
	bst, err := bench.ParseStrategy("epp")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stack, err := bench.StartStack(ctx, sc, bst, bench.StackOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	rc := *cfg
	rc.Server.BaseURL = stack.URL
	sum, err := loadgen.Run(ctx, &rc, loadgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	real := sum.Figures
	if real.Requests.Failed > 0 || virt.Failed > 0 {
		t.Fatalf("failed requests: expected none, found %d real, %d virtual (errors %v)", real.Requests.Failed, virt.Failed, real.Errors)
	}
	if int(real.Requests.Completed) != n || virt.Completed != n {
		t.Fatalf("completed: expected %d both ways, found %d real, %d virtual", n, real.Requests.Completed, virt.Completed)
	}
	rows := []struct {
		name       string
		real, virt float64
	}{
		{"TTFT p50 (s)", real.TTFT.P50, virt.TTFT.P50},
		{"TTFT p90 (s)", real.TTFT.P90, virt.TTFT.P90},
		{"TPOT p50 (s)", real.TPOT.P50, virt.TPOT.P50},
		{"TPOT p90 (s)", real.TPOT.P90, virt.TPOT.P90},
		{"output tok/s", real.OutputTokensPerSecond, virt.OutputTokensPerSecond},
	}
	checked := map[string]bool{"TTFT p50 (s)": true, "TTFT p90 (s)": true, "output tok/s": true}
	for _, r := range rows {
		diff := math.Abs(r.virt-r.real) / r.real
		t.Logf("%-13s real %9.4f  virtual %9.4f  differ %5.1f%%", r.name, r.real, r.virt, diff*100)
		if checked[r.name] && !(diff <= 0.25) {
			t.Errorf("%s: expected virtual within 25%% of real %.4f, found %.4f (%.1f%% off)", r.name, r.real, r.virt, diff*100)
		}
	}
}
