package loadgen

import (
	"bytes"
	"context"
	"encoding/csv"
	"math"
	"testing"
	"time"
)

// Tolerance for measured vs scripted timings on loopback: the scripted
// server emits within tens of µs of its plan; the rest is loopback and
// scheduling noise on a shared 2-core machine running -race.
const tol = 3 * time.Millisecond

// tolTail is the tolerance for p99: with 20 requests p99 is the slowest
// one, which includes dialing a new connection (the client's real cost).
// Under -race on two cores shared with other packages' tests (CI), that one
// request has come +12.6 ms late with the schedule on time; 25 ms still
// catches what this guards against (a lost flush, a misattributed stage:
// tens to hundreds of milliseconds).
const tolTail = 25 * time.Millisecond

// tolTTFTMean is the tolerance for the TTFT mean over the 20 requests: the
// one request that dials may be up to tolTail late, which moves the mean by
// up to tolTail/20 on top of the usual noise (a CI run under -race measured
// +3.3 ms with p50 +2.0 ms and that request +17 ms).
const tolTTFTMean = tol + tolTail/20

func within(t *testing.T, name string, got float64, want time.Duration) {
	t.Helper()
	withinTol(t, name, got, want, tol)
}

func withinTol(t *testing.T, name string, got float64, want, tol time.Duration) {
	t.Helper()
	d := time.Duration(got * float64(time.Second))
	t.Logf("%s: measured %.3f ms, scripted %.3f ms, error %+.3f ms", name, got*1000, want.Seconds()*1000, (d-want).Seconds()*1000)
	if math.Abs(float64(d-want)) > float64(tol) {
		t.Errorf("%s = %v, want %v ± %v", name, d, want, tol)
	}
}

