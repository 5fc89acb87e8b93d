package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fastepp/fastepp/simulator/benchmark"
	"github.com/fastepp/fastepp/simulator/engine"
)

const benchUsage = `simulator bench runs vLLM's benchmark commands against the simulator's engine
in virtual time: no server, no sockets, no waiting (an hour of simulated load
takes seconds of CPU). The flags are vllm bench's; results are printed as vLLM
prints them, or with --format json under vLLM's JSON names.

Usage:
  simulator bench latency [flags]   like vllm bench latency: one batch of equal prompts, timed end to end
  simulator bench serve [flags]     like vllm bench serve --dataset-name random: requests at a rate, per-token timing
  simulator bench <command> --help  the command's flags

Examples:
  simulator bench latency --gpu h100 --model-profile llama-3.1-8b --batch-size 8 --input-len 32 --output-len 128
  simulator bench serve --gpu mi300x --model-profile llama-3.1-70b-fp8 --tensor-parallel-size 8 \
      --dataset-name random --random-input-len 1024 --random-output-len 128 --num-prompts 500 --request-rate 10 --format json
`

// engineFlags are the engine settings both bench commands share.
type engineFlags struct {
	gpu, modelProfile, model, profiles  string
	tp, maxNumSeqs, maxNumBatchedTokens int
	blockSize                           int
	gpuMemoryUtilization                float64
	noPrefixCaching                     bool
	format                              string
}

func (f *engineFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.gpu, "gpu", "mi300x", "GPU profile: a100, h100, h200, mi300x, mi325x, mi355x (or one added with --profiles)")
	fs.StringVar(&f.modelProfile, "model-profile", "", "model profile: llama-3.1-8b, llama-3.1-70b, llama-3.1-70b-fp8, llama-3.1-405b-fp8, qwen3-32b, ... (default llama-3.1-8b, or the one --model names)")
	fs.StringVar(&f.model, "model", "", "vLLM's --model: a model profile name or a profile's served_name (e.g. meta-llama/Llama-3.1-8B-Instruct)")
	fs.StringVar(&f.profiles, "profiles", "", "comma-separated profile YAML files merged over the built-in GPU and model profiles")
	fs.IntVar(&f.tp, "tensor-parallel-size", 1, "GPUs the model is sharded over (vLLM -tp); adds ring all-reduces over the GPU's interconnect")
	fs.IntVar(&f.maxNumSeqs, "max-num-seqs", 0, "most sequences in one batch (0: vLLM's default for the GPU: 1024 on ≥ 70 GiB other than A100, else 256)")
	fs.IntVar(&f.maxNumBatchedTokens, "max-num-batched-tokens", 0, "token budget of one step (0: vLLM's default: latency 16384 / serve 8192 on ≥ 70 GiB other than A100, else 8192 / 2048)")
	fs.IntVar(&f.blockSize, "block-size", 16, "KV cache block size in tokens")
	fs.Float64Var(&f.gpuMemoryUtilization, "gpu-memory-utilization", 0.9, "share of HBM for weights + KV cache")
	fs.BoolVar(&f.noPrefixCaching, "no-enable-prefix-caching", false, "turn prefix caching off (vLLM V1 enables it by default)")
	fs.StringVar(&f.format, "format", "text", "output: text (as vLLM prints it) or json (vLLM's JSON names)")
}

// config resolves the profiles into an engine configuration.
func (f *engineFlags) config() (engine.Config, error) {
	if f.format != "text" && f.format != "json" {
		return engine.Config{}, fmt.Errorf("--format: expected text or json, found %q", f.format)
	}
	prof, err := engine.AllProfiles()
	if err != nil {
		return engine.Config{}, err
	}
	if f.profiles != "" {
		if err := prof.LoadProfileFiles(splitList(f.profiles)...); err != nil {
			return engine.Config{}, err
		}
	}
	name := f.modelProfile
	if name == "" && f.model != "" {
		name = f.model
		if _, err := prof.Model(name); err != nil {
			for _, k := range prof.ModelNames() {
				if m, _ := prof.Model(k); strings.EqualFold(m.ServedName, f.model) {
					name = k
					break
				}
			}
		}
	}
	if name == "" {
		name = "llama-3.1-8b"
	}
	g, err := prof.GPU(f.gpu)
	if err != nil {
		return engine.Config{}, err
	}
	m, err := prof.Model(name)
	if err != nil {
		return engine.Config{}, err
	}
	if f.maxNumSeqs < 0 || f.maxNumBatchedTokens < 0 {
		return engine.Config{}, fmt.Errorf("--max-num-seqs %d, --max-num-batched-tokens %d: expected ≥ 0 (0: vLLM's default)", f.maxNumSeqs, f.maxNumBatchedTokens)
	}
	return engine.Config{
		GPU: g, Model: m, TensorParallel: f.tp, MaxNumSeqs: f.maxNumSeqs, MaxNumBatchedTokens: f.maxNumBatchedTokens,
		BlockSize: f.blockSize, GPUMemoryUtilization: f.gpuMemoryUtilization, DisablePrefixCaching: f.noPrefixCaching,
	}, nil
}

