package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"

	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastepp/fastepp/gpustats"
	"github.com/fastepp/fastepp/scheduler"
)

// GPUMetricsSourceType is fastepp's data-layer plugin type (not GIE's) that
// scrapes GPU telemetry (AMD device-metrics-exporter or NVIDIA dcgm-exporter
// names, docs/GPUSTATS.md) into scheduler.EndpointState.GPU. Its parameters
// decode into GPUConfig (GPUConfigFrom); NewGPUEnricher runs it.
const GPUMetricsSourceType = "gpu-metrics-source"

// Defaults of GPUConfig.
const (
	DefaultGPUInterval           = time.Second
	DefaultGPUStalenessThreshold = 2 * time.Second
	DefaultGPUTimeout            = time.Second
	// DefaultGPUHostLabel is the endpoint label that names its node, matched
	// against the exporter's hostname label.
	DefaultGPUHostLabel = "kubernetes.io/hostname"
)

// DefaultGPUURLTemplate is where an endpoint's GPU telemetry is by default:
// port 9400 of its pod, where `gpustats serve` (a sidecar) listens by
// default, as does NVIDIA's dcgm-exporter.
const DefaultGPUURLTemplate = "http://{ip}:9400/metrics"

// GPUConfig says where GPU telemetry is scraped: URL when set, else
// URLTemplate.
type GPUConfig struct {
	// URL is one exporter page for the whole pool; its GPUs are attached to
	// endpoints by pod and namespace labels, else by host (the endpoint's
	// HostLabel label, else its IP) (gpustats.Attach). When set it takes
	// precedence over URLTemplate.
	URL string
	// URLTemplate is a page per endpoint (a sidecar, or the simulator's
	// /gpu/metrics), with placeholders {ip} (bracketed for IPv6), {port},
	// {name} and {namespace}: e.g. http://{ip}:{port}/gpu/metrics. The GPUs of
	// an endpoint's page are its own: those whose pod and namespace labels
	// name it, else all of them when the page labels at most one pod (an
	// endpoint named by its address, as --endpoints makes them).
	URLTemplate string
	// Interval between scrapes (default 1s).
	Interval time.Duration
	// StalenessThreshold: telemetry older than this is ignored, not trusted
	// (default 2s): the endpoint's GPUState is left absent.
	StalenessThreshold time.Duration
	// Timeout bounds one page fetch (default 1s, at most the staleness
	// threshold).
	Timeout time.Duration
	// HostLabel is the endpoint label naming its node (default
	// DefaultGPUHostLabel).
	HostLabel string
}

func (c GPUConfig) withDefaults() GPUConfig {
	if c.Interval <= 0 {
		c.Interval = DefaultGPUInterval
	}
	if c.StalenessThreshold <= 0 {
		c.StalenessThreshold = DefaultGPUStalenessThreshold
	}
	if c.Timeout <= 0 {
		c.Timeout = min(DefaultGPUTimeout, c.StalenessThreshold)
	}
	if c.HostLabel == "" {
		c.HostLabel = DefaultGPUHostLabel
	}
	return c
}

// Validate checks that URL, or else URLTemplate, is set and well formed.
func (c GPUConfig) Validate() error {
	switch {
	case c.URL == "" && c.URLTemplate == "":
		return errors.New("gpu-metrics-source: expected url (one exporter page for the pool) or urlTemplate (a page per endpoint), found neither")
	case c.URL != "":
		if !isHTTPURL(c.URL) {
			return fmt.Errorf("gpu-metrics-source url: expected an http:// or https:// URL, found %q", c.URL)
		}
	default:
		if !isHTTPURL(c.URLTemplate) {
			return fmt.Errorf("gpu-metrics-source urlTemplate: expected an http:// or https:// URL with placeholders such as http://{ip}:{port}/gpu/metrics, found %q", c.URLTemplate)
		}
		rest := c.URLTemplate
		for {
			i := strings.IndexByte(rest, '{')
			if i < 0 {
				break
			}
			j := strings.IndexByte(rest[i:], '}')
			if j < 0 {
				return fmt.Errorf("gpu-metrics-source urlTemplate: expected a closing } after %q, found none", rest[i:])
			}
			switch ph := rest[i : i+j+1]; ph {
			case "{ip}", "{port}", "{name}", "{namespace}":
			default:
				return fmt.Errorf("gpu-metrics-source urlTemplate: expected placeholders {ip}, {port}, {name} or {namespace}, found %s", ph)
			}
			rest = rest[i+j+1:]
		}
	}
	if c.Interval < 0 || c.StalenessThreshold < 0 {
		return fmt.Errorf("gpu-metrics-source: expected positive durations, found interval %v, stalenessThreshold %v", c.Interval, c.StalenessThreshold)
	}
	return nil
}

func isHTTPURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// EndpointURL is URLTemplate filled in for e.
func (c GPUConfig) EndpointURL(e scheduler.Endpoint) string {
	ip := e.Addr.String()
	if e.Addr.Is6() {
		ip = "[" + ip + "]"
	}
	return strings.NewReplacer("{ip}", ip, "{port}", strconv.Itoa(int(e.Port)),
		"{name}", e.Name, "{namespace}", e.Namespace).Replace(c.URLTemplate)
}

// gpuMetricsSource is the gpu-metrics-source plugin: its configuration only.
type gpuMetricsSource struct {
	name  string
	cfg   GPUConfig
	notes []string
}

// Notes are what config reports to the operator (scorers.Noter's method).
func (g *gpuMetricsSource) Notes() []string { return g.notes }

// Interface guard: the data-layer kind promises scheduler.Plugin.
var _ scheduler.Plugin = (*gpuMetricsSource)(nil)

func (g *gpuMetricsSource) Type() string { return GPUMetricsSourceType }
func (g *gpuMetricsSource) Name() string { return g.name }

// GPUConfigFrom returns the GPU telemetry configuration of a config's
// data-layer plugins: nil when none is a gpu-metrics-source, an error when
// more than one is.
func GPUConfigFrom(plugins []scheduler.Plugin) (*GPUConfig, error) {
	var out *GPUConfig
	for _, p := range plugins {
		g, ok := p.(*gpuMetricsSource)
		if !ok {
			continue
		}
		if out != nil {
			return nil, fmt.Errorf("data layer: expected at most one %s, found a second (%q)", GPUMetricsSourceType, g.name)
		}
		c := g.cfg
		out = &c
	}
	return out, nil
}

func registerGPUSource(r *scheduler.Registry) {
	r.MustRegister(GPUMetricsSourceType, scheduler.Factory{
		Kind:   scheduler.KindDataLayer,
		Proto:  (*gpuMetricsSource)(nil),
		Params: []string{"url", "urlTemplate", "interval", "stalenessThreshold", "hostLabel"},
		Doc:    "fastepp: scrapes GPU telemetry (AMD device-metrics-exporter / dcgm-exporter names) from one exporter URL or a per-endpoint urlTemplate into each endpoint's GPU state",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			var c GPUConfig
			var err error
			if c.URL, err = p.String("url", ""); err != nil {
				return nil, err
			}
			if c.URLTemplate, err = p.String("urlTemplate", DefaultGPUURLTemplate); err != nil {
				return nil, err
			}
			if c.Interval, err = p.Duration("interval", DefaultGPUInterval); err != nil {
				return nil, err
			}
			if c.StalenessThreshold, err = p.Duration("stalenessThreshold", DefaultGPUStalenessThreshold); err != nil {
				return nil, err
			}
			if c.HostLabel, err = p.String("hostLabel", DefaultGPUHostLabel); err != nil {
				return nil, err
			}
			if c.Interval <= 0 || c.StalenessThreshold <= 0 {
				return nil, fmt.Errorf("interval, stalenessThreshold: expected positive durations, found %v, %v", c.Interval, c.StalenessThreshold)
			}
			if err := c.Validate(); err != nil {
				return nil, err
			}
			g := &gpuMetricsSource{name: name, cfg: c}
			if c.URL != "" && c.URLTemplate != DefaultGPUURLTemplate {
				g.notes = []string{fmt.Sprintf("url %s is scraped for the whole pool; urlTemplate %s is not used", c.URL, c.URLTemplate)}
			}
			return g, nil
		},
	})
}

// GPUEnricher is the Enricher that puts GPU telemetry into the snapshot:
// its own goroutine scrapes the configured pages every Interval; Enrich (on
// the publisher goroutine) copies the last result of each endpoint into its
// state when it is younger than StalenessThreshold, and leaves it absent
// otherwise. The endpoints to scrape are the ones Enrich last saw.
type GPUEnricher struct {
	cfg    GPUConfig
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	targets []scheduler.Endpoint // guarded by mu; replaced, never mutated
	handles []*scheduler.Handle  // parallel to targets
	changed chan struct{}

	results atomic.Pointer[map[*scheduler.Handle]scheduler.GPUState]
	rounds  atomic.Uint64
	errs    atomic.Uint64

	// publisher-goroutine state (Enrich only)
	seen []*scheduler.Handle

	stop context.CancelFunc
	done chan struct{}
}

// Interface guard.
var _ Enricher = (*GPUEnricher)(nil)

