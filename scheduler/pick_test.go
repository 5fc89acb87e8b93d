package scheduler_test

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// TestPickAllocs keeps the steady-state pick at zero allocations.
func TestPickAllocs(t *testing.T) {
	for _, tc := range []struct {
		name string
		plan func(testing.TB) *scheduler.Plan
		n    int
	}{{"default", defaultPlan, 16}, {"default", defaultPlan, 128}, {"queue-kv", queueKVPlan, 16}} {
		s, c, ps := benchSetup(t, tc.plan(t), tc.n)
		var req scheduler.Request
		req.Model = "m"
		i := 0
		allocs := testing.AllocsPerRun(500, func() {
			req.SetPrompt(ps[i%len(ps)])
			i++
			pickRelease(t, s, c, &req)
		})
		if allocs != 0 {
			t.Errorf("%s/%d: %v allocs per pick, want 0", tc.name, tc.n, allocs)
		}
	}
}

// TestBurstSpreads: 100 picks between two scrapes over 8 equal endpoints must
// use all 8 (in-flight accounting), and evenly; a stateless picker would send
// them all to one.
func TestBurstSpreads(t *testing.T) {
	now := time.Now()
	states := pool(8, now)
	for i := range states {
		states[i].M.Waiting, states[i].M.Running, states[i].M.KVUsage = 0, 0, 0.5
	}
	s := scheduler.New(defaultPlan(t))
	s.Publish(scheduler.NewSnapshot(states, now, 0))
	c := s.NewCycle()
	count := map[string]int{}
	ps := prompts(100, 1) // distinct prompts
	var req scheduler.Request
	req.Model = "m"
	for i := 0; i < 100; i++ {
		req.SetPrompt(ps[i])
		res, err := s.Pick(c, &req)
		if err != nil {
			t.Fatal(err)
		}
		count[res.Endpoints[0].HostPort()]++ // not released: still in flight
	}
	if len(count) != 8 {
		t.Fatalf("burst used %d endpoints, want 8: %v", len(count), count)
	}
	for ep, n := range count {
		if n < 12 || n > 13 {
			t.Errorf("endpoint %s got %d of 100 picks, want 12 or 13", ep, n)
		}
	}
}

func TestPickErrors(t *testing.T) {
	now := time.Now()
	s := scheduler.New(defaultPlan(t))
	c := s.NewCycle()
	var req scheduler.Request
	req.Model = "m"
	req.SetPrompt([]byte("hello"))
	if _, err := s.Pick(c, &req); !errors.Is(err, scheduler.ErrNoEndpoints) {
		t.Fatalf("no snapshot: got %v, want ErrNoEndpoints", err)
	}
	s.Publish(scheduler.NewSnapshot(nil, now, 0))
	if _, err := s.Pick(c, &req); !errors.Is(err, scheduler.ErrNoEndpoints) {
		t.Fatalf("empty pool: got %v, want ErrNoEndpoints", err)
	}
	states := pool(4, now)
	s.Publish(scheduler.NewSnapshot(states, now, 0))
	req.HasSubset = true
	if _, err := s.Pick(c, &req); !errors.Is(err, scheduler.ErrNoEndpoints) {
		t.Fatalf("empty subset: got %v, want ErrNoEndpoints", err)
	}
	req.Subset = []netip.Addr{states[2].H.Addr}
	res, err := s.Pick(c, &req)
	if err != nil || res.Endpoints[0] != states[2].H {
		t.Fatalf("subset of one: got %v %v, want %s", res, err, states[2].H)
	}
	res.Release()
	req.Subset = []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	if _, err := s.Pick(c, &req); !errors.Is(err, scheduler.ErrNoEndpoints) {
		t.Fatalf("subset with unknown IP: got %v, want ErrNoEndpoints", err)
	}
}