func runBench(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "--help" || args[0] == "-help" || args[0] == "-h" || args[0] == "help" {
		fmt.Fprint(stdout, benchUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "latency":
		return benchLatency(args[1:], stdout, stderr)
	case "serve":
		return benchServe(args[1:], stdout, stderr)
	}
	return usageError(stderr, fmt.Errorf("bench: expected latency or serve, found %q", args[0]))
}

// parseBench parses a bench command's flags; done says the caller should
// return code (help was printed or the flags were bad).
func parseBench(fs *flag.FlagSet, head string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, head)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0, true
		}
		fmt.Fprintln(stderr, "Run 'simulator bench --help' for the commands.")
		return 2, true
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fmt.Errorf("unexpected argument %q: flags only (see --help)", fs.Arg(0))), true
	}
	return 0, false
}

const latencyHead = `simulator bench latency: vllm bench latency in virtual time.

Submits --batch-size prompts of --input-len random tokens at once, waits for
every one to generate --output-len tokens (EOS ignored), and times the batch;
--num-iters-warmup untimed then --num-iters timed iterations, the prompts
drawn once and reused (as vLLM does, so prefix caching applies). Batch limits
default to vLLM's offline (LLM class) defaults for the GPU. Prints the average
latency and percentiles in seconds; --format json or --output-json give
{"avg_latency", "latencies", "percentiles"} as vLLM writes them.

Flags:
`

func benchLatency(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulator bench latency", flag.ContinueOnError)
	var ef engineFlags
	ef.register(fs)
	p := benchmark.DefaultLatencyParams()
	fs.IntVar(&p.InputLen, "input-len", p.InputLen, "prompt length in tokens")
	fs.IntVar(&p.OutputLen, "output-len", p.OutputLen, "tokens generated per prompt")
	fs.IntVar(&p.BatchSize, "batch-size", p.BatchSize, "prompts submitted together")
	fs.IntVar(&p.NumIters, "num-iters", p.NumIters, "timed iterations")
	fs.IntVar(&p.NumItersWarmup, "num-iters-warmup", p.NumItersWarmup, "untimed iterations first")
	fs.Uint64Var(&p.Seed, "seed", 0, "seed of the random prompts")
	outJSON := fs.String("output-json", "", "also write the results as JSON to this file (vLLM's --output-json)")
	if code, done := parseBench(fs, latencyHead, args, stdout, stderr); done {
		return code
	}
	cfg, err := ef.config()
	if err != nil {
		return usageError(stderr, err)
	}
	res, err := benchmark.Latency(cfg, p)
	if err != nil {
		return fail(stderr, err)
	}
	if *outJSON != "" {
		if err := writeJSON(*outJSON, res); err != nil {
			return fail(stderr, err)
		}
	}
	if ef.format == "json" {
		return printJSON(stdout, stderr, res)
	}
	fmt.Fprintf(stdout, "Avg latency: %.6f seconds\n", res.AvgLatency)
	keys := make([]string, 0, len(res.Percentiles))
	for k := range res.Percentiles {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return len(keys[i]) < len(keys[j]) || len(keys[i]) == len(keys[j]) && keys[i] < keys[j]
	})
	for _, k := range keys {
		fmt.Fprintf(stdout, "%s%% percentile latency: %.6f seconds\n", k, res.Percentiles[k])
	}
	return 0
}

const serveHead = `simulator bench serve: vllm bench serve --dataset-name random in virtual time.

Draws --num-prompts prompts of --random-input-len tokens (after a shared
--random-prefix-len prefix; lengths spread by --random-range-ratio), each
asking for --random-output-len tokens, sends them at --request-rate (gamma
inter-arrival times of shape --burstiness; inf sends all at once) with at most
--max-concurrency in flight, and times every token. Batch limits default to
vLLM's OpenAI-server defaults for the GPU. Prints vLLM's result block, or
with --format json (and --save-result) the fields under vLLM's names:
request_throughput, output_throughput, total_token_throughput, mean/median/
std/p99 of ttft, tpot, itl and e2el in ms, and the run's totals.

Flags:
`

func benchServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulator bench serve", flag.ContinueOnError)
	var ef engineFlags
	ef.register(fs)
	p := benchmark.DefaultServeParams()
	dataset := fs.String("dataset-name", "random", "dataset: random (the only one the simulator has)")
	fs.IntVar(&p.NumPrompts, "num-prompts", p.NumPrompts, "requests to send")
	fs.IntVar(&p.RandomInputLen, "random-input-len", p.RandomInputLen, "prompt length in tokens (after the prefix)")
	fs.IntVar(&p.RandomOutputLen, "random-output-len", p.RandomOutputLen, "tokens generated per request (EOS ignored)")
	fs.Float64Var(&p.RandomRangeRatio, "random-range-ratio", p.RandomRangeRatio, "lengths uniform in [len·(1−r), len·(1+r)], r in [0, 1)")
	fs.IntVar(&p.RandomPrefixLen, "random-prefix-len", p.RandomPrefixLen, "tokens of a prefix every prompt shares")
	fs.Float64Var(&p.RequestRate, "request-rate", p.RequestRate, "requests per second, or inf to send every request at once")
	fs.Float64Var(&p.Burstiness, "burstiness", p.Burstiness, "shape of the gamma inter-arrival times: 1 is Poisson, lower is burstier")
	fs.IntVar(&p.MaxConcurrency, "max-concurrency", 0, "most requests in flight; the rest wait for a slot (0: no limit)")
	fs.Uint64Var(&p.Seed, "seed", 0, "seed of prompts, lengths and arrival times")
	save := fs.Bool("save-result", false, "also write the JSON result to a file (vLLM's --save-result)")
	dir := fs.String("result-dir", ".", "directory of the --save-result file")
	file := fs.String("result-filename", "", "name of the --save-result file (default simulator-serve-<gpu>-<model>-tp<N>.json)")
	if code, done := parseBench(fs, serveHead, args, stdout, stderr); done {
		return code
	}
	if *dataset != "random" {
		return usageError(stderr, fmt.Errorf("--dataset-name: expected random, found %q", *dataset))
	}
	cfg, err := ef.config()
	if err != nil {
		return usageError(stderr, err)
	}
	res, err := benchmark.Serve(cfg, p)
	if err != nil {
		return fail(stderr, err)
	}
	if *save {
		name := *file
		if name == "" {
			name = fmt.Sprintf("simulator-serve-%s-%s-tp%d.json", ef.gpu, strings.ReplaceAll(cfg.Model.ServedName, "/", "_"), max(1, ef.tp))
		}
		if err := writeJSON(filepath.Join(*dir, name), res); err != nil {
			return fail(stderr, err)
		}
	}
	if ef.format == "json" {
		return printJSON(stdout, stderr, res)
	}
	line := func(label string, format string, v any) { fmt.Fprintf(stdout, "%-40s "+format+"\n", label, v) }
	rule := func(title string) {
		pad := max(0, 50-len(title))
		fmt.Fprintf(stdout, "%s%s%s\n", strings.Repeat("-", pad/2), title, strings.Repeat("-", pad-pad/2))
	}
	fmt.Fprintln(stdout, "============ Serving Benchmark Result ============")
	line("Successful requests:", "%d", res.Completed)
	if res.MaxConcurrency > 0 {
		line("Maximum request concurrency:", "%d", res.MaxConcurrency)
	}
	line("Benchmark duration (s):", "%.2f", res.Duration)
	line("Total input tokens:", "%d", res.TotalInputTokens)
	line("Total generated tokens:", "%d", res.TotalOutputTokens)
	line("Request throughput (req/s):", "%.2f", res.RequestThroughput)
	line("Output token throughput (tok/s):", "%.2f", res.OutputThroughput)
	line("Total Token throughput (tok/s):", "%.2f", res.TotalTokenThroughput)
	for _, m := range []struct {
		title, short      string
		mean, median, p99 float64
	}{
		{"Time to First Token", "TTFT", res.MeanTTFTMs, res.MedianTTFTMs, res.P99TTFTMs},
		{"Time per Output Token (excl. 1st token)", "TPOT", res.MeanTPOTMs, res.MedianTPOTMs, res.P99TPOTMs},
		{"Inter-token Latency", "ITL", res.MeanITLMs, res.MedianITLMs, res.P99ITLMs},
		{"End-to-end Latency", "E2EL", res.MeanE2ELMs, res.MedianE2ELMs, res.P99E2ELMs},
	} {
		rule(m.title)
		line("Mean "+m.short+" (ms):", "%.2f", m.mean)
		line("Median "+m.short+" (ms):", "%.2f", m.median)
		line("P99 "+m.short+" (ms):", "%.2f", m.p99)
	}
	fmt.Fprintln(stdout, strings.Repeat("=", 50))
	return 0
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fail(stderr, err)
	}
	return 0
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("result file: %w", err)
	}
	return nil
}
