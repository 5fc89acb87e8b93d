package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBenchHelp(t *testing.T) {
	cases := []struct {
		args  []string
		code  int
		wants []string
	}{
		{[]string{"bench", "--help"}, 0, []string{"simulator bench latency", "simulator bench serve", "virtual time"}},
		{[]string{"bench"}, 2, []string{"simulator bench latency"}},
		{[]string{"bench", "latency", "--help"}, 0, []string{"-input-len", "-output-len", "-batch-size", "-num-iters", "-num-iters-warmup", "-output-json",
			"-gpu", "-model-profile", "-tensor-parallel-size", "-format", "avg_latency"}},
		{[]string{"bench", "serve", "--help"}, 0, []string{"-dataset-name", "-random-input-len", "-random-output-len", "-num-prompts",
			"-max-concurrency", "-request-rate", "-burstiness", "-save-result", "-gpu", "-model-profile", "-tensor-parallel-size", "request_throughput"}},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb, nil); code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %s)", c.args, code, c.code, errb.String())
		}
		for _, w := range c.wants {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: output lacks %q", c.args, w)
			}
		}
	}
}

func TestBenchBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"bench", "throughput"}, 2, `bench: expected latency or serve, found "throughput"`},
		{[]string{"bench", "serve", "--dataset-name", "sharegpt"}, 2, `--dataset-name: expected random, found "sharegpt"`},
		{[]string{"bench", "latency", "--format", "xml"}, 2, `--format: expected text or json, found "xml"`},
		{[]string{"bench", "latency", "--batch-size", "0"}, 1, "--batch-size: expected ≥ 1, found 0"},
		{[]string{"bench", "latency", "--gpu", "tpu"}, 2, `unknown GPU profile "tpu"`},
		{[]string{"bench", "latency", "--model", "no/such-model"}, 2, `unknown model profile "no/such-model"`},
		{[]string{"bench", "serve", "--request-rate", "0"}, 1, "--request-rate: expected > 0 requests/s or inf, found 0"},
		{[]string{"bench", "serve", "--random-range-ratio", "1"}, 1, "--random-range-ratio: expected a number in [0, 1), found 1"},
		{[]string{"bench", "serve", "--max-concurrency", "-2"}, 1, "--max-concurrency: expected ≥ 0, found -2"},
		{[]string{"bench", "serve", "--num-prompts", "x"}, 2, `invalid value "x" for flag -num-prompts`},
		{[]string{"bench", "serve", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"bench", "latency", "--gpu", "h100", "--model-profile", "llama-3.1-70b"}, 1, "model does not fit"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb, nil); code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d containing %q", c.args, code, errb.String(), c.code, c.msg)
		}
	}
}

// TestBenchJSONNames checks both commands print vLLM's JSON field names, so
// scripts written for vLLM's output read the simulator's.
func TestBenchJSONNames(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		file string
		keys []string
	}{
		{[]string{"bench", "latency", "--gpu", "h100", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--num-iters", "3", "--num-iters-warmup", "1",
			"--format", "json", "--output-json", filepath.Join(dir, "latency.json")}, "latency.json",
			[]string{"avg_latency", "latencies", "percentiles"}},
		{[]string{"bench", "serve", "--gpu", "mi300x", "--dataset-name", "random", "--random-input-len", "256", "--random-output-len", "16",
			"--num-prompts", "50", "--request-rate", "inf", "--max-concurrency", "8", "--format", "json",
			"--save-result", "--result-dir", dir, "--result-filename", "serve.json"}, "serve.json",
			[]string{"mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms",
				"median_itl_ms", "p99_itl_ms", "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms", "request_throughput", "output_throughput",
				"total_token_throughput", "completed", "duration", "total_input_tokens", "total_output_tokens"}},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb, nil); code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args[1], code, errb.String())
		}
		saved, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		for _, text := range [][]byte{out.Bytes(), saved} {
			var m map[string]any
			if err := json.Unmarshal(text, &m); err != nil {
				t.Fatalf("%s: not JSON: %v\n%s", c.args[1], err, text)
			}
			for _, k := range c.keys {
				v, ok := m[k]
				if !ok {
					t.Errorf("%s: JSON lacks %q", c.args[1], k)
				}
				if f, isNum := v.(float64); isNum && !(f > 0) {
					t.Errorf("%s: %s = %v, want > 0", c.args[1], k, f)
				}
			}
		}
	}
}

func TestBenchText(t *testing.T) {
	cases := []struct {
		args  []string
		wants []string
	}{
		{[]string{"bench", "latency", "--num-iters", "2", "--num-iters-warmup", "0"}, []string{"Avg latency:", "50% percentile latency:", "99% percentile latency:"}},
		{[]string{"bench", "serve", "--num-prompts", "20", "--random-input-len", "128", "--random-output-len", "8", "--request-rate", "5"},
			[]string{"Serving Benchmark Result", "Successful requests:                     20", "Mean TTFT (ms):", "P99 TPOT (ms):", "Median ITL (ms):", "Mean E2EL (ms):"}},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb, nil); code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, errb.String())
		}
		for _, w := range c.wants {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: output lacks %q:\n%s", c.args[1], w, out.String())
			}
		}
	}
}
