// Command bench compares routing strategies side by side on one machine: a
// fresh simulated vLLM fleet per strategy, the same workload and seed, a rate
// ladder, and the results as a table, summary.json and an offline HTML
// report. `bench serve` keeps one strategy's stack up for trying it by hand.
// See --help and package bench.
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
	"strings"
	"syscall"
	"time"

	"github.com/fastepp/fastepp/bench"
	"github.com/fastepp/fastepp/version"
)

const usage = `bench — routing strategies side by side on one machine.

For each strategy it starts a fresh simulated vLLM fleet (cold caches), the
strategy's router and the gateway stand-in in front, runs the scenario's
workload through the gateway (same workload and seed for every strategy, an
open-loop rate ladder), and reads each server's own counters at every stage.
Everything runs in this process on 127.0.0.1. It prints a table per strategy
and stage, and writes summary.json, runs.json and report.html (offline).

Usage:
  bench [--scenario default] [--strategies a,b,...] [--repeats N] [--output DIR]
  bench --list
  bench serve [--scenario default] [--strategy epp] [--listen 127.0.0.1:8080]

Strategies:
%s
Scenarios (configs/bench/*.yaml, built in; --scenario also takes a file path):
%s
Flags:
`

const serveUsage = `bench serve — start one strategy's stack (the scenario's fleet, the picker,
the gateway) and keep it up until Ctrl-C, printing the gateway's URL and a
curl line to try it by hand (or point loadgen at it).

Usage:
  bench serve [--scenario default] [--strategy epp] [--listen 127.0.0.1:8080]

Flags:
`

type options struct {
	scenario    string
	strategies  string
	output      string
	repeats     int
	seed        int64
	basePort    int
	externalTLS bool
	list        bool
	quiet       bool
	strict      bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func strategiesHelp() string {
	var b strings.Builder
	for _, l := range bench.StrategyDocs() {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

func scenariosHelp() string {
	var b strings.Builder
	for _, n := range bench.ScenarioNames() {
		sc, err := bench.LoadScenario(n)
		if err != nil {
			fmt.Fprintf(&b, "  %-10s (does not load: %v)\n", n, err)
			continue
		}
		fmt.Fprintf(&b, "  %-10s %s; %s; strategies %s\n", n, sc.FleetLine(), sc.LadderLine(), names(sc.Strategies))
	}
	return b.String()
}

func names(st []bench.Strategy) string {
	var out []string
	for _, s := range st {
		out = append(out, s.Name)
	}
	return strings.Join(out, ",")
}

func parseFlags(args []string, stdout io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.scenario, "scenario", bench.DefaultScenario, "scenario name (see above) or path to a scenario YAML file")
	fs.StringVar(&o.strategies, "strategies", "", "comma-separated strategies to compare, in order (default: the scenario's)")
	fs.StringVar(&o.output, "output", "", "directory for summary.json, runs.json and report.html (default bench-results/<scenario>)")
	fs.IntVar(&o.repeats, "repeats", 1, "runs per strategy; repeat r uses workload seed --seed+r; figures are medians, the table shows [min–max]")
	fs.Int64Var(&o.seed, "seed", 0, "workload seed of the first repeat (0: the workload's own load.seed)")
	fs.IntVar(&o.basePort, "base-port", 0, "pin the fleet to 127.0.0.1:PORT, PORT+1, ... (overrides the scenario's fleet.base_port; needed for external=HOST:PORT)")
	fs.BoolVar(&o.externalTLS, "external-tls", false, "dial external=HOST:PORT pickers over TLS without verifying the certificate (a GIE picker's default)")
	fs.BoolVar(&o.list, "list", false, "list the scenarios and strategies and exit")
	fs.BoolVar(&o.quiet, "quiet", false, "no live progress on stderr")
	fs.BoolVar(&o.strict, "strict", false, "exit 1 when any request failed or a strategy completed none (for CI)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, usage, strategiesHelp(), scenariosHelp())
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("bench"))
		return nil, flag.ErrHelp // done: run exits 0
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: expected flags only, or the subcommand serve first", fs.Arg(0))
	}
	if o.repeats < 1 || o.repeats > 100 {
		return nil, fmt.Errorf("--repeats: expected 1..100, found %d", o.repeats)
	}
	if o.basePort < 0 || o.basePort > 65535 {
		return nil, fmt.Errorf("--base-port: expected 1..65535 (or 0: the scenario's), found %d", o.basePort)
	}
	return o, nil
}

// run is main without the process; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "serve" {
		return serve(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "run" {
		args = args[1:]
	}
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n(see bench --help)\n", err)
		return 2
	}
	if o.list {
		fmt.Fprintf(stdout, "Scenarios (--scenario NAME):\n%s\nStrategies (--strategies a,b,...):\n%s", scenariosHelp(), strategiesHelp())
		return 0
	}
	sc, err := bench.LoadScenario(o.scenario)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	bopt := bench.Options{Repeats: o.repeats, Seed: o.seed, BasePort: o.basePort, ExternalTLS: o.externalTLS}
	if o.strategies != "" {
		if bopt.Strategies, err = bench.ParseStrategies(o.strategies); err != nil {
			fmt.Fprintf(stderr, "bench: --strategies: %v\n", err)
			return 2
		}
	}
	if !o.quiet {
		bopt.Progress = stderr
	}
	out := o.output
	if out == "" {
		out = filepath.Join("bench-results", sc.Name)
	}
	strats := bopt.Strategies
	if len(strats) == 0 {
		strats = sc.Strategies
	}
	fmt.Fprintf(stderr, "bench: scenario %s (%s): %s; %s; strategies %s; ~%s of load per run, %d runs\n",
		sc.Name, sc.Source, sc.FleetLine(), sc.LadderLine(), names(strats), sc.PlannedDuration(), len(strats)*o.repeats)
	res, err := bench.Run(ctx, sc, bopt)
	if err != nil && res == nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	code := 0
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v (writing what finished)\n", err)
		code = 1
		if errors.Is(err, context.Canceled) {
			code = 130
		}
	}
	ran := 0
	for _, r := range res.Runs {
		ran += len(r)
	}
	if ran == 0 {
		return max(code, 1)
	}
	sum := res.Summarize()
	res.WriteTable(stdout, sum)
	if werr := res.WriteFiles(out); werr != nil {
		fmt.Fprintf(stderr, "bench: writing results: %v\n", werr)
		return 1
	}
	fmt.Fprintf(stdout, "\nscenario %s took %s; results: %s/summary.json, %s/runs.json, report %s/report.html\n",
		sc.Name, res.Took.Round(time.Second), out, out, out)
	if o.strict && code == 0 {
		for _, s := range sum.Strategies {
			var done int64
			for _, st := range s.Stages {
				done += st.Completed
			}
			if s.Errors > 0 || done == 0 {
				fmt.Fprintf(stderr, "bench: --strict: %s: %d failed requests, %d completed\n", s.Name, s.Errors, done)
				code = 1
			}
		}
	}
	return code
}

