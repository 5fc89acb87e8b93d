package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDataLayerConfigReachesScraper: the config's metrics-data-source
// (https, a custom path, insecureSkipVerify) and core-metrics-extractor
// settings decide how epp scrapes; here the only server answers https on
// /engine/metrics with a self-signed certificate and sglang's names, so the
// endpoint turns fresh only if every setting was honoured.
func TestDataLayerConfigReachesScraper(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/engine/metrics", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "sglang:num_queue_reqs 1\nsglang:num_running_reqs 2\nsglang:token_usage 0.5\n")
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	cfg := `plugins:
- type: metrics-data-source
  parameters: {scheme: https, path: /engine/metrics, insecureSkipVerify: true}
- type: core-metrics-extractor
  parameters: {defaultEngine: sglang}
- type: queue-scorer
- type: prefix-cache-scorer
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{pluginRef: core-metrics-extractor}]
`
	a, cancel, done, _ := launch(t, []string{
		"--endpoints", strings.TrimPrefix(srv.URL, "https://"), "--bind-address", "127.0.0.1",
		"--grpc-port", "0", "--grpc-health-port", "0", "--metrics-port", "0", "--secure-serving=false",
		"--refresh-metrics-interval", "20ms", "--config-text", cfg,
	})
	want := []string{
		`inference_pool_ready_pods{name="default"} 1`,
		`inference_pool_average_queue_size{name="default"} 1`,
		// Plugin statistics, found through scheduler.StatsReporter.
		`inference_extension_prefix_indexer_size{plugin="prefix-cache-scorer"} 0`,
		`fastepp_prefix_indexer_bytes{plugin="prefix-cache-scorer"}`,
	}
	deadline := time.Now().Add(5 * time.Second)
	var body []byte
	for {
		resp, err := http.Get("http://" + a.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		missing := ""
		for _, w := range want {
			if !bytes.Contains(body, []byte(w)) {
				missing = w
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q after 5s:\n%s", missing, grepLines(body, "inference_|fastepp_prefix"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done.c
	if done.code != 0 {
		t.Fatalf("exit %d", done.code)
	}
}

// grepLines returns the non-comment lines of b that contain any of the
// |-separated words.
func grepLines(b []byte, words string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		for _, w := range strings.Split(words, "|") {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
