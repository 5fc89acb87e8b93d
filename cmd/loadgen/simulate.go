package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fastepp/fastepp/bench/plan"
)

type simOptions struct {
	cfgPath, gpu, model, strategy, eppConfig, format, out string
	target                                                float64
	tp, maxReplicas                                       int
	duration, scrape                                      time.Duration
}

// cmdPlanSimulate is `loadgen plan --simulate`: the fewest replicas meeting
// the config's SLO at --target-rate, found by simulating the fleet in
// virtual time with the chosen routing in the loop (package bench/plan).
func cmdPlanSimulate(o simOptions, stdout, stderr io.Writer) error {
	if o.format != "text" && o.format != "json" {
		return fmt.Errorf("--format: expected text or json, found %q", o.format)
	}
	if !(o.target > 0) {
		return fmt.Errorf("--target-rate: expected a rate > 0 requests/s, found %g", o.target)
	}
	if o.cfgPath == "" {
		return errors.New("plan --simulate: -c: expected the workload's config file, found none")
	}
	cfg, err := loadConfig(o.cfgPath, stderr)
	if err != nil {
		return err
	}
	if o.duration == 0 {
		for _, s := range cfg.Load.Stages {
			o.duration += time.Duration(s.Duration)
		}
		o.duration = max(o.duration, time.Minute)
	}
	srv, err := plan.ServerConfig(o.gpu, o.model, o.tp, cfg.Server.ModelName)
	if err != nil {
		return err
	}
	st, err := plan.ParseStrategy(o.strategy, o.eppConfig)
	if err != nil {
		return err
	}
	slo := plan.SLOFrom(cfg.SLO)
	opt := plan.Options{Server: srv, Strategy: st, ScrapeInterval: o.scrape, SLO: slo, Seed: uint64(cfg.Load.SeedValue())}
	w := plan.Workload{Config: cfg, Rate: o.target, Duration: o.duration}
	if slo.TTFT <= 0 && slo.TPOT <= 0 {
		return fmt.Errorf("%s: slo: expected ttft and/or tpot objectives to plan for (e.g. slo: {ttft: 1s, tpot: 50ms, percentile: 90}), found none", o.cfgPath)
	}
	if _, _, err := w.Build(); err != nil { // the workload's errors before any output
		return fmt.Errorf("%s: %w", o.cfgPath, err)
	}
	text := o.format == "text"
	if text {
		fmt.Fprintf(stdout, "simulating %s × %s (tp %d), %s routing, %g req/s for %v of traffic per fleet size, SLO %s\n",
			o.model, o.gpu, o.tp, st.Name, o.target, o.duration, slo)
		fmt.Fprintln(stdout, plan.Header())
	}
	p, err := plan.Search(opt, w, plan.SearchOptions{MaxReplicas: o.maxReplicas, OnPoint: func(pt plan.Point) {
		if text {
			fmt.Fprintln(stdout, pt.Row())
		}
	}})
	if p == nil {
		return err
	}
	if o.out != "" {
		if err := os.MkdirAll(o.out, 0o755); err != nil {
			return fmt.Errorf("--output: %w", err)
		}
		f, ferr := os.Create(filepath.Join(o.out, "plan.json"))
		if ferr != nil {
			return ferr
		}
		werr := p.WriteJSON(f)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return werr
		}
	}
	if !text {
		if werr := p.WriteJSON(stdout); werr != nil {
			return werr
		}
		return err
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "curve (sorted):")
	p.WriteText(stdout)
	fmt.Fprintf(stdout, "simulated %d fleet sizes × %d requests in %.1fs\n", len(p.Curve), p.Requests, p.Elapsed.Seconds())
	if o.out != "" {
		fmt.Fprintf(stdout, "results in %s (plan.json)\n", o.out)
	}
	return nil
}
