// Command gateway is fastepp's small Envoy stand-in for local runs and
// benchmarks: an HTTP proxy that asks epp over ext_proc (FULL_DUPLEX_STREAMED,
// exactly like Envoy) where each request goes, or, with --direct, spreads
// requests over fixed endpoints round-robin (the Kubernetes Service
// baseline), at random, or to the least loaded of two (Envoy's
// LEAST_REQUEST). See --help and package gateway.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fastepp/fastepp/gateway"
	"github.com/fastepp/fastepp/version"
)

const usage = `gateway — fastepp's Envoy stand-in for local runs and benchmarks.

For each client request it opens one ext_proc stream to epp and behaves like
Envoy in FULL_DUPLEX_STREAMED mode: request headers and body go to epp, the
x-gateway-destination-endpoint answer (ip:port, or a comma-separated fallback
list tried in order on connection failure) picks the upstream, the rewritten
body is proxied there, and the response streams back through epp chunk by
chunk (SSE is flushed per chunk). epp's ImmediateResponse errors (400, 429,
503, ...) reach the client as they are. A client disconnect cancels the
stream. With --direct there is no epp: requests go to the listed endpoints
as --balance says: round-robin (what a Kubernetes Service does), random, or
least-request (two endpoints drawn at random, the one with fewer requests in
flight through this gateway wins: Envoy's LEAST_REQUEST).

Only the OpenAI API paths are forwarded (--paths; default /v1/completions,
/v1/chat/completions, /v1/models, /v1/embeddings, /v1/responses and /health);
any other path is answered 404 by the gateway itself.

At start-up it checks that it can speak to epp and says why not (nothing
listening; TLS expected: try --epp-tls; plaintext expected: drop --epp-tls);
the same reason is added to the 500 a request gets when the stream fails.

Usage:
  gateway --epp 127.0.0.1:9002 [--epp-tls] [--listen 127.0.0.1:8080]
  gateway --direct 127.0.0.1:8000,127.0.0.1:8001 [--balance least-request] [--listen 127.0.0.1:8080]

It prints "gateway listening on http://ADDR" once it accepts connections
(--listen 127.0.0.1:0 picks a free port). SIGINT/SIGTERM stop it gracefully.

Flags:
`

type options struct {
	listen          string
	epp             string
	eppTLS          bool
	direct          string
	balance         string
	paths           string
	connectTimeout  time.Duration
	responseTimeout time.Duration
	eppTimeout      time.Duration
	readHeader      time.Duration
	idleTimeout     time.Duration
	shutdownGrace   time.Duration
	chunkSize       int
	maxIdlePerHost  int
	verbose         bool
}

