package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestSummaryGolden pins summary.json's schema and arithmetic with fixed
// inputs: 3 completed requests, one 503, in one 10 req/s stage of 1 s.
func TestSummaryGolden(t *testing.T) {
	cfg := mustParse(t, "load: {type: constant, stages: [{rate: 10, duration: 1}]}\n"+srvLine+
		"slo: {ttft: 100ms}\nreport: {percentiles: [50, 90, 95, 99, 99.9]}\n")
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := NewRecorder(1, cfg.SLO, start)
	ms := time.Millisecond
	for i, r := range []Result{
		{TTFT: 50 * ms, E2E: 250 * ms, ITLs: []time.Duration{50 * ms, 50 * ms, 50 * ms, 50 * ms}, InputTokens: 100, OutputTokens: 5, SchedDelay: 100 * time.Microsecond},
		{TTFT: 80 * ms, E2E: 480 * ms, ITLs: []time.Duration{100 * ms, 100 * ms, 100 * ms, 100 * ms}, InputTokens: 100, OutputTokens: 5, SchedDelay: 200 * time.Microsecond},
		{TTFT: 150 * ms, E2E: 350 * ms, ITLs: []time.Duration{100 * ms, 100 * ms}, InputTokens: 100, OutputTokens: 3, Estimated: true, SchedDelay: 300 * time.Microsecond},
		{E2E: 5 * ms, Status: 503, ErrKind: "http_503", SchedDelay: 400 * time.Microsecond},
	} {
		r := r
		r.Sent = start.Add(time.Duration(i) * 100 * ms)
		rec.Planned(0)
		rec.Sent(0, r.Sent)
		rec.Record(&r)
	}
	sum := buildSummary(cfg, rec, []stageMeta{{start: start, planned: time.Second, requested: 10}})
	var got bytes.Buffer
	if err := sum.WriteJSON(&got); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "summary.golden.json")
	if *update {
		os.WriteFile(golden, got.Bytes(), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./loadgen -run Golden -update)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("summary.json differs from %s (run with -update after checking):\n%s", golden, got.String())
	}
}

// TestRunWritesOutputs runs two stages against the scripted server and
// writes summary.json, requests.csv and report.html. Set
// LOADGEN_SAMPLE_DIR=/some/dir to keep them (a sample report).
func TestRunWritesOutputs(t *testing.T) {
	srv, _ := newScriptedServer(t, script{ttft: 20 * time.Millisecond, itl: 5 * time.Millisecond, failEvery: 9})
	cfg := testConfig(srv.URL, "slo: {ttft: 40ms, tpot: 10ms}")
	cfg.Load.Type = LoadPoisson
	cfg.Load.Stages = []Stage{{Rate: 20, Duration: Duration(700 * time.Millisecond)}, {Rate: 60, Duration: Duration(700 * time.Millisecond)}}
	dir := os.Getenv("LOADGEN_SAMPLE_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	csvF, err := os.Create(filepath.Join(dir, "requests.csv"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), cfg, Options{CSV: csvF})
	csvF.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := sum.WriteFile(dir); err != nil {
		t.Fatal(err)
	}
	if err := sum.WriteReportFile(dir); err != nil {
		t.Fatal(err)
	}
	var tbl bytes.Buffer
	sum.Table(&tbl)
	t.Logf("summary table:\n%s", tbl.String())

	var m map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	mustHave := func(obj map[string]any, where string) {
		for _, k := range []string{"requests.completed", "requests.failed", "rate.requested", "rate.achieved",
			"output_tokens_per_second", "goodput_requests_per_second"} {
			parts := strings.Split(k, ".")
			var v any = obj
			for _, p := range parts {
				v = v.(map[string]any)[p]
			}
			if v == nil {
				t.Errorf("%s: summary.json lacks %s", where, k)
			}
		}
		for _, k := range []string{"ttft_seconds", "tpot_seconds", "itl_seconds", "e2e_seconds", "schedule_delay_seconds"} {
			lat, ok := obj[k].(map[string]any)
			if !ok {
				t.Errorf("%s: summary.json lacks %s", where, k)
				continue
			}
			for _, p := range []string{"mean", "p50", "p90", "p95", "p99"} {
				if _, ok := lat[p]; !ok {
					t.Errorf("%s: %s lacks %s", where, k, p)
				}
			}
		}
	}
	mustHave(m, "top")
	stages, _ := m["stages"].([]any)
	if len(stages) != 2 {
		t.Fatalf("summary.json has %d stages, want 2", len(stages))
	}
	for i, s := range stages {
		mustHave(s.(map[string]any), "stage "+string(rune('0'+i)))
	}
	if sum.Errors["http_503"] == 0 {
		t.Errorf("want some http_503 errors, got %v", sum.Errors)
	}
	if sum.GoodRequests > sum.Requests.Completed {
		t.Errorf("good %d of %d completed", sum.GoodRequests, sum.Requests.Completed)
	}
	html, _ := os.ReadFile(filepath.Join(dir, "report.html"))
	h := string(html)
	if strings.Count(h, "<svg") < 4 {
		t.Errorf("report.html has %d charts, want >= 4", strings.Count(h, "<svg"))
	}
	for _, bad := range []string{"<script", "<link", "@import", "src="} {
		if strings.Contains(h, bad) {
			t.Errorf("report.html contains %q: it must open offline with no remote resources", bad)
		}
	}
	for _, want := range []string{"time to first token", "http_503", "Latency by percentile"} {
		if !strings.Contains(h, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	csvB, _ := os.ReadFile(filepath.Join(dir, "requests.csv"))
	if lines := strings.Count(string(csvB), "\n"); int64(lines) != sum.Requests.Sent+1 {
		t.Errorf("requests.csv has %d lines, want %d", lines, sum.Requests.Sent+1)
	}
}
