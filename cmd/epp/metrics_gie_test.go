package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"

	"github.com/fastepp/fastepp/config"
	"github.com/fastepp/fastepp/endpoints"
	"github.com/fastepp/fastepp/scheduler"
)

// gieQueried lists, by hand, every metric of the EPP that GIE v1.5.0's
// Grafana dashboard (tools/dashboards/inference_gateway.json) and Prometheus
// alerts (tools/alerts/alert.yaml) query, with the labels they group or
// filter by (or print in an alert annotation), and the type the query needs.
// The dashboard's `pod` label (next to model_server_pod) is the scrape
// target's label, added by Prometheus, not by the EPP. Not listed: vllm:*
// (model servers' own metrics), bbr_* (the body-based router) and
// inference_extension_flow_control_* (flow control, which epp does not have).
var gieQueried = []struct {
	name   string
	typ    dto.MetricType
	labels []string
}{
	// dashboard: p50/p90/p95 by le; alert HighInferenceRequestLatencyP99
	// keeps every label and prints model_name and target_model_name.
	{"inference_objective_request_duration_seconds", dto.MetricType_HISTOGRAM, []string{"model_name", "target_model_name"}},
	// dashboard: sum by (model_name, target_model_name); alert
	// HighInferenceErrorRate: sum by (model_name).
	{"inference_objective_request_total", dto.MetricType_COUNTER, []string{"model_name", "target_model_name"}},
	// dashboard: sum by (error_code, model_name, target_model_name).
	{"inference_objective_request_error_total", dto.MetricType_COUNTER, []string{"error_code", "model_name", "target_model_name"}},
	// dashboard: p50/p90/p95 by le.
	{"inference_objective_request_sizes", dto.MetricType_HISTOGRAM, nil},
	{"inference_objective_response_sizes", dto.MetricType_HISTOGRAM, nil},
	{"inference_objective_input_tokens", dto.MetricType_HISTOGRAM, nil},
	{"inference_objective_output_tokens", dto.MetricType_HISTOGRAM, nil},
	// dashboard: sum by (name); alerts HighInferencePoolAvgKVCacheUtilization
	// and HighInferencePoolAvgQueueSize print name.
	{"inference_pool_average_kv_cache_utilization", dto.MetricType_GAUGE, []string{"name"}},
	{"inference_pool_average_queue_size", dto.MetricType_GAUGE, []string{"name"}},
	// dashboard: sum by (name, model_server_pod, pod).
	{"inference_pool_per_pod_queue_size", dto.MetricType_GAUGE, []string{"name", "model_server_pod"}},
}

// TestGIEDashboardAndAlertMetrics runs epp, routes one request through its
// whole response (with usage), and checks its /metrics against gieQueried:
// each family exists with the type the queries need, and has a series that
// carries every listed label with a value.
func TestGIEDashboardAndAlertMetrics(t *testing.T) {
	a, _, _, _, _ := startEPP(t, 2, "--secure-serving=false")
	conn, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !fullRequest(t, conn) {
		if time.Now().After(deadline) {
			t.Fatal("no request routed within 10s")
		}
		time.Sleep(20 * time.Millisecond) // 503 until the first scrape
	}

	resp, err := http.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for _, q := range gieQueried {
		mf := families[q.name]
		if mf == nil {
			t.Errorf("%s: missing from /metrics", q.name)
			continue
		}
		if mf.GetType() != q.typ {
			t.Errorf("%s: type %v, want %v", q.name, mf.GetType(), q.typ)
		}
		if !hasSeriesWith(mf, q.labels) {
			t.Errorf("%s: no series with non-empty labels %v; series: %v", q.name, q.labels, mf.GetMetric())
		}
		if q.typ == dto.MetricType_HISTOGRAM && !observed(mf) {
			t.Errorf("%s: no observation after a whole request", q.name)
		}
	}
	for _, name := range []string{"inference_pool_average_kv_cache_utilization", "inference_pool_ready_pods", "inference_pool_per_pod_queue_size"} {
		for _, m := range families[name].GetMetric() {
			if v := labelOf(m, "name"); v != DefaultPoolName {
				t.Errorf("%s: name=%q, want the default pool name %q", name, v, DefaultPoolName)
			}
		}
	}
}