// TestStaleEndpointsDropOut: stale endpoints are not picked while a fresh one
// exists; when all are stale, all are used.
func TestStaleEndpointsDropOut(t *testing.T) {
	now := time.Now()
	states := pool(4, now)
	for i := range states {
		states[i].M.UpdatedAt = now.Add(-time.Minute)
	}
	states[3].M.UpdatedAt = now
	snap := scheduler.NewSnapshot(states, now, 2*time.Second)
	if len(snap.Live) != 1 || snap.Live[0] != 3 || snap.AllStale {
		t.Fatalf("live = %v (all stale %v), want [3]", snap.Live, snap.AllStale)
	}
	s := scheduler.New(defaultPlan(t))
	s.Publish(snap)
	c := s.NewCycle()
	var req scheduler.Request
	for i := 0; i < 20; i++ {
		res, err := s.Pick(c, &req)
		if err != nil || res.Endpoints[0] != states[3].H {
			t.Fatalf("pick %d: got %v %v, want the fresh endpoint", i, res, err)
		}
		res.Release()
	}
	states[3].M.UpdatedAt = now.Add(-time.Minute)
	states[2].Healthy = false
	snap = scheduler.NewSnapshot(states, now, 2*time.Second)
	if !snap.AllStale || len(snap.Live) != 4 {
		t.Fatalf("all stale: live = %v, AllStale %v; want all 4", snap.Live, snap.AllStale)
	}
}

// TestPickConcurrentWithPublish runs picks on several goroutines while
// snapshots are swapped (meaningful under -race).
func TestPickConcurrentWithPublish(t *testing.T) {
	now := time.Now()
	s := scheduler.New(defaultPlan(t))
	states := pool(16, now)
	s.Publish(scheduler.NewSnapshot(states, now, 0))
	pickConcurrently(t, s, states, false, 0)
}

// pickConcurrently runs 4 goroutines of 2000 picks each on s while another
// publishes snapshots of the first half to all of states every 100 µs (and,
// with touch, acquires and releases one endpoint each round); each picker
// keeps its last hold results before releasing them. At the end no endpoint
// may have requests in flight.
func pickConcurrently(t *testing.T, s *scheduler.Scheduler, states []scheduler.EndpointState, touch bool, hold int) {
	t.Helper()
	half := len(states) / 2
	ps := prompts(8, 8)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			st := append([]scheduler.EndpointState(nil), states[:half+i%half]...)
			s.Publish(scheduler.NewSnapshot(st, time.Now(), 0))
			if touch {
				states[i%len(states)].H.Acquire(1)
				states[i%len(states)].H.Release(1)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var pw sync.WaitGroup
	for g := 0; g < 4; g++ {
		pw.Add(1)
		go func() {
			defer pw.Done()
			c := s.NewCycle()
			var req scheduler.Request
			req.Model = "m"
			var held []scheduler.Result
			for i := 0; i < 2000; i++ {
				req.SetPrompt(ps[(i+g)%len(ps)])
				res, err := s.Pick(c, &req)
				if err != nil {
					t.Error(err)
					return
				}
				held = append(held, scheduler.Result{Endpoints: slices.Clone(res.Endpoints), Tokens: res.Tokens})
				if len(held) > hold {
					held[0].Release()
					held = held[1:]
				}
			}
			for i := range held {
				held[i].Release()
			}
		}()
	}
	pw.Wait()
	close(stop)
	wg.Wait()
	for _, st := range states {
		if n := st.H.Inflight(); n != 0 {
			t.Errorf("%s: in-flight %d after every request was released", st.H, n)
		}
	}
}

func TestExplain(t *testing.T) {
	now := time.Now()
	s := scheduler.New(defaultPlan(t))
	s.Publish(scheduler.NewSnapshot(pool(3, now), now, 0))
	c := s.NewCycle()
	req := scheduler.Request{Model: "m", Explain: true}
	req.SetPrompt(make([]byte, 256))
	res, err := s.Pick(c, &req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	if len(res.Explain) != 3 {
		t.Fatalf("explain has %d candidates, want 3", len(res.Explain))
	}
	best := 0.0
	for _, e := range res.Explain {
		if len(e.Scores) != 3 {
			t.Fatalf("%s: %d scorer lines, want 3", e.Endpoint, len(e.Scores))
		}
		sum := 0.0
		for _, sc := range e.Scores {
			sum += sc.Weight * sc.Score
		}
		if d := sum - e.Total; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s: total %v, sum of weighted scores %v", e.Endpoint, e.Total, sum)
		}
		best = max(best, e.Total)
	}
	for _, e := range res.Explain {
		if e.Endpoint == res.Endpoints[0].String() && e.Total != best {
			t.Errorf("picked %s with total %v, best was %v", e.Endpoint, e.Total, best)
		}
	}
}
