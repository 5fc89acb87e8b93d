package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestHelpExplainsEveryFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb, nil); code != 0 {
		t.Fatalf("--help exit %d: %s", code, errb.String())
	}
	for _, name := range append(fleetFlags, "base-port", "bind-address", "config", "profiles", "seed", "explain", "list-profiles") {
		if !strings.Contains(out.String(), "-"+name+" ") && !strings.Contains(out.String(), "-"+name+"\n") {
			t.Errorf("--help does not explain --%s", name)
		}
	}
	for _, route := range []string{"/v1/completions", "/metrics", "/gpu/metrics", "/admin/faults", "/admin/crash", "simulator bench latency", "simulator bench serve"} {
		if !strings.Contains(out.String(), route) {
			t.Errorf("--help does not mention %s", route)
		}
	}
}

func TestBadInvocations(t *testing.T) {
	dir := t.TempDir()
	badFleet := filepath.Join(dir, "fleet.yaml")
	if err := os.WriteFile(badFleet, []byte("servers:\n  - count: 2\n    gpu: mi301x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--max-num-seqs", "lots"}, 2, `invalid value "lots" for flag -max-num-seqs`},
		{[]string{"--servers", "0"}, 2, "--servers: expected 1..1024, found 0"},
		{[]string{"--base-port", "65535", "--servers", "2"}, 2, "--base-port: expected 0..65534 for 2 servers, found 65535"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--gpu", "a10"}, 1, `unknown GPU profile "a10": expected one of a100, h100, h200, mi300x, mi325x, mi355x`},
		{[]string{"--model-profile", "llama-3.1-70b", "--gpu", "h100"}, 1, "model does not fit"},
		{[]string{"--max-num-seqs", "-1"}, 1, "max_num_seqs (--max-num-seqs): expected ≥ 0 (0: vLLM's default for the GPU), found -1"},
		{[]string{"--bind-address", "not an/address"}, 2, `--bind-address: expected an IP address or host name, found "not an/address"`},
		{[]string{"--num-gpu-blocks", "2000000000"}, 1, "KV cache of 2000000000 blocks: expected at most 16777216"},
		{[]string{"--tensor-parallel-size", "1000"}, 1, "tensor parallel size: expected 1..64, found 1000"},
		{[]string{"--error-rate", "1.5"}, 1, "faults.error_rate: expected a fraction in [0, 1], found 1.5"},
		{[]string{"--config", badFleet, "--gpu", "h100"}, 2, "--gpu cannot be combined with --config"},
		{[]string{"--config", badFleet}, 1, `server 0: unknown GPU profile "mi301x"`},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, 1, "fleet config: open"},
		{[]string{"--profiles", badFleet}, 1, "field servers not found"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb, func() { t.Errorf("%v: started serving", c.args) })
		if code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d containing %q", c.args, code, errb.String(), c.code, c.msg)
		}
	}
}

func TestExplain(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--explain", "--gpu", "mi300x"}, &out, &errb, nil); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"llama-3.1-8b on mi300x", "72832 blocks", "TTFT 1k prompt", "TTFT 8k prompt", "batch 64"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--explain output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestServesAndPrintsAddresses(t *testing.T) {
	var out, errb bytes.Buffer
	served := 0
	code := run([]string{"--servers", "3", "--base-port", "0", "--gpu", "h200", "--model", "m"}, &out, &errb, func() {
		addrs := regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`).FindAllStringSubmatch(out.String(), -1)
		if len(addrs) != 3 {
			t.Fatalf("printed addresses: %q", out.String())
		}
		for _, a := range addrs {
			resp, err := http.Post(a[1]+"/v1/completions", "application/json", strings.NewReader(`{"model":"m","prompt":"hi","max_tokens":2}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == 200 {
				served++
			}
		}
	})
	if code != 0 || served != 3 {
		t.Fatalf("exit %d, %d servers answered; stderr %s", code, served, errb.String())
	}
}

func TestSampleFleetConfigStarts(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"--config", "../../configs/simulator/fleet.yaml", "--base-port", "0"}, &out, &errb, func() {})
	if code != 0 || strings.Count(out.String(), "listening on http://127.0.0.1:") != 8 || !strings.Contains(out.String(), "gpu=h100") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out.String(), errb.String())
	}
}

func TestBindAddress(t *testing.T) {
	var out, errb bytes.Buffer
	answered := false
	code := run([]string{"--bind-address", "0.0.0.0", "--base-port", "0", "--model", "m"}, &out, &errb, func() {
		m := regexp.MustCompile(`listening on http://(\S+):(\d+)`).FindStringSubmatch(out.String())
		if m == nil || m[1] == "127.0.0.1" {
			t.Fatalf("printed address: %q; want one on every interface", out.String())
		}
		resp, err := http.Get("http://127.0.0.1:" + m[2] + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		answered = resp.StatusCode == 200
	})
	if code != 0 || !answered {
		t.Fatalf("exit %d, answered %v; stderr %s", code, answered, errb.String())
	}
}