// fullRequest plays Envoy for one request and its response (usage
// included); false when epp answered with an error (not ready yet).
func fullRequest(t *testing.T, conn *grpc.ClientConn) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st := sendRequest(t, ctx, conn, `{"model":"m","prompt":"hello"}`)
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if r.GetImmediateResponse() != nil {
		return false
	}
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetEndOfStream() {
			break
		}
	}
	send := func(m *extprocv3.ProcessingRequest) {
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte("200")}}}}}})
	send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
		Body: []byte(`{"id":"x","usage":{"prompt_tokens":2,"completion_tokens":3}}`), EndOfStream: true}}})
	_ = st.CloseSend()
	return true
}

func labelOf(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// hasSeriesWith reports whether a series carries every label, non-empty.
func hasSeriesWith(mf *dto.MetricFamily, labels []string) bool {
next:
	for _, m := range mf.GetMetric() {
		for _, l := range labels {
			if labelOf(m, l) == "" {
				continue next
			}
		}
		return true
	}
	return false
}

func observed(mf *dto.MetricFamily) bool {
	for _, m := range mf.GetMetric() {
		if m.GetHistogram().GetSampleCount() > 0 {
			return true
		}
	}
	return false
}

// TestPoolMetricsLabels: the pool gauges carry the pool name given in
// PoolName; per-pod queues and scrape errors have one series per endpoint of
// the pool (errors counted for the failing one only).
func TestPoolMetricsLabels(t *testing.T) {
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, metricsPage, 3)
	}))
	defer good.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	defer bad.Close()
	goodHP, badHP := strings.TrimPrefix(good.URL, "http://"), strings.TrimPrefix(bad.URL, "http://")
	src, err := endpoints.ParseStatic(goodHP + "," + badHP)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := config.DefaultPlan()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	pm := newPoolMetrics(reg)
	pm.PoolName = "pool-a"
	sched := scheduler.New(plan)
	pool := endpoints.NewPool(sched, src, endpoints.Options{RefreshInterval: 10 * time.Millisecond, OnScrape: pm.onScrape,
		Logger: slog.New(slog.DiscardHandler)})
	defer pool.Close()
	pm.register(reg, pool, plan)

	type series struct {
		name   string
		labels map[string]string
		ok     func(float64) bool
	}
	want := []series{
		{"inference_pool_ready_pods", map[string]string{"name": "pool-a"}, func(v float64) bool { return v == 1 }},
		{"inference_pool_average_queue_size", map[string]string{"name": "pool-a"}, func(v float64) bool { return v == 3 }},
		{"inference_pool_average_kv_cache_utilization", map[string]string{"name": "pool-a"}, func(v float64) bool { return v == 0.25 }},
		{"inference_pool_per_pod_queue_size", map[string]string{"name": "pool-a", "model_server_pod": goodHP}, func(v float64) bool { return v == 3 }},
		{"inference_pool_per_pod_queue_size", map[string]string{"name": "pool-a", "model_server_pod": badHP}, func(v float64) bool { return v == 0 }},
		{"fastepp_endpoint_scrape_errors_total", map[string]string{"endpoint": badHP}, func(v float64) bool { return v >= 3 }},
		{"fastepp_endpoint_scrape_errors_total", map[string]string{"endpoint": goodHP}, func(v float64) bool { return v == 0 }},
		{"fastepp_endpoint_inflight_requests", map[string]string{"endpoint": goodHP}, func(v float64) bool { return v == 0 }},
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		missing := ""
		for _, w := range want {
			if !hasValue(mfs, w.name, w.labels, w.ok) {
				missing = fmt.Sprint(w.name, w.labels)
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s no series %s with the expected value", missing)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hasValue(mfs []*dto.MetricFamily, name string, labels map[string]string, ok func(float64) bool) bool {
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for k, v := range labels {
				if labelOf(m, k) != v {
					continue next
				}
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			return ok(v)
		}
	}
	return false
}
