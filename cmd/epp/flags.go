package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fastepp/fastepp/extproc"
)

// options are the parsed command line.
type options struct {
	grpcPort, grpcHealthPort, metricsPort int
	poolName, poolNamespace, poolGroup    string
	endpointSelector, endpointTargetPorts string
	configFile, configText                string
	refreshMetricsInterval                time.Duration
	metricsStalenessThreshold             time.Duration
	secureServing                         bool
	certPath                              string
	haLeaderElection                      bool
	disableSubsetFilter                   bool
	verbosity                             int
	zapEncoder                            string
	logFormat                             string

	endpoints          string
	endpointsFile      string
	requestBodyMode    string
	bodyMode           extproc.BodyMode
	maxRequestBodySize int
	checkConfig        bool
	enablePprof        bool
	gracePeriod        time.Duration
	models             string
	bindAddress        string
	objectives         string
	priorities         map[string]int
}

// rejectedFlags are GIE metric-name flags that moved to the config's
// engineConfigs; they fail with a pointer to what to use instead.
var rejectedFlags = []string{
	"total-queued-requests-metric", "total-running-requests-metric",
	"kv-cache-usage-percentage-metric", "lora-info-metric", "cache-info-metric",
}

const usageHeader = `epp — fastepp's endpoint picker: an Envoy ext_proc server that picks the
model-server endpoint for each LLM request (drop-in for the Gateway API
Inference Extension EPP).

Usage:
  epp --endpoints 10.0.0.1:8000,10.0.0.2:8000 [flags]     static pool, no Kubernetes
  epp --endpoints-file pool.yaml [flags]                   pool from a watched file
  epp --check-config [--config-file F | --config-text T]   validate and print the effective config

Flags:
`

