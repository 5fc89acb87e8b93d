package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestGIEFlagsAccepted: every GIE v1.5.0 flag epp accepts parses with a
// typical value (--check-config: validate and exit 0).
func TestGIEFlagsAccepted(t *testing.T) {
	for _, args := range [][]string{
		{"--model-server-metrics-scheme", "https", "--model-server-metrics-path", "/m", "--model-server-metrics-port", "9400",
			"--model-server-metrics-https-insecure-skip-verify=false"},
		{"--refresh-prometheus-metrics-interval", "1s"},
		{"--zap-log-level", "debug"}, {"--zap-log-level", "3"}, {"--zap-log-level=error"},
		{"--zap-devel=false", "--zap-stacktrace-level", "panic", "--zap-time-encoding", "rfc3339nano"},
		{"--health-checking"}, {"--enable-cert-reload"}, {"--tracing=false"}, {"--metrics-endpoint-auth=false"},
		{"--metrics-scrape-timeout", "3s"}, {"--request-idle-timeout", "5m", "--max-buffered-request-bytes", "1048576"},
		{"--pool-group", "inference.networking.x-k8s.io", "--pool-namespace", "ns", "--endpoint-target-ports", "8000,8001"},
		{"-v", "2", "--zap-encoder", "console"},
		// GIE's inferencepool chart renders each flag as two arguments,
		// booleans included.
		{"--tracing", "false", "--secure-serving", "true", "--health-checking", "true", "--zap-encoder", "json"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"--check-config"}, args...), &out, &errb, nil); code != 0 {
			t.Errorf("%v: exit %d: %s", args, code, errb.String())
		}
	}
}

