package plan

import (
	"testing"
	"time"

	"github.com/fastepp/fastepp/config"
	"github.com/fastepp/fastepp/scheduler"
)

// ageScorer records how old the candidates' metrics are when the snapshot
// a pick sees was built, and whether stale endpoints were left out; it
// scores 0.
type ageScorer struct {
	maxAge, minAge time.Duration
	picks          int
	excluded       int // picks that had stale endpoints left out
}

func (a *ageScorer) Type() string { return "age-probe" }
func (a *ageScorer) Name() string { return "age-probe" }
func (a *ageScorer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	a.picks++
	if len(cands) < c.Snap.Len() {
		a.excluded++
	}
	for i, ci := range cands {
		age := c.Snap.BuiltAt.Sub(c.Snap.Endpoints[ci].M.UpdatedAt)
		a.maxAge = max(a.maxAge, age)
		if a.picks == 1 || age < a.minAge {
			a.minAge = age
		}
		out[i] = 0
	}
}

// TestPickerSeesScrapedMetricsAtTheInterval: epp's plugins see metrics that
// are as old as the scrape interval makes them (never newer than the last
// scrape, up to one interval old when the snapshot was built), and endpoints
// whose metrics are older than the staleness threshold leave the candidates,
// as in the server.
func TestPickerSeesScrapedMetricsAtTheInterval(t *testing.T) {
	yaml := []byte("apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: age-probe\n- type: queue-scorer\nschedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: age-probe\n  - pluginRef: queue-scorer\n")
	tests := []struct {
		interval, staleAfter time.Duration
		wantStale            bool
	}{
		{50 * time.Millisecond, 2 * time.Second, false},
		{time.Second, 2 * time.Second, false},
		{3 * time.Second, 2 * time.Second, true},
	}
	for _, tc := range tests {
		probe := &ageScorer{}
		reg := config.NewRegistry()
		reg.MustRegister("age-probe", scheduler.Factory{Kind: scheduler.KindScorer, Proto: (*ageScorer)(nil),
			New: func(string, scheduler.Params) (scheduler.Plugin, error) { return probe, nil }})
		opt := mi300x(t)
		opt.Replicas, opt.Registry = 8, reg
		opt.ScrapeInterval, opt.StalenessThreshold = tc.interval, tc.staleAfter
		opt.Strategy = Strategy{Name: EPP, EPPConfig: yaml, Source: "test"}
		r := run(t, opt, sharedPrefix(t), 10, 30*time.Second)
		t.Logf("interval %v: %d picks, candidates' metrics %v..%v old at build, stale endpoints left out of %d picks", tc.interval, probe.picks, probe.minAge, probe.maxAge, probe.excluded)
		if probe.picks != r.Requests {
			t.Errorf("interval %v: expected the probe in every one of %d picks, found %d", tc.interval, r.Requests, probe.picks)
		}
		limit := min(tc.interval, tc.staleAfter)
		if probe.minAge < 0 || probe.maxAge > limit {
			t.Errorf("interval %v: expected candidates' metrics 0..%v old when the snapshot is built, found %v..%v", tc.interval, limit, probe.minAge, probe.maxAge)
		}
		if probe.maxAge < limit/2 {
			t.Errorf("interval %v: expected some metrics over %v old (scrapes at their own phases), found at most %v", tc.interval, limit/2, probe.maxAge)
		}
		if got := probe.excluded > 0; got != tc.wantStale {
			t.Errorf("interval %v, staleness threshold %v: expected stale endpoints left out %v, found in %d picks", tc.interval, tc.staleAfter, tc.wantStale, probe.excluded)
		}
	}
}
