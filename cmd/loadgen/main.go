// Command loadgen drives OpenAI-compatible inference servers with open-loop
// load, measures TTFT/ITL/TPOT/e2e, finds the highest rate meeting an SLO and
// turns sweeps into replica plans. See `loadgen help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fastepp/fastepp/loadgen"
	"github.com/fastepp/fastepp/version"
)

const usage = `loadgen: open-loop load generation, SLO sweeps and capacity plans for
OpenAI-compatible inference servers (vLLM, SGLang, the fastepp simulator, or a
gateway in front of them). Config fields follow inference-perf.

Usage:
  loadgen run   -c config.yaml [--output DIR] [--early-stop] [--base-url URL] [--model NAME]
  loadgen sweep -c config.yaml [--output DIR] [--min-rate R] [--max-rate R]
                [--stage-duration 30s] [--precision 0.05] [--max-probes 12] [--replicas N]
                [--base-url URL] [--model NAME]
  loadgen plan  --target-rate R [--margin 0.2] SWEEP.json [SWEEP.json ...]
  loadgen plan  --simulate -c config.yaml --target-rate R [--gpu mi300x]
                [--model-profile llama-3.1-8b] [--tensor-parallel-size 1]
                [--strategy round-robin|least-request|epp] [--epp-config FILE]
                [--duration D] [--scrape-interval 50ms] [--format text|json] [--output DIR]
  loadgen validate -c config.yaml
  loadgen version                      (also --version) print the version

run     Sends the config's stages open loop (requests leave on schedule whatever
        the server does; closed loop only for load.type concurrent). Shows live
        progress (rate, in-flight, p50/p99 TTFT, errors) on a terminal, plain
        lines otherwise, then a summary table. Writes into DIR (default
        reports-YYYYMMDD-HHMMSS): summary.json, requests.csv (one row per
        request) and report.html (charts inline, opens offline). Exits 1 when
        requests were sent and none completed (the summary says why).
sweep   Finds the highest request rate meeting the SLO and the saturation point:
        one fixed-rate stage per probe, doubling from min-rate until a probe
        fails, then bisection. A stage stops early when latency grows without
        bound. Writes DIR/sweep.json and DIR/sweep.html. Takes up to
        max-probes × (stage-duration + drain): 12 × 30 s ≈ 6-7 minutes with
        the defaults. Ctrl-C keeps the probes already measured. --replicas is
        the fleet behind base_url (4 servers behind a gateway: --replicas 4).
plan    Replicas needed for --target-rate under the SLO with --margin spare
        (0.2 = 20%), from sweep.json files (one per replica count, or one that
        is scaled linearly; the plan says which, and warns when no probe of
        the sweep failed: its capacity is then a lower bound).
plan --simulate
        No server needed: simulates the fleet in virtual time (the simulator's
        engine per replica, the routing strategy in the loop: epp is fastepp's
        own scheduler with its EndpointPickerConfig, seeing metrics scraped
        every --scrape-interval) and finds the fewest replicas whose p<slo.
        percentile> TTFT and TPOT meet slo.ttft and slo.tpot at --target-rate:
        doubling from 1 replica, then bisection. The workload is the config's
        data, arrival law and seed, one stage at --target-rate for --duration
        (default the config's stages' total, at least 1m). Prints the curve
        (replicas → p50/p90 TTFT and TPOT, goodput ratio, output tok/s);
        --format json prints {strategy, replicas, target_rate, curve}. Seconds
        of CPU per fleet size for minutes of traffic.
validate  Checks a config (strict: unknown fields, bad values, naming the field)
        and prints the normalized form. No request is sent.

Config (YAML):
  load:   {type: constant|poisson|concurrent|trace_replay, stages: [{rate, duration}],
           burstiness: 1.0, seed: 1, request_timeout: 10m, max_in_flight: 0 (no cap; at most 100000)}
           concurrent stages: [{concurrency (or concurrency_level, 1..100000), num_requests}]
  api:    {type: completion|chat, streaming: true, headers: {}}
  server: {base_url: http://127.0.0.1:8000, model_name: M, ignore_eos: true}
  data:   {type: random|shared_prefix|multi_turn|trace, ...}
          random: input_distribution/output_distribution {type, min, max, mean, std_dev}
          shared_prefix: {num_groups (num_unique_system_prompts), num_prompts_per_group
            (num_users_per_system_prompt), system_prompt_len, question_len, output_len}
          multi_turn: {num_conversations, turns, system_prompt_len, input_len, output_len}
          trace: {file: t.jsonl}  lines {timestamp, input_len, output_len, prefix_group}
                 (a relative path is relative to the config file)
  slo:    {ttft: 2s, tpot: 100ms, itl, e2e, ntpot, attainment: 0.9, percentile: 90}
          percentile: the plan's SLO is on that percentile of TTFT and TPOT
          (and attainment defaults to percentile/100)
  report: {percentiles: [50, 90, 95, 99], formats: [json, csv, html]}
  sweep:  {min_rate, max_rate, stage_duration, precision, max_probes, replicas}

Metrics: TTFT = send → first content token; ITL = gap between content chunks;
TPOT = (e2e − TTFT)/(output tokens − 1); NTPOT = e2e/output tokens; schedule
delay = actual − planned send. Tokens come from the server's usage
(stream_options.include_usage), estimated and flagged when absent.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "sweep":
		err = cmdSweep(ctx, args[1:], stdout, stderr)
	case "plan":
		err = cmdPlan(args[1:], stdout, stderr)
	case "validate":
		err = cmdValidate(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, version.String("loadgen"))
		return 0
	default:
		fmt.Fprintf(stderr, "loadgen: unknown command %q (expected run, sweep, plan, validate or version)\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errUsage) {
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		if errors.Is(err, context.Canceled) {
			return 130
		}
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("loadgen "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func configFlags(fs *flag.FlagSet) *string {
	cfg := fs.String("c", "", "config YAML `file`")
	fs.StringVar(cfg, "config", "", "config YAML `file` (same as -c)")
	return cfg
}

// overrides are the flags `vllm bench serve` also has, applied over the config.
type overrides struct{ baseURL, model *string }

func overrideFlags(fs *flag.FlagSet) overrides {
	return overrides{
		baseURL: fs.String("base-url", "", "server `URL`, overrides server.base_url (e.g. the gateway's http://127.0.0.1:8080)"),
		model:   fs.String("model", "", "model `name` sent in requests, overrides server.model_name"),
	}
}

// apply sets the overrides on cfg and validates it again.
func (o overrides) apply(cfg *loadgen.Config) error {
	if *o.baseURL != "" {
		cfg.Server.BaseURL = *o.baseURL
	}
	if *o.model != "" {
		cfg.Server.ModelName = *o.model
	}
	if *o.baseURL != "" || *o.model != "" {
		return cfg.Normalize()
	}
	return nil
}

func loadConfig(path string, stderr io.Writer) (*loadgen.Config, error) {
	if path == "" {
		return nil, errors.New("-c: expected a config file, found none")
	}
	cfg, err := loadgen.LoadConfigFile(path)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "loadgen: warning: %s: %s\n", path, w)
	}
	return cfg, nil
}

func outputDir(dir string) (string, error) {
	if dir == "" {
		dir = "reports-" + time.Now().Format("20060102-150405")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("--output: %w", err)
	}
	return dir, nil
}

func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func progressPrinter(w io.Writer) (func(loadgen.Live), func()) {
	tty := isTTY(w)
	var lastSent int64
	var lastT time.Duration
	n := 0
	p := func(l loadgen.Live) {
		rate := 0.0
		if dt := (l.Elapsed - lastT).Seconds(); dt > 0 {
			rate = float64(l.Sent-lastSent) / dt
		}
		lastSent, lastT = l.Sent, l.Elapsed
		line := fmt.Sprintf("t=%5.0fs stage %d  rate %7.1f req/s  in-flight %5d  done %7d  errors %5d  TTFT p50 %7.1f ms p99 %7.1f ms",
			l.Elapsed.Seconds(), l.Stage, rate, l.InFlight, l.Done, l.Failed, ms(l.TTFTp50), ms(l.TTFTp99))
		if tty {
			fmt.Fprintf(w, "\r\033[K%s", line)
			return
		}
		// plain lines every 5 s, so logs stay readable.
		if n%5 == 0 {
			fmt.Fprintln(w, line)
		}
		n++
	}
	done := func() {
		if tty {
			fmt.Fprintln(w)
		}
	}
	return p, done
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	cfgPath := configFlags(fs)
	out := fs.String("output", "", "results `dir` (default reports-YYYYMMDD-HHMMSS)")
	early := fs.Bool("early-stop", false, "stop a stage early when latency grows without bound")
	quiet := fs.Bool("quiet", false, "no live progress")
	ov := overrideFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	if err := ov.apply(cfg); err != nil {
		return err
	}
	dir, err := outputDir(*out)
	if err != nil {
		return err
	}
	raiseFileLimit()
	opt := loadgen.Options{EarlyStop: *early}
	var csvFile *os.File
	if has(cfg.Report.Formats, "csv") {
		csvFile, err = os.Create(filepath.Join(dir, "requests.csv"))
		if err != nil {
			return err
		}
		defer csvFile.Close()
		opt.CSV = csvFile
	}
	var done func()
	if !*quiet {
		opt.Progress, done = progressPrinter(stderr)
	}
	sum, runErr := loadgen.Run(ctx, cfg, opt)
	if done != nil {
		done()
	}
	if sum == nil {
		return runErr
	}
	sum.Table(stdout)
	if has(cfg.Report.Formats, "json") {
		if err := sum.WriteFile(dir); err != nil {
			return err
		}
	}
	if has(cfg.Report.Formats, "html") {
		if err := sum.WriteReportFile(dir); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "results in %s (%s)\n", dir, strings.Join(cfg.Report.Formats, ", "))
	if runErr == nil {
		runErr = measuredNothing(sum.Figures, cfg.Server.BaseURL)
	}
	return runErr
}

// measuredNothing is an error when a run sent requests and none completed:
// the run measured the errors, not the server.
func measuredNothing(f loadgen.Figures, baseURL string) error {
	if f.Requests.Sent == 0 || f.Requests.Completed > 0 {
		return nil
	}
	var kinds []string
	for k, n := range f.Errors {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(kinds)
	return fmt.Errorf("every request failed: %d sent, 0 completed (errors: %s); is a server listening at %s?",
		f.Requests.Sent, strings.Join(kinds, ", "), baseURL)
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func cmdSweep(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sweep", stderr)
	cfgPath := configFlags(fs)
	out := fs.String("output", "", "results `dir` (default reports-YYYYMMDD-HHMMSS)")
	minRate := fs.Float64("min-rate", 0, "first probe, requests/s (overrides sweep.min_rate; default 1)")
	maxRate := fs.Float64("max-rate", 0, "highest probe, requests/s (overrides sweep.max_rate; default 10000)")
	stageDur := fs.Duration("stage-duration", 0, "length of each probe (overrides sweep.stage_duration; default 30s)")
	prec := fs.Float64("precision", 0, "stop bisecting when (hi-lo)/hi is below this (default 0.05)")
	probes := fs.Int("max-probes", 0, "at most this many probes (default 12)")
	replicas := fs.Int("replicas", 0, "model-server replicas behind base_url (a gateway or Service in front of N servers is N), recorded for `loadgen plan` (default 1)")
	ov := overrideFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	if err := ov.apply(cfg); err != nil {
		return err
	}
	if *minRate != 0 {
		cfg.Sweep.MinRate = *minRate
	}
	if *maxRate != 0 {
		cfg.Sweep.MaxRate = *maxRate
	}
	if *stageDur != 0 {
		cfg.Sweep.StageDuration = loadgen.Duration(*stageDur)
	}
	if *prec != 0 {
		cfg.Sweep.Precision = *prec
	}
	if *probes != 0 {
		cfg.Sweep.MaxProbes = *probes
	}
	if *replicas != 0 {
		cfg.Sweep.Replicas = *replicas
	}
	if err := cfg.Normalize(); err != nil {
		return err
	}
	dir, err := outputDir(*out)
	if err != nil {
		return err
	}
	raiseFileLimit()
	fleet := max(cfg.Sweep.Replicas, 1)
	how := "set with --replicas or sweep.replicas"
	if cfg.Sweep.Replicas == 0 {
		how = "the default: pass --replicas N when base_url is a gateway or Service in front of N servers"
	}
	fmt.Fprintf(stdout, "fleet: %d replica(s) behind %s (%s)\n", fleet, cfg.Server.BaseURL, how)
	fmt.Fprintf(stdout, "%9s %9s %9s %9s %8s %10s %6s %7s %s\n", "rate", "achieved", "done/s", "goodput", "attain", "TTFT p90", "SLO", "kept up", "")
	res, err := loadgen.Sweep(ctx, cfg, loadgen.SweepOptions{OnProbe: func(p loadgen.Probe) {
		slo, kept := "met", "yes"
		if !p.MeetsSLO {
			slo = "missed"
		}
		if p.Saturated {
			kept = "no"
		}
		fmt.Fprintf(stdout, "%9.2f %9.2f %9.2f %9.2f %8.3f %8.1fms %6s %7s %s\n", p.Rate, p.Achieved, p.Throughput, p.Goodput,
			p.Attainment, p.TTFTP90*1000, slo, kept, p.Reason)
	}})
	if res != nil {
		if werr := res.WriteFiles(dir); werr != nil {
			return werr
		}
		fmt.Fprintf(stdout, "max rate meeting the SLO: %.2f req/s (first failing: %s)\n", res.MaxRateMeetingSLO, orNone(res.FirstRateFailingSLO))
		fmt.Fprintf(stdout, "saturation: kept up at %.2f req/s, saturated at %s\n", res.SaturationRate, orNone(res.SaturatedAt))
		if res.Interrupted != "" {
			fmt.Fprintf(stdout, "interrupted: recorded the %d completed probe(s)\n", len(res.Probes))
		}
		if res.FirstRateFailingSLO == 0 && res.MaxRateMeetingSLO > 0 {
			fmt.Fprintf(stderr, "loadgen: warning: no probe failed the SLO: %.2f req/s is a lower bound on capacity (raise --max-rate)\n", res.MaxRateMeetingSLO)
		}
		fmt.Fprintf(stdout, "results in %s (sweep.json, sweep.html)\n", dir)
	}
	return err
}

func orNone(v float64) string {
	if v == 0 {
		return "none probed"
	}
	return fmt.Sprintf("%.2f req/s", v)
}

func cmdPlan(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("plan", stderr)
	target := fs.Float64("target-rate", 0, "requests/s the deployment must serve under the SLO")
	margin := fs.Float64("margin", 0.2, "from sweeps: spare capacity on top of the target (0.2 = 20%)")
	simulate := fs.Bool("simulate", false, "simulate the fleet in virtual time instead of reading sweeps (needs -c)")
	cfgPath := configFlags(fs)
	gpu := fs.String("gpu", "mi300x", "--simulate: GPU profile of each replica (configs/simulator/gpus.yaml)")
	modelProfile := fs.String("model-profile", "llama-3.1-8b", "--simulate: model profile of each replica (configs/simulator/models.yaml)")
	tp := fs.Int("tensor-parallel-size", 1, "--simulate: GPUs per replica (the model sharded over them)")
	strategy := fs.String("strategy", "epp", "--simulate: routing, round-robin | least-request | epp")
	eppConfig := fs.String("epp-config", "", "--simulate with --strategy epp: EndpointPickerConfig `file` (default configs/epp/recommended.yaml)")
	duration := fs.Duration("duration", 0, "--simulate: traffic simulated per replica count (default the config's stages' total, at least 1m)")
	scrape := fs.Duration("scrape-interval", 50*time.Millisecond, "--simulate: how often epp sees fresh metrics (epp's --refresh-metrics-interval)")
	maxReplicas := fs.Int("max-replicas", 1024, "--simulate: largest fleet tried")
	format := fs.String("format", "text", "--simulate: text | json (json: strategy, replicas, target_rate, curve)")
	out := fs.String("output", "", "--simulate: also write plan.json into `dir`")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage:
  loadgen plan --target-rate R [--margin 0.2] SWEEP.json [SWEEP.json ...]
      replicas from measured sweeps (extrapolated per replica when needed)
  loadgen plan --simulate -c config.yaml --target-rate R [--strategy epp] [--gpu G] [--model-profile M]
      the fewest replicas meeting the config's slo block (e.g. slo: {ttft: 1s, tpot: 50ms,
      percentile: 90}) at R req/s, found by simulating the fleet in virtual time with the
      routing in the loop (no server needed; seconds of CPU per fleet size)

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *simulate {
		if fs.NArg() > 0 {
			return fmt.Errorf("plan --simulate: expected no sweep files (the fleet is simulated), found %s", strings.Join(fs.Args(), " "))
		}
		return cmdPlanSimulate(simOptions{cfgPath: *cfgPath, target: *target, gpu: *gpu, model: *modelProfile, tp: *tp,
			strategy: *strategy, eppConfig: *eppConfig, duration: *duration, scrape: *scrape, maxReplicas: *maxReplicas,
			format: *format, out: *out}, stdout, stderr)
	}
	if fs.NArg() == 0 {
		return errors.New("plan: expected one or more sweep.json files (or result dirs holding one), or --simulate -c config.yaml, found neither")
	}
	var sweeps []*loadgen.SweepResult
	for _, p := range fs.Args() {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			p = filepath.Join(p, "sweep.json")
		}
		s, err := loadgen.ReadSweep(p)
		if err != nil {
			return err
		}
		sweeps = append(sweeps, s)
	}
	plan, err := loadgen.MakePlan(sweeps, *target, *margin)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replicas: %d for %.2f req/s with %.0f%% margin (need %.2f req/s)\n", plan.Replicas, plan.TargetRate,
		plan.Margin*100, plan.TargetRate*(1+plan.Margin))
	fmt.Fprintf(stdout, "capacity: %.2f req/s (%.2f per replica), headroom %.1f%% over the target\n", plan.Capacity,
		plan.PerReplicaRate, plan.Headroom*100)
	fmt.Fprintf(stdout, "basis: %s\n", plan.Basis)
	for _, w := range plan.Warnings {
		fmt.Fprintf(stderr, "loadgen: warning: %s\n", w)
	}
	return nil
}

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	cfgPath := configFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (load %s, %d stage(s), data %s, api %s)\n", *cfgPath, cfg.Load.Type, len(cfg.Load.Stages), cfg.Data.Type, cfg.API.Type)
	return nil
}