func parseFlags(args []string, stdout io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("epp", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed once, by the caller
	fs.Usage = func() {}
	ns := os.Getenv("NAMESPACE")
	if ns == "" {
		ns = "default"
	}
	fs.IntVar(&o.grpcPort, "grpc-port", 9002, "ext_proc gRPC port (the gateway connects here)")
	fs.IntVar(&o.grpcHealthPort, "grpc-health-port", 9003, "gRPC health port (services \"\", liveness, readiness, envoy.service.ext_proc.v3.ExternalProcessor)")
	fs.IntVar(&o.metricsPort, "metrics-port", 9090, "Prometheus /metrics port")
	fs.StringVar(&o.poolName, "pool-name", "", "InferencePool to watch (Kubernetes mode; not available in this build)")
	fs.StringVar(&o.poolNamespace, "pool-namespace", ns, "namespace of the InferencePool (default: $NAMESPACE, else default)")
	fs.StringVar(&o.poolGroup, "pool-group", "inference.networking.k8s.io", "API group of the InferencePool")
	fs.StringVar(&o.endpointSelector, "endpoint-selector", "", "pod label selector k=v,... without an InferencePool (Kubernetes mode; not available in this build)")
	fs.StringVar(&o.endpointTargetPorts, "endpoint-target-ports", "", "model-server ports for --endpoint-selector")
	fs.StringVar(&o.configFile, "config-file", "", "EndpointPickerConfig YAML file (default: the built-in GIE default)")
	fs.StringVar(&o.configText, "config-text", "", "EndpointPickerConfig YAML text (exclusive with --config-file)")
	fs.DurationVar(&o.refreshMetricsInterval, "refresh-metrics-interval", 50*time.Millisecond, "how often each endpoint's /metrics is scraped")
	fs.DurationVar(&o.metricsStalenessThreshold, "metrics-staleness-threshold", 2*time.Second, "metrics older than this take an endpoint out of scoring (unless all are stale)")
	fs.BoolVar(&o.secureServing, "secure-serving", true, "serve ext_proc over TLS (self-signed unless --cert-path)")
	fs.StringVar(&o.certPath, "cert-path", "", "directory with tls.crt and tls.key for ext_proc TLS")
	fs.BoolVar(&o.haLeaderElection, "ha-enable-leader-election", false, "lease-based leader election (Kubernetes mode; not available in this build)")
	fs.BoolVar(&o.disableSubsetFilter, "disable-endpoint-subset-filter", false, "ignore the proxy's subset hint (envoy.lb.subset_hint)")
	fs.IntVar(&o.verbosity, "v", 0, "log verbosity as in GIE: 0-1 info, 2-3 more info, 4+ debug (one line per decision with each candidate's scores)")
	fs.StringVar(&o.zapEncoder, "zap-encoder", "", "GIE's log encoder flag: json or console (maps onto --log-format)")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&o.endpoints, "endpoints", "", "static pool: comma-separated ip:port list (no Kubernetes)")
	fs.StringVar(&o.endpointsFile, "endpoints-file", "", "pool from a YAML/JSON file of {address, port, metricsURL?, labels?}; re-read when it changes")
	fs.StringVar(&o.requestBodyMode, "request-body-mode", "auto", "body mode when the proxy does not send protocol_config: auto (trust protocol_config, else streamed), streamed or buffered")
	fs.IntVar(&o.maxRequestBodySize, "max-request-body-bytes", extproc.DefaultMaxBodyBytes, "request bodies above this get 413")
	fs.BoolVar(&o.checkConfig, "check-config", false, "validate the config, print the effective config (all defaults filled in) and exit")
	fs.BoolVar(&o.enablePprof, "enable-pprof", false, "serve /debug/pprof on the metrics port")
	fs.DurationVar(&o.gracePeriod, "shutdown-grace-period", 30*time.Second, "on SIGTERM, how long open streams may take to finish")
	fs.StringVar(&o.objectives, "objective-priorities", "", "without Kubernetes: InferenceObjective priorities as name=priority,... looked up by the x-gateway-inference-objective header (negative = sheddable: 429 while the pool is saturated)")
	fs.StringVar(&o.bindAddress, "bind-address", "", "address every listener binds to (default: all interfaces)")
	fs.StringVar(&o.models, "models", "", "optional allow-list of model names served by this pool (others get 404)")
	for _, name := range rejectedFlags {
		fs.Func(name, "removed: use engineConfigs in the config", func(string) error {
			return fmt.Errorf("--%s was removed; metric names are chosen per engine (pod label inference.networking.k8s.io/engine-type: vllm, sglang, trtllm), as GIE's engineConfigs do", name)
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprint(stdout, usageHeader)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: epp takes flags only (see --help)", fs.Arg(0))
	}
	return o, o.validate()
}

func (o *options) validate() error {
	var errs []error
	if o.configFile != "" && o.configText != "" {
		errs = append(errs, errors.New("--config-file and --config-text: expected at most one, found both"))
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"grpc-port", o.grpcPort}, {"grpc-health-port", o.grpcHealthPort}, {"metrics-port", o.metricsPort}} {
		if p.v < 0 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("--%s: expected a port 0..65535, found %d", p.name, p.v))
		}
	}
	if o.refreshMetricsInterval <= 0 {
		errs = append(errs, fmt.Errorf("--refresh-metrics-interval: expected a positive duration, found %v", o.refreshMetricsInterval))
	}
	if o.metricsStalenessThreshold <= 0 {
		errs = append(errs, fmt.Errorf("--metrics-staleness-threshold: expected a positive duration, found %v", o.metricsStalenessThreshold))
	}
	if o.maxRequestBodySize <= 0 {
		errs = append(errs, fmt.Errorf("--max-request-body-bytes: expected a positive size, found %d", o.maxRequestBodySize))
	}
	m, err := extproc.ParseBodyMode(o.requestBodyMode)
	if err != nil {
		errs = append(errs, fmt.Errorf("--request-body-mode: %w", err))
	}
	o.bodyMode = m
	switch o.zapEncoder {
	case "":
	case "json":
		o.logFormat = "json"
	case "console":
		o.logFormat = "text"
	default:
		errs = append(errs, fmt.Errorf("--zap-encoder: expected json or console, found %q", o.zapEncoder))
	}
	if o.logFormat != "json" && o.logFormat != "text" {
		errs = append(errs, fmt.Errorf("--log-format: expected json or text, found %q", o.logFormat))
	}
	if !o.checkConfig {
		k8s := o.poolName != "" || o.endpointSelector != ""
		switch {
		case k8s:
			errs = append(errs, errors.New("--pool-name/--endpoint-selector: Kubernetes discovery is not available in this build yet; use --endpoints or --endpoints-file"))
		case o.endpoints != "" && o.endpointsFile != "":
			errs = append(errs, errors.New("--endpoints and --endpoints-file: expected one pool source, found both"))
		case o.endpoints == "" && o.endpointsFile == "":
			errs = append(errs, errors.New("no pool: expected --endpoints ip:port,... or --endpoints-file F"))
		}
		if o.haLeaderElection {
			errs = append(errs, errors.New("--ha-enable-leader-election: needs Kubernetes mode, not available in this build yet"))
		}
	}
	if o.objectives != "" {
		o.priorities = map[string]int{}
		for _, kv := range strings.Split(o.objectives, ",") {
			name, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			p, err := strconv.Atoi(v)
			if !ok || name == "" || err != nil {
				errs = append(errs, fmt.Errorf("--objective-priorities: expected name=integer, found %q", kv))
				continue
			}
			o.priorities[name] = p
		}
	}
	return errors.Join(errs...)
}

// modelList splits --models.
func (o *options) modelList() []string {
	var out []string
	for _, m := range strings.Split(o.models, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	return out
}

// priority resolves an InferenceObjective name from --objective-priorities.
func (o *options) priority(objective string) (int, bool) {
	p, ok := o.priorities[objective]
	return p, ok
}
