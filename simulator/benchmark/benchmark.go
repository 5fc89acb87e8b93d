// Package benchmark runs vLLM's benchmark commands against the simulator's
// engine in virtual time: Latency is `vllm bench latency` (one batch of
// equal prompts, timed end to end, repeated), Serve is `vllm bench serve`
// with the random dataset (requests arriving at a rate, optionally capped
// in flight, each timed per token). No sockets and no sleeping: hours of
// simulated load take seconds of CPU. The results carry vLLM's JSON names so
// scripts written for vLLM's output read them unchanged.
package benchmark

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/fastepp/fastepp/simulator/engine"
)

// LatencyParams are the flags of `vllm bench latency`.
type LatencyParams struct {
	InputLen       int // --input-len (vLLM default 32)
	OutputLen      int // --output-len (vLLM default 128)
	BatchSize      int // --batch-size (vLLM default 8)
	NumIters       int // --num-iters (vLLM default 30)
	NumItersWarmup int // --num-iters-warmup (vLLM default 10)
	Seed           uint64
}

// DefaultLatencyParams are vLLM's defaults for `vllm bench latency`.
func DefaultLatencyParams() LatencyParams {
	return LatencyParams{InputLen: 32, OutputLen: 128, BatchSize: 8, NumIters: 30, NumItersWarmup: 10}
}

// LatencyResult is what `vllm bench latency --output-json` writes.
type LatencyResult struct {
	AvgLatency  float64            `json:"avg_latency"` // seconds
	Latencies   []float64          `json:"latencies"`   // seconds, one per iteration
	Percentiles map[string]float64 `json:"percentiles"` // "10", "25", "50", "75", "90", "99" → seconds
}

// check reports the first out-of-range value as "expected X, found Y".
func check(items ...intCheck) error {
	for _, c := range items {
		if c.v < c.min {
			return fmt.Errorf("%s: expected ≥ %d, found %d", c.name, c.min, c.v)
		}
	}
	return nil
}

type intCheck = struct {
	name   string
	v, min int
}

// Latency runs `vllm bench latency`: warm-up iterations, then NumIters
// iterations, each submitting BatchSize prompts of InputLen random tokens at
// once and waiting for all of them to generate OutputLen tokens (EOS
// ignored). As in vLLM the prompts are drawn once and reused, so prefix
// caching may serve their full blocks after the first iteration. cfg's zero
// batch limits take vLLM's offline (LLM class) defaults for the GPU.
func Latency(cfg engine.Config, p LatencyParams) (LatencyResult, error) {
	if err := check(intCheck{"--input-len", p.InputLen, 1}, intCheck{"--output-len", p.OutputLen, 1},
		intCheck{"--batch-size", p.BatchSize, 1}, intCheck{"--num-iters", p.NumIters, 1},
		intCheck{"--num-iters-warmup", p.NumItersWarmup, 0}); err != nil {
		return LatencyResult{}, err
	}
	offlineDefaults(&cfg)
	e, err := engine.New(cfg)
	if err != nil {
		return LatencyResult{}, err
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x6c6174))
	prompts := make([][]uint32, p.BatchSize)
	for i := range prompts {
		prompts[i] = randomTokens(rng, p.InputLen)
	}
	clock := &engine.VirtualClock{}
	var res LatencyResult
	for it := range p.NumItersWarmup + p.NumIters {
		start := clock.Now()
		arr := make([]engine.Arrival, p.BatchSize)
		for i := range arr {
			arr[i] = engine.Arrival{At: start, Req: engine.NewRequest(prompts[i], p.OutputLen, false, "", uint64(i))}
		}
		end, errs := engine.Simulate(e, clock, arr)
		if len(errs) > 0 {
			for _, err := range errs {
				return LatencyResult{}, fmt.Errorf("iteration %d: %w", it, err)
			}
		}
		if it >= p.NumItersWarmup {
			res.Latencies = append(res.Latencies, (end - start).Seconds())
		}
	}
	var sum float64
	for _, l := range res.Latencies {
		sum += l
	}
	res.AvgLatency = sum / float64(len(res.Latencies))
	sorted := slices.Clone(res.Latencies)
	slices.Sort(sorted)
	res.Percentiles = map[string]float64{}
	for _, q := range []int{10, 25, 50, 75, 90, 99} {
		res.Percentiles[fmt.Sprint(q)] = percentile(sorted, float64(q))
	}
	return res, nil
}

// offlineDefaults fills zero batch limits with vLLM's LLM-class defaults.
func offlineDefaults(cfg *engine.Config) {
	seqs, toks := cfg.GPU.BatchDefaults(true)
	if cfg.MaxNumSeqs == 0 {
		cfg.MaxNumSeqs = seqs
	}
	if cfg.MaxNumBatchedTokens == 0 {
		cfg.MaxNumBatchedTokens = toks
	}
}

