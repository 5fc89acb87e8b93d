package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestFlagErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"--total-queued-requests-metric=vllm:num_requests_waiting"}, "engineConfigs"},
		{[]string{"--lora-info-metric", "x"}, "--lora-info-metric was removed"},
		{[]string{"--config-file", "a", "--config-text", "b", "--check-config"}, "expected at most one, found both"},
		{[]string{"--endpoints", "10.0.0.1:8000", "--request-body-mode", "chunked"}, `expected auto, streamed or buffered, found "chunked"`},
		{[]string{"--endpoints", "10.0.0.1:8000", "--zap-encoder", "xml"}, "--zap-encoder: expected json or console"},
		{[]string{"--endpoints", "10.0.0.1:8000", "--refresh-metrics-interval", "0s"}, "--refresh-metrics-interval: expected a positive duration"},
		{[]string{}, "no pool: expected --pool-name NAME (Kubernetes), --endpoint-selector k=v with --endpoint-target-ports, --endpoints ip:port,... or --endpoints-file F"},
		{[]string{"--pool-name", "p", "--endpoint-selector", "app=x"}, "--pool-name and --endpoint-selector: expected one pool source, found both"},
		{[]string{"--pool-name", "p", "--endpoints", "10.0.0.1:8000"}, "expected one pool source, found both"},
		{[]string{"--endpoint-selector", "app=x"}, "--endpoint-selector: expected --endpoint-target-ports with it"},
		{[]string{"--endpoint-selector", "app", "--endpoint-target-ports", "8000"}, `--endpoint-selector: expected key=value[,key=value...], found "app"`},
		{[]string{"--endpoint-selector", "app=x", "--endpoint-target-ports", "80000"}, "--endpoint-target-ports: expected port numbers 1..65535"},
		{[]string{"--pool-name", "p", "--endpoint-target-ports", "8000"}, "with --pool-name the InferencePool's targetPorts are used"},
		{[]string{"--pool-name", "p", "--pool-group", "inference.networking.x-k8s.io"}, "v1alpha2 pools of inference.networking.x-k8s.io are not supported"},
		{[]string{"--endpoints", "10.0.0.1:8000", "--ha-enable-leader-election"}, "--ha-enable-leader-election: needs Kubernetes mode"},
		{[]string{"--endpoints", "10.0.0.1:8000", "--kubeconfig", "k"}, "--kubeconfig: only used in Kubernetes mode"},
		{[]string{"--endpoints", "a", "--endpoints-file", "b"}, "expected one pool source, found both"},
		{[]string{"--endpoints", "10.0.0.1:8000", "stray"}, `unexpected argument "stray"`},
		{[]string{"--endpoints", "10.0.0.1:8000", "--objective-priorities", "batch=low"}, `--objective-priorities: expected name=integer, found "batch=low"`},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb, nil)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestKubeconfigErrors: Kubernetes mode without a usable API server fails
// at start-up (exit 1) saying where it looked.
func TestKubeconfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-kubeconfig")
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--pool-name", "p", "--kubeconfig", missing}, nil, "--kubeconfig " + missing},
		{[]string{"--pool-name", "p"}, map[string]string{"KUBECONFIG": missing, "HOME": t.TempDir()}, "expected --kubeconfig, $KUBECONFIG, an in-cluster ServiceAccount or ~/.kube/config"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb, nil)
		if code != 1 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &errb, nil); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, f := range []string{"--endpoints", "-grpc-port", "-config-file", "-check-config", "-request-body-mode"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help does not mention %s", f)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("plugins:\n- type: queue-scorer\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("plugins:\n- type: queue-scorer\n  parameters: {x: 1}\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--check-config", "--config-file", good}, &out, &errb, nil); code != 0 {
		t.Fatalf("good config: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "pluginRef: max-score-picker") || !strings.Contains(out.String(), "kind: EndpointPickerConfig") {
		t.Errorf("effective config lacks the defaulted picker:\n%s", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"--check-config", "--config-file", bad}, &out, &errb, nil); code != 1 {
		t.Fatalf("bad config: exit %d", code)
	}
	if !strings.Contains(errb.String(), `unknown parameter "x"`) || !strings.Contains(errb.String(), "bad.yaml") {
		t.Errorf("bad config error: %q", errb.String())
	}
}

const metricsPage = `# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} %d
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 1
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.25
`