// TestJoinBoolValues: "--bool true" becomes one argument; other flags, a
// non-boolean word after a boolean, and anything after "--" are left alone.
func TestJoinBoolValues(t *testing.T) {
	o, err := parseFlags([]string{"--check-config", "--tracing", "false", "--secure-serving", "false", "--pool-name", "true"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.tracing || o.secureServing || o.poolName != "true" {
		t.Fatalf("tracing=%v secureServing=%v poolName=%q; expected false, false, \"true\"", o.tracing, o.secureServing, o.poolName)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--check-config", "--tracing", "maybe"}, &out, &errb, nil); code != 2 || !strings.Contains(errb.String(), `unexpected argument "maybe"`) {
		t.Fatalf("--tracing maybe: exit %d, %q; expected 2 and an unexpected-argument error", code, errb.String())
	}
}

// TestGIEFlagErrors: bad values of the new flags stop epp with exit 2 and a
// message saying what was expected.
func TestGIEFlagErrors(t *testing.T) {
	ep := []string{"--endpoints", "10.0.0.1:8000"}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--model-server-metrics-scheme", "ftp"}, `--model-server-metrics-scheme: expected http or https, found "ftp"`},
		{[]string{"--model-server-metrics-path", "metrics"}, `--model-server-metrics-path: expected an absolute path such as /metrics, found "metrics"`},
		{[]string{"--model-server-metrics-port", "70000"}, "--model-server-metrics-port: expected 0 (each endpoint's own port) or a port 1..65535, found 70000"},
		{[]string{"--refresh-prometheus-metrics-interval", "0s"}, "--refresh-prometheus-metrics-interval: expected a positive duration, found 0s"},
		{[]string{"--metrics-scrape-timeout", "-1s"}, "--metrics-scrape-timeout: expected a positive duration, found -1s"},
		{[]string{"--zap-log-level", "warn"}, `--zap-log-level: expected debug, info, error, panic or an integer 1..127, found "warn"`},
		{[]string{"--zap-log-level", "0"}, `--zap-log-level: expected debug, info, error, panic or an integer 1..127, found "0"`},
		{[]string{"--zap-stacktrace-level", "debug"}, `--zap-stacktrace-level: expected info, error or panic, found "debug"`},
		{[]string{"--zap-time-encoding", "unix"}, `--zap-time-encoding: expected epoch, millis, nano, iso8601, rfc3339 or rfc3339nano, found "unix"`},
		{[]string{"--metrics-endpoint-auth"}, "--metrics-endpoint-auth=true: authenticating /metrics needs the Kubernetes API server"},
		{[]string{"--request-idle-timeout", "-1s"}, "--request-idle-timeout: expected a positive duration (0 disables), found -1s"},
		{[]string{"--max-buffered-request-bytes", "0"}, "--max-buffered-request-bytes: expected a positive size, found 0"},
		{[]string{"--tracing=maybe"}, `invalid boolean value "maybe" for -tracing`},
		{[]string{"--cache-info-metric", "x"}, "core-metrics-extractor's engineConfigs"},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := run(context.Background(), append(ep, tc.args...), &out, &errb, nil)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestLogLevelFlags: -v and --zap-log-level map onto slog levels as GIE's
// zap levels do (V(n) enabled at level -n; debug lines are V(4)).
func TestLogLevelFlags(t *testing.T) {
	cases := []struct {
		args []string
		want slog.Level
	}{
		{nil, slog.LevelInfo},
		{[]string{"-v", "4"}, slog.LevelDebug},
		{[]string{"-v", "3"}, slog.LevelInfo},
		{[]string{"--zap-log-level", "4"}, slog.LevelDebug},
		{[]string{"--zap-log-level", "debug"}, slog.LevelInfo}, // zap's debug is V(1)
		{[]string{"--zap-log-level", "INFO"}, slog.LevelInfo},
		{[]string{"--zap-log-level", "error"}, slog.LevelError},
		{[]string{"--zap-log-level", "panic"}, slog.LevelError + 4},
		{[]string{"-v", "5", "--zap-log-level", "info"}, slog.LevelInfo}, // --zap-log-level wins, as in GIE
		{[]string{"-v", "1", "--zap-log-level", "5"}, slog.LevelDebug},
	}
	for _, tc := range cases {
		o, err := parseFlags(append([]string{"--check-config"}, tc.args...), io.Discard)
		if err != nil || o.logLevel != tc.want {
			t.Errorf("%v: level %v, %v; want %v", tc.args, o.logLevel, err, tc.want)
		}
	}
}

// TestVersionFlag: --version prints one line and exits 0, needing no pool.
func TestVersionFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &out, &errb, nil); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if s := out.String(); !strings.HasPrefix(s, "epp dev (") || strings.Count(s, "\n") != 1 {
		t.Fatalf("--version printed %q; want one line starting with \"epp dev (\"", s)
	}
}

// TestHelpNamesNewFlags: --help explains each flag added for GIE.
func TestHelpNamesNewFlags(t *testing.T) {
	var out bytes.Buffer
	run(context.Background(), []string{"--help"}, &out, io.Discard, nil)
	for _, f := range []string{"model-server-metrics-scheme", "model-server-metrics-path", "model-server-metrics-port",
		"model-server-metrics-https-insecure-skip-verify", "refresh-prometheus-metrics-interval", "zap-log-level", "health-checking",
		"enable-cert-reload", "tracing", "metrics-scrape-timeout", "request-idle-timeout", "max-buffered-request-bytes", "version",
		"metrics-endpoint-auth", "zap-devel", "zap-stacktrace-level", "zap-time-encoding"} {
		if !strings.Contains(out.String(), "  -"+f+" ") && !strings.Contains(out.String(), "  -"+f+"\n") {
			t.Errorf("--help does not explain -%s", f)
		}
	}
}

// sampleWant is a condition on the sum of a metric's samples (over all
// label sets, so it holds with or without a pool name label).
type sampleWant struct {
	name string
	ok   func(float64) bool
	desc string
}

func eq(name string, v float64) sampleWant {
	return sampleWant{name, func(x float64) bool { return x == v }, fmt.Sprintf("%s = %v", name, v)}
}

func atLeast(name string, v float64) sampleWant {
	return sampleWant{name, func(x float64) bool { return x >= v }, fmt.Sprintf("%s >= %v", name, v)}
}

// metricSum sums the samples of metric name on a Prometheus text page.
func metricSum(page []byte, name string) (float64, bool) {
	sum, found := 0.0, false
	for _, l := range strings.Split(string(page), "\n") {
		if !strings.HasPrefix(l, name) || len(l) == len(name) || (l[len(name)] != ' ' && l[len(name)] != '{') {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err == nil {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

// pollMetrics reads epp's /metrics until every condition holds (10 s at
// most) and returns the page.
func pollMetrics(t *testing.T, addr string, want ...sampleWant) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		failed := ""
		for _, w := range want {
			if v, ok := metricSum(body, w.name); !ok || !w.ok(v) {
				failed = w.desc
				break
			}
		}
		if failed == "" {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics: no %s after 10s:\n%s", failed, grepLines(body, "inference_pool|fastepp_endpoint_scrape_errors"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const plainPage = "vllm:num_requests_waiting 2\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.5\n"

// TestModelServerMetricsFlags: the --model-server-metrics-* flags decide
// where the only endpoint is scraped (https on another port, own path,
// unverified certificate); the endpoint's own port answers 404, so it turns
// ready only if all four were honoured. A config that sets path itself
// overrides the flag, as in GIE.
func TestModelServerMetricsFlags(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/flag/metrics", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, plainPage) })
	mux.HandleFunc("/config/metrics", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, plainPage) })
	metricsSrv := httptest.NewTLSServer(mux)
	defer metricsSrv.Close()
	own := httptest.NewServer(http.NotFoundHandler())
	defer own.Close()
	port := metricsSrv.URL[strings.LastIndex(metricsSrv.URL, ":")+1:]
	base := []string{
		"--endpoints", strings.TrimPrefix(own.URL, "http://"), "--bind-address", "127.0.0.1",
		"--grpc-port", "0", "--grpc-health-port", "0", "--metrics-port", "0", "--secure-serving=false",
		"--refresh-metrics-interval", "20ms",
		"--model-server-metrics-scheme", "https", "--model-server-metrics-path", "/flag/metrics",
		"--model-server-metrics-port", port, "--model-server-metrics-https-insecure-skip-verify",
	}
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"flags alone", nil},
		{"config path wins over the flag", []string{"--config-text", `plugins:
- type: metrics-data-source
  parameters: {path: /config/metrics}
- type: core-metrics-extractor
- type: queue-scorer
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{pluginRef: core-metrics-extractor}]
`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, cancel, done, logs := launch(t, append(append([]string{}, base...), tc.extra...))
			pollMetrics(t, a.metrics, eq("inference_pool_ready_pods", 1), eq("inference_pool_average_queue_size", 2))
			cancel()
			<-done.c
			logs.mu.Lock()
			text := logs.w.(*bytes.Buffer).String()
			logs.mu.Unlock()
			if !strings.Contains(text, "flag deprecated in GIE") {
				t.Errorf("no deprecation warning for --model-server-metrics-* in the log:\n%s", text)
			}
		})
	}
}

// TestMetricsScrapeTimeout: an endpoint that answers in 1.5 s is scorable
// with --metrics-scrape-timeout 2s; with the default 1 s its scrapes fail.
func TestMetricsScrapeTimeout(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(1500 * time.Millisecond):
			fmt.Fprint(w, plainPage)
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	args := func(extra ...string) []string {
		return append([]string{
			"--endpoints", strings.TrimPrefix(slow.URL, "http://"), "--bind-address", "127.0.0.1",
			"--grpc-port", "0", "--grpc-health-port", "0", "--metrics-port", "0", "--secure-serving=false",
			"--refresh-metrics-interval", "50ms", "--metrics-staleness-threshold", "10s",
		}, extra...)
	}
	a, cancel, done, _ := launch(t, args("--metrics-scrape-timeout", "2s"))
	pollMetrics(t, a.metrics, eq("inference_pool_ready_pods", 1), eq("inference_pool_average_kv_cache_utilization", 0.5))
	cancel()
	<-done.c

	a, cancel, done, _ = launch(t, args())
	page := pollMetrics(t, a.metrics, atLeast("fastepp_endpoint_scrape_errors_total", 1))
	if v, _ := metricSum(page, "inference_pool_ready_pods"); v != 0 {
		t.Errorf("with the default 1s timeout the 1.5s endpoint is ready:\n%s", grepLines(page, "inference_pool"))
	}
	cancel()
	<-done.c
}

// TestHealthCheckingFlag: --health-checking serves gRPC health on the
// ext_proc port (the ext_proc service SERVING); without it that port has no
// health service. The start-up log says tracing is not implemented while
// --tracing is on (GIE's default), and nothing with --tracing=false.
func TestHealthCheckingFlag(t *testing.T) {
	for _, on := range []bool{true, false} {
		extra := []string{"--secure-serving=false", fmt.Sprintf("--health-checking=%v", on), fmt.Sprintf("--tracing=%v", on)}
		a, cancel, done, _, logs := startEPP(t, 1, extra...)
		conn, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(insecureCreds()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: extprocHealthService})
		stop()
		conn.Close()
		switch {
		case on && (err != nil || r.Status != healthpb.HealthCheckResponse_SERVING):
			t.Errorf("--health-checking: ext_proc port health = %v, %v; want SERVING", r, err)
		case !on && status.Code(err) != codes.Unimplemented:
			t.Errorf("no --health-checking: ext_proc port health = %v, %v; want Unimplemented", r, err)
		}
		cancel()
		<-done.c
		logs.mu.Lock()
		traced := strings.Contains(logs.w.(*bytes.Buffer).String(), `"msg":"tracing","exporter":"off: no exporter`)
		logs.mu.Unlock()
		if traced != on {
			t.Errorf("--tracing=%v: tracing line logged = %v", on, traced)
		}
	}
}

// TestExtprocLimitFlags: --request-idle-timeout and
// --max-buffered-request-bytes reach the ext_proc server: a request that
// stalls after its headers gets 408, a body chunk over the buffer bound 413.
func TestExtprocLimitFlags(t *testing.T) {
	a, _, _, _, _ := startEPP(t, 1, "--secure-serving=false", "--request-idle-timeout", "200ms", "--max-buffered-request-bytes", "64")
	conn, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		name string
		body string // "" = send no body and stall
		want int32
	}{
		{"stalled request", "", 408},
		{"body over the buffer bound", `{"model":"m","prompt":"` + strings.Repeat("x", 100) + `"}`, 413},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hdrs := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/v1/completions")}, {Key: ":method", RawValue: []byte("POST")}}}
		if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hdrs}}}); err != nil {
			t.Fatal(err)
		}
		if tc.body != "" {
			if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(tc.body)}}}); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		r, err := st.Recv()
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := int32(r.GetImmediateResponse().GetStatus().GetCode()); got != tc.want {
			t.Errorf("%s: answer %v (status %d), want %d", tc.name, r, got, tc.want)
		}
		if tc.body == "" && time.Since(start) > 5*time.Second {
			t.Errorf("stalled request answered after %v with --request-idle-timeout 200ms", time.Since(start))
		}
	}
}