func TestAccuracyAgainstScriptedServer(t *testing.T) {
	cases := []struct {
		name      string
		api       string
		ttft, itl time.Duration
		tokens    int
	}{
		{"completion", "completion", 60 * time.Millisecond, 15 * time.Millisecond, 6},
		{"chat", "chat", 30 * time.Millisecond, 8 * time.Millisecond, 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := newScriptedServer(t, script{ttft: tc.ttft, itl: tc.itl})
			cfg := testConfig(srv.URL, "")
			cfg.API.Type = tc.api
			var buf bytes.Buffer
			var sum *Summary
			// The run's own schedule delay says whether this process got the
			// CPU when it needed it. On a starved machine (other jobs holding
			// the cores) stalls of tens of ms hit every timing; the generator
			// reports that, and the test retries, then skips rather than
			// judging timings it knows are untrustworthy.
			for attempt := 1; ; attempt++ {
				buf.Reset()
				var err error
				sum, err = Run(context.Background(), cfg, Options{CSV: &buf})
				if err != nil {
					t.Fatal(err)
				}
				if sum.ScheduleDelay.P99 < 0.020 {
					break
				}
				if attempt == 3 {
					t.Skipf("machine starved: the run's schedule delay p99 was %.1f ms in 3 attempts", sum.ScheduleDelay.P99*1000)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if sum.Requests.Completed != 20 || sum.Requests.Failed != 0 {
				t.Fatalf("completed %d failed %d, want 20/0 (errors %v)", sum.Requests.Completed, sum.Requests.Failed, sum.Errors)
			}
			if sum.Tokens.Output != int64(20*tc.tokens) || sum.Tokens.Estimated {
				t.Errorf("output tokens %d estimated %v, want %d from usage", sum.Tokens.Output, sum.Tokens.Estimated, 20*tc.tokens)
			}
			if sum.Tokens.Input != 20*42 {
				t.Errorf("input tokens %d, want %d from usage", sum.Tokens.Input, 20*42)
			}
			if sum.Rate.Requested == nil || *sum.Rate.Requested != 40 {
				t.Errorf("requested rate %v, want 40", sum.Rate.Requested)
			}
			if sum.Rate.Achieved < 38 || sum.Rate.Achieved > 42 && sum.ScheduleDelay.P99 < 0.005 {
				t.Errorf("achieved rate %.2f, want 40 ± 2", sum.Rate.Achieved)
			}
			rows, err := csv.NewReader(&buf).ReadAll()
			if err != nil {
				t.Fatalf("per-request CSV does not parse: %v", err)
			}
			if len(rows) != 21 {
				t.Errorf("CSV has %d rows, want header + 20", len(rows))
			}
			e2e := tc.ttft + time.Duration(tc.tokens-1)*tc.itl
			// Mildly starved (p99 5-20 ms): only the medians are checked.
			starved := sum.ScheduleDelay.P99 > 0.005
			if starved {
				t.Logf("schedule delay p99 %.1f ms: machine starved, checking medians only", sum.ScheduleDelay.P99*1000)
				within(t, "ttft p50", sum.TTFT.P50, tc.ttft)
				within(t, "itl p50", sum.ITL.P50, tc.itl)
				return
			}
			within(t, "ttft p50", sum.TTFT.P50, tc.ttft)
			withinTol(t, "ttft p99", sum.TTFT.P99, tc.ttft, tolTail)
			within(t, "itl p50", sum.ITL.P50, tc.itl)
			withinTol(t, "itl p99", sum.ITL.P99, tc.itl, tolTail)
			withinTol(t, "ttft mean", sum.TTFT.Mean, tc.ttft, tolTTFTMean)
			within(t, "itl mean", sum.ITL.Mean, tc.itl)
			within(t, "tpot mean", sum.TPOT.Mean, tc.itl)
			within(t, "e2e p50", sum.E2E.P50, e2e)
			within(t, "ntpot mean", sum.NTPOT.Mean, e2e/time.Duration(tc.tokens))
		})
	}
}

func TestTokensEstimatedWithoutUsage(t *testing.T) {
	srv, _ := newScriptedServer(t, script{ttft: time.Millisecond, itl: time.Millisecond, noUsage: true})
	cfg := testConfig(srv.URL, "")
	cfg.Load.Stages = []Stage{{Rate: 50, Duration: Duration(200 * time.Millisecond)}}
	sum, err := Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Tokens.Estimated || sum.Tokens.EstimatedRequests != sum.Requests.Completed || sum.Tokens.Output != 6*sum.Requests.Completed {
		t.Errorf("tokens %+v for %d requests: want estimated, 6 per request", sum.Tokens, sum.Requests.Completed)
	}
}

func TestErrorsAndDisconnectsAreCounted(t *testing.T) {
	cases := []struct {
		name string
		s    script
		want map[string]int64
		ok   int64
	}{
		{"every 4th 503", script{failEvery: 4}, map[string]int64{"http_503": 5}, 15},
		{"all 429", script{status: 429}, map[string]int64{"http_429": 20}, 0},
		{"disconnect mid-stream", script{cutAfter: 2, cutEvery: 2, itl: time.Millisecond}, map[string]int64{"disconnected": 10}, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := newScriptedServer(t, tc.s)
			cfg := testConfig(srv.URL, "")
			sum, err := Run(context.Background(), cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Requests.Completed != tc.ok || sum.Requests.Failed != 20-tc.ok {
				t.Errorf("completed %d failed %d, want %d/%d (errors %v)", sum.Requests.Completed, sum.Requests.Failed, tc.ok, 20-tc.ok, sum.Errors)
			}
			for k, v := range tc.want {
				if sum.Errors[k] != v {
					t.Errorf("errors[%s] = %d, want %d (all: %v)", k, sum.Errors[k], v, sum.Errors)
				}
			}
		})
	}
}

func TestConnectionRefusedCounted(t *testing.T) {
	srv, _ := newScriptedServer(t, script{})
	url := srv.URL
	srv.Close()
	cfg := testConfig(url, "")
	cfg.Load.Stages = []Stage{{Rate: 50, Duration: Duration(100 * time.Millisecond)}}
	sum, err := Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Requests.Failed != 5 || sum.Errors["connection_refused"] != 5 {
		t.Errorf("failed %d errors %v, want 5 connection_refused", sum.Requests.Failed, sum.Errors)
	}
}

func TestNonStreaming(t *testing.T) {
	srv, _ := newScriptedServer(t, script{ttft: 10 * time.Millisecond, itl: 2 * time.Millisecond})
	cfg := testConfig(srv.URL, "")
	f := false
	cfg.API.Streaming = &f
	cfg.Load.Stages = []Stage{{Rate: 50, Duration: Duration(100 * time.Millisecond)}}
	sum, err := Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Requests.Completed != 5 || sum.TTFT.Count != 0 || sum.Tokens.Output != 30 || sum.Tokens.Estimated {
		t.Errorf("completed %d, ttft count %d, output tokens %d (estimated %v); want 5, 0, 30 from usage",
			sum.Requests.Completed, sum.TTFT.Count, sum.Tokens.Output, sum.Tokens.Estimated)
	}
	if e := sum.E2E.P50; e < 0.019 || e > 0.030 {
		t.Errorf("e2e p50 %.1f ms, want ≈ 20 ms", e*1000)
	}
}