// TestServeEndToEnd starts epp on loopback against two metrics servers,
// waits for readiness, routes one request over a real gRPC stream, reads
// /metrics, then shuts down like SIGTERM.
func TestServeEndToEnd(t *testing.T) {
	var eps []string
	for i := 0; i < 2; i++ {
		waiting := i * 10 // the second endpoint is busy
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, metricsPage, waiting)
		}))
		defer srv.Close()
		eps = append(eps, strings.TrimPrefix(srv.URL, "http://"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	done := make(chan int, 1)
	logs := &syncWriter{w: &bytes.Buffer{}}
	go func() {
		done <- run(ctx, []string{
			"--endpoints", strings.Join(eps, ","), "--bind-address", "127.0.0.1",
			"--grpc-port", "0", "--grpc-health-port", "0", "--metrics-port", "0",
			"--secure-serving=false", "--refresh-metrics-interval", "20ms", "--shutdown-grace-period", "2s",
			"--objective-priorities", "batch=-1,interactive=5", "-v", "4", "--log-format", "text",
		}, io.Discard, logs, ready)
	}()
	var a addrs
	select {
	case a = <-ready:
	case code := <-done:
		t.Fatalf("epp exited %d", code)
	case <-time.After(10 * time.Second):
		t.Fatal("epp did not start")
	}

	hc, err := grpc.NewClient(a.health, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	health := healthpb.NewHealthClient(hc)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
		if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness never SERVING: %v %v", r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "liveness"}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("liveness: %v %v", r, err)
	}
	time.Sleep(100 * time.Millisecond) // a scrape of both endpoints

	conn, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := 0; i < 3; i++ {
		dest := routeOnce(t, conn, `{"model":"m","prompt":"hello world"}`)
		if dest != eps[0] {
			t.Errorf("request %d routed to %s, want the idle endpoint %s", i, dest, eps[0])
		}
	}

	// The pool is saturated (mean of max(waiting/5, kv/0.8) = (0.31+2)/2 >= 1):
	// a sheddable request gets 429, a normal one is routed.
	if code := immediateStatus(t, conn, "batch"); code != 429 {
		t.Errorf("sheddable request on a saturated pool: status %d, want 429", code)
	}
	if code := immediateStatus(t, conn, "interactive"); code != 0 {
		t.Errorf("interactive request: immediate status %d, want routed", code)
	}

	resp, err := http.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if v, ok := metricSum(body, "inference_pool_ready_pods"); !ok || v != 2 {
		t.Errorf("/metrics: inference_pool_ready_pods = %v (found %v), want 2", v, ok)
	}
	for _, name := range []string{"inference_objective_request_total", "inference_extension_scheduler_e2e_duration_seconds", "fastepp_endpoint_scrape_duration_seconds", "inference_extension_prefix_indexer_size", "fastepp_endpoint_inflight_requests"} {
		if !bytes.Contains(body, []byte(name)) {
			t.Errorf("/metrics lacks %q", name)
		}
	}
	logs.mu.Lock()
	text := logs.w.(*bytes.Buffer).String()
	logs.mu.Unlock()
	if !strings.Contains(text, "extproc: picked") || !strings.Contains(text, "queue-scorer=") || !strings.Contains(text, "prefix-cache-scorer=") {
		t.Errorf("-v 4: no debug line per decision with each candidate's scores in the log:\n%s", text)
	}
	cancel() // SIGTERM
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after shutdown", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("epp did not stop")
	}
}

// sendRequest opens a stream and sends headers (plus the given extra
// headers) and a one-message body, as Envoy does in FULL_DUPLEX_STREAMED mode.
func sendRequest(t *testing.T, ctx context.Context, conn *grpc.ClientConn, body string, extra ...string) extprocv3.ExternalProcessor_ProcessClient {
	t.Helper()
	st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hdrs := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":path", RawValue: []byte("/v1/completions")},
		{Key: ":method", RawValue: []byte("POST")},
		{Key: "content-type", RawValue: []byte("application/json")},
	}}
	for i := 0; i+1 < len(extra); i += 2 {
		hdrs.Headers = append(hdrs.Headers, &corev3.HeaderValue{Key: extra[i], RawValue: []byte(extra[i+1])})
	}
	if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hdrs}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}}); err != nil {
		t.Fatal(err)
	}
	return st
}

// routeOnce plays Envoy in FULL_DUPLEX_STREAMED mode and returns the chosen endpoint.
func routeOnce(t *testing.T, conn *grpc.ClientConn, body string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st := sendRequest(t, ctx, conn, body)
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	h := r.GetRequestHeaders()
	if h == nil {
		t.Fatalf("first response %v, want request headers", r)
	}
	dest := ""
	for _, o := range h.GetResponse().GetHeaderMutation().GetSetHeaders() {
		if o.GetHeader().GetKey() == "x-gateway-destination-endpoint" {
			dest = string(o.GetHeader().GetRawValue()) + o.GetHeader().GetValue()
		}
	}
	md := r.GetDynamicMetadata().GetFields()["envoy.lb"].GetStructValue().GetFields()["x-gateway-destination-endpoint"].GetStringValue()
	if md != dest {
		t.Errorf("metadata %q differs from header %q", md, dest)
	}
	finishStream(t, st)
	return dest
}

// finishStream drains the body echo, then ends the response side and the
// stream as Envoy does after a headers-only response.
func finishStream(t *testing.T, st extprocv3.ExternalProcessor_ProcessClient) {
	t.Helper()
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetEndOfStream() {
			break
		}
	}
	_ = st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{}, EndOfStream: true}}})
	_, _ = st.Recv()
	_ = st.CloseSend()
}

// immediateStatus sends one request with the objective header and returns
// the ImmediateResponse status, or 0 when epp routed it.
func immediateStatus(t *testing.T, conn *grpc.ClientConn, objective string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st := sendRequest(t, ctx, conn, `{"model":"m","prompt":"x"}`, "x-gateway-inference-objective", objective)
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = st.CloseSend()
	if ir := r.GetImmediateResponse(); ir != nil {
		return int(ir.GetStatus().GetCode())
	}
	return 0
}

// syncWriter serialises writes from the logger goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
