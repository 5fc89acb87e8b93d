package loadgen

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestInterruptedSweepKeepsProbes: a sweep canceled during its third probe
// records the two probes it measured (and says it was interrupted) instead
// of max_rate_meeting_slo 0.
func TestInterruptedSweepKeepsProbes(t *testing.T) {
	url := newCapacityServer(t, 8, 2*time.Millisecond, 2*time.Millisecond)
	cfg := testConfig(url, "slo: {ttft: 500ms}\nsweep: {min_rate: 10, max_rate: 1000, stage_duration: 300ms, max_probes: 6}")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	probes := 0
	res, err := Sweep(ctx, cfg, SweepOptions{Window: 100 * time.Millisecond, OnProbe: func(p Probe) {
		if probes++; probes == 2 {
			go func() { time.Sleep(100 * time.Millisecond); cancel() }()
		}
	}})
	if err == nil {
		t.Fatal("expected the sweep to report the cancellation, found no error")
	}
	if res == nil || len(res.Probes) != 2 {
		t.Fatalf("probes: expected the 2 completed, found %+v", res)
	}
	if res.MaxRateMeetingSLO != 20 || res.Interrupted == "" {
		t.Errorf("expected max_rate_meeting_slo 20 (the second probe) and interrupted set, found %g and %q", res.MaxRateMeetingSLO, res.Interrupted)
	}
	if res.Replicas != 1 {
		t.Errorf("replicas: expected the explicit default 1, found %d", res.Replicas)
	}
	p, err := MakePlan([]*SweepResult{res}, 10, 0)
	if err != nil {
		t.Fatalf("plan from an interrupted sweep: %v", err)
	}
	if len(p.Warnings) != 2 {
		t.Errorf("warnings: expected 'no probe failed' and 'interrupted', found %q", p.Warnings)
	}
}

func TestMakePlanWarnings(t *testing.T) {
	tests := []struct {
		name  string
		sweep SweepResult
		want  []string
	}{
		{"a probe failed", SweepResult{Replicas: 4, MaxRateMeetingSLO: 40, FirstRateFailingSLO: 50}, nil},
		{"no probe failed", SweepResult{Replicas: 4, MaxRateMeetingSLO: 40}, []string{"no probe failing the SLO", "lower bound"}},
		{"interrupted", SweepResult{Replicas: 4, MaxRateMeetingSLO: 40, FirstRateFailingSLO: 50, Interrupted: "context canceled"}, []string{"interrupted"}},
	}
	for _, tc := range tests {
		p, err := MakePlan([]*SweepResult{&tc.sweep}, 20, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(p.Warnings, "; ")
		if len(tc.want) == 0 && got != "" {
			t.Errorf("%s: expected no warning, found %q", tc.name, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: expected a warning with %q, found %q", tc.name, w, got)
			}
		}
		if !strings.Contains(p.Basis, "fleet of 4 replica(s)") {
			t.Errorf("%s: basis: expected the fleet size, found %q", tc.name, p.Basis)
		}
	}
}

func TestSLOPercentile(t *testing.T) {
	tests := []struct {
		slo            string
		wantAttainment float64
		wantErr        string
	}{
		{"slo: {ttft: 1s, tpot: 50ms, percentile: 90}", 0.9, ""},
		{"slo: {ttft: 1s, percentile: 99}", 0.99, ""},
		{"slo: {ttft: 1s, percentile: 95, attainment: 0.5}", 0.5, ""},
		{"slo: {ttft: 1s}", 0.9, ""},
		{"slo: {ttft: 1s, percentile: 100}", 0, "slo.percentile: expected a percentile in (0, 100)"},
		{"slo: {ttft: 1s, percentile: -1}", 0, "slo.percentile"},
	}
	for _, tc := range tests {
		c, err := ParseConfig([]byte("load: {stages: [{rate: 1, duration: 1}]}\n" + srvLine + tc.slo))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: expected an error with %q, found %v", tc.slo, tc.wantErr, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.slo, err)
			continue
		}
		if c.SLO.Attainment != tc.wantAttainment {
			t.Errorf("%s: attainment: expected %g, found %g", tc.slo, tc.wantAttainment, c.SLO.Attainment)
		}
	}
}

