package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fastepp/fastepp/endpoints"
	"github.com/fastepp/fastepp/endpoints/kube"
	"github.com/fastepp/fastepp/extproc"
	"github.com/fastepp/fastepp/version"
)

// options are the parsed command line.
type options struct {
	grpcPort, grpcHealthPort, metricsPort int
	poolName, poolNamespace, poolGroup    string
	endpointSelector, endpointTargetPorts string
	kubeconfig                            string
	selector                              map[string]string // parsed --endpoint-selector
	targetPorts                           []int             // parsed --endpoint-target-ports
	configFile, configText                string
	refreshMetricsInterval                time.Duration
	metricsStalenessThreshold             time.Duration
	secureServing                         bool
	certPath                              string
	haLeaderElection                      bool
	disableSubsetFilter                   bool
	verbosity                             int
	zapEncoder                            string
	zapLogLevel                           string
	zapDevel                              bool
	zapStacktraceLevel, zapTimeEncoding   string
	logFormat                             string
	logLevel                              slog.Level // from -v, or --zap-log-level when given

	// GIE's model-server scrape flags (deprecated there; they set the
	// defaults metrics-data-source's parameters override).
	msMetricsScheme, msMetricsPath string
	msMetricsPort                  int
	msMetricsInsecure              bool
	refreshPromInterval            time.Duration
	metricsScrapeTimeout           time.Duration
	healthChecking                 bool
	enableCertReload               bool
	tracing                        bool
	metricsEndpointAuth            bool
	requestIdleTimeout             time.Duration
	maxBufferedRequestBytes        int64
	extprocTransport               string // grpc or direct
	version                        bool
	set                            map[string]bool // flags given on the command line
	stdout                         io.Writer       // run's stdout (the console trace exporter writes there)

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
  epp --pool-name NAME [--pool-namespace NS] [flags]       Kubernetes: follow an InferencePool
  epp --endpoint-selector app=vllm --endpoint-target-ports 8000 [flags]
                                                           Kubernetes: pods by label, no pool object
  epp --check-config [--config-file F | --config-text T]   validate and print the effective config
  epp --version

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
	fs.StringVar(&o.poolName, "pool-name", "", "InferencePool to watch: its selector's Ready pods, one endpoint per target port, followed live (Kubernetes mode)")
	fs.StringVar(&o.poolNamespace, "pool-namespace", ns, "namespace of the InferencePool (default: $NAMESPACE, else default)")
	fs.StringVar(&o.poolGroup, "pool-group", "inference.networking.k8s.io", "API group of the InferencePool (only inference.networking.k8s.io, i.e. InferencePool v1, is supported)")
	fs.StringVar(&o.endpointSelector, "endpoint-selector", "", "without an InferencePool object: the Ready pods matching this label selector k=v,... in --pool-namespace (Kubernetes mode; needs --endpoint-target-ports)")
	fs.StringVar(&o.endpointTargetPorts, "endpoint-target-ports", "", "model-server ports for --endpoint-selector, comma-separated (several = data-parallel ranks)")
	fs.StringVar(&o.configFile, "config-file", "", "EndpointPickerConfig YAML file (default: the built-in GIE default)")
	fs.StringVar(&o.configText, "config-text", "", "EndpointPickerConfig YAML text (exclusive with --config-file)")
	fs.DurationVar(&o.refreshMetricsInterval, "refresh-metrics-interval", 50*time.Millisecond, "how often each endpoint's /metrics is scraped")
	fs.DurationVar(&o.metricsStalenessThreshold, "metrics-staleness-threshold", 2*time.Second, "metrics older than this take an endpoint out of scoring (unless all are stale)")
	fs.BoolVar(&o.secureServing, "secure-serving", true, "serve ext_proc over TLS (self-signed unless --cert-path)")
	fs.StringVar(&o.certPath, "cert-path", "", "directory with tls.crt and tls.key for ext_proc TLS")
	fs.BoolVar(&o.haLeaderElection, "ha-enable-leader-election", false, "elect a leader through a Lease in --pool-namespace; only the leader reports ready (GIE's active-passive HA; Kubernetes mode)")
	fs.BoolVar(&o.disableSubsetFilter, "disable-endpoint-subset-filter", false, "ignore the proxy's subset hint (envoy.lb.subset_hint)")
	fs.IntVar(&o.verbosity, "v", 0, "log verbosity as in GIE: 0-1 info, 2-3 more info, 4+ debug (one line per decision with each candidate's scores)")
	fs.StringVar(&o.zapEncoder, "zap-encoder", "", "GIE's log encoder flag: json or console (maps onto --log-format)")
	fs.StringVar(&o.zapLogLevel, "zap-log-level", "", "GIE's (controller-runtime's) log level: debug, info, error, panic, or an integer N > 0 (same as -v N); overrides -v. As in GIE, debug is zap's level -1, i.e. -v 1 (info here); GIE's debug lines are -v 4 / --zap-log-level=4")
	fs.BoolVar(&o.zapDevel, "zap-devel", true, "accepted for GIE compatibility, no effect (GIE v1.5.0 builds its logger before reading it)")
	fs.StringVar(&o.zapStacktraceLevel, "zap-stacktrace-level", "", "accepted for GIE compatibility (info, error or panic), no effect (as in GIE v1.5.0)")
	fs.StringVar(&o.zapTimeEncoding, "zap-time-encoding", "", "accepted for GIE compatibility (epoch, millis, nano, iso8601, rfc3339, rfc3339nano), no effect (as in GIE v1.5.0)")
	fs.StringVar(&o.msMetricsScheme, "model-server-metrics-scheme", "http", "scheme of model-server metrics pages: http or https (deprecated in GIE: prefer metrics-data-source's scheme, which wins when the config sets it)")
	fs.StringVar(&o.msMetricsPath, "model-server-metrics-path", "/metrics", "path of model-server metrics pages (deprecated in GIE: prefer metrics-data-source's path, which wins when the config sets it)")
	fs.IntVar(&o.msMetricsPort, "model-server-metrics-port", 0, "port of model-server metrics pages (0: each endpoint's own port); not for targets with their own metricsURL (deprecated in GIE)")
	fs.BoolVar(&o.msMetricsInsecure, "model-server-metrics-https-insecure-skip-verify", false, "skip verifying model servers' certificates on https scrapes (deprecated in GIE: prefer metrics-data-source's insecureSkipVerify, which wins when the config sets it). GIE's default is true; here, unless this flag or the config says so, certificates are verified")
	fs.DurationVar(&o.refreshPromInterval, "refresh-prometheus-metrics-interval", 5*time.Second, "accepted for GIE compatibility, no effect: GIE recomputes its pool gauges on this timer; epp computes them from the last snapshot when /metrics is scraped (never older than --refresh-metrics-interval)")
	fs.DurationVar(&o.metricsScrapeTimeout, "metrics-scrape-timeout", endpoints.DefaultScrapeTimeout, "longest one model-server metrics scrape may take (connect, headers, body); a slower one fails")
	fs.BoolVar(&o.healthChecking, "health-checking", false, "also serve gRPC health on the ext_proc port: envoy.service.ext_proc.v3.ExternalProcessor and \"\" SERVING while epp serves (GIE's meaning)")
	fs.BoolVar(&o.enableCertReload, "enable-cert-reload", false, "watch --cert-path's tls.crt and tls.key and serve a new certificate without a restart")
	fs.BoolVar(&o.tracing, "tracing", true, "OpenTelemetry tracing as in GIE (default true): a span per request; exporter, endpoint, sampler (default parentbased_traceidratio 0.1) and service name from the standard OTEL_* variables. Without OTEL_TRACES_EXPORTER or an OTLP endpoint nothing is exported (GIE prints spans to stdout)")
	fs.BoolVar(&o.metricsEndpointAuth, "metrics-endpoint-auth", true, "in Kubernetes mode, serve /metrics only to bearer tokens the API server authenticates (TokenReview) and authorises for get on /metrics (SubjectAccessReview), as GIE does; with --endpoints/--endpoints-file there is no API server and /metrics is open")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file for Kubernetes mode (default: $KUBECONFIG, else the in-cluster ServiceAccount, else ~/.kube/config)")
	fs.DurationVar(&o.requestIdleTimeout, "request-idle-timeout", extproc.DefaultRequestIdleTimeout, "a stream whose request (headers, body chunks) stalls this long before it is answered gets 408 and its buffered body is released; answered streams are never timed (0 disables)")
	fs.Int64Var(&o.maxBufferedRequestBytes, "max-buffered-request-bytes", extproc.DefaultMaxBufferedBytes, "bound on the request body bytes all streams buffer at once; a chunk over it ends its stream with 503 (413 when the body alone is over it)")
	fs.StringVar(&o.extprocTransport, "extproc-transport", transportGRPC, "how the ext_proc port (--grpc-port) is served: grpc (grpc-go) or direct. direct is fastepp's own HTTP/2 transport for the ext_proc service, opt-in, which took less than half the server CPU per request of grpc-go in the project's benchmark; it serves the ext_proc method and gRPC health Check only (no compression, no grpc-timeout deadlines)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
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
			return fmt.Errorf("--%s was removed (GIE refuses it too); metric names are chosen per engine by the pod label %s (%s) and set in the config with core-metrics-extractor's engineConfigs",
				name, endpoints.EngineLabel, strings.Join(endpoints.EngineNames(), ", "))
		})
	}
	if err := fs.Parse(joinBoolValues(fs, args)); err != nil {
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
	if o.version {
		fmt.Fprintln(stdout, version.String("epp"))
		return nil, errVersion
	}
	o.stdout = stdout
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	return o, o.validate()
}

