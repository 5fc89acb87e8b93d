// Command epp is fastepp's endpoint picker: an Envoy ext_proc server that a
// Gateway API Inference Extension gateway calls for every request, and which
// answers with the model-server endpoint to use. It is a drop-in for the GIE
// EPP (same flags, EndpointPickerConfig, wire keys and metric names); see
// --help. Pools come from an InferencePool in Kubernetes (--pool-name, or
// --endpoint-selector without a pool object), or without Kubernetes from
// --endpoints or --endpoints-file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// run is main without the process: it returns the exit code. ready, when not
// nil, receives the bound addresses once every listener is up (tests).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- addrs) int {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errVersion) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "epp: %v\n(see epp --help)\n", err)
		return 2
	}
	log := newLogger(o, stderr)
	loaded, err := loadConfig(o)
	if err != nil {
		fmt.Fprintf(stderr, "epp: %v\n", err)
		return 1
	}
	for _, n := range loaded.Notes {
		log.Warn(n)
	}
	for _, d := range deprecatedFlags {
		if o.set[d.flag] {
			log.Warn("flag deprecated in GIE; still honoured", "flag", "--"+d.flag, "note", d.note)
		}
	}
	for _, d := range inertFlags {
		if o.set[d.flag] {
			log.Info("flag accepted for GIE compatibility; it has no effect", "flag", "--"+d.flag, "why", d.note)
		}
	}
	if o.checkConfig {
		_, _ = stdout.Write(loaded.Effective)
		return 0
	}
	if err := serve(ctx, o, loaded, log, ready); err != nil {
		log.Error("epp stopped", "err", err)
		fmt.Fprintf(stderr, "epp: %v\n", err)
		return 1
	}
	return 0
}

// newLogger logs at o.logLevel: GIE's -v mapped onto slog (4 and above is
// debug), or --zap-log-level when given.
func newLogger(o *options, w io.Writer) *slog.Logger {
	hopts := &slog.HandlerOptions{Level: o.logLevel}
	if o.logFormat == "text" {
		return slog.New(slog.NewTextHandler(w, hopts))
	}
	return slog.New(slog.NewJSONHandler(w, hopts))
}
