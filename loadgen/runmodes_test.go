package loadgen

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestConcurrentIsClosedLoop(t *testing.T) {
	srv, _ := newScriptedServer(t, script{ttft: 10 * time.Millisecond, itl: 2 * time.Millisecond})
	cfg := testConfig(srv.URL, "")
	cfg.Load.Type = LoadConcurrent
	cfg.Load.Stages = []Stage{{Concurrency: 2, NumRequests: 10}, {Concurrency: 5, NumRequests: 10}}
	start := time.Now()
	sum, err := Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	// 5 rounds of 20 ms then 2 rounds: ≈ 140 ms; open loop would not wait.
	if el < 130*time.Millisecond || el > 2*time.Second {
		t.Errorf("concurrent run took %v, want ≈ 140 ms (closed loop)", el)
	}
	if sum.Requests.Completed != 20 || len(sum.Stages) != 2 || sum.Stages[1].Requests.Completed != 10 {
		t.Errorf("completed %d, stages %+v", sum.Requests.Completed, sum.Stages)
	}
	if sum.Rate.Requested != nil || sum.Stages[0].Concurrency != 2 {
		t.Errorf("closed loop has requested rate %v (want null), concurrency %d", sum.Rate.Requested, sum.Stages[0].Concurrency)
	}
}

func TestTraceReplayFollowsTimestamps(t *testing.T) {
	srv, n := newScriptedServer(t, script{ttft: time.Millisecond, itl: time.Millisecond})
	dir := t.TempDir()
	trace := filepath.Join(dir, "t.jsonl")
	os.WriteFile(trace, []byte(`{"timestamp": 10.0, "input_len": 5, "output_len": 2, "prefix_group": 1}
{"timestamp": 10.1, "input_len": 5, "output_len": 2, "prefix_group": 1}
{"timestamp": 10.4, "input_len": 5, "output_len": 2}
{"timestamp": 10.8, "input_len": 5, "output_len": 3, "prefix_group": "b", "prefix_len": 2}
`), 0o644)
	cfg := mustParse(t, "load: {type: trace_replay, time_scale: 2}\nserver: {base_url: \""+srv.URL+"\", model_name: m}\ndata: {type: trace, trace: {file: "+trace+"}}\n")
	start := time.Now()
	sum, err := Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 400*time.Millisecond || el > 5*time.Second {
		t.Errorf("replay took %v, want ≈ 0.4 s (0.8 s of trace at 2×)", el)
	}
	if n.Load() != 4 || sum.Requests.Completed != 4 || sum.Tokens.Output != 9 {
		t.Errorf("server saw %d, completed %d, output tokens %d; want 4, 4, 9", n.Load(), sum.Requests.Completed, sum.Tokens.Output)
	}
	// windows are wall-clock (after time_scale): sends at 0, 0.05, 0.2, 0.4 s;
	// stage 0 = [0, 0.25 s), stage 1 = [0.25, 0.75 s).
	cfg.Load.Stages = []Stage{{Duration: Duration(250 * time.Millisecond)}, {Duration: Duration(500 * time.Millisecond)}}
	sum, err = Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Stages[0].Requests.Sent != 3 || sum.Stages[1].Requests.Sent != 1 {
		t.Errorf("stage sends %d/%d, want 3/1", sum.Stages[0].Requests.Sent, sum.Stages[1].Requests.Sent)
	}
}

func TestMaxInFlightDropsAreCounted(t *testing.T) {
	srv, _ := newScriptedServer(t, script{ttft: 200 * time.Millisecond, itl: time.Millisecond})
	cfg := testConfig(srv.URL, "")
	cfg.Load.MaxInFlight = 3
	cfg.Load.Stages = []Stage{{Rate: 100, Duration: Duration(100 * time.Millisecond)}}
	sum, err := Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Requests.Completed != 3 || sum.Errors["client_in_flight_limit"] != 7 {
		t.Errorf("completed %d errors %v, want 3 sent and 7 dropped", sum.Requests.Completed, sum.Errors)
	}
}

func TestRequestTimeoutCounted(t *testing.T) {
	srv, _ := newScriptedServer(t, script{ttft: 300 * time.Millisecond, itl: time.Millisecond})
	cfg := testConfig(srv.URL, "")
	cfg.Load.RequestTimeout = Duration(50 * time.Millisecond)
	cfg.Load.Stages = []Stage{{Rate: 50, Duration: Duration(100 * time.Millisecond)}}
	sum, err := Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Errors["timeout"] != 5 {
		t.Errorf("errors %v, want 5 timeouts", sum.Errors)
	}
}

func TestCancelReturnsPartialSummary(t *testing.T) {
	srv, _ := newScriptedServer(t, script{ttft: time.Millisecond, itl: time.Millisecond})
	cfg := testConfig(srv.URL, "")
	cfg.Load.Stages = []Stage{{Rate: 100, Duration: Duration(time.Hour)}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	sum, err := Run(ctx, cfg, Options{})
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("canceled run took %v to return", el)
	}
	if err == nil || sum == nil || len(sum.Stages) != 1 {
		t.Fatalf("want a partial summary and the context error, got %v, %+v", err, sum)
	}
}

// A server that serves 2 requests at a time, each taking ~20 ms, handles
// ≈ 100 req/s. Sent 300 req/s open loop, its queue grows without bound and
// the detector must stop the stage well before its planned 5 s.
func TestEarlyStopWhenLatencyGrowsWithoutBound(t *testing.T) {
	srv := newCapacityServer(t, 2, 5*time.Millisecond, 5*time.Millisecond)
	cfg := testConfig(srv, "")
	cfg.Data.OutputDistribution = &Distribution{Mean: ptr(4.0), StdDev: ptr(0.0), Min: ptr(4), Max: ptr(4)}
	cfg.Load.Stages = []Stage{{Rate: 300, Duration: Duration(5 * time.Second)}}
	start := time.Now()
	sum, err := Run(context.Background(), cfg, Options{EarlyStop: true, EarlyStopWindow: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.EarlyStopped || time.Since(start) > 4500*time.Millisecond {
		t.Fatalf("early stopped %v after %v; want a stop well before 5 s", sum.EarlyStopped, time.Since(start))
	}
	t.Logf("stopped: %s", sum.Stages[0].StopReason)
}