func TestLoadBounds(t *testing.T) {
	tests := []struct {
		load    string
		wantErr string
		timeout time.Duration
	}{
		{"load: {stages: [{rate: 1, duration: 1}]}", "", DefaultRequestTimeout},
		{"load: {stages: [{rate: 1, duration: 1}], request_timeout: 30s}", "", 30 * time.Second},
		{"load: {type: concurrent, stages: [{concurrency: 100000, num_requests: 1}]}", "", DefaultRequestTimeout},
		{"load: {type: concurrent, stages: [{concurrency: 100001, num_requests: 1}]}", "concurrency: expected a number of concurrent clients in [1, 100000]", 0},
		{"load: {stages: [{rate: 1, duration: 1}], max_in_flight: 200000}", "load.max_in_flight: expected a count in [0, 100000]", 0},
	}
	for _, tc := range tests {
		c, err := ParseConfig([]byte(tc.load + "\n" + srvLine))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: expected an error with %q, found %v", tc.load, tc.wantErr, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.load, err)
			continue
		}
		if got := time.Duration(c.Load.RequestTimeout); got != tc.timeout {
			t.Errorf("%s: request_timeout: expected %v, found %v", tc.load, tc.timeout, got)
		}
	}
}

// TestTracePathRelativeToConfig: a relative trace path is found from any
// working directory; an absolute one is kept.
func TestTracePathRelativeToConfig(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "t.jsonl")
	if err := os.WriteFile(trace, []byte(`{"timestamp": 0, "input_len": 10, "output_len": 2}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"t.jsonl", trace} {
		cfgPath := filepath.Join(dir, "sub", "c.yaml")
		if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
			t.Fatal(err)
		}
		ref := file
		if !filepath.IsAbs(ref) {
			ref = "../" + ref
		}
		if err := os.WriteFile(cfgPath, []byte("load: {type: trace_replay}\n"+srvLine+"data: {type: trace, trace: {file: "+ref+"}}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfigFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := CountPlanned(c); err != nil || n != 1 {
			t.Errorf("trace %q from %s: expected 1 planned request, found %d (%v)", ref, c.Data.Trace.File, n, err)
		}
	}
}

// TestScheduleYieldsThePlan: the exported schedule yields every planned
// request in time order, indexed, with content, and CountPlanned agrees.
func TestScheduleYieldsThePlan(t *testing.T) {
	tests := []string{
		"load: {type: constant, stages: [{rate: 40, duration: 2}, {rate: 10, duration: 1}], seed: 3}",
		"load: {type: poisson, stages: [{rate: 50, duration: 2}], seed: 3}",
	}
	for _, load := range tests {
		c := mustParse(t, load+"\n"+srvLine)
		s, err := NewSchedule(c)
		if err != nil {
			t.Fatal(err)
		}
		var prev time.Duration
		n := 0
		for p, ok := s.Next(); ok; p, ok = s.Next() {
			if p.At < prev || p.Prompt == "" || p.MaxTokens < 1 || p.Index != int64(n) {
				t.Fatalf("%s: request %d: expected ordered, indexed, non-empty, found %+v", load, n, p)
			}
			prev = p.At
			n++
		}
		count, err := CountPlanned(c)
		if err != nil || count != n {
			t.Errorf("%s: CountPlanned: expected %d, found %d (%v)", load, n, count, err)
		}
	}
	if _, err := NewSchedule(mustParse(t, "load: {type: concurrent, stages: [{concurrency: 1, num_requests: 1}]}\n"+srvLine)); err == nil {
		t.Error("concurrent: expected an error (no open-loop plan), found none")
	}
}
