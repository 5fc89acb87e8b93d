package scheduler_test

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// Test plugins of every shape, for the registry and the publish hook.

type testScorer struct{ name string }

func (s *testScorer) Type() string                                       { return "test-scorer" }
func (s *testScorer) Name() string                                       { return s.name }
func (s *testScorer) Score(_ *scheduler.Cycle, _ []int32, out []float64) { clear(out) }

type testPicker struct{}

func (testPicker) Type() string { return "test-picker" }
func (testPicker) Name() string { return "test-picker" }
func (testPicker) Pick(_ *scheduler.Cycle, cands []int32, _ []float64, out []int32) []int32 {
	return append(out, cands[0])
}

type testHandler struct{}

func (testHandler) Type() string                                      { return "test-handler" }
func (testHandler) Name() string                                      { return "test-handler" }
func (testHandler) Select(*scheduler.Cycle, []*scheduler.Profile) int { return 0 }
func (testHandler) Validate([]*scheduler.Profile) error               { return nil }

// preparer counts endpoints per snapshot in PrepareSnapshot and scores each
// candidate with what it prepared, recording the snapshot it saw.
type preparer struct {
	slot     int
	mu       sync.Mutex
	prepared []*prep // in call order
	prevs    []*prep
}

type prep struct {
	snap *scheduler.Snapshot
	n    int
}

func (p *preparer) Type() string     { return "test-preparer" }
func (p *preparer) Name() string     { return "test-preparer" }
func (p *preparer) SetSlot(slot int) { p.slot = slot }
func (p *preparer) PrepareSnapshot(snap *scheduler.Snapshot, prev any) any {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp, _ := prev.(*prep)
	p.prevs = append(p.prevs, pp)
	v := &prep{snap: snap, n: snap.Len()}
	p.prepared = append(p.prepared, v)
	return v
}
func (p *preparer) Score(c *scheduler.Cycle, cands []int32, out []float64) {
	v := c.Prepared(p.slot).(*prep)
	if v.snap != c.Snap {
		panic("prepared value of another snapshot")
	}
	for i := range cands {
		out[i] = float64(v.n) / 100
	}
}