// serve keeps one strategy's stack up.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	scenario := fs.String("scenario", bench.DefaultScenario, "scenario whose fleet to start (name or file)")
	strategy := fs.String("strategy", "epp", "strategy: "+strings.Join(bench.StrategyNames(), ", "))
	listen := fs.String("listen", "127.0.0.1:8080", "the gateway's address (port 0 picks a free one)")
	basePort := fs.Int("base-port", 0, "pin the fleet to 127.0.0.1:PORT, PORT+1, ... (default: the scenario's fleet.base_port, else free ports)")
	externalTLS := fs.Bool("external-tls", false, "dial an external=HOST:PORT picker over TLS (unverified)")
	seed := fs.Uint64("seed", 1, "seed of the simulated servers")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, serveUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "bench serve: %v\n(see bench serve --help)\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench serve: unexpected argument %q: expected flags only\n", fs.Arg(0))
		return 2
	}
	sc, err := bench.LoadScenario(*scenario)
	if err != nil {
		fmt.Fprintf(stderr, "bench serve: %v\n", err)
		return 2
	}
	st, err := bench.ParseStrategy(*strategy)
	if err != nil {
		fmt.Fprintf(stderr, "bench serve: --strategy: %v\n", err)
		return 2
	}
	stack, err := bench.StartStack(ctx, sc, st, bench.StackOptions{Seed: *seed, BasePort: *basePort, Listen: *listen, ExternalTLS: *externalTLS})
	if err != nil {
		fmt.Fprintf(stderr, "bench serve: %v\n", err)
		return 1
	}
	defer stack.Close()
	model := sc.Workload.Server.ModelName
	fmt.Fprintf(stdout, "bench serve: scenario %s, strategy %s\n", sc.Name, st.Name)
	fmt.Fprintf(stdout, "  fleet:   %s at %s\n", sc.FleetLine(), strings.Join(stack.Endpoints, ","))
	if stack.EPP != "" {
		fmt.Fprintf(stdout, "  picker:  ext_proc at %s\n", stack.EPP)
	}
	fmt.Fprintf(stdout, "  gateway: %s (OpenAI API paths only)\n\n", stack.URL)
	fmt.Fprintf(stdout, "curl -sN %s/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\":%q,\"stream\":true,\"max_tokens\":20,\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}'\n\n", stack.URL, model)
	fmt.Fprintf(stdout, "Ctrl-C stops it.\n")
	<-ctx.Done()
	return 0
}