// joinBoolValues rewrites "--bool-flag true" (two arguments) as
// "--bool-flag=true". GIE's inferencepool chart renders every flag that way,
// and Go's flag package would otherwise take the value for a stray
// positional argument. Only true/false after a boolean flag are joined.
func joinBoolValues(fs *flag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		out = append(out, a)
		if a == "--" {
			return append(out, args[i+1:]...)
		}
		name := strings.TrimLeft(a, "-")
		if !strings.HasPrefix(a, "-") || strings.Contains(name, "=") || i+1 >= len(args) {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !bf.IsBoolFlag() {
			continue
		}
		if v := args[i+1]; v == "true" || v == "false" {
			out[len(out)-1] = a + "=" + v
			i++
		}
	}
	return out
}

// The values of --extproc-transport.
const (
	transportGRPC   = "grpc"   // grpc.NewServer with extproc's Register
	transportDirect = "direct" // extproc's own HTTP/2 transport (extproc.Direct)
)

// errVersion: --version was printed; run exits 0.
var errVersion = errors.New("version printed")

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
	o.logLevel = levelOfVerbosity(o.verbosity)
	if o.zapLogLevel != "" {
		lvl, err := zapLevel(o.zapLogLevel)
		if err != nil {
			errs = append(errs, err)
		}
		o.logLevel = lvl
	}
	if v := o.zapStacktraceLevel; v != "" && v != "info" && v != "error" && v != "panic" {
		errs = append(errs, fmt.Errorf("--zap-stacktrace-level: expected info, error or panic, found %q", v))
	}
	switch o.zapTimeEncoding {
	case "", "epoch", "millis", "nano", "iso8601", "rfc3339", "rfc3339nano":
	default:
		errs = append(errs, fmt.Errorf("--zap-time-encoding: expected epoch, millis, nano, iso8601, rfc3339 or rfc3339nano, found %q", o.zapTimeEncoding))
	}
	if o.msMetricsScheme != "http" && o.msMetricsScheme != "https" {
		errs = append(errs, fmt.Errorf("--model-server-metrics-scheme: expected http or https, found %q", o.msMetricsScheme))
	}
	if !strings.HasPrefix(o.msMetricsPath, "/") {
		errs = append(errs, fmt.Errorf("--model-server-metrics-path: expected an absolute path such as /metrics, found %q", o.msMetricsPath))
	}
	if o.msMetricsPort < 0 || o.msMetricsPort > 65535 {
		errs = append(errs, fmt.Errorf("--model-server-metrics-port: expected 0 (each endpoint's own port) or a port 1..65535, found %d", o.msMetricsPort))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"refresh-prometheus-metrics-interval", o.refreshPromInterval}, {"metrics-scrape-timeout", o.metricsScrapeTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("--%s: expected a positive duration, found %v", d.name, d.v))
		}
	}
	if o.requestIdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("--request-idle-timeout: expected a positive duration (0 disables), found %v", o.requestIdleTimeout))
	}
	if o.maxBufferedRequestBytes <= 0 {
		errs = append(errs, fmt.Errorf("--max-buffered-request-bytes: expected a positive size, found %d", o.maxBufferedRequestBytes))
	}
	switch o.extprocTransport {
	case transportGRPC, transportDirect:
	default:
		errs = append(errs, fmt.Errorf("--extproc-transport: expected %s or %s, found %q", transportGRPC, transportDirect, o.extprocTransport))
	}
	if !o.checkConfig {
		k8s := o.poolName != "" || o.endpointSelector != ""
		switch {
		case o.poolName != "" && o.endpointSelector != "":
			errs = append(errs, errors.New("--pool-name and --endpoint-selector: expected one pool source, found both"))
		case k8s && (o.endpoints != "" || o.endpointsFile != ""):
			errs = append(errs, errors.New("--pool-name/--endpoint-selector and --endpoints/--endpoints-file: expected one pool source, found both"))
		case o.endpoints != "" && o.endpointsFile != "":
			errs = append(errs, errors.New("--endpoints and --endpoints-file: expected one pool source, found both"))
		case !k8s && o.endpoints == "" && o.endpointsFile == "":
			errs = append(errs, errors.New("no pool: expected --pool-name NAME (Kubernetes), --endpoint-selector k=v with --endpoint-target-ports, --endpoints ip:port,... or --endpoints-file F"))
		}
		if o.endpointSelector != "" {
			sel, err := kube.ParseSelector(o.endpointSelector)
			if err != nil {
				errs = append(errs, fmt.Errorf("--endpoint-selector: %w", err))
			}
			o.selector = sel
			if o.endpointTargetPorts == "" {
				errs = append(errs, errors.New("--endpoint-selector: expected --endpoint-target-ports with it (the model servers' ports), found none"))
			}
		}
		if o.endpointTargetPorts != "" {
			ports, err := kube.ParsePorts(o.endpointTargetPorts)
			if err != nil {
				errs = append(errs, fmt.Errorf("--endpoint-target-ports: %w", err))
			}
			o.targetPorts = ports
			if o.poolName != "" {
				errs = append(errs, errors.New("--endpoint-target-ports: goes with --endpoint-selector; with --pool-name the InferencePool's targetPorts are used"))
			}
		}
		if k8s && o.poolGroup != kube.PoolGroup {
			errs = append(errs, fmt.Errorf("--pool-group: expected %s (InferencePool v1), found %q; the v1alpha2 pools of inference.networking.x-k8s.io are not supported", kube.PoolGroup, o.poolGroup))
		}
		if k8s && o.poolNamespace == "" {
			errs = append(errs, errors.New("--pool-namespace: expected a namespace, found an empty one"))
		}
		if o.haLeaderElection && !k8s {
			errs = append(errs, errors.New("--ha-enable-leader-election: needs Kubernetes mode (--pool-name or --endpoint-selector): the election is a Lease on the API server"))
		}
		if !k8s {
			if o.set["metrics-endpoint-auth"] && o.metricsEndpointAuth {
				errs = append(errs, errors.New("--metrics-endpoint-auth=true: authenticating /metrics needs the Kubernetes API server (TokenReview), and --endpoints/--endpoints-file runs without one; drop the flag"))
			}
			o.metricsEndpointAuth = false
		}
		if o.kubeconfig != "" && !k8s {
			errs = append(errs, errors.New("--kubeconfig: only used in Kubernetes mode (--pool-name or --endpoint-selector)"))
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

// levelOfVerbosity maps GIE's -v onto slog: 4 and above is debug (GIE's
// logutil.DEBUG), below is info.
func levelOfVerbosity(v int) slog.Level {
	if v >= 4 {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// zapLevel maps --zap-log-level as controller-runtime reads it: a zap level
// name (debug is zap's -1, i.e. V(1)) or an integer N > 0 meaning V(N), then
// onto slog as -v does. panic (nothing below a panic) is above slog's error.
func zapLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return levelOfVerbosity(1), nil
	case "info":
		return levelOfVerbosity(0), nil
	case "error":
		return slog.LevelError, nil
	case "panic":
		return slog.LevelError + 4, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 127 {
		return slog.LevelInfo, fmt.Errorf("--zap-log-level: expected debug, info, error, panic or an integer 1..127, found %q", s)
	}
	return levelOfVerbosity(n), nil
}

// scrapeBase is the data layer's starting point before the config's
// data-layer plugins: GIE's defaults, with the --model-server-metrics-*
// flags given on the command line in their place (the config's parameters
// override them, as in GIE).
func (o *options) scrapeBase() endpoints.ScrapeConfig {
	c := endpoints.DefaultScrapeConfig()
	if o.set["model-server-metrics-scheme"] {
		c.Scheme = o.msMetricsScheme
	}
	if o.set["model-server-metrics-path"] {
		c.Path = o.msMetricsPath
	}
	if o.set["model-server-metrics-https-insecure-skip-verify"] {
		c.InsecureSkipVerify = o.msMetricsInsecure
	}
	c.Port = uint16(o.msMetricsPort)
	return c
}

// flagNote is a start-up log line for a flag given on the command line.
type flagNote struct{ flag, note string }

// deprecatedFlags are flags GIE marks deprecated; epp warns when one is given.
var deprecatedFlags = []flagNote{
	{"model-server-metrics-scheme", "set scheme in the config's metrics-data-source instead"},
	{"model-server-metrics-path", "set path in the config's metrics-data-source instead"},
	{"model-server-metrics-https-insecure-skip-verify", "set insecureSkipVerify in the config's metrics-data-source instead"},
	{"model-server-metrics-port", "GIE will remove it"},
}

// inertFlags are GIE flags epp accepts without effect; epp says so when one
// is given.
var inertFlags = []flagNote{
	{"refresh-prometheus-metrics-interval", "the pool gauges are computed from the last snapshot when /metrics is scraped, not on a timer"},
	{"zap-devel", "GIE v1.5.0 ignores it too (its logger is built before the flag is read)"},
	{"zap-stacktrace-level", "GIE v1.5.0 ignores it too"},
	{"zap-time-encoding", "GIE v1.5.0 ignores it too"},
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
