package endpoints

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// fakeServer is a vLLM-like metrics server on 127.0.0.1 whose values and
// failure mode tests change.
type fakeServer struct {
	*httptest.Server
	waiting, running atomic.Int64
	kvMilli          atomic.Int64
	status           atomic.Int64 // 0 = 200
	delay            atomic.Int64 // ns
	hits             atomic.Int64
}

func newFakeServer(t *testing.T, waiting, running int64, kv float64) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.waiting.Store(waiting)
	f.running.Store(running)
	f.kvMilli.Store(int64(kv * 1000))
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		if d := f.delay.Load(); d > 0 {
			select {
			case <-time.After(time.Duration(d)):
			case <-r.Context().Done():
				return
			}
		}
		if s := f.status.Load(); s != 0 {
			http.Error(w, "down", int(s))
			return
		}
		fmt.Fprintf(w, "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} %d\n"+
			"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} %d\n"+
			"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"m\"} %g\n",
			f.waiting.Load(), f.running.Load(), float64(f.kvMilli.Load())/1000)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) target(t *testing.T) Target {
	t.Helper()
	ap := netip.MustParseAddrPort(strings.TrimPrefix(f.URL, "http://"))
	return Target{Endpoint: scheduler.Endpoint{Name: ap.String(), Addr: ap.Addr(), Port: ap.Port()}}
}

// testLogger discards logs unless -v.
func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// logCounter counts log records by message and "endpoint" attribute.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *logCounter) WithGroup(string) slog.Handler            { return c }
func (c *logCounter) Handle(_ context.Context, r slog.Record) error {
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "endpoint" {
			key += " " + a.Value.String()
		}
		return true
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[key]++
	return nil
}