func TestRegistryChecksKinds(t *testing.T) {
	newScorer := func(name string, _ scheduler.Params) (scheduler.Plugin, error) { return &testScorer{name}, nil }
	newPicker := func(string, scheduler.Params) (scheduler.Plugin, error) { return testPicker{}, nil }
	tests := []struct {
		name string
		typ  string
		f    scheduler.Factory
		want string // "" = accepted
	}{
		{"scorer as scorer", "s", scheduler.Factory{Kind: scheduler.KindScorer, Proto: (*testScorer)(nil), New: newScorer}, ""},
		{"picker as picker", "p", scheduler.Factory{Kind: scheduler.KindPicker, Proto: testPicker{}, New: newPicker}, ""},
		{"handler as profile handler", "h", scheduler.Factory{Kind: scheduler.KindProfileHandler, Proto: testHandler{}, New: newPicker}, ""},
		{"scorer declared a picker", "x", scheduler.Factory{Kind: scheduler.KindPicker, Proto: (*testScorer)(nil), New: newScorer},
			`plugin type "x" is registered as a picker, but *scheduler_test.testScorer does not implement scheduler.Picker`},
		{"picker declared a filter", "x", scheduler.Factory{Kind: scheduler.KindFilter, Proto: testPicker{}, New: newPicker},
			`does not implement scheduler.Filter`},
		{"scorer declared a saturation detector", "x", scheduler.Factory{Kind: scheduler.KindSaturation, Proto: (*testScorer)(nil), New: newScorer},
			`does not implement scheduler.SaturationDetector`},
		{"unknown kind", "x", scheduler.Factory{Kind: "widget", Proto: (*testScorer)(nil), New: newScorer}, `a known kind ("widget" is not one)`},
		{"no proto", "x", scheduler.Factory{Kind: scheduler.KindScorer, New: newScorer}, `expected a Proto`},
		{"no constructor", "x", scheduler.Factory{Kind: scheduler.KindScorer, Proto: (*testScorer)(nil)}, `expected a New constructor`},
		{"no name", "", scheduler.Factory{Kind: scheduler.KindScorer, Proto: (*testScorer)(nil), New: newScorer}, `expected a type name`},
		{"twice", "s", scheduler.Factory{Kind: scheduler.KindScorer, Proto: (*testScorer)(nil), New: newScorer}, `plugin type "s": registered twice`},
	}
	r := scheduler.NewRegistry()
	for _, tt := range tests {
		err := r.Register(tt.typ, tt.f)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

// A constructor that returns something else than its Proto promised is
// caught by Registry.New, not by a failed type assertion later.
func TestRegistryNewChecksInstances(t *testing.T) {
	r := scheduler.NewRegistry()
	r.MustRegister("liar", scheduler.Factory{Kind: scheduler.KindScorer, Proto: (*testScorer)(nil),
		New: func(string, scheduler.Params) (scheduler.Plugin, error) { return testPicker{}, nil }})
	r.MustRegister("failing", scheduler.Factory{Kind: scheduler.KindScorer, Proto: (*testScorer)(nil),
		New: func(string, scheduler.Params) (scheduler.Plugin, error) {
			return nil, errors.New("weight: expected 1, found 2")
		}})
	r.MustRegister("good", scheduler.Factory{Kind: scheduler.KindScorer, Proto: (*testScorer)(nil),
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) { return &testScorer{name}, nil }})
	if _, err := r.New("liar", "", scheduler.MapParams(nil)); err == nil || !strings.Contains(err.Error(), "its constructor returned scheduler_test.testPicker, which does not implement scheduler.Scorer") {
		t.Errorf("liar: err = %v", err)
	}
	if _, err := r.New("failing", "", scheduler.MapParams(nil)); err == nil || err.Error() != "weight: expected 1, found 2" {
		t.Errorf("failing: err = %v, want the constructor's error as is", err)
	}
	var ut *scheduler.UnknownTypeError
	if _, err := r.New("nope", "", scheduler.MapParams(nil)); !errors.As(err, &ut) || !strings.Contains(err.Error(), "known types: failing, good, liar") {
		t.Errorf("unknown: err = %v", err)
	}
	p, err := r.New("good", "", scheduler.MapParams(nil))
	if err != nil || p.Name() != "good" {
		t.Errorf("good: %v, %v; want a plugin named after its type", p, err)
	}
}

func preparerPlan(t *testing.T) (*scheduler.Plan, *preparer) {
	t.Helper()
	pr := &preparer{}
	plan, err := scheduler.NewPlan(testHandler{}, []*scheduler.Profile{{
		Name: "p", Scorers: []scheduler.WeightedScorer{{Scorer: pr, Weight: 1}}, Picker: testPicker{},
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return plan, pr
}

// TestPublishPreparesBeforeSwap: PrepareSnapshot runs once per Publish, with
// the previous value, before any pick can see the snapshot, and every pick
// reads the value prepared for the snapshot it sees.
func TestPublishPreparesBeforeSwap(t *testing.T) {
	plan, pr := preparerPlan(t)
	s := scheduler.New(plan)
	now := time.Now()
	states := pool(8, now)
	var snaps []*scheduler.Snapshot
	for n := 1; n <= 8; n++ {
		snaps = append(snaps, scheduler.NewSnapshot(states[:n], now, 0))
	}

	// Picks race publishes; each must see a value prepared for its own snapshot
	// (the scorer panics otherwise) whose count matches it.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := s.NewCycle()
			var req scheduler.Request
			req.SetPrompt([]byte("x"))
			req.Explain = true
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := s.Pick(c, &req)
				if errors.Is(err, scheduler.ErrNoEndpoints) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				got := res.Explain[0].Scores[0].Score * 100
				if int(got+0.5) != len(res.Explain) {
					t.Errorf("prepared count %v for a snapshot of %d endpoints", got, len(res.Explain))
				}
				res.Release()
			}
		}()
	}
	for _, snap := range snaps {
		s.Publish(snap)
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()

	pr.mu.Lock()
	defer pr.mu.Unlock()
	if len(pr.prepared) != len(snaps) {
		t.Fatalf("PrepareSnapshot called %d times for %d publishes", len(pr.prepared), len(snaps))
	}
	for i := range snaps {
		if pr.prepared[i].snap != snaps[i] {
			t.Errorf("call %d prepared another snapshot", i)
		}
		var want *prep
		if i > 0 {
			want = pr.prepared[i-1]
		}
		if pr.prevs[i] != want {
			t.Errorf("call %d: prev is not what call %d returned", i, i-1)
		}
	}
}

// TestFirstPickAfterPublishAllocs: with the default plan, the first pick on a
// new snapshot costs no allocation (the prefix index's per-snapshot tables
// are built by Publish, not lazily by that pick).
func TestFirstPickAfterPublishAllocs(t *testing.T) {
	s, c, ps := benchSetup(t, defaultPlan(t), 16)
	churn := newChurner(s.Snapshot())
	var req scheduler.Request
	req.Model = "meta-llama/Llama-3.1-8B-Instruct"
	// Count as testing.AllocsPerRun does (mallocs of the whole process, in
	// whole allocations per run), but only around the picks: the publishes
	// between them allocate by design.
	const runs = 50
	var before, after runtime.MemStats
	var mallocs uint64
	for i := 0; i < runs; i++ {
		s.Publish(churn.next())
		req.SetPrompt(ps[i])
		runtime.ReadMemStats(&before)
		res, err := s.Pick(c, &req)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
		mallocs += after.Mallocs - before.Mallocs
	}
	if n := mallocs / runs; n != 0 {
		t.Fatalf("first pick after a publish: %d allocations per pick (%d in %d picks), want 0", n, mallocs, runs)
	}
}

func TestNilPlan(t *testing.T) {
	s := scheduler.New(nil)
	now := time.Now()
	s.Publish(scheduler.NewSnapshot(pool(2, now), now, 0))
	if s.Snapshot().Len() != 2 {
		t.Fatal("a scheduler without a plan still holds snapshots")
	}
	var req scheduler.Request
	if _, err := s.Pick(s.NewCycle(), &req); !errors.Is(err, scheduler.ErrNoPlan) {
		t.Fatalf("Pick without a plan: %v, want ErrNoPlan", err)
	}
}

func TestMapParams(t *testing.T) {
	p := scheduler.MapParams{"n": 3, "f": 2, "b": true, "s": "x", "d": time.Second, "bad": "7"}
	if v, err := p.Int("n", 0); v != 3 || err != nil {
		t.Errorf("Int = %v, %v", v, err)
	}
	if v, err := p.Float("f", 0); v != 2 || err != nil {
		t.Errorf("Float of an int = %v, %v", v, err)
	}
	if v, err := p.Bool("b", false); !v || err != nil {
		t.Errorf("Bool = %v, %v", v, err)
	}
	if v, err := p.String("s", ""); v != "x" || err != nil {
		t.Errorf("String = %v, %v", v, err)
	}
	if v, err := p.Duration("d", 0); v != time.Second || err != nil {
		t.Errorf("Duration = %v, %v", v, err)
	}
	if v, err := p.Int("absent", 9); v != 9 || err != nil || p.Has("absent") || !p.Has("n") {
		t.Errorf("absent: %v, %v", v, err)
	}
	if _, err := p.Int("bad", 0); err == nil || err.Error() != `bad: expected an integer, found 7 (string)` {
		t.Errorf("wrong type: %v", err)
	}
}

// panicky is a scorer whose Picked panics (a plugin bug).
type panicky struct{ testScorer }

func (p *panicky) Picked(*scheduler.Cycle, int32) { panic("plugin bug") }

// TestPanickingPluginLeaksNoInflight: a plugin that panics in Picked (the
// last plugin call of a pick) leaves no in-flight count on any endpoint: the
// charge comes after every plugin call.
func TestPanickingPluginLeaksNoInflight(t *testing.T) {
	pl := &panicky{testScorer{"p"}}
	plan, err := scheduler.NewPlan(testHandler{}, []*scheduler.Profile{{
		Name: "p", Scorers: []scheduler.WeightedScorer{{Scorer: pl, Weight: 1}}, Picker: testPicker{},
	}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := scheduler.New(plan)
	now := time.Now()
	s.Publish(scheduler.NewSnapshot(pool(4, now), now, 0))
	c := s.NewCycle()
	var req scheduler.Request
	req.SetPrompt([]byte("x"))
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Picked did not panic")
			}
		}()
		s.Pick(c, &req)
	}()
	for _, e := range s.Snapshot().Endpoints {
		if n := e.H.Inflight(); n != 0 {
			t.Errorf("%s: in-flight %d after a panicking pick, want 0", e.H, n)
		}
	}
}

// TestOnPublish: a callback sees the current snapshot at once, then every
// later one before picks can (Snapshot still returns the previous one).
func TestOnPublish(t *testing.T) {
	s := scheduler.New(nil)
	now := time.Now()
	first := scheduler.NewSnapshot(pool(1, now), now, 0)
	s.Publish(first)
	var seen []*scheduler.Snapshot
	var before []*scheduler.Snapshot
	s.OnPublish(func(snap *scheduler.Snapshot) {
		seen = append(seen, snap)
		before = append(before, s.Snapshot())
	})
	second := scheduler.NewSnapshot(pool(2, now), now, 0)
	s.Publish(second)
	if len(seen) != 2 || seen[0] != first || seen[1] != second {
		t.Fatalf("callback saw %v, want the current snapshot then the new one", seen)
	}
	if before[1] != first {
		t.Error("the new snapshot was visible before the callback ran")
	}
}
