// Command simulator serves a fleet of simulated vLLM model servers on
// --bind-address (default 127.0.0.1): each queues, batches, fills its KV cache and reuses cached
// prefixes like vLLM V1 on the chosen GPU, answers the OpenAI API with tokens
// at the modelled times, and publishes vLLM /metrics plus GPU telemetry in
// AMD device-metrics-exporter names. `simulator bench latency|serve` runs
// vLLM's benchmark commands against the same engine in virtual time.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	simconfig "github.com/fastepp/fastepp/configs/simulator"
	"github.com/fastepp/fastepp/simulator"
	"github.com/fastepp/fastepp/simulator/engine"
	"github.com/fastepp/fastepp/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, waitForSignal))
}

func waitForSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
}

const usageHead = `simulator serves N simulated vLLM servers on ADDRESS:P … P+N−1
(ADDRESS is --bind-address, 127.0.0.1 unless set; 0.0.0.0 serves a pod).

Each server models one vLLM V1 engine on one GPU profile: continuous batching
with a per-step token budget and a sequence cap, chunked prefill, a FCFS
waiting queue, a paged KV cache sized from GPU memory, preemption when it runs
out, prefix caching with LRU reuse, and LoRA adapters. Step time follows a
roofline over the GPU and model profiles (configs/simulator/*.yaml, built in).

Routes on every port:
  POST /v1/completions, /v1/chat/completions   OpenAI API as vLLM serves it (SSE with "stream":true)
  GET  /v1/models, /health
  GET  /metrics        vLLM V1 metrics, followed by the GPU telemetry (AMD exporter names)
  GET  /gpu/metrics    the GPU telemetry alone
  GET|PUT /admin/faults    fault settings as JSON {error_rate, latency_multiplier, metrics_delay_ms, metrics_error_rate}
  POST /admin/crash[?restart_after=5s]   drop every connection and the KV cache; come back after the delay

Usage:
  simulator --servers 4 --base-port 8000 --gpu mi300x --model-profile llama-3.1-8b
  simulator --config configs/simulator/fleet.yaml
  simulator --explain --gpu h100            # print the model's figures and exit
  simulator --bind-address 0.0.0.0 --base-port 8000   # reachable from other hosts (a pod)
  simulator bench latency --gpu h100 --batch-size 8   # vllm bench latency in virtual time
  simulator bench serve --request-rate 10 --format json   # vllm bench serve in virtual time
  simulator bench --help                    # the bench commands and their flags

Flags:
`

// fleetFlags are the per-server flags a fleet file replaces.
var fleetFlags = []string{
	"servers", "engine", "model", "gpu", "model-profile", "tensor-parallel-size", "max-num-seqs", "max-num-batched-tokens",
	"block-size", "gpu-memory-utilization", "num-gpu-blocks", "max-model-len", "enable-prefix-caching",
	"lora-adapters", "max-loras", "lora-load-ms", "max-waiting", "default-max-tokens", "namespace", "hostname",
	"error-rate", "latency-multiplier", "metrics-delay-ms", "metrics-error-rate",
}

