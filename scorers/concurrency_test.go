package scorers

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// kept runs one pick through a plan of the filter alone and returns the
// names of the endpoints it kept, sorted (the picker returns them all).
func kept(t *testing.T, f scheduler.Filter, states []scheduler.EndpointState, req *scheduler.Request) ([]string, error) {
	t.Helper()
	plan, err := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
		Name: "p", Filters: []scheduler.Filter{f}, Picker: NewMaxScorePicker(len(states)),
	}}, nil, []scheduler.Plugin{f})
	if err != nil {
		t.Fatal(err)
	}
	s := scheduler.New(plan)
	s.Publish(scheduler.NewSnapshot(states, time.Now(), 0))
	res, err := s.Pick(s.NewCycle(), req)
	if err != nil {
		return nil, err
	}
	res.Release()
	var names []string
	for _, h := range res.Endpoints {
		names = append(names, h.Name)
	}
	slices.Sort(names)
	return names, nil
}

func newPluginWith(t *testing.T, typ string, p scheduler.MapParams) scheduler.Plugin {
	t.Helper()
	f, ok := NewRegistry().Lookup(typ)
	if !ok {
		t.Fatalf("type %s not registered", typ)
	}
	pl, err := f.New("", p)
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

// TestConcurrencyDetector: GIE's concurrency-detector over the Handles'
// in-flight counters: pool saturation = total load ÷ (n × max); the filter
// keeps endpoints below max × (1 + headroom), none when all are at it.
func TestConcurrencyDetector(t *testing.T) {
	now := time.Now()
	// In flight per endpoint: requests and prompt tokens (GIE tokens = ×2.5).
	type load struct{ reqs, tokens int64 }
	cases := []struct {
		name   string
		params scheduler.MapParams
		loads  []load
		sat    float64
		kept   []string // nil: the pick fails with ErrNoCapacity
	}{
		{"requests idle", nil, []load{{}, {}}, 0, []string{"e0", "e1"}},
		{"requests", scheduler.MapParams{"maxConcurrency": 4}, []load{{4, 40}, {1, 10}, {2, 20}}, 7.0 / 12, []string{"e1", "e2"}},
		{"requests headroom", scheduler.MapParams{"maxConcurrency": 4, "headroom": 0.5}, []load{{5, 0}, {6, 0}, {1, 0}}, 12.0 / 12, []string{"e0", "e2"}},
		{"requests headroom truncated as GIE", scheduler.MapParams{"maxConcurrency": 3, "headroom": 0.5}, []load{{4, 0}, {3, 0}}, 7.0 / 6, []string{"e1"}}, // limit int64(4.5) = 4
		{"all at the limit: none kept", scheduler.MapParams{"maxConcurrency": 2}, []load{{2, 0}, {3, 0}}, 5.0 / 4, nil},
		{"tokens", scheduler.MapParams{"concurrencyMode": "tokens", "maxTokenConcurrency": 1000}, []load{{1, 400}, {1, 100}, {3, 0}}, (1000 + 250) / 3000.0, []string{"e1", "e2"}},
		{"tokens headroom", scheduler.MapParams{"concurrencyMode": "tokens", "maxTokenConcurrency": 1000, "headroom": 0.1}, []load{{1, 420}, {1, 450}}, (1050 + 1125) / 2000.0, []string{"e0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newPluginWith(t, ConcurrencyDetectorType, tc.params).(*concurrency)
			var ms []scheduler.Metrics
			for range tc.loads {
				ms = append(ms, scheduler.Metrics{})
			}
			st := endpoints(now, ms...)
			for i, l := range tc.loads {
				for r := int64(0); r < l.reqs; r++ {
					tok := int64(0)
					if r == 0 {
						tok = l.tokens
					}
					st[i].H.Acquire(tok)
				}
			}
			if got := d.Saturation(scheduler.NewSnapshot(st, now, 0), now); !near(got, tc.sat) {
				t.Errorf("saturation %v, want %v", got, tc.sat)
			}
			got, err := kept(t, d, st, &scheduler.Request{Model: "m"})
			if tc.kept == nil {
				if !errors.Is(err, scheduler.ErrNoCapacity) {
					t.Errorf("filter kept %v (err %v), want none (ErrNoCapacity)", got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.kept) {
				t.Errorf("filter kept %v (err %v), want %v", got, err, tc.kept)
			}
		})
	}
	d := mustPlugin(t, ConcurrencyDetectorType).(*concurrency)
	if got := d.Saturation(scheduler.NewSnapshot(nil, now, 0), now); got != 1 {
		t.Errorf("empty pool: %v, want 1 (saturated)", got)
	}
}

func TestConcurrencyDetectorParams(t *testing.T) {
	f, _ := NewRegistry().Lookup(ConcurrencyDetectorType)
	for _, tc := range []struct {
		p    scheduler.MapParams
		want string
	}{
		{scheduler.MapParams{"concurrencyMode": "bytes"}, `concurrencyMode: expected requests or tokens, found "bytes"`},
		{scheduler.MapParams{"maxConcurrency": 0}, "maxConcurrency: expected a positive number of requests, found 0"},
		{scheduler.MapParams{"maxTokenConcurrency": -1}, "maxTokenConcurrency: expected a positive number of tokens, found -1"},
		{scheduler.MapParams{"headroom": -0.1}, "headroom: expected a fraction of 0 or more"},
		{scheduler.MapParams{"maxConcurrency": "10"}, "maxConcurrency: expected an integer"},
	} {
		if _, err := f.New("", tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.p, err, tc.want)
		}
	}
}

// TestConcurrencyDetectorAllocs: Saturation and a pick through the filter do
// not allocate.
func TestConcurrencyDetectorAllocs(t *testing.T) {
	now := time.Now()
	d := newPluginWith(t, ConcurrencyDetectorType, scheduler.MapParams{"concurrencyMode": "tokens"}).(*concurrency)
	st := endpoints(now, make([]scheduler.Metrics, 16)...)
	snap := scheduler.NewSnapshot(st, now, 0)
	if a := testing.AllocsPerRun(100, func() { d.Saturation(snap, now) }); a != 0 {
		t.Errorf("Saturation: %v allocs, want 0", a)
	}
	plan, err := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
		Name: "p", Filters: []scheduler.Filter{d}, Picker: NewMaxScorePicker(1),
	}}, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := scheduler.New(plan)
	s.Publish(snap)
	c := s.NewCycle()
	req := &scheduler.Request{Model: "m", Priority: -1} // sheddable: Saturation runs too
	req.SetPrompt(text(400, 1))
	pick := func() {
		res, err := s.Pick(c, req)
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
	}
	pick()
	if a := testing.AllocsPerRun(200, pick); a != 0 {
		t.Errorf("pick through concurrency-detector: %v allocs, want 0", a)
	}
}

