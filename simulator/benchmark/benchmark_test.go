package benchmark

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fastepp/fastepp/simulator/engine"
)

func config(t *testing.T, gpu, model string, tp int) engine.Config {
	t.Helper()
	p, err := engine.AllProfiles()
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.GPU(gpu)
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.Model(model)
	if err != nil {
		t.Fatal(err)
	}
	return engine.Config{GPU: g, Model: m, TensorParallel: tp}
}

// TestLatencySlowsWithBatchAndLength: a batch takes longer with more
// sequences, longer outputs and longer prompts, and every iteration after
// warm-up is timed.
func TestLatencySlowsWithBatchAndLength(t *testing.T) {
	cfg := config(t, "mi300x", "llama-3.1-8b", 1)
	base := LatencyParams{InputLen: 128, OutputLen: 64, BatchSize: 1, NumIters: 3, NumItersWarmup: 1}
	ref, err := Latency(cfg, base)
	if err != nil {
		t.Fatal(err)
	}
	if len(ref.Latencies) != 3 || len(ref.Percentiles) != 6 || !(ref.AvgLatency > 0) {
		t.Fatalf("result %+v: want 3 latencies, 6 percentiles, a positive average", ref)
	}
	cases := []struct {
		name string
		mod  func(*LatencyParams)
	}{
		{"batch 64", func(p *LatencyParams) { p.BatchSize = 64 }},
		{"output 128", func(p *LatencyParams) { p.OutputLen = 128 }},
		{"input 4096", func(p *LatencyParams) { p.InputLen = 4096 }},
	}
	for _, c := range cases {
		p := base
		c.mod(&p)
		got, err := Latency(cfg, p)
		if err != nil {
			t.Fatal(err)
		}
		if got.AvgLatency <= ref.AvgLatency {
			t.Errorf("%s: %.4f s, want more than the reference %.4f s", c.name, got.AvgLatency, ref.AvgLatency)
		}
	}
}

// TestTensorParallelPaysForCommunication: TP8 is faster than TP1 for a 70B
// model but by less than 8×, the all-reduces' share.
func TestTensorParallelPaysForCommunication(t *testing.T) {
	p := LatencyParams{InputLen: 32, OutputLen: 32, BatchSize: 8, NumIters: 1}
	one, err := Latency(config(t, "mi300x", "llama-3.1-70b", 1), p)
	if err != nil {
		t.Fatal(err)
	}
	eight, err := Latency(config(t, "mi300x", "llama-3.1-70b", 8), p)
	if err != nil {
		t.Fatal(err)
	}
	if !(eight.AvgLatency < one.AvgLatency && 8*eight.AvgLatency > one.AvgLatency) {
		t.Errorf("TP1 %.3f s, TP8 %.3f s: want TP8 faster, but by less than 8×", one.AvgLatency, eight.AvgLatency)
	}
}

// TestServeAccounting checks the serve result against its own definitions
// on a few shapes of load.
func TestServeAccounting(t *testing.T) {
	cfg := config(t, "h100", "llama-3.1-8b", 1)
	cases := []struct {
		name string
		p    ServeParams
	}{
		{"all at once", ServeParams{NumPrompts: 200, RandomInputLen: 512, RandomOutputLen: 32, RequestRate: math.Inf(1), Burstiness: 1}},
		{"poisson", ServeParams{NumPrompts: 200, RandomInputLen: 512, RandomOutputLen: 32, RequestRate: 20, Burstiness: 1, Seed: 3}},
		{"bursty, capped, spread lengths", ServeParams{NumPrompts: 200, RandomInputLen: 512, RandomOutputLen: 32, RandomRangeRatio: 0.5,
			RandomPrefixLen: 64, RequestRate: 50, Burstiness: 0.3, MaxConcurrency: 16}},
	}
	for _, c := range cases {
		r, err := Serve(cfg, c.p)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.Completed != c.p.NumPrompts {
			t.Errorf("%s: completed %d of %d", c.name, r.Completed, c.p.NumPrompts)
		}
		near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }
		if !near(r.RequestThroughput, float64(r.Completed)/r.Duration) ||
			!near(r.OutputThroughput, float64(r.TotalOutputTokens)/r.Duration) ||
			!near(r.TotalTokenThroughput, float64(r.TotalInputTokens+r.TotalOutputTokens)/r.Duration) {
			t.Errorf("%s: throughputs %+v do not follow from totals and duration", c.name, r)
		}
		if c.p.RandomRangeRatio == 0 && (r.TotalOutputTokens != c.p.NumPrompts*c.p.RandomOutputLen ||
			r.TotalInputTokens != c.p.NumPrompts*(c.p.RandomInputLen+c.p.RandomPrefixLen)) {
			t.Errorf("%s: tokens in %d out %d, want exact lengths", c.name, r.TotalInputTokens, r.TotalOutputTokens)
		}
		ordered := r.MeanTTFTMs > 0 && r.MedianTTFTMs <= r.P99TTFTMs && r.MedianTPOTMs <= r.P99TPOTMs &&
			r.MedianE2ELMs <= r.P99E2ELMs && r.MeanE2ELMs > r.MeanTTFTMs && r.MeanITLMs > 0
		if !ordered {
			t.Errorf("%s: statistics out of order: %+v", c.name, r)
		}
		// Over requests with the same output length, mean TPOT is mean ITL.
		if c.p.RandomRangeRatio == 0 && !near(r.MeanTPOTMs, r.MeanITLMs) {
			t.Errorf("%s: mean TPOT %g ≠ mean ITL %g with equal output lengths", c.name, r.MeanTPOTMs, r.MeanITLMs)
		}
	}
}

