package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func server(t *testing.T) (string, *atomic.Int64) {
	var n atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 3; i++ {
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n")
		}
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n")
	}))
	s.Listener.Close()
	s.Listener = l
	s.Start()
	t.Cleanup(s.Close)
	return s.URL, &n
}

func writeCfg(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "cfg.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunWritesResults(t *testing.T) {
	url, n := server(t)
	cfg := writeCfg(t, `
load: {type: poisson, stages: [{rate: 40, duration: 0.3}], seed: 2}
api: {type: chat}
server: {base_url: "`+url+`", model_name: m, ignore_eos: true}
data: {type: shared_prefix, shared_prefix: {num_groups: 2, num_prompts_per_group: 2, system_prompt_len: 50, question_len: 10, output_len: 3}}
slo: {ttft: 1s}
`)
	out := filepath.Join(t.TempDir(), "res")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"run", "-c", cfg, "--output", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	for _, f := range []string{"summary.json", "requests.csv", "report.html"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	if n.Load() == 0 || !strings.Contains(stdout.String(), "ttft p50") || !strings.Contains(stdout.String(), "results in") {
		t.Errorf("server saw %d requests; stdout:\n%s", n.Load(), stdout.String())
	}
}

func TestBadConfigFailsBeforeAnyRequest(t *testing.T) {
	url, n := server(t)
	cases := []struct{ body, want string }{
		{"load: {stages: [{rate: 5, duraton: 1}]}\nserver: {base_url: \"" + url + "\", model_name: m}\n", `unknown field "duraton"`},
		{"load: {stages: [{rate: -5, duration: 1}]}\nserver: {base_url: \"" + url + "\", model_name: m}\n", "load.stages[0].rate"},
		{"load: {stages: [{rate: 5, duration: 1}]}\nserver: {base_url: \"" + url + "\", model_name: m}\ndata: {type: trace, trace: {file: /nonexistent.jsonl}}\n", "data.trace.file"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := run([]string{"run", "-c", writeCfg(t, tc.body), "--output", t.TempDir()}, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("exit %d, stderr %q; want exit 1 naming %q", code, stderr.String(), tc.want)
		}
	}
	if n.Load() != 0 {
		t.Errorf("server saw %d requests from bad configs, want 0", n.Load())
	}
}

func TestHelpAndUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "loadgen sweep") {
		t.Errorf("--help: exit %d, %q", code, stdout.String())
	}
	stdout.Reset()
	if code := run([]string{"explode"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown command "explode"`) {
		t.Errorf("unknown command: exit %d, %q", code, stderr.String())
	}
	if code := run([]string{"run"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "-c: expected a config file") {
		t.Errorf("run without -c: exit %d, %q", code, stderr.String())
	}
}

func TestPlanFromSweepFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "sweep.json"), []byte(`{"replicas": 2, "max_rate_meeting_slo": 20, "probes": []}`), 0o644)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"plan", "--target-rate", "45", "--margin", "0.1", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "replicas: 5 ") {
		t.Errorf("plan output %q, want 5 replicas (49.5 req/s at 10 per replica)", stdout.String())
	}
}

func TestValidate(t *testing.T) {
	var stdout, stderr bytes.Buffer
	for _, f := range []string{"shared-prefix.yaml", "random-constant.yaml", "multi-turn.yaml", "concurrent.yaml"} {
		stdout.Reset()
		if code := run([]string{"validate", "-c", filepath.Join("..", "..", "configs", "loadgen", f)}, &stdout, &stderr); code != 0 {
			t.Errorf("%s: exit %d: %s", f, code, stderr.String())
		}
	}
}

func TestSweepThenPlan(t *testing.T) {
	url, _ := server(t)
	cfg := writeCfg(t, `
load: {type: constant, stages: [{rate: 1, duration: 1}]}
server: {base_url: "`+url+`", model_name: m}
data: {type: random, input_distribution: {mean: 10}, output_distribution: {mean: 3}}
slo: {ttft: 1s}
`)
	out := filepath.Join(t.TempDir(), "sweep")
	var stdout, stderr bytes.Buffer
	code := run([]string{"sweep", "-c", cfg, "--output", out, "--min-rate", "10", "--max-rate", "40", "--stage-duration", "300ms", "--replicas", "2"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("sweep exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "max rate meeting the SLO: 40.00 req/s") {
		t.Errorf("sweep output:\n%s", stdout.String())
	}
	if b, err := os.ReadFile(filepath.Join(out, "sweep.html")); err != nil || !strings.Contains(string(b), "<svg") || strings.Contains(string(b), "<script") {
		t.Errorf("sweep.html missing or not self-contained: %v", err)
	}
	stdout.Reset()
	if code := run([]string{"plan", "--target-rate", "100", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("plan exit %d: %s", code, stderr.String())
	}
	// 40 req/s on 2 replicas = 20 per replica; 100 × 1.2 / 20 = 6.
	if !strings.Contains(stdout.String(), "replicas: 6 ") {
		t.Errorf("plan output:\n%s", stdout.String())
	}
}
