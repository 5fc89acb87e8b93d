package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// newCapacityServer serves `slots` streams at a time (the rest queue), each
// with the given TTFT and inter-token gap: a server with a known capacity.
func newCapacityServer(t testing.TB, slots int, ttft, itl time.Duration) string {
	sem := make(chan struct{}, slots)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		defer func() { <-sem }()
		w.Header().Set("Content-Type", "text/event-stream")
		start := time.Now()
		for i := 0; i < 4; i++ {
			waitPrecise(start.Add(ttft + time.Duration(i)*itl))
			fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"x\"}]}\n\n")
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n")
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestSweepFindsCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("sweep runs several timed stages")
	}
	// 2 slots × (5 ms + 3 × 5 ms) = 100 req/s capacity.
	url := newCapacityServer(t, 2, 5*time.Millisecond, 5*time.Millisecond)
	cfg := testConfig(url, "slo: {ttft: 40ms}\nsweep: {min_rate: 20, max_rate: 400, stage_duration: 600ms, precision: 0.2, max_probes: 6}")
	cfg.Data.OutputDistribution = &Distribution{Mean: ptr(4.0), StdDev: ptr(0.0), Min: ptr(4), Max: ptr(4)}
	var log strings.Builder
	res, err := Sweep(context.Background(), cfg, SweepOptions{Window: 100 * time.Millisecond, OnProbe: func(p Probe) {
		fmt.Fprintf(&log, "rate %6.1f attain %.2f meets %v saturated %v %s\n", p.Rate, p.Attainment, p.MeetsSLO, p.Saturated, p.Reason)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probes:\n%s", log.String())
	if dir := os.Getenv("LOADGEN_SAMPLE_DIR"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := res.WriteFiles(dir); err != nil {
			t.Fatal(err)
		}
	}
	var html strings.Builder
	if err := res.WriteHTML(&html); err != nil || !strings.Contains(html.String(), "Latency vs offered rate") {
		t.Errorf("sweep.html: %v", err)
	}
	if res.MaxRateMeetingSLO < 20 || res.MaxRateMeetingSLO > 110 {
		t.Errorf("max rate meeting the SLO %.1f, want within [20, 110] for a 100 req/s server", res.MaxRateMeetingSLO)
	}
	if res.SaturatedAt == 0 || res.SaturatedAt > 330 {
		t.Errorf("saturated at %.1f, want a saturating probe <= 330 req/s", res.SaturatedAt)
	}
	if len(res.Probes) > 6 {
		t.Errorf("%d probes, want <= max_probes 6", len(res.Probes))
	}
}

func TestMakePlan(t *testing.T) {
	one := &SweepResult{Replicas: 1, MaxRateMeetingSLO: 12}
	four := &SweepResult{Replicas: 4, MaxRateMeetingSLO: 40}
	cases := []struct {
		name     string
		sweeps   []*SweepResult
		target   float64
		margin   float64
		replicas int
		basis    string
		err      string
	}{
		{"extrapolate from one", []*SweepResult{one}, 50, 0.2, 5, "extrapolated", ""},
		{"exact fit no margin", []*SweepResult{one}, 36, 0, 3, "extrapolated", ""},
		{"measured sweep fits", []*SweepResult{one, four}, 30, 0.2, 4, "measured", ""},
		{"beyond measured: scale the biggest", []*SweepResult{one, four}, 100, 0.1, 11, "4 replica", ""},
		{"bad target", []*SweepResult{one}, 0, 0.2, 0, "", "--target-rate"},
		{"bad margin", []*SweepResult{one}, 10, -1, 0, "", "--margin"},
		{"no sweeps", nil, 10, 0.2, 0, "", "at least one"},
		{"nothing met the SLO", []*SweepResult{{Replicas: 1}}, 10, 0.2, 0, "", "found none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := MakePlan(tc.sweeps, tc.target, tc.margin)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Replicas != tc.replicas || !strings.Contains(p.Basis, tc.basis) {
				t.Errorf("plan %+v, want %d replicas, basis containing %q", p, tc.replicas, tc.basis)
			}
			if p.Capacity < tc.target*(1+tc.margin)-1e-9 {
				t.Errorf("capacity %.2f below target %.2f with margin", p.Capacity, tc.target*(1+tc.margin))
			}
		})
	}
}