func parseFlags(args []string, stdout io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address the HTTP listener binds to (host:port; port 0 picks one)")
	fs.StringVar(&o.epp, "epp", "", "epp's ext_proc address host:port (epp's default is port 9002)")
	fs.BoolVar(&o.eppTLS, "epp-tls", false, "dial epp over TLS without verifying its certificate (epp's default self-signed cert; plaintext otherwise, for epp --secure-serving=false)")
	fs.StringVar(&o.direct, "direct", "", "no epp: comma-separated ip:port endpoints, balanced as --balance says (exclusive with --epp)")
	fs.StringVar(&o.balance, "balance", "", "with --direct: "+strings.Join(gateway.BalanceModes, ", ")+" (default round-robin)")
	fs.StringVar(&o.paths, "paths", strings.Join(gateway.DefaultPaths, ","), "comma-separated request paths forwarded (exact match); others get 404")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", gateway.DefaultConnectTimeout, "upstream dial timeout; a refused or timed-out dial moves on to the next fallback endpoint")
	fs.DurationVar(&o.responseTimeout, "response-header-timeout", 0, "longest wait for an upstream's response headers (0: none; prefill under load can be slow); expiry answers 504")
	fs.DurationVar(&o.eppTimeout, "epp-timeout", gateway.DefaultEPPTimeout, "longest wait for each epp answer the request waits on (routing, response headers); expiry answers 504")
	fs.DurationVar(&o.readHeader, "read-header-timeout", 10*time.Second, "longest time a client may take to send its request headers")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 120*time.Second, "keep-alive idle timeout of client connections")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace-period", 10*time.Second, "on SIGTERM, how long open requests may take to finish")
	fs.IntVar(&o.chunkSize, "chunk-size", gateway.DefaultChunkSize, "largest body chunk sent to epp and read from upstreams, in bytes")
	fs.IntVar(&o.maxIdlePerHost, "max-idle-conns-per-host", gateway.DefaultMaxIdlePerHost, "keep-alive connections kept per upstream endpoint")
	fs.BoolVar(&o.verbose, "v", false, "debug logging: one line per failed request (to stderr)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("gateway"))
		return nil, flag.ErrHelp // done: run exits 0
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: expected flags only", fs.Arg(0))
	}
	switch {
	case o.epp == "" && o.direct == "":
		return nil, errors.New("no upstream: expected --epp host:port or --direct ip:port,..., found neither")
	case o.epp != "" && o.direct != "":
		return nil, errors.New("expected one of --epp and --direct, found both")
	case o.eppTLS && o.epp == "":
		return nil, errors.New("--epp-tls: expected --epp as well, found --direct")
	case o.balance != "" && o.epp != "":
		return nil, errors.New("--balance: applies to --direct only; with --epp, epp picks")
	}
	if o.balance != "" && !contains(gateway.BalanceModes, o.balance) {
		return nil, fmt.Errorf("--balance: expected one of %s, found %q", strings.Join(gateway.BalanceModes, ", "), o.balance)
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return nil, fmt.Errorf("--listen: expected host:port, found %q", o.listen)
	}
	if o.epp != "" {
		if _, err := gateway.ParseEndpoint(o.epp); err != nil {
			return nil, fmt.Errorf("--epp: %w", err)
		}
	}
	for name, d := range map[string]time.Duration{"--connect-timeout": o.connectTimeout, "--epp-timeout": o.eppTimeout,
		"--read-header-timeout": o.readHeader, "--idle-timeout": o.idleTimeout, "--shutdown-grace-period": o.shutdownGrace} {
		if d <= 0 {
			return nil, fmt.Errorf("%s: expected a positive duration, found %v", name, d)
		}
	}
	if o.responseTimeout < 0 {
		return nil, fmt.Errorf("--response-header-timeout: expected 0 (none) or a positive duration, found %v", o.responseTimeout)
	}
	if o.chunkSize <= 0 || o.chunkSize > gateway.MaxChunkSize {
		return nil, fmt.Errorf("--chunk-size: expected 1..%d bytes, found %d", gateway.MaxChunkSize, o.chunkSize)
	}
	if o.maxIdlePerHost <= 0 {
		return nil, fmt.Errorf("--max-idle-conns-per-host: expected a positive number, found %d", o.maxIdlePerHost)
	}
	return o, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// run is main without the process; it returns the exit code. ready, when not
// nil, receives the listening address (tests).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- string) int {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gateway: %v\n(see gateway --help)\n", err)
		return 2
	}
	lvl := slog.LevelInfo
	if o.verbose {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg := gateway.Config{
		EPP: o.epp, EPPTLS: o.eppTLS, Balance: o.balance, Paths: splitPaths(o.paths),
		ConnectTimeout: o.connectTimeout, ResponseHeaderTimeout: o.responseTimeout, EPPTimeout: o.eppTimeout,
		ChunkSize: o.chunkSize, MaxIdleConnsPerHost: o.maxIdlePerHost, Logger: log,
	}
	if o.direct != "" {
		if cfg.Direct, err = gateway.ParseEndpoints(o.direct); err != nil {
			fmt.Fprintf(stderr, "gateway: --direct: %v\n(see gateway --help)\n", err)
			return 2
		}
	}
	g, err := gateway.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "gateway: %v\n", err)
		return 2
	}
	defer g.Close()
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "gateway: --listen %s: %v\n", o.listen, err)
		return 1
	}
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: o.readHeader,
		IdleTimeout:       o.idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	addr := lis.Addr().String()
	mode := "epp " + o.epp
	if o.eppTLS {
		mode += " (TLS, unverified)"
	}
	if o.direct != "" {
		mode = fmt.Sprintf("direct %s over %d endpoints", g.Balance(), len(cfg.Direct))
	}
	fmt.Fprintf(stdout, "gateway listening on http://%s (%s)\n", addr, mode)
	if o.epp != "" {
		go func() {
			if hint := gateway.ProbeEPP(ctx, o.epp, o.eppTLS); hint != "" && ctx.Err() == nil {
				fmt.Fprintf(stderr, "gateway: warning: cannot speak to epp: %s\n", hint)
			}
		}()
	}
	if ready != nil {
		ready <- addr
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		fmt.Fprintf(stderr, "gateway: serving on %s: %v\n", addr, err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "gateway: shutdown: open requests did not finish within %v: %v\n", o.shutdownGrace, err)
		srv.Close()
		return 1
	}
	return 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// splitPaths splits --paths; nil (the gateway's default) when empty.
func splitPaths(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
