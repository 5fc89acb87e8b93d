package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const simCfg = `
load: {type: poisson, stages: [{rate: 1, duration: 20}], seed: 3}
api: {type: chat}
server: {base_url: "http://127.0.0.1:1", model_name: meta-llama/Llama-3.1-8B-Instruct}
data: {type: shared_prefix, shared_prefix: {num_groups: 8, num_prompts_per_group: 4, system_prompt_len: 1000, question_len: 200, output_len: 150}}
slo: {ttft: 1s, tpot: 50ms, percentile: 90}
`

// TestPlanSimulateJSON: `plan --simulate --format json` prints the plan in
// the names other tooling reads, and writes the same into --output.
func TestPlanSimulateJSON(t *testing.T) {
	cfg := writeCfg(t, simCfg)
	out := filepath.Join(t.TempDir(), "plan")
	for _, st := range []string{"round-robin", "least-request", "epp"} {
		var stdout, stderr bytes.Buffer
		code := run([]string{"plan", "--simulate", "-c", cfg, "--target-rate", "60", "--strategy", st, "--format", "json", "--output", out}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", st, code, stderr.String())
		}
		var p struct {
			Strategy   string  `json:"strategy"`
			Replicas   int     `json:"replicas"`
			TargetRate float64 `json:"target_rate"`
			Curve      []struct {
				Replicas int                `json:"replicas"`
				TTFT     map[string]float64 `json:"ttft_seconds"`
				TPOT     map[string]float64 `json:"tpot_seconds"`
				Goodput  *float64           `json:"goodput_ratio"`
				Tokens   *float64           `json:"output_tokens_per_second"`
			} `json:"curve"`
		}
		dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("%s: stdout is not the plan JSON: %v\n%s", st, err, stdout.String())
		}
		if p.Strategy != st || p.TargetRate != 60 || p.Replicas < 1 || len(p.Curve) == 0 {
			t.Errorf("%s: expected a plan for %s at 60 req/s, found %+v", st, st, p)
		}
		for _, pt := range p.Curve {
			if len(pt.TTFT) != 2 || len(pt.TPOT) != 2 || pt.Goodput == nil || pt.Tokens == nil {
				t.Errorf("%s: curve point: expected p50/p90, goodput and tokens, found %+v", st, pt)
			}
		}
		b, err := os.ReadFile(filepath.Join(out, "plan.json"))
		if err != nil || !bytes.Equal(b, stdout.Bytes()) {
			t.Errorf("%s: plan.json: expected the printed JSON, found %q (%v)", st, b, err)
		}
	}
}

func TestPlanSimulateText(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"plan", "--simulate", "-c", writeCfg(t, simCfg), "--target-rate", "60", "--strategy", "round-robin"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"round-robin routing", "TTFT p90", "replicas: ", "under p90 TTFT ≤ 1s, p90 TPOT ≤ 50ms"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("expected %q in the output, found:\n%s", want, stdout.String())
		}
	}
}

func TestPlanSimulateErrors(t *testing.T) {
	cfg := writeCfg(t, simCfg)
	noSLO := writeCfg(t, strings.Replace(simCfg, "slo: {ttft: 1s, tpot: 50ms, percentile: 90}", "", 1))
	concurrent := writeCfg(t, strings.Replace(simCfg, "load: {type: poisson, stages: [{rate: 1, duration: 20}], seed: 3}",
		"load: {type: concurrent, stages: [{concurrency: 2, num_requests: 10}]}", 1))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no config", []string{"--target-rate", "1"}, "-c: expected the workload's config file"},
		{"no rate", []string{"-c", cfg}, "--target-rate: expected a rate > 0"},
		{"bad strategy", []string{"-c", cfg, "--target-rate", "1", "--strategy", "random"}, `--strategy: expected round-robin, least-request or epp, found "random"`},
		{"epp config with round-robin", []string{"-c", cfg, "--target-rate", "1", "--strategy", "round-robin", "--epp-config", cfg}, "--epp-config: expected only with --strategy epp"},
		{"bad gpu", []string{"-c", cfg, "--target-rate", "1", "--gpu", "h999"}, "--gpu"},
		{"bad format", []string{"-c", cfg, "--target-rate", "1", "--format", "xml"}, `--format: expected text or json, found "xml"`},
		{"no slo", []string{"-c", noSLO, "--target-rate", "1"}, "slo: expected ttft and/or tpot"},
		{"closed loop", []string{"-c", concurrent, "--target-rate", "1"}, `load.type: expected constant or poisson for a plan at a target rate, found "concurrent"`},
		{"sweep files too", []string{"-c", cfg, "--target-rate", "1", "x.json"}, "expected no sweep files"},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"plan", "--simulate"}, tc.args...), &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: expected exit 1 with %q, found exit %d: %s", tc.name, tc.want, code, stderr.String())
		}
	}
}

// TestRunEveryRequestFailed: a run against nothing exits 1 with a summary line.
func TestRunEveryRequestFailed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	cfg := writeCfg(t, `
load: {type: constant, stages: [{rate: 20, duration: 0.2}]}
server: {base_url: "`+dead+`", model_name: m}
data: {type: random, input_distribution: {mean: 10}, output_distribution: {mean: 3}}
`)
	var stdout, stderr bytes.Buffer
	code := run([]string{"run", "-c", cfg, "--output", t.TempDir(), "--quiet"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "every request failed: 4 sent, 0 completed") || !strings.Contains(stderr.String(), dead) {
		t.Errorf("expected exit 1 naming the failures and %s, found exit %d: %s", dead, code, stderr.String())
	}
}

// TestBaseURLAndModelOverrides: --base-url and --model replace the config's.
func TestBaseURLAndModelOverrides(t *testing.T) {
	url, n := server(t)
	cfg := writeCfg(t, `
load: {type: constant, stages: [{rate: 20, duration: 0.2}]}
server: {base_url: "http://127.0.0.1:1", model_name: m}
data: {type: random, input_distribution: {mean: 10}, output_distribution: {mean: 3}}
`)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"run", "-c", cfg, "--output", t.TempDir(), "--quiet", "--base-url", url, "--model", "other"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if n.Load() != 4 {
		t.Errorf("server at --base-url: expected 4 requests, found %d", n.Load())
	}
	stderr.Reset()
	if code := run([]string{"run", "-c", cfg, "--base-url", "ftp://x"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "server.base_url") {
		t.Errorf("bad --base-url: expected exit 1 naming server.base_url, found %d: %s", code, stderr.String())
	}
}

func TestSweepStatesFleetSize(t *testing.T) {
	url, _ := server(t)
	cfg := writeCfg(t, `
load: {type: constant, stages: [{rate: 1, duration: 1}]}
server: {base_url: "`+url+`", model_name: m}
data: {type: random, input_distribution: {mean: 10}, output_distribution: {mean: 3}}
slo: {ttft: 1s}
`)
	tests := []struct {
		args []string
		want string
	}{
		{nil, "fleet: 1 replica(s) behind " + url + " (the default: pass --replicas N"},
		{[]string{"--replicas", "4"}, "fleet: 4 replica(s) behind " + url + " (set with --replicas"},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		args := append([]string{"sweep", "-c", cfg, "--output", t.TempDir(), "--min-rate", "10", "--max-rate", "10", "--stage-duration", "200ms"}, tc.args...)
		if code := run(args, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		if !strings.Contains(stdout.String(), tc.want) {
			t.Errorf("expected %q, found:\n%s", tc.want, stdout.String())
		}
		if !strings.Contains(stderr.String(), "no probe failed the SLO") {
			t.Errorf("expected the lower-bound warning, found %q", stderr.String())
		}
	}
}