// ServeParams are the flags of `vllm bench serve --dataset-name random`.
type ServeParams struct {
	NumPrompts       int     // --num-prompts (vLLM default 1000)
	RandomInputLen   int     // --random-input-len (vLLM default 1024)
	RandomOutputLen  int     // --random-output-len (vLLM default 128)
	RandomRangeRatio float64 // --random-range-ratio: lengths uniform in [len·(1−r), len·(1+r)] (vLLM default 0)
	RandomPrefixLen  int     // --random-prefix-len: a shared prefix before every prompt (vLLM default 0)
	RequestRate      float64 // --request-rate in requests/s; +Inf sends every request at once (vLLM default inf)
	Burstiness       float64 // --burstiness: shape of the gamma inter-arrival times, 1 is Poisson (vLLM default 1)
	MaxConcurrency   int     // --max-concurrency: most requests in flight; 0 is no limit
	Seed             uint64  // --seed (vLLM default 0)
}

// DefaultServeParams are vLLM's defaults for `vllm bench serve --dataset-name random`.
func DefaultServeParams() ServeParams {
	return ServeParams{NumPrompts: 1000, RandomInputLen: 1024, RandomOutputLen: 128, RequestRate: math.Inf(1), Burstiness: 1}
}

// ServeResult is what `vllm bench serve --save-result` writes, in its names.
// Times are milliseconds, throughputs per second of the benchmark's duration.
type ServeResult struct {
	Duration             float64 `json:"duration"` // seconds from the first request to the last response
	Completed            int     `json:"completed"`
	TotalInputTokens     int     `json:"total_input_tokens"`
	TotalOutputTokens    int     `json:"total_output_tokens"`
	RequestThroughput    float64 `json:"request_throughput"`
	OutputThroughput     float64 `json:"output_throughput"`
	TotalTokenThroughput float64 `json:"total_token_throughput"`
	MaxConcurrency       int     `json:"max_concurrency,omitempty"`
	RequestRate          string  `json:"request_rate"` // "inf" or the rate, as vLLM records it
	Burstiness           float64 `json:"burstiness"`
	NumPrompts           int     `json:"num_prompts"`

	MeanTTFTMs   float64 `json:"mean_ttft_ms"`
	MedianTTFTMs float64 `json:"median_ttft_ms"`
	StdTTFTMs    float64 `json:"std_ttft_ms"`
	P99TTFTMs    float64 `json:"p99_ttft_ms"`
	MeanTPOTMs   float64 `json:"mean_tpot_ms"`
	MedianTPOTMs float64 `json:"median_tpot_ms"`
	StdTPOTMs    float64 `json:"std_tpot_ms"`
	P99TPOTMs    float64 `json:"p99_tpot_ms"`
	MeanITLMs    float64 `json:"mean_itl_ms"`
	MedianITLMs  float64 `json:"median_itl_ms"`
	StdITLMs     float64 `json:"std_itl_ms"`
	P99ITLMs     float64 `json:"p99_itl_ms"`
	MeanE2ELMs   float64 `json:"mean_e2el_ms"`
	MedianE2ELMs float64 `json:"median_e2el_ms"`
	StdE2ELMs    float64 `json:"std_e2el_ms"`
	P99E2ELMs    float64 `json:"p99_e2el_ms"`
}

