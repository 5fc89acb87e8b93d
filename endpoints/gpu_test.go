package endpoints

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fastepp/fastepp/gpustats"
	"github.com/fastepp/fastepp/scheduler"
	"github.com/fastepp/fastepp/simulator"
	simengine "github.com/fastepp/fastepp/simulator/engine"
)

// startSimFleet starts simulated vLLM servers on loopback with the given GPU
// profiles and tensor-parallel sizes; each serves /metrics and /gpu/metrics.
func startSimFleet(t testing.TB, gpus []string, tps []int) *simulator.Fleet {
	t.Helper()
	p, err := simengine.DefaultProfiles()
	if err != nil {
		t.Fatal(err)
	}
	var cfgs []simulator.Config
	for i, g := range gpus {
		sp := simulator.DefaultSpec()
		sp.GPU, sp.TensorParallelSize = g, tps[i]
		c, err := sp.Resolve(p, "sim-"+g, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, c)
	}
	f, err := simulator.StartFleet(cfgs, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// TestGPUEnricherSimulatorFleet: a pool with a GPU enricher over a real
// simulator fleet (per-endpoint urlTemplate) publishes each endpoint's GPU
// state: product, GPU count, and absent fields absent (MI300X: no edge
// sensor; the AMD exporter publishes no power cap).
func TestGPUEnricherSimulatorFleet(t *testing.T) {
	f := startSimFleet(t, []string{"mi300x", "h100"}, []int{2, 1})
	var targets Static
	for _, s := range f.Servers {
		e, err := scheduler.ParseEndpoint(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, Target{Endpoint: e})
	}
	g, err := NewGPUEnricher(GPUConfig{URLTemplate: "http://{ip}:{port}/gpu/metrics", Interval: 50 * time.Millisecond}, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	opt := fastOptions(t)
	opt.Enrichers = []Enricher{g}
	sched := scheduler.New(nil)
	pool := NewPool(sched, targets, opt)
	defer pool.Close()
	eventually(t, "GPU telemetry on both endpoints", func() bool {
		for _, s := range f.Servers {
			if st := state(sched, s.Addr()); st == nil || !st.GPU.Present {
				return false
			}
		}
		return true
	})
	want := []struct {
		product string
		count   int
		edge    bool
	}{{"AMD Instinct MI300X", 2, false}, {"NVIDIA H100 80GB HBM3", 1, true}}
	for i, s := range f.Servers {
		gs := state(sched, s.Addr()).GPU
		if gs.Product != want[i].product || gs.Count != want[i].count {
			t.Errorf("%s: product %q count %d, want %q %d", s.Addr(), gs.Product, gs.Count, want[i].product, want[i].count)
		}
		must := scheduler.GPUActivity | scheduler.GPUPower | scheduler.GPUJunctionTemp | scheduler.GPUSclk | scheduler.GPUMclk | scheduler.GPUVRAMUsed | scheduler.GPUVRAMTotal
		if !gs.HasAll(must) {
			t.Errorf("%s: has %b, want at least %b", s.Addr(), gs.Has, must)
		}
		if gs.Has&scheduler.GPUPowerCap != 0 {
			t.Errorf("%s: power cap present (%v), but the AMD exporter names publish none", s.Addr(), gs.PowerCapWatts)
		}
		if got := gs.Has&scheduler.GPUEdgeTemp != 0; got != want[i].edge {
			t.Errorf("%s: edge temperature present %v, want %v", s.Addr(), got, want[i].edge)
		}
		if gs.GfxActivity < 0 || gs.GfxActivity > 1 {
			t.Errorf("%s: activity %v, want 0..1", s.Addr(), gs.GfxActivity)
		}
		if age := time.Since(gs.ReadAt); age > 2*time.Second {
			t.Errorf("%s: telemetry %v old", s.Addr(), age)
		}
	}
}

// gpuPage serves gpus in AMD exporter names; status 0 means 200.
type gpuPage struct {
	*httptest.Server
	status atomic.Int64
}

func newGPUPage(t testing.TB, gpus []gpustats.GPU) *gpuPage {
	var buf bytes.Buffer
	if err := gpustats.WriteExporter(&buf, gpus, ""); err != nil {
		t.Fatal(err)
	}
	body := buf.Bytes()
	p := &gpuPage{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if s := p.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(p.Close)
	return p
}

func gpuStates(eps ...scheduler.Endpoint) []scheduler.EndpointState {
	out := make([]scheduler.EndpointState, len(eps))
	for i, e := range eps {
		out[i] = scheduler.EndpointState{H: scheduler.NewHandle(e), Healthy: true}
	}
	return out
}

// TestGPUEnricherPoolURLAttachAndStaleness: one exporter page for the pool;
// GPUs attach by pod/namespace, else by the host label, else by IP; an
// endpoint the page does not name stays absent; telemetry older than the
// staleness bound is dropped, and a failing exporter lets it age out.
func TestGPUEnricherPoolURLAttachAndStaleness(t *testing.T) {
	demo := gpustats.DemoGPUs()
	a, b, c := demo[0], demo[1], demo[0]
	a.Pod, a.Namespace, a.Host = "vllm-a", "ns", "node-1"
	b.Host = "node-2"
	c.Index, c.Host, c.PowerCapWatts = 0, "10.0.0.9", nil
	page := newGPUPage(t, []gpustats.GPU{a, b, c})
	g, err := NewGPUEnricher(GPUConfig{URL: page.URL, Interval: 20 * time.Millisecond, StalenessThreshold: 300 * time.Millisecond}, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	states := gpuStates(
		scheduler.Endpoint{Name: "vllm-a", Namespace: "ns", Addr: ip("10.0.0.1"), Port: 8000},
		scheduler.Endpoint{Name: "vllm-b", Namespace: "ns", Addr: ip("10.0.0.2"), Port: 8000, Labels: map[string]string{DefaultGPUHostLabel: "node-2"}},
		scheduler.Endpoint{Name: "vllm-c", Addr: ip("10.0.0.9"), Port: 8000},
		scheduler.Endpoint{Name: "vllm-d", Namespace: "ns", Addr: ip("10.0.0.4"), Port: 8000},
	)
	g.Enrich(states, time.Now()) // registers the targets
	eventually(t, "a scrape round", func() bool { return g.Rounds() > 0 })
	g.Enrich(states, time.Now())
	wantProduct := []string{"AMD Instinct MI300X", "AMD Instinct MI250X", "AMD Instinct MI300X", ""}
	for i, st := range states {
		if st.GPU.Product != wantProduct[i] || st.GPU.Present != (wantProduct[i] != "") {
			t.Errorf("endpoint %d: present %v product %q, want %q", i, st.GPU.Present, st.GPU.Product, wantProduct[i])
		}
	}
	s0 := states[0].GPU
	if s0.GfxActivity != 0.62 || s0.PowerWatts != 540 || s0.JunctionCelsius != 71 || s0.Has&scheduler.GPUEdgeTemp != 0 {
		t.Errorf("endpoint 0 values %+v", s0)
	}
	// The page writes no power cap (AMD exporter names), so none is present.
	if states[2].GPU.Has&scheduler.GPUPowerCap != 0 {
		t.Errorf("endpoint 2: power cap present")
	}
	// Older than the bound: ignored.
	g.Enrich(states, time.Now().Add(time.Second))
	for i, st := range states {
		if st.GPU.Present {
			t.Errorf("endpoint %d: stale telemetry still present", i)
		}
	}
	// The exporter fails: the last values age out.
	page.status.Store(http.StatusInternalServerError)
	errs := g.Errors()
	eventually(t, "failed reads", func() bool { return g.Errors() > errs+1 })
	eventually(t, "telemetry aging out", func() bool {
		g.Enrich(states, time.Now())
		return !states[0].GPU.Present
	})
}

// TestFoldGPUs: several GPUs fold into the worst value per field, VRAM
// summed; a field no GPU has stays absent.
func TestFoldGPUs(t *testing.T) {
	t0 := time.Unix(1000, 0)
	gs := []gpustats.GPU{
		{Product: "X", GfxActivityPercent: gpustats.F(40), PowerWatts: gpustats.F(600), PowerCapWatts: gpustats.F(750),
			JunctionTemperatureCelsius: gpustats.F(80), SclkHz: gpustats.F(2e9), VRAMUsedBytes: gpustats.F(10), VRAMTotalBytes: gpustats.F(100), ReadTime: t0.Add(time.Second)},
		{Product: "X", GfxActivityPercent: gpustats.F(90), PowerWatts: gpustats.F(500), PowerCapWatts: gpustats.F(500),
			JunctionTemperatureCelsius: gpustats.F(70), SclkHz: gpustats.F(1.5e9), VRAMUsedBytes: gpustats.F(20), VRAMTotalBytes: gpustats.F(100), ReadTime: t0},
	}
	st := FoldGPUs(gs)
	if !st.Present || st.Count != 2 || st.Product != "X" || !st.ReadAt.Equal(t0) {
		t.Fatalf("identity %+v", st)
	}
	if st.GfxActivity != 0.9 || st.PowerWatts != 500 || st.PowerCapWatts != 500 || st.JunctionCelsius != 80 ||
		st.SclkHz != 1.5e9 || st.VRAMUsedBytes != 30 || st.VRAMTotalBytes != 200 {
		t.Errorf("folded %+v", st)
	}
	for _, f := range []scheduler.GPUField{scheduler.GPUEdgeTemp, scheduler.GPUMemoryTemp, scheduler.GPUMclk, scheduler.GPUMemActivity} {
		if st.Has&f != 0 {
			t.Errorf("field %b present, no GPU has it", f)
		}
	}
}

// TestGPUSourcePlugin: the plugin's parameters decode into GPUConfig and
// bad ones say what was expected.
func TestGPUSourcePlugin(t *testing.T) {
	r := scheduler.NewRegistry()
	RegisterPlugins(r)
	f, ok := r.Lookup(GPUMetricsSourceType)
	if !ok {
		t.Fatal("gpu-metrics-source not registered")
	}
	p, err := f.New("gpu", scheduler.MapParams{"urlTemplate": "http://{ip}:{port}/gpu/metrics", "interval": 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c, err := GPUConfigFrom([]scheduler.Plugin{p})
	if err != nil || c == nil {
		t.Fatalf("GPUConfigFrom: %v %v", c, err)
	}
	if c.Interval != 500*time.Millisecond || c.StalenessThreshold != DefaultGPUStalenessThreshold {
		t.Errorf("config %+v", c)
	}
	if u := c.EndpointURL(scheduler.Endpoint{Addr: netip.MustParseAddr("::1"), Port: 9}); u != "http://[::1]:9/gpu/metrics" {
		t.Errorf("EndpointURL %q", u)
	}
	d, err := f.New("gpu", scheduler.MapParams{})
	if err != nil || d.(*gpuMetricsSource).cfg.URLTemplate != DefaultGPUURLTemplate {
		t.Errorf("no parameters: %v, want the default urlTemplate %s", err, DefaultGPUURLTemplate)
	}
	both, err := f.New("gpu", scheduler.MapParams{"url": "http://x/m", "urlTemplate": "http://{ip}/m"})
	if err != nil || len(both.(*gpuMetricsSource).Notes()) != 1 {
		t.Errorf("url and urlTemplate: %v, want a note that url wins", err)
	}
	if _, err := GPUConfigFrom([]scheduler.Plugin{p, p}); err == nil {
		t.Error("two gpu-metrics-sources accepted")
	}
	if sc, err := ScrapeConfigFrom([]scheduler.Plugin{p}); err != nil || sc.Path != "/metrics" {
		t.Errorf("ScrapeConfigFrom with a gpu source: %+v %v", sc, err)
	}
	for _, tc := range []struct {
		p    scheduler.MapParams
		want string
	}{
		{scheduler.MapParams{"url": "", "urlTemplate": ""}, "found neither"},
		{scheduler.MapParams{"url": "x:9400"}, "expected an http://"},
		{scheduler.MapParams{"urlTemplate": "http://{pod}/m"}, "found {pod}"},
		{scheduler.MapParams{"url": "http://x/m", "interval": time.Duration(0)}, "expected positive"},
	} {
		_, err := f.New("gpu", tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.p, err, tc.want)
		}
	}
}

// gpuBenchEnv makes the test binary a page server for BenchmarkGPUScrape64
// (TestGPUBenchPageServer), so the benchmark's CPU time is the picker's alone.
const gpuBenchEnv = "FASTEPP_GPU_BENCH_PAGES"

// benchPage is one MI300X in AMD exporter names, as `gpustats serve` or the
// simulator's /gpu/metrics (tensor-parallel size 1) writes it.
func benchPage(t testing.TB) []byte {
	gpu := gpustats.DemoGPUs()[:1]
	gpu[0].Host, gpu[0].Pod, gpu[0].Namespace = "node", "vllm-0", "default"
	var buf bytes.Buffer
	if err := gpustats.WriteExporter(&buf, gpu, ""); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestGPUBenchPageServer is not a test: run by BenchmarkGPUScrape64 in a
// child process (gpuBenchEnv=N), it serves N pages on loopback, prints their
// addresses, and exits when its stdin closes. Skipped otherwise.
func TestGPUBenchPageServer(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(gpuBenchEnv))
	if err != nil {
		t.Skip("helper process of BenchmarkGPUScrape64")
	}
	body := benchPage(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) })
	for range n {
		s := httptest.NewServer(h)
		defer s.Close()
		fmt.Println(strings.TrimPrefix(s.URL, "http://"))
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// BenchmarkGPUScrape64 is one scrape round of 64 endpoints, each with its
// own page (urlTemplate mode, one MI300X page per endpoint), over loopback
// from a child process, so the CPU time measured (getrusage of this process:
// HTTP client, parsing, folding, GC) is the picker's alone. At 1 Hz a round
// runs once a second, so cpu-ns/op ÷ 1e9 is the share of one core, reported
// as core-%@1Hz.
func BenchmarkGPUScrape64(b *testing.B) {
	const n = 64
	addrs, _, _ := startChild(b, "TestGPUBenchPageServer", gpuBenchEnv+"="+strconv.Itoa(n))
	var eps []scheduler.Endpoint
	var hs []*scheduler.Handle
	for _, ap := range addrs {
		e := scheduler.Endpoint{Name: ap.String(), Addr: ap.Addr(), Port: ap.Port()}
		eps = append(eps, e)
		hs = append(hs, scheduler.NewHandle(e))
	}
	if len(eps) != n {
		b.Fatalf("page server: %d addresses, want %d", len(eps), n)
	}
	g, err := NewGPUEnricher(GPUConfig{URLTemplate: "http://{ip}:{port}/gpu/metrics", Interval: time.Hour}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	ctx := context.Background()
	g.round(ctx, nil, eps, hs) // warm the connections
	if got := len(*g.results.Load()); got != n {
		b.Fatalf("%d endpoints with telemetry, want %d", got, n)
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ReportAllocs()
	b.ResetTimer()
	c0 := cpu()
	for range b.N {
		g.round(ctx, nil, eps, hs)
	}
	used := cpu() - c0
	b.StopTimer()
	perRound := float64(used.Nanoseconds()) / float64(b.N)
	b.ReportMetric(perRound, "cpu-ns/op")
	b.ReportMetric(perRound/1e9*100, "core-%@1Hz")
}
