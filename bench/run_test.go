package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunTiny runs the bench end to end on a tiny scenario (two servers,
// two 1-second stages, two strategies) and checks the outputs.
func TestRunTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	sc, err := ParseScenario("tiny", "test", []byte(tinyScenario), ".")
	if err != nil {
		t.Fatal(err)
	}
	var prog bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Run(ctx, sc, Options{Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 2 || len(res.Runs[0]) != 1 || len(res.Runs[1]) != 1 {
		t.Fatalf("runs %v", res.Runs)
	}
	dir := t.TempDir()
	if err := res.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sum := res.Summarize()
	res.WriteTable(&out, sum)

	// summary.json has exactly the names other tooling relies on.
	b, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 2 || raw["scenario"] != "tiny" {
		t.Errorf("summary.json top level %v", keys(raw))
	}
	strats := raw["strategies"].([]any)
	if len(strats) != 2 {
		t.Fatalf("%d strategies", len(strats))
	}
	want := "e2e_seconds errors goodput_requests_per_second name output_tokens_per_second per_endpoint_requests prefix_cache_hit_ratio stages tpot_seconds ttft_seconds"
	for _, s := range strats {
		m := s.(map[string]any)
		if got := strings.Join(keys(m), " "); got != want {
			t.Errorf("strategy keys %q, want %q", got, want)
		}
		for _, k := range []string{"ttft_seconds", "tpot_seconds", "e2e_seconds"} {
			if got := strings.Join(keys(m[k].(map[string]any)), " "); got != "p50 p90 p99" {
				t.Errorf("%s keys %q", k, got)
			}
		}
		if len(m["stages"].([]any)) != 2 {
			t.Errorf("%v: %d stages, want 2", m["name"], len(m["stages"].([]any)))
		}
	}
	for i, s := range sum.Strategies {
		var n int64
		for _, v := range s.PerEndpointRequests {
			n += v
		}
		sent := res.Runs[i][0].Loadgen.Requests.Sent
		if s.Errors != 0 || n != sent || n == 0 {
			t.Errorf("%s: %d errors, servers finished %d requests, loadgen sent %d", s.Name, s.Errors, n, sent)
		}
		if s.TTFT.P50 <= 0 || s.OutputTokensPerSecond <= 0 || s.PrefixCacheHitRatio <= 0 {
			t.Errorf("%s: %+v", s.Name, s)
		}
		if len(s.PerEndpointRequests) != 2 || s.PerEndpointRequests["sim-0"] == 0 {
			t.Errorf("%s: per endpoint %v", s.Name, s.PerEndpointRequests)
		}
	}
	html, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Chart.js v4", `id="ttft90"`, `id="bal"`, `"name":"epp"`, "tiny"} {
		if !bytes.Contains(html, []byte(s)) {
			t.Errorf("report.html lacks %q", s)
		}
	}
	if bytes.Contains(html, []byte("http://")) || bytes.Contains(html, []byte("https://")) {
		// Chart.js's banner names its site in a comment; nothing is loaded from anywhere.
		for _, line := range strings.Split(string(html), "\n") {
			if (strings.Contains(line, "src=\"http") || strings.Contains(line, "href=\"http")) && !strings.Contains(line, "www.chartjs.org") {
				t.Errorf("report loads from the network: %q", line)
			}
		}
	}
	table := out.String()
	for _, s := range []string{"scenario tiny", "round-robin", "TTFT p90", "top stage (12 req/s), epp against:"} {
		if !strings.Contains(table, s) {
			t.Errorf("table lacks %q:\n%s", s, table)
		}
	}
	for _, s := range []string{"[1/2] round-robin", "[2/2] epp", "/2 (", "elapsed", "left"} {
		if !strings.Contains(prog.String(), s) {
			t.Errorf("progress lacks %q:\n%s", s, prog.String())
		}
	}
}

// TestExternalNeedsFixedPorts: an external picker needs to know the fleet's
// addresses before the run.
func TestExternalNeedsFixedPorts(t *testing.T) {
	sc, err := ParseScenario("tiny", "test", []byte(tinyScenario), ".")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := ParseStrategy("external=127.0.0.1:1")
	if _, err := StartStack(context.Background(), sc, st, StackOptions{}); err == nil || !strings.Contains(err.Error(), "base_port") {
		t.Errorf("external without base_port: %v", err)
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}