// TestServeConcurrencyCap: with one request in flight the run is serial
// (duration is the sum of the requests' latencies) and each TTFT is a lone
// prefill, shorter than when every request arrives at once.
func TestServeConcurrencyCap(t *testing.T) {
	cfg := config(t, "mi300x", "llama-3.1-8b", 1)
	p := ServeParams{NumPrompts: 30, RandomInputLen: 256, RandomOutputLen: 16, RequestRate: math.Inf(1), Burstiness: 1, MaxConcurrency: 1}
	serial, err := Serve(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := serial.Duration*1e3, serial.MeanE2ELMs*float64(serial.Completed); math.Abs(got-want) > 1e-6*want {
		t.Errorf("serial run lasts %.3f ms, want the sum of latencies %.3f ms", got, want)
	}
	p.MaxConcurrency = 0
	burst, err := Serve(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	if !(burst.MeanTTFTMs > serial.MeanTTFTMs && burst.Duration < serial.Duration) {
		t.Errorf("uncapped: TTFT %.2f ms, duration %.3f s; capped at 1: %.2f ms, %.3f s; want more TTFT and less duration uncapped",
			burst.MeanTTFTMs, burst.Duration, serial.MeanTTFTMs, serial.Duration)
	}
}

// TestServeIsDeterministic: the same seed gives the same result; another
// seed other arrivals.
func TestServeIsDeterministic(t *testing.T) {
	cfg := config(t, "mi300x", "llama-3.1-8b", 1)
	p := ServeParams{NumPrompts: 100, RandomInputLen: 256, RandomOutputLen: 16, RandomRangeRatio: 0.3, RequestRate: 30, Burstiness: 1, Seed: 7}
	a, _ := Serve(cfg, p)
	b, _ := Serve(cfg, p)
	p.Seed = 8
	c, _ := Serve(cfg, p)
	if a != b {
		t.Errorf("same seed, different results:\n%+v\n%+v", a, b)
	}
	if a == c {
		t.Errorf("seeds 7 and 8 gave identical results")
	}
}

func TestGammaMeanAndPercentile(t *testing.T) {
	for _, shape := range []float64{0.3, 1, 4} {
		rng := newRand(1)
		const n = 20000
		var sum float64
		for range n {
			sum += gamma(rng, shape, 1/shape) // mean 1
		}
		if m := sum / n; math.Abs(m-1) > 0.05 {
			t.Errorf("gamma shape %g: mean %.3f, want 1", shape, m)
		}
	}
	cases := []struct {
		v    []float64
		q    float64
		want float64
	}{{[]float64{1, 2, 3, 4}, 50, 2.5}, {[]float64{1, 2, 3, 4}, 99, 3.97}, {[]float64{5}, 99, 5}, {nil, 50, 0}}
	for _, c := range cases {
		if got := percentile(c.v, c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("percentile(%v, %g) = %g, want %g", c.v, c.q, got, c.want)
		}
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0)) }