func run(args []string, stdout, stderr io.Writer, wait func()) int {
	if len(args) > 0 && args[0] == "bench" {
		return runBench(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("simulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := simulator.DefaultSpec()
	sp := d
	servers := fs.Int("servers", 1, "number of servers to run (ports base-port … base-port+N−1)")
	basePort := fs.Int("base-port", 8000, "port of the first server; 0 picks free ports")
	bind := fs.String("bind-address", "127.0.0.1", "IP address or host name the servers listen on; 0.0.0.0 (or ::) for every interface, as in a pod")
	fs.StringVar(&sp.Model, "model", "", "model name clients send and /v1/models lists (default: the model profile's served_name)")
	fs.StringVar(&sp.Engine, "engine", d.Engine, "metric names /metrics publishes: vllm (vLLM V1) or sglang (SGLang); the engine model is the same")
	fs.StringVar(&sp.GPU, "gpu", d.GPU, "GPU profile: mi300x, mi325x, mi355x, h100, h200, a100 (or one added with --profiles)")
	fs.StringVar(&sp.ModelProfile, "model-profile", d.ModelProfile, "model profile: llama-3.1-8b, llama-3.1-70b, llama-3.1-70b-fp8, llama-3.1-405b-fp8, qwen3-32b (or one added with --profiles)")
	fs.IntVar(&sp.TensorParallelSize, "tensor-parallel-size", d.TensorParallelSize, "GPUs per server; compute, bandwidth and memory scale with it, and each layer adds two ring all-reduces over the GPU's interconnect")
	fs.IntVar(&sp.MaxNumSeqs, "max-num-seqs", d.MaxNumSeqs, "most requests running in one batch; more wait in the queue (vLLM --max-num-seqs; 0: vLLM's default for the GPU, 1024 on ≥ 70 GiB other than A100, else 256)")
	fs.IntVar(&sp.MaxNumBatchedTokens, "max-num-batched-tokens", d.MaxNumBatchedTokens, "token budget of one engine step; longer prompts are prefilled in chunks (vLLM --max-num-batched-tokens; 0: vLLM's server default for the GPU, 8192 on ≥ 70 GiB other than A100, else 2048)")
	fs.IntVar(&sp.BlockSize, "block-size", d.BlockSize, "KV cache block size in tokens; also the prefix cache's granularity")
	fs.Float64Var(&sp.GPUMemoryUtilization, "gpu-memory-utilization", d.GPUMemoryUtilization, "share of HBM for weights + KV cache; the KV pool is what remains after weights and reserve")
	fs.IntVar(&sp.NumGPUBlocks, "num-gpu-blocks", 0, "override the KV cache size in blocks (0: computed from GPU memory)")
	fs.IntVar(&sp.MaxModelLen, "max-model-len", 0, "longest prompt + output accepted (0: the model's, capped by the KV cache)")
	fs.BoolVar(&sp.EnablePrefixCaching, "enable-prefix-caching", d.EnablePrefixCaching, "reuse KV blocks of identical leading token blocks across requests")
	lora := fs.String("lora-adapters", "", "comma-separated LoRA adapter names served beside the base model")
	fs.IntVar(&sp.MaxLoRAs, "max-loras", d.MaxLoRAs, "most distinct LoRA adapters in one batch (vLLM --max-loras)")
	fs.Float64Var(&sp.LoRALoadMS, "lora-load-ms", 0, "milliseconds added to a step that loads an adapter not resident on the GPU")
	fs.IntVar(&sp.MaxWaiting, "max-waiting", 0, "bound on the waiting queue; beyond it requests get 429 (0: unbounded, like vLLM)")
	fs.IntVar(&sp.DefaultMaxTokens, "default-max-tokens", d.DefaultMaxTokens, "generation length of chat requests that set no max tokens (they finish with \"stop\")")
	fs.StringVar(&sp.Namespace, "namespace", d.Namespace, "namespace label of the GPU telemetry")
	fs.StringVar(&sp.Hostname, "hostname", d.Hostname, "hostname label of the GPU telemetry")
	fs.Float64Var(&sp.Faults.ErrorRate, "error-rate", 0, "fault: share of generation requests answered 500")
	fs.Float64Var(&sp.Faults.LatencyMultiplier, "latency-multiplier", 1, "fault: multiply every step's modelled duration")
	fs.IntVar(&sp.Faults.MetricsDelayMS, "metrics-delay-ms", 0, "fault: delay every /metrics answer by this many milliseconds")
	fs.Float64Var(&sp.Faults.MetricsErrorRate, "metrics-error-rate", 0, "fault: share of /metrics scrapes answered 500")
	config := fs.String("config", "", "fleet YAML (see configs/simulator/fleet.yaml); replaces the per-server flags")
	profiles := fs.String("profiles", "", "comma-separated profile YAML files merged over the built-in GPU and model profiles")
	seed := fs.Uint64("seed", 1, "seed for generated ids, text and injected failures")
	explain := fs.Bool("explain", false, "print the KV capacity, TTFT and decode figures of the configuration and exit")
	list := fs.Bool("list-profiles", false, "print the built-in profile files and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {} // parse errors print one line; --help prints the full text below
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usageHead)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintln(stderr, "Run 'simulator --help' for the flags.")
		return 2
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fmt.Errorf("unexpected argument %q: flags only (see --help)", fs.Arg(0)))
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("simulator"))
		return 0
	}
	if *list {
		for _, name := range []string{"gpus.yaml", "gpus-reference.yaml", "models.yaml"} {
			text, _ := simconfig.FS.ReadFile(name)
			fmt.Fprintf(stdout, "# --- %s ---\n%s\n", name, text)
		}
		return 0
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	prof, err := engine.AllProfiles()
	if err != nil {
		return fail(stderr, err)
	}
	if *profiles != "" {
		if err := prof.LoadProfileFiles(splitList(*profiles)...); err != nil {
			return fail(stderr, err)
		}
	}
	sp.LoRAAdapters = splitList(*lora)

	var specs []simulator.ServerSpec
	if *config != "" {
		for _, name := range fleetFlags {
			if set[name] {
				return usageError(stderr, fmt.Errorf("--%s cannot be combined with --config: set it in the file's defaults or groups", name))
			}
		}
		text, err := os.ReadFile(*config)
		if err != nil {
			return fail(stderr, fmt.Errorf("fleet config: %w", err))
		}
		var filePort int
		specs, filePort, err = simulator.ParseFleet(*config, text, d)
		if err != nil {
			return fail(stderr, err)
		}
		if filePort > 0 && !set["base-port"] {
			*basePort = filePort
		}
	} else {
		if *servers < 1 || *servers > simulator.MaxServers {
			return usageError(stderr, fmt.Errorf("--servers: expected 1..%d, found %d", simulator.MaxServers, *servers))
		}
		for range *servers {
			specs = append(specs, sp)
		}
	}
	if strings.TrimSpace(*bind) == "" || strings.ContainsAny(*bind, " /:[]") && net.ParseIP(*bind) == nil {
		return usageError(stderr, fmt.Errorf("--bind-address: expected an IP address or host name, found %q", *bind))
	}
	if *basePort < 0 || *basePort+len(specs)-1 > 65535 {
		return usageError(stderr, fmt.Errorf("--base-port: expected 0..%d for %d servers, found %d", 65536-len(specs), len(specs), *basePort))
	}

	cfgs := make([]simulator.Config, len(specs))
	for i, s := range specs {
		name := fmt.Sprintf("sim-%d", i) // the pod label of its GPU telemetry
		if *basePort > 0 {
			name = fmt.Sprintf("sim-%d", *basePort+i)
		}
		if cfgs[i], err = s.Resolve(prof, name, *seed+uint64(i)); err != nil {
			return fail(stderr, fmt.Errorf("server %d: %w", i, err))
		}
	}
	if *explain {
		seen := map[string]bool{}
		for i, c := range cfgs {
			key := specs[i].GPU + "/" + specs[i].ModelProfile + fmt.Sprint(c.Engine)
			if seen[key] {
				continue
			}
			seen[key] = true
			f, err := engine.Characterize(c.Engine)
			if err != nil {
				return fail(stderr, fmt.Errorf("server %d: %w", i, err))
			}
			f.Print(stdout, fmt.Sprintf("%s on %s (tensor parallel %d), virtual time:", specs[i].ModelProfile, specs[i].GPU, max(1, specs[i].TensorParallelSize)))
		}
		return 0
	}

	fleet, err := simulator.StartFleetOn(cfgs, *bind, *basePort)
	if err != nil {
		return fail(stderr, err)
	}
	defer fleet.Close()
	for i, s := range fleet.Servers {
		c := s.Config()
		fmt.Fprintf(stdout, "%s listening on http://%s  model=%q gpu=%s×%d profile=%s kv_blocks=%d max_model_len=%d max_num_seqs=%d\n",
			c.Name, s.Addr(), c.ModelName, specs[i].GPU, s.Engine().Config().TensorParallel, specs[i].ModelProfile,
			s.Engine().NumGPUBlocks(), s.Engine().MaxModelLen(), s.Engine().Config().MaxNumSeqs)
	}
	fmt.Fprintf(stdout, "%d servers up; OpenAI API at /v1, vLLM metrics + GPU telemetry at /metrics, GPU telemetry alone at /gpu/metrics; Ctrl-C stops\n", len(fleet.Servers))
	wait()
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func usageError(w io.Writer, err error) int {
	fmt.Fprintf(w, "simulator: %v\nRun 'simulator --help' for the flags.\n", err)
	return 2
}

func fail(w io.Writer, err error) int {
	fmt.Fprintf(w, "simulator: %v\n", err)
	return 1
}