func (c *logCounter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

func fastOptions(t *testing.T) Options {
	return Options{
		RefreshInterval:    10 * time.Millisecond,
		StalenessThreshold: 500 * time.Millisecond,
		ScrapeTimeout:      time.Second,
		FailureThreshold:   2,
		Logger:             testLogger(t),
	}
}

// eventually polls cond every 5ms for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// state returns the snapshot's state for hostport (nil if absent).
func state(s *scheduler.Scheduler, hostport string) *scheduler.EndpointState {
	snap := s.Snapshot()
	if snap == nil {
		return nil
	}
	for i := range snap.Endpoints {
		if snap.Endpoints[i].H.HostPort() == hostport {
			return &snap.Endpoints[i]
		}
	}
	return nil
}

// assertNoPoolGoroutines fails if any goroutine still runs endpoints code.
func assertNoPoolGoroutines(t *testing.T) {
	t.Helper()
	var stacks string
	for range 200 {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		leaked := false
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "fastepp/endpoints.(*Pool)") || strings.Contains(g, "fastepp/endpoints.(*FileSource)") ||
				strings.Contains(g, "fastepp/endpoints.Static") {
				leaked = true
			}
		}
		if !leaked {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pool goroutines still running after Close:\n%s", stacks)
}

func TestPoolPublishesScrapedValues(t *testing.T) {
	a := newFakeServer(t, 3, 5, 0.25)
	b := newFakeServer(t, 1, 2, 0.75)
	sched := scheduler.New(nil)
	var scrapes, scrapeErrs atomic.Int64
	opt := fastOptions(t)
	opt.OnScrape = func(h *scheduler.Handle, took time.Duration, err error) {
		scrapes.Add(1)
		if err != nil {
			scrapeErrs.Add(1)
		}
	}
	p := NewPool(sched, Static{a.target(t), b.target(t)}, opt)
	defer assertNoPoolGoroutines(t)
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if !p.Ready() || p.Len() != 2 {
		t.Fatalf("Ready = %v, Len = %d; want true, 2", p.Ready(), p.Len())
	}
	ha := a.target(t).HostPort()
	eventually(t, "a's values in the snapshot", func() bool {
		e := state(sched, ha)
		return e != nil && e.Fresh && e.M.Waiting == 3 && e.M.Running == 5 && e.M.KVUsage == 0.25
	})
	h := state(sched, ha).H
	a.waiting.Store(9)
	a.kvMilli.Store(900)
	eventually(t, "a's new values", func() bool {
		e := state(sched, ha)
		return e.M.Waiting == 9 && e.M.KVUsage == 0.9
	})
	if state(sched, ha).H != h {
		t.Fatal("handle replaced by a scrape; want one handle per endpoint lifetime")
	}
	eventually(t, "stats", func() bool {
		st := p.Stats()
		return st.Endpoints == 2 && st.Ready == 2 && st.AvgWaiting == 5 && st.AvgKVUsage > 0.82 && st.AvgKVUsage < 0.83
	})
	if scrapes.Load() == 0 || scrapeErrs.Load() != 0 {
		t.Fatalf("OnScrape: %d scrapes, %d errors; want >0, 0", scrapes.Load(), scrapeErrs.Load())
	}
	for _, es := range p.EndpointStats() {
		if es.Scrapes == 0 || es.ScrapeErrors != 0 || !es.Healthy || es.LastError != "" {
			t.Errorf("endpoint stat %+v: want scrapes, no errors, healthy", es)
		}
	}
}

func TestPoolInflightAtScrape(t *testing.T) {
	a := newFakeServer(t, 0, 0, 0)
	sched := scheduler.New(nil)
	p := NewPool(sched, Static{a.target(t)}, fastOptions(t))
	defer p.Close()
	hp := a.target(t).HostPort()
	eventually(t, "first scrape", func() bool { e := state(sched, hp); return e != nil && e.Fresh })
	state(sched, hp).H.Acquire(10)
	eventually(t, "InflightAtScrape = 1", func() bool { return state(sched, hp).M.InflightAtScrape == 1 })
}

func TestPoolFailingEndpointLeavesAndReturns(t *testing.T) {
	a := newFakeServer(t, 1, 1, 0.1)
	b := newFakeServer(t, 2, 2, 0.2)
	sched := scheduler.New(nil)
	logs := &logCounter{}
	opt := fastOptions(t)
	opt.Logger = slog.New(logs)
	p := NewPool(sched, Static{a.target(t), b.target(t)}, opt)
	defer assertNoPoolGoroutines(t)
	defer p.Close()
	ha, hb := a.target(t).HostPort(), b.target(t).HostPort()
	eventually(t, "both fresh", func() bool {
		ea, eb := state(sched, ha), state(sched, hb)
		return ea != nil && eb != nil && ea.Fresh && eb.Fresh
	})
	h := state(sched, ha).H

	a.status.Store(http.StatusServiceUnavailable)
	eventually(t, "a out of scoring", func() bool {
		snap := sched.Snapshot()
		e := state(sched, ha)
		return !e.Healthy && !e.Fresh && len(snap.Live) == 1 && !snap.AllStale
	})
	var st EndpointStat
	eventually(t, "several failed scrapes", func() bool {
		for _, s := range p.EndpointStats() {
			if s.Handle == h {
				st = s
			}
		}
		return st.ScrapeErrors >= 5
	})
	if st.ScrapeErrors == 0 || !strings.Contains(st.LastError, "expected HTTP 200, found 503") {
		t.Fatalf("a's stat = %+v; want scrape errors and an HTTP 503 error", st)
	}
	if got := p.Stats(); got.Ready != 1 || got.Endpoints != 2 {
		t.Fatalf("Stats = %+v; want Ready 1 of 2", got)
	}

	a.status.Store(0)
	eventually(t, "a back in scoring", func() bool {
		e := state(sched, ha)
		return e.Healthy && e.Fresh && len(sched.Snapshot().Live) == 2
	})
	if state(sched, ha).H != h {
		t.Fatal("handle replaced after recovery")
	}
	// State changes are logged once, not per failed scrape.
	if st.ScrapeErrors < 3 {
		t.Fatalf("only %d failed scrapes; the test needs several", st.ScrapeErrors)
	}
	out, back := logs.count("endpoint out of scoring "+h.String()), logs.count("endpoint back in scoring "+h.String())
	if out != 1 || back != 1 {
		t.Fatalf("logged out-of-scoring %d times and back-in-scoring %d times; want once each (%v)", out, back, logs.n)
	}

	// Every endpoint failing: the snapshot falls back to all of them.
	a.status.Store(http.StatusInternalServerError)
	b.Close()
	eventually(t, "all stale fallback", func() bool {
		snap := sched.Snapshot()
		return snap.AllStale && len(snap.Live) == 2
	})
}

func TestPoolStaleMetricsLeaveScoring(t *testing.T) {
	a := newFakeServer(t, 1, 1, 0.1)
	b := newFakeServer(t, 2, 2, 0.2)
	sched := scheduler.New(nil)
	opt := fastOptions(t)
	opt.StalenessThreshold = 150 * time.Millisecond
	opt.ScrapeTimeout = 2 * time.Second
	p := NewPool(sched, Static{a.target(t), b.target(t)}, opt)
	defer p.Close()
	ha := a.target(t).HostPort()
	eventually(t, "a fresh", func() bool { e := state(sched, ha); return e != nil && e.Fresh })
	a.delay.Store(int64(600 * time.Millisecond)) // scrapes hang, no error yet
	eventually(t, "a stale", func() bool {
		e := state(sched, ha)
		return e.Healthy && !e.Fresh
	})
	a.delay.Store(0)
	eventually(t, "a fresh again", func() bool { return state(sched, ha).Fresh })
}

func TestPoolCoalescesSnapshots(t *testing.T) {
	var targets Static
	for i := range 8 {
		targets = append(targets, newFakeServer(t, int64(i), 0, 0).target(t))
	}
	sched := scheduler.New(nil)
	opt := fastOptions(t)
	opt.RefreshInterval = 20 * time.Millisecond
	p := NewPool(sched, targets, opt)
	defer p.Close()
	eventually(t, "all fresh", func() bool { return p.Stats().Ready == 8 })
	seq0, t0 := sched.Snapshot().Seq, time.Now()
	time.Sleep(300 * time.Millisecond)
	seq1, elapsed := sched.Snapshot().Seq, time.Since(t0)
	var scrapes uint64
	for _, s := range p.EndpointStats() {
		scrapes += s.Scrapes
	}
	limit := uint64(elapsed/opt.RefreshInterval) + 2
	if seq1-seq0 > limit {
		t.Fatalf("%d snapshots in %v (%d scrapes); want at most one per %v (%d)",
			seq1-seq0, elapsed, scrapes, opt.RefreshInterval, limit)
	}
	if seq1 == seq0 {
		t.Fatal("no snapshot rebuilt while scrapes landed")
	}
}

func TestPoolFileDiscovery(t *testing.T) {
	s1, s2, s3 := newFakeServer(t, 1, 0, 0), newFakeServer(t, 2, 0, 0), newFakeServer(t, 3, 0, 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "endpoints.yaml")
	writeRaw := func(content string) {
		// Write and rename so the poller never sees a half-written file.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write := func(ts ...*fakeServer) {
		var b strings.Builder
		for _, s := range ts {
			tg := s.target(t)
			fmt.Fprintf(&b, "- address: %s\n  port: %d\n  labels: {app: test}\n", tg.Addr, tg.Port)
		}
		if len(ts) == 0 {
			b.WriteString("[]\n")
		}
		writeRaw(b.String())
	}
	write(s1, s2)
	src := &FileSource{Path: path, Poll: 10 * time.Millisecond, Logger: testLogger(t)}
	sched := scheduler.New(nil)
	p := NewPool(sched, src, fastOptions(t))
	defer assertNoPoolGoroutines(t)
	defer p.Close()
	hp1, hp2, hp3 := s1.target(t).HostPort(), s2.target(t).HostPort(), s3.target(t).HostPort()
	eventually(t, "s1 and s2 scraped", func() bool {
		e1, e2 := state(sched, hp1), state(sched, hp2)
		return e1 != nil && e2 != nil && e1.M.Waiting == 1 && e2.M.Waiting == 2
	})
	h2 := state(sched, hp2).H
	if h2.Labels["app"] != "test" {
		t.Fatalf("labels = %v; want app=test", h2.Labels)
	}

	write(s2, s3)
	eventually(t, "s1 removed, s3 added", func() bool {
		e3 := state(sched, hp3)
		return state(sched, hp1) == nil && e3 != nil && e3.M.Waiting == 3 && sched.Snapshot().Len() == 2
	})
	if state(sched, hp2).H != h2 {
		t.Fatal("s2's handle was replaced; want unchanged endpoints to keep their handle")
	}
	hits1 := s1.hits.Load()
	time.Sleep(50 * time.Millisecond)
	if d := s1.hits.Load() - hits1; d > 1 {
		t.Fatalf("removed endpoint still scraped (%d more hits)", d)
	}

	// Bad content keeps the last good list and says where the problem is.
	writeRaw("- address: 10.0.0.1\n  port: 8000\n- address: 10.0.0.2\n  prot: 8000\n")
	eventually(t, "file error", func() bool { return src.Err() != nil })
	if err := src.Err().Error(); !strings.Contains(err, "endpoints.yaml:4") || !strings.Contains(err, `"prot"`) {
		t.Fatalf("error %q: want the line (4) and the field (prot)", err)
	}
	time.Sleep(30 * time.Millisecond)
	if n := sched.Snapshot().Len(); n != 2 || state(sched, hp2).H != h2 {
		t.Fatalf("after a bad file: %d endpoints; want the last good 2 with s2's handle", n)
	}

	// A truncated (empty) file is taken for a half-written one: no change.
	writeRaw("")
	eventually(t, "empty-file error", func() bool { return src.Err() != nil && strings.Contains(src.Err().Error(), "empty file") })
	if n := sched.Snapshot().Len(); n != 2 {
		t.Fatalf("after an empty file: %d endpoints; want the last good 2", n)
	}

	write()
	eventually(t, "empty pool", func() bool { return sched.Snapshot().Len() == 0 && !p.Ready() })
	write(s2)
	eventually(t, "s2 back with a new handle", func() bool {
		e := state(sched, hp2)
		return e != nil && e.H != h2 && p.Ready()
	})
}

func TestPoolCloseStopsEverything(t *testing.T) {
	var targets Static
	for range 16 {
		targets = append(targets, newFakeServer(t, 1, 1, 0.5).target(t))
	}
	// One endpoint hangs: Close must not wait for its scrape timeout.
	slow := newFakeServer(t, 0, 0, 0)
	slow.delay.Store(int64(time.Minute))
	targets = append(targets, slow.target(t))
	sched := scheduler.New(nil)
	opt := fastOptions(t)
	opt.ScrapeTimeout = time.Minute
	p := NewPool(sched, targets, opt)
	eventually(t, "16 fresh", func() bool { return p.Stats().Ready == 16 })
	start := time.Now()
	p.Close()
	p.Close() // idempotent
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	assertNoPoolGoroutines(t)
}

func TestPoolEngineLabelErrors(t *testing.T) {
	a := newFakeServer(t, 1, 1, 0.1)
	b := newFakeServer(t, 1, 1, 0.1)
	ta, tb := a.target(t), b.target(t)
	ta.Labels = map[string]string{EngineLabel: "tgi"}
	tb.Labels = map[string]string{EngineLabel: "sglang"} // wrong engine for a vLLM page
	sched := scheduler.New(nil)
	p := NewPool(sched, Static{ta, tb}, fastOptions(t))
	defer p.Close()
	eventually(t, "both unhealthy", func() bool {
		st := p.EndpointStats()
		return len(st) == 2 && !st[0].Healthy && !st[1].Healthy
	})
	st := p.EndpointStats()
	if !strings.Contains(st[0].LastError, `found "tgi"`) {
		t.Errorf("unknown engine error = %q", st[0].LastError)
	}
	if !strings.Contains(st[1].LastError, "expected sglang metrics") {
		t.Errorf("wrong engine error = %q", st[1].LastError)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestWaitReadyEndsOnClose(t *testing.T) {
	p := NewPool(scheduler.New(nil), Static(nil), fastOptions(t))
	done := make(chan error, 1)
	go func() { done <- p.WaitReady(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	if p.Ready() {
		t.Fatal("an empty pool is ready")
	}
	p.Close()
	select {
	case err := <-done:
		if err != ErrClosed {
			t.Fatalf("WaitReady = %v; want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("WaitReady still blocked after Close")
	}
}