// Serve runs `vllm bench serve` with the random dataset against one engine
// in virtual time. Arrivals follow vLLM's schedule (gamma inter-arrival
// times of mean 1/rate, or all at time 0 for an infinite rate); with
// MaxConcurrency a request waits for a free slot and its TTFT counts from
// when it is sent. TPOT is (e2e − TTFT)/(output − 1) per request with more
// than one output token; ITL is every gap between consecutive tokens.
// cfg's zero batch limits take vLLM's OpenAI-server defaults for the GPU.
func Serve(cfg engine.Config, p ServeParams) (ServeResult, error) {
	if err := check(intCheck{"--num-prompts", p.NumPrompts, 1}, intCheck{"--random-input-len", p.RandomInputLen, 1},
		intCheck{"--random-output-len", p.RandomOutputLen, 1}, intCheck{"--random-prefix-len", p.RandomPrefixLen, 0},
		intCheck{"--max-concurrency", p.MaxConcurrency, 0}); err != nil {
		return ServeResult{}, err
	}
	if !(p.RandomRangeRatio >= 0 && p.RandomRangeRatio < 1) {
		return ServeResult{}, fmt.Errorf("--random-range-ratio: expected a number in [0, 1), found %g", p.RandomRangeRatio)
	}
	if !(p.RequestRate > 0) {
		return ServeResult{}, fmt.Errorf("--request-rate: expected > 0 requests/s or inf, found %g", p.RequestRate)
	}
	if !(p.Burstiness > 0) || math.IsInf(p.Burstiness, 0) {
		return ServeResult{}, fmt.Errorf("--burstiness: expected a finite number > 0, found %g", p.Burstiness)
	}
	e, err := engine.New(cfg)
	if err != nil {
		return ServeResult{}, err
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x7365727665))
	prefix := randomTokens(rng, p.RandomPrefixLen)
	lenIn := func(n int) int {
		lo, hi := int(float64(n)*(1-p.RandomRangeRatio)), int(float64(n)*(1+p.RandomRangeRatio))
		return max(1, lo+rng.IntN(hi-lo+1))
	}
	arr := make([]engine.Arrival, p.NumPrompts)
	var at time.Duration
	for i := range arr {
		prompt := append(slices.Clone(prefix), randomTokens(rng, lenIn(p.RandomInputLen))...)
		arr[i] = engine.Arrival{At: at, Req: engine.NewRequest(prompt, lenIn(p.RandomOutputLen), false, "", uint64(i))}
		if !math.IsInf(p.RequestRate, 1) {
			at += time.Duration(gamma(rng, p.Burstiness, 1/(p.RequestRate*p.Burstiness)) * 1e9)
		}
	}
	reqs := make([]*engine.Request, len(arr))
	for i := range arr {
		reqs[i] = arr[i].Req
	}
	_, errs := engine.SimulateLimited(e, &engine.VirtualClock{}, arr, p.MaxConcurrency)
	res := ServeResult{MaxConcurrency: p.MaxConcurrency, Burstiness: p.Burstiness, NumPrompts: p.NumPrompts, RequestRate: "inf"}
	if !math.IsInf(p.RequestRate, 1) {
		res.RequestRate = fmt.Sprint(p.RequestRate)
	}
	var ttft, tpot, itl, e2el []float64
	var first, last time.Duration = -1, 0
	var times []time.Duration
	for _, r := range reqs {
		times, _ = e.Progress(r, 0, times[:0])
		if len(times) == 0 {
			continue // rejected (errs) or never ran
		}
		res.Completed++
		res.TotalInputTokens += r.PromptTokens()
		res.TotalOutputTokens += len(times)
		if first < 0 || r.Arrival < first {
			first = r.Arrival
		}
		last = max(last, times[len(times)-1])
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		ttft = append(ttft, ms(times[0]-r.Arrival))
		e2el = append(e2el, ms(times[len(times)-1]-r.Arrival))
		if n := len(times); n > 1 {
			tpot = append(tpot, ms(times[n-1]-times[0])/float64(n-1))
			for k := 1; k < n; k++ {
				itl = append(itl, ms(times[k]-times[k-1]))
			}
		}
	}
	if res.Completed == 0 {
		for _, err := range errs {
			return res, fmt.Errorf("no request completed: %w", err)
		}
		return res, fmt.Errorf("no request completed")
	}
	res.Duration = (last - first).Seconds()
	if res.Duration > 0 {
		res.RequestThroughput = float64(res.Completed) / res.Duration
		res.OutputThroughput = float64(res.TotalOutputTokens) / res.Duration
		res.TotalTokenThroughput = float64(res.TotalInputTokens+res.TotalOutputTokens) / res.Duration
	}
	res.MeanTTFTMs, res.MedianTTFTMs, res.StdTTFTMs, res.P99TTFTMs = stats(ttft)
	res.MeanTPOTMs, res.MedianTPOTMs, res.StdTPOTMs, res.P99TPOTMs = stats(tpot)
	res.MeanITLMs, res.MedianITLMs, res.StdITLMs, res.P99ITLMs = stats(itl)
	res.MeanE2ELMs, res.MedianE2ELMs, res.StdE2ELMs, res.P99E2ELMs = stats(e2el)
	return res, nil
}

// randomTokens draws n token IDs uniformly from the engine's vocabulary.
func randomTokens(rng *rand.Rand, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(rng.IntN(engine.VocabSize))
	}
	return out
}

// stats returns mean, median, population standard deviation and 99th
// percentile (numpy's linear interpolation, as vLLM computes them); all zero
// for no values.
func stats(v []float64) (mean, median, std, p99 float64) {
	if len(v) == 0 {
		return 0, 0, 0, 0
	}
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	std = math.Sqrt(std / float64(len(v)))
	s := slices.Clone(v)
	slices.Sort(s)
	return mean, percentile(s, 50), std, percentile(s, 99)
}

// percentile is numpy.percentile's default (linear) on sorted values.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := q / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(sorted)-1)
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// gamma draws from Gamma(shape, scale) (Marsaglia and Tsang; shape < 1 by
// boosting), the inter-arrival law vLLM's --burstiness uses.
func gamma(rng *rand.Rand, shape, scale float64) float64 {
	if shape < 1 {
		return gamma(rng, shape+1, scale) * math.Pow(rng.Float64(), 1/shape)
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if math.Log(u) < 0.5*x*x+d-d*v+d*math.Log(v) {
			return d * v * scale
		}
	}
}
