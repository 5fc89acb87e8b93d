package scorers

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

func mustPlugin(t testing.TB, typ string) scheduler.Plugin {
	t.Helper()
	f, ok := NewRegistry().Lookup(typ)
	if !ok {
		t.Fatalf("type %s not registered", typ)
	}
	p, err := f.New("", scheduler.MapParams(nil))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// endpoints builds states named e0, e1, ... from metrics, all fresh.
func endpoints(now time.Time, ms ...scheduler.Metrics) []scheduler.EndpointState {
	out := make([]scheduler.EndpointState, len(ms))
	for i, m := range ms {
		if m.UpdatedAt.IsZero() {
			m.UpdatedAt = now
		}
		out[i] = scheduler.EndpointState{
			H: scheduler.NewHandle(scheduler.Endpoint{
				Name: fmt.Sprintf("e%d", i), Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), Port: 8000,
			}),
			M: m, Healthy: true,
		}
	}
	return out
}

// scoresOf runs one pick with a single-scorer plan and returns each
// endpoint's score for that scorer (by endpoint name).
func scoresOf(t *testing.T, sc scheduler.Scorer, states []scheduler.EndpointState, req *scheduler.Request) map[string]float64 {
	t.Helper()
	plan, err := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
		Name: "p", Scorers: []scheduler.WeightedScorer{{Scorer: sc, Weight: 1}}, Picker: NewMaxScorePicker(1),
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := scheduler.New(plan)
	s.Publish(scheduler.NewSnapshot(states, time.Now(), 0))
	req.Explain = true
	res, err := s.Pick(s.NewCycle(), req)
	if err != nil {
		t.Fatal(err)
	}
	res.Release()
	out := map[string]float64{}
	for _, e := range res.Explain {
		out[e.Endpoint[:2]] = e.Scores[0].Score
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestLoadScorers(t *testing.T) {
	now := time.Now()
	type want map[string]float64
	cases := []struct {
		name   string
		typ    string
		states []scheduler.EndpointState
		want   want
	}{
		{"queue min-max", QueueScorerType, endpoints(now, scheduler.Metrics{Waiting: 0}, scheduler.Metrics{Waiting: 5}, scheduler.Metrics{Waiting: 10}), want{"e0": 1, "e1": 0.5, "e2": 0}},
		{"queue all equal", QueueScorerType, endpoints(now, scheduler.Metrics{Waiting: 3}, scheduler.Metrics{Waiting: 3}), want{"e0": 1, "e1": 1}},
		{"queue one endpoint", QueueScorerType, endpoints(now, scheduler.Metrics{Waiting: 7}), want{"e0": 1}},
		{"running min-max", RunningScorerType, endpoints(now, scheduler.Metrics{Running: 4}, scheduler.Metrics{Running: 8}, scheduler.Metrics{Running: 6}), want{"e0": 1, "e1": 0, "e2": 0.5}},
		{"kv", KVCacheScorerType, endpoints(now, scheduler.Metrics{KVUsage: 0}, scheduler.Metrics{KVUsage: 0.25}, scheduler.Metrics{KVUsage: 1}), want{"e0": 1, "e1": 0.75, "e2": 0}},
		{"kv out of range clamps", KVCacheScorerType, endpoints(now, scheduler.Metrics{KVUsage: -0.5}, scheduler.Metrics{KVUsage: 1.5}, scheduler.Metrics{KVUsage: math.NaN()}), want{"e0": 1, "e1": 0, "e2": 0}},
		{"token load idle", TokenLoadScorerType, endpoints(now, scheduler.Metrics{}, scheduler.Metrics{}), want{"e0": 1, "e1": 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := scoresOf(t, mustPlugin(t, tc.typ).(scheduler.Scorer), tc.states, &scheduler.Request{Model: "m"})
			for ep, w := range tc.want {
				if !near(got[ep], w) {
					t.Errorf("%s: score %v, want %v (all: %v)", ep, got[ep], w, got)
				}
			}
		})
	}
}

// TestQueueCountsInflight: requests dispatched since the scrape count toward
// the queue, net of those that finished.
func TestQueueCountsInflight(t *testing.T) {
	now := time.Now()
	st := endpoints(now, scheduler.Metrics{Waiting: 2}, scheduler.Metrics{Waiting: 2}, scheduler.Metrics{Waiting: 2})
	st[0].H.Acquire(1)
	st[0].H.Acquire(1) // e0 effectively waits 4
	st[2].H.Acquire(1) // e2 had one in flight at scrape time: no change
	st[2].M.InflightAtScrape = 1
	got := scoresOf(t, mustPlugin(t, QueueScorerType).(scheduler.Scorer), st, &scheduler.Request{Model: "m"})
	want := map[string]float64{"e0": 0, "e1": 1, "e2": 1}
	for ep, w := range want {
		if !near(got[ep], w) {
			t.Errorf("%s: %v, want %v", ep, got[ep], w)
		}
	}
	st[2].H.Release(1) // finished since the scrape: queue 2-1 = 1 → lowest
	got = scoresOf(t, mustPlugin(t, QueueScorerType).(scheduler.Scorer), st, &scheduler.Request{Model: "m"})
	want = map[string]float64{"e0": 0, "e1": 2.0 / 3, "e2": 1}
	for ep, w := range want {
		if !near(got[ep], w) {
			t.Errorf("after release %s: %v, want %v", ep, got[ep], w)
		}
	}
}

func TestTokenLoad(t *testing.T) {
	now := time.Now()
	f, _ := NewRegistry().Lookup(TokenLoadScorerType)
	sc, err := f.New("", scheduler.MapParams{"queueThresholdTokens": 1000})
	if err != nil {
		t.Fatal(err)
	}
	// GIE's estimate: in-flight prompt tokens × 2.5 (input + 1.5 × input).
	st := endpoints(now, scheduler.Metrics{}, scheduler.Metrics{}, scheduler.Metrics{}, scheduler.Metrics{})
	st[1].H.Acquire(100) // 250 tokens
	st[2].H.Acquire(5000)
	st[3].H.Acquire(200)
	st[3].H.Acquire(120) // two requests, 800 tokens
	got := scoresOf(t, sc.(scheduler.Scorer), st, &scheduler.Request{Model: "m"})
	for ep, w := range map[string]float64{"e0": 1, "e1": 0.75, "e2": 0, "e3": 0.2} {
		if !near(got[ep], w) {
			t.Errorf("%s: %v, want %v", ep, got[ep], w)
		}
	}
}

func TestLoRAAffinity(t *testing.T) {
	cases := []struct {
		name string
		m    scheduler.Metrics
		want float64
	}{
		{"loaded", scheduler.Metrics{ActiveAdapters: []string{"a", "sql"}, MaxLoRA: 2}, 1},
		{"room to load", scheduler.Metrics{ActiveAdapters: []string{"a"}, MaxLoRA: 2}, 0.8},
		{"waiting, no room", scheduler.Metrics{ActiveAdapters: []string{"a"}, WaitingAdapters: []string{"sql"}, MaxLoRA: 2}, 0.6},
		{"waiting with room", scheduler.Metrics{WaitingAdapters: []string{"sql"}, MaxLoRA: 4}, 0.8},
		{"full, elsewhere", scheduler.Metrics{ActiveAdapters: []string{"a", "b"}, MaxLoRA: 2}, 0},
		{"no LoRA support", scheduler.Metrics{}, 0},
	}
	for _, tc := range cases {
		if got := loraScore(&tc.m, "sql"); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