// TestUtilizationHeadroom: as a filter the detector keeps fresh endpoints
// below thresholds × (1 + headroom); the pool's saturation ignores headroom.
func TestUtilizationHeadroom(t *testing.T) {
	now := time.Now()
	ms := []scheduler.Metrics{
		{Waiting: 5, KVUsage: 0.1},                                 // at the queue threshold
		{Waiting: 6, KVUsage: 0.1},                                 // 20% over
		{Waiting: 1, KVUsage: 0.9},                                 // KV 12.5% over
		{Waiting: 1, KVUsage: 1},                                   // KV 25% over
		{Waiting: 0, KVUsage: 0, UpdatedAt: now.Add(-time.Second)}, // stale
	}
	cases := []struct {
		headroom float64
		kept     []string
	}{
		{0, nil}, // none below: all kept (GIE's fallback)
		{0.1, []string{"e0"}},
		{0.2, []string{"e0", "e2"}},           // 6 < 6 is false, as in GIE
		{0.25, []string{"e0", "e1", "e2"}},    // 1 < 0.8 × 1.25 is false
		{1, []string{"e0", "e1", "e2", "e3"}}, // the stale one never
	}
	for _, tc := range cases {
		u := newPluginWith(t, UtilizationDetectorType, scheduler.MapParams{"headroom": tc.headroom}).(*utilization)
		want := tc.kept
		if want == nil {
			want = []string{"e0", "e1", "e2", "e3", "e4"}
		}
		got, err := kept(t, u, endpoints(now, ms...), &scheduler.Request{Model: "m"})
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("headroom %v: kept %v (err %v), want %v", tc.headroom, got, err, want)
		}
		snap := scheduler.NewSnapshot(endpoints(now, ms...), now, 0)
		if sat, want := u.Saturation(snap, now), (1+1.2+1.125+1.25+1)/5; !near(sat, want) {
			t.Errorf("headroom %v: saturation %v, want %v (headroom does not apply)", tc.headroom, sat, want)
		}
	}
	f, _ := NewRegistry().Lookup(UtilizationDetectorType)
	if _, err := f.New("", scheduler.MapParams{"headroom": -1.0}); err == nil || !strings.Contains(err.Error(), "headroom: expected a fraction of 0 or more") {
		t.Errorf("headroom -1: %v", err)
	}
}
