package plan

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fastepp/fastepp/loadgen"
)

// sharedPrefix is a shared-prefix chat workload: 8 groups of 1000-token
// system prompts, 200-token questions, 150 output tokens, Poisson arrivals.
func sharedPrefix(t testing.TB) *loadgen.Config {
	t.Helper()
	cfg, err := loadgen.ParseConfig([]byte(`
load: {type: poisson, stages: [{rate: 1, duration: 1}], seed: 7}
api: {type: chat}
server: {base_url: "http://127.0.0.1:1", model_name: meta-llama/Llama-3.1-8B-Instruct}
data:
  type: shared_prefix
  shared_prefix: {num_groups: 8, num_prompts_per_group: 4, system_prompt_len: 1000, question_len: 200, output_len: 150}
slo: {ttft: 1s, tpot: 50ms, percentile: 90}
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mi300x(t testing.TB) Options {
	t.Helper()
	srv, err := ServerConfig("mi300x", "llama-3.1-8b", 1, "meta-llama/Llama-3.1-8B-Instruct")
	if err != nil {
		t.Fatal(err)
	}
	return Options{Server: srv, SLO: SLO{TTFT: time.Second, TPOT: 50 * time.Millisecond, Percentile: 90}, Seed: 1}
}

func withStrategy(t testing.TB, opt Options, name string) Options {
	t.Helper()
	st, err := ParseStrategy(name, "")
	if err != nil {
		t.Fatal(err)
	}
	opt.Strategy = st
	return opt
}

func run(t testing.TB, opt Options, cfg *loadgen.Config, rate float64, d time.Duration) *Result {
	t.Helper()
	src, n, err := Workload{Config: cfg, Rate: rate, Duration: d}.Build()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Simulate(opt, src, n)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != n && !r.StoppedEarly {
		t.Fatalf("requests: expected the workload's %d, found %d", n, r.Requests)
	}
	return r
}

// TestSimulateAccounting: under every strategy each request is routed once,
// completes, and releases its in-flight count; epp picks every request and
// publishes a snapshot once per scrape interval.
func TestSimulateAccounting(t *testing.T) {
	cfg := sharedPrefix(t)
	for _, st := range []string{RoundRobin, LeastRequest, EPP} {
		t.Run(st, func(t *testing.T) {
			opt := withStrategy(t, mi300x(t), st)
			opt.Replicas = 4
			r := run(t, opt, cfg, 20, 30*time.Second)
			if r.Completed != r.Requests || r.Failed != 0 {
				t.Errorf("completed: expected all %d, found %d (%d failed)", r.Requests, r.Completed, r.Failed)
			}
			sum := 0
			for _, n := range r.PerReplica {
				sum += n
			}
			if sum != r.Requests {
				t.Errorf("routed: expected %d, found %d (%v)", r.Requests, sum, r.PerReplica)
			}
			if r.inflightLeft != 0 {
				t.Errorf("in flight at the end: expected 0 (every Pick released), found %d", r.inflightLeft)
			}
			if !r.MeetsSLO || r.GoodputRatio < 0.9 {
				t.Errorf("4 replicas at 20 req/s: expected the SLO met, found TTFT p90 %.3fs TPOT p90 %.3fs goodput %.3f", r.TTFT.P90, r.TPOT.P90, r.GoodputRatio)
			}
			if st == RoundRobin && slices.Max(r.PerReplica)-slices.Min(r.PerReplica) > 1 {
				t.Errorf("round-robin: expected an even split, found %v", r.PerReplica)
			}
			if st == EPP {
				if r.Picks != int64(r.Requests) {
					t.Errorf("picks: expected %d, found %d", r.Requests, r.Picks)
				}
				want := r.Span / (50 * time.Millisecond) // the default interval
				if d := r.Publishes - int64(want); d < -2 || d > 2 {
					t.Errorf("publishes: expected one per 50ms over %v (%d), found %d", r.Span, want, r.Publishes)
				}
			}
		})
	}
}

// TestScrapeIntervalIsConfigurable: the publisher follows ScrapeInterval.
func TestScrapeIntervalIsConfigurable(t *testing.T) {
	cfg := sharedPrefix(t)
	for _, iv := range []time.Duration{20 * time.Millisecond, 500 * time.Millisecond} {
		opt := withStrategy(t, mi300x(t), EPP)
		opt.Replicas, opt.ScrapeInterval = 2, iv
		r := run(t, opt, cfg, 5, 20*time.Second)
		want := int64(r.Span / iv)
		if d := r.Publishes - want; d < -2 || d > 2 {
			t.Errorf("interval %v: expected ~%d publishes over %v, found %d", iv, want, r.Span, r.Publishes)
		}
	}
}

// TestMoreReplicasLowerLatency: past saturation, adding replicas brings TTFT
// down and throughput up; an overloaded fleet misses the SLO and stops early.
func TestMoreReplicasLowerLatency(t *testing.T) {
	cfg := sharedPrefix(t)
	var prev *Result
	for _, n := range []int{1, 2, 6} {
		opt := withStrategy(t, mi300x(t), LeastRequest)
		opt.Replicas = n
		r := run(t, opt, cfg, 60, 30*time.Second)
		t.Logf("%d replicas: TTFT p90 %.3fs, %.0f tok/s, meets %v, stopped early %v", n, r.TTFT.P90, r.OutputTokensPerSecond, r.MeetsSLO, r.StoppedEarly)
		if prev != nil && !(r.TTFT.P90 < prev.TTFT.P90) {
			t.Errorf("%d replicas: expected TTFT p90 below %d replicas' %.3fs, found %.3fs", n, prev.Replicas, prev.TTFT.P90, r.TTFT.P90)
		}
		if n == 1 && (r.MeetsSLO || !r.StoppedEarly) {
			t.Errorf("1 replica at 60 req/s: expected an overloaded run stopped early, found meets %v stopped %v", r.MeetsSLO, r.StoppedEarly)
		}
		if n == 6 && !r.MeetsSLO {
			t.Errorf("6 replicas at 60 req/s: expected the SLO met, found TTFT p90 %.3fs TPOT p90 %.3fs", r.TTFT.P90, r.TPOT.P90)
		}
		prev = r
	}
}

// TestSearchFindsSmallest: the plan's replica count meets the SLO, one
// fewer (when simulated) does not, the curve is sorted, and the search is a
// bisection (few runs).
func TestSearchFindsSmallest(t *testing.T) {
	cfg := sharedPrefix(t)
	for _, st := range []string{RoundRobin, EPP} {
		t.Run(st, func(t *testing.T) {
			opt := withStrategy(t, mi300x(t), st)
			p, err := Search(opt, Workload{Config: cfg, Rate: 80, Duration: 30 * time.Second}, SearchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			p.WriteText(&buf)
			t.Logf("\n%s", buf.String())
			if !slices.IsSortedFunc(p.Curve, func(a, b Point) int { return a.Replicas - b.Replicas }) {
				t.Errorf("curve: expected sorted by replicas, found %v", p.Curve)
			}
			var found bool
			for _, pt := range p.Curve {
				if pt.Replicas == p.Replicas {
					found = true
					if !pt.Result.MeetsSLO {
						t.Errorf("%d replicas: expected to meet the SLO", pt.Replicas)
					}
				}
				if pt.Replicas == p.Replicas-1 && pt.Result.MeetsSLO {
					t.Errorf("%d replicas also meets the SLO: expected %d to be the smallest", pt.Replicas, p.Replicas)
				}
				if pt.Replicas < p.Replicas && pt.Result.MeetsSLO {
					t.Errorf("%d replicas meets the SLO but the plan says %d", pt.Replicas, p.Replicas)
				}
			}
			if !found || p.Replicas < 2 {
				t.Errorf("replicas: expected ≥ 2 in the curve, found %d (curve %d points)", p.Replicas, len(p.Curve))
			}
			if max := 2*bitsLen(p.Replicas) + 1; len(p.Curve) > max {
				t.Errorf("runs: expected a bisection (≤ %d), found %d", max, len(p.Curve))
			}
		})
	}
}

func bitsLen(n int) int {
	b := 0
	for ; n > 0; n >>= 1 {
		b++
	}
	return b
}

// TestPlanJSONNames: the JSON carries exactly the names other tooling reads.
func TestPlanJSONNames(t *testing.T) {
	p := &Plan{Strategy: EPP, Replicas: 3, TargetRate: 10, Curve: []Point{{Replicas: 3, TTFT: Figures{P50: 0.1, P90: 0.2, P99: 9},
		TPOT: Figures{P50: 0.01, P90: 0.02}, GoodputRatio: 0.95, OutputTokensPerSecond: 1234, Result: &Result{}}}}
	var buf bytes.Buffer
	if err := p.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]any) string {
		var k []string
		for x := range m {
			k = append(k, x)
		}
		slices.Sort(k)
		return strings.Join(k, ",")
	}
	tests := []struct {
		what string
		got  map[string]any
		want string
	}{
		{"top level", m, "curve,replicas,strategy,target_rate"},
		{"curve point", m["curve"].([]any)[0].(map[string]any), "goodput_ratio,output_tokens_per_second,replicas,tpot_seconds,ttft_seconds"},
		{"ttft_seconds", m["curve"].([]any)[0].(map[string]any)["ttft_seconds"].(map[string]any), "p50,p90"},
		{"tpot_seconds", m["curve"].([]any)[0].(map[string]any)["tpot_seconds"].(map[string]any), "p50,p90"},
	}
	for _, tc := range tests {
		if got := keys(tc.got); got != tc.want {
			t.Errorf("%s: expected keys %s, found %s", tc.what, tc.want, got)
		}
	}
}

func TestParseStrategy(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "epp.yaml")
	if err := os.WriteFile(good, []byte("apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: queue-scorer\nschedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, wantErr, wantSource string
	}{
		{RoundRobin, "", "", ""},
		{LeastRequest, "", "", ""},
		{EPP, "", "", "configs/epp/recommended.yaml"},
		{EPP, good, "", good},
		{EPP, filepath.Join(dir, "missing.yaml"), "--epp-config", ""},
		{RoundRobin, good, "only with --strategy epp", ""},
		{"random", "", `expected round-robin, least-request or epp, found "random"`, ""},
	}
	for _, tc := range tests {
		st, err := ParseStrategy(tc.name, tc.file)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s %q: expected an error with %q, found %v", tc.name, tc.file, tc.wantErr, err)
			}
			continue
		}
		if err != nil || st.Name != tc.name || st.Source != tc.wantSource {
			t.Errorf("%s %q: expected %s from %q, found %+v, %v", tc.name, tc.file, tc.name, tc.wantSource, st, err)
		}
	}
}

// TestEPPConfigIsUsed: a broken EndpointPickerConfig is reported, naming its file.
func TestEPPConfigIsUsed(t *testing.T) {
	opt := mi300x(t)
	opt.Replicas = 2
	opt.Strategy = Strategy{Name: EPP, EPPConfig: []byte("kind: EndpointPickerConfig\nplugins:\n- type: no-such-scorer\n"), Source: "bad.yaml"}
	src, n, err := Workload{Config: sharedPrefix(t), Rate: 1, Duration: time.Second}.Build()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Simulate(opt, src, n); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("expected an error naming bad.yaml, found %v", err)
	}
}

func TestOptionErrors(t *testing.T) {
	cfg := sharedPrefix(t)
	tests := []struct {
		name    string
		w       Workload
		opt     func(*Options)
		wantErr string
	}{
		{"no replicas", Workload{Config: cfg, Rate: 1, Duration: time.Second}, func(o *Options) { o.Replicas = 0 }, "replicas: expected ≥ 1, found 0"},
		{"zero rate", Workload{Config: cfg, Rate: 0, Duration: time.Second}, nil, "--target-rate"},
		{"zero duration", Workload{Config: cfg, Rate: 1}, nil, "--duration"},
		{"tiny scrape interval", Workload{Config: cfg, Rate: 1, Duration: time.Second}, func(o *Options) { o.ScrapeInterval = time.Microsecond }, "scrape interval"},
	}
	for _, tc := range tests {
		opt := withStrategy(t, mi300x(t), EPP)
		opt.Replicas = 1
		if tc.opt != nil {
			tc.opt(&opt)
		}
		src, n, err := tc.w.Build()
		if err == nil {
			_, err = Simulate(opt, src, n)
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: expected an error with %q, found %v", tc.name, tc.wantErr, err)
		}
	}
}

// TestEarlyStopAgreesWithFullRun: stopping a run once the SLO cannot be met
// never changes the verdict of the full run (around the boundary, where the
// TTFT and TPOT misses are close to the allowance). The strategies are the
// reproducible ones: epp's tie-breaks are seeded from the wall clock by
// scheduler.New, so two epp runs may differ (at 2 replicas here they split
// the 8 prefix groups 4/4 or 3/5, and only the first meets the SLO).
func TestEarlyStopAgreesWithFullRun(t *testing.T) {
	cfg := sharedPrefix(t)
	for _, st := range []string{RoundRobin, LeastRequest} {
		for _, n := range []int{1, 2, 3} {
			opt := withStrategy(t, mi300x(t), st)
			opt.Replicas = n
			early := run(t, opt, cfg, 80, 20*time.Second)
			opt.NoEarlyStop = true
			full := run(t, opt, cfg, 80, 20*time.Second)
			if early.MeetsSLO != full.MeetsSLO {
				t.Errorf("%s, %d replicas: expected the early-stopping verdict (%v) to equal the full run's (%v: TTFT p90 %.3fs, TPOT p90 %.3fs)",
					st, n, early.MeetsSLO, full.MeetsSLO, full.TTFT.P90, full.TPOT.P90)
			}
			if full.StoppedEarly {
				t.Errorf("%s, %d replicas: NoEarlyStop run stopped early", st, n)
			}
		}
	}
}