// NewGPUEnricher validates cfg and starts the scrape goroutine; Close stops it.
// client may be nil (a client with cfg's timeout).
func NewGPUEnricher(cfg GPUConfig, client *http.Client, log *slog.Logger) (*GPUEnricher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if client == nil {
		client = NewHTTPClient(cfg.Timeout, false)
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, stop := context.WithCancel(context.Background())
	g := &GPUEnricher{cfg: cfg, client: client, log: log, now: time.Now,
		changed: make(chan struct{}, 1), stop: stop, done: make(chan struct{})}
	empty := map[*scheduler.Handle]scheduler.GPUState{}
	g.results.Store(&empty)
	go g.loop(ctx)
	return g, nil
}

// Close stops the scrape goroutine and waits for it.
func (g *GPUEnricher) Close() error {
	g.stop()
	<-g.done
	return nil
}

// Rounds is the number of scrape rounds done; Errors the failed page reads.
func (g *GPUEnricher) Rounds() uint64 { return g.rounds.Load() }

// Errors is the number of failed page reads.
func (g *GPUEnricher) Errors() uint64 { return g.errs.Load() }

// Enrich implements Enricher: it sets each state's GPU from the last scrape
// when fresh, and records the endpoints for the next scrape round. It does
// not block (one mutex, held only to swap the target list).
func (g *GPUEnricher) Enrich(states []scheduler.EndpointState, now time.Time) {
	same := len(states) == len(g.seen)
	for i := 0; same && i < len(states); i++ {
		same = states[i].H == g.seen[i]
	}
	if !same {
		g.seen = g.seen[:0]
		eps := make([]scheduler.Endpoint, len(states))
		hs := make([]*scheduler.Handle, len(states))
		for i := range states {
			g.seen = append(g.seen, states[i].H)
			eps[i], hs[i] = states[i].H.Endpoint, states[i].H
		}
		g.mu.Lock()
		g.targets, g.handles = eps, hs
		g.mu.Unlock()
		select {
		case g.changed <- struct{}{}:
		default:
		}
	}
	res := *g.results.Load()
	for i := range states {
		st, ok := res[states[i].H]
		if ok && st.Present && now.Sub(st.ReadAt) <= g.cfg.StalenessThreshold {
			states[i].GPU = st
		} else {
			states[i].GPU = scheduler.GPUState{}
		}
	}
}

func (g *GPUEnricher) loop(ctx context.Context) {
	defer close(g.done)
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	var pool *gpustats.Exporter
	if g.cfg.URL != "" { // one page for the pool
		var err error
		if pool, err = gpustats.NewExporter(gpustats.ExporterOptions{URL: g.cfg.URL, Client: g.client, Now: g.now}); err != nil {
			g.log.Error("gpu telemetry: exporter source", "err", err)
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.changed:
		}
		g.mu.Lock()
		eps, hs := g.targets, g.handles
		g.mu.Unlock()
		if len(eps) == 0 {
			continue
		}
		g.round(ctx, pool, eps, hs)
	}
}

// round scrapes once and publishes the merged results: endpoints whose read
// failed keep their previous value, which ages into staleness.
func (g *GPUEnricher) round(ctx context.Context, pool *gpustats.Exporter, eps []scheduler.Endpoint, hs []*scheduler.Handle) {
	prev := *g.results.Load()
	next := make(map[*scheduler.Handle]scheduler.GPUState, len(hs))
	for _, h := range hs {
		if st, ok := prev[h]; ok {
			next[h] = st
		}
	}
	if pool != nil {
		gpus, err := pool.Read(ctx)
		if err != nil {
			g.errs.Add(1)
			if len(gpus) == 0 {
				g.log.Debug("gpu telemetry: exporter read failed", "url", g.cfg.URL, "err", err)
			}
		}
		if len(gpus) > 0 {
			refs := make([]gpustats.EndpointRef, len(eps))
			for i, e := range eps {
				host := e.Labels[g.cfg.HostLabel]
				if host == "" {
					host = e.Addr.String()
				}
				refs[i] = gpustats.EndpointRef{Pod: e.Name, Namespace: e.Namespace, Host: host}
			}
			for i, gs := range gpustats.Attach(gpus, refs) {
				if len(gs) > 0 {
					next[hs[i]] = FoldGPUs(gs)
				}
			}
		}
	} else {
		var wg sync.WaitGroup
		var mu sync.Mutex
		sem := make(chan struct{}, 16)
		for i, e := range eps {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				gs, err := g.readEndpoint(ctx, e)
				if err != nil {
					g.errs.Add(1)
				}
				if len(gs) == 0 {
					return
				}
				st := FoldGPUs(gs)
				mu.Lock()
				next[hs[i]] = st
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	g.results.Store(&next)
	g.rounds.Add(1)
}

// readEndpoint reads e's own page: the GPUs labelled with e's pod, or all
// of them when the page labels at most one pod.
func (g *GPUEnricher) readEndpoint(ctx context.Context, e scheduler.Endpoint) ([]gpustats.GPU, error) {
	src, err := gpustats.NewExporter(gpustats.ExporterOptions{URL: g.cfg.EndpointURL(e), Client: g.client, Now: g.now})
	if err != nil {
		return nil, err
	}
	gpus, err := src.Read(ctx)
	if len(gpus) == 0 {
		return nil, err
	}
	if got := gpustats.Attach(gpus, []gpustats.EndpointRef{{Pod: e.Name, Namespace: e.Namespace}})[0]; len(got) > 0 {
		return got, err
	}
	for _, gp := range gpus {
		if gp.Pod != gpus[0].Pod || gp.Namespace != gpus[0].Namespace {
			return nil, err // a node's page of several pods, none of them e
		}
	}
	return gpus, err // the page of one pod (or of none): e's own
}

// FoldGPUs folds an endpoint's GPUs into one GPUState: per field the worst
// GPU (highest activity, temperature and power-to-cap ratio, lowest clock),
// VRAM summed; a field is present when any GPU has it. ReadAt is the oldest
// read time.
func FoldGPUs(gs []gpustats.GPU) scheduler.GPUState {
	st := scheduler.GPUState{Present: len(gs) > 0, Count: len(gs)}
	worstPower := -1.0
	for i, gp := range gs {
		if i == 0 || (st.Product == "" && gp.Product != "") {
			st.Product = gp.Product
		}
		if st.ReadAt.IsZero() || gp.ReadTime.Before(st.ReadAt) {
			st.ReadAt = gp.ReadTime
		}
		maxF(&st, scheduler.GPUActivity, &st.GfxActivity, pct(gp.GfxActivityPercent))
		maxF(&st, scheduler.GPUMemActivity, &st.MemActivity, pct(gp.MemActivityPercent))
		maxF(&st, scheduler.GPUEdgeTemp, &st.EdgeCelsius, gp.EdgeTemperatureCelsius)
		maxF(&st, scheduler.GPUJunctionTemp, &st.JunctionCelsius, gp.JunctionTemperatureCelsius)
		maxF(&st, scheduler.GPUMemoryTemp, &st.MemoryCelsius, gp.MemoryTemperatureCelsius)
		minF(&st, scheduler.GPUSclk, &st.SclkHz, gp.SclkHz)
		minF(&st, scheduler.GPUMclk, &st.MclkHz, gp.MclkHz)
		sumF(&st, scheduler.GPUVRAMUsed, &st.VRAMUsedBytes, gp.VRAMUsedBytes)
		sumF(&st, scheduler.GPUVRAMTotal, &st.VRAMTotalBytes, gp.VRAMTotalBytes)
		if ok(gp.PowerWatts) {
			r := *gp.PowerWatts
			if ok(gp.PowerCapWatts) && *gp.PowerCapWatts > 0 {
				r = *gp.PowerWatts / *gp.PowerCapWatts * 1e9 // ratios outrank raw watts
			}
			if r > worstPower {
				worstPower = r
				st.Has |= scheduler.GPUPower
				st.PowerWatts = *gp.PowerWatts
				st.Has &^= scheduler.GPUPowerCap
				st.PowerCapWatts = 0
				if ok(gp.PowerCapWatts) {
					st.Has |= scheduler.GPUPowerCap
					st.PowerCapWatts = *gp.PowerCapWatts
				}
			}
		}
	}
	return st
}

func ok(v *float64) bool { return v != nil && !math.IsNaN(*v) && !math.IsInf(*v, 0) }

func pct(v *float64) *float64 {
	if !ok(v) {
		return nil
	}
	x := *v / 100
	return &x
}

func maxF(st *scheduler.GPUState, f scheduler.GPUField, dst *float64, v *float64) {
	if !ok(v) {
		return
	}
	if st.Has&f == 0 || *v > *dst {
		*dst = *v
	}
	st.Has |= f
}

func minF(st *scheduler.GPUState, f scheduler.GPUField, dst *float64, v *float64) {
	if !ok(v) {
		return
	}
	if st.Has&f == 0 || *v < *dst {
		*dst = *v
	}
	st.Has |= f
}

func sumF(st *scheduler.GPUState, f scheduler.GPUField, dst *float64, v *float64) {
	if !ok(v) {
		return
	}
	*dst += *v
	st.Has |= f
}
