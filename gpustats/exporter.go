package gpustats

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric names of AMD's device-metrics-exporter (units: %, MB, W, °C, MHz)
// that the exporter source reads and Serve writes (docs/GPUSTATS.md).
const (
	AMDGfxActivity  = "gpu_gfx_activity"
	AMDUmcActivity  = "gpu_umc_activity"
	AMDUsedVRAM     = "gpu_used_vram"
	AMDTotalVRAM    = "gpu_total_vram"
	AMDFreeVRAM     = "gpu_free_vram"
	AMDPowerUsage   = "gpu_power_usage"
	AMDPackagePower = "gpu_package_power"
	AMDJunctionTemp = "gpu_junction_temperature"
	AMDEdgeTemp     = "gpu_edge_temperature"
	AMDMemoryTemp   = "gpu_memory_temperature"
	AMDClock        = "gpu_clock"

	AMDClockSystem = "GPU_CLOCK_TYPE_SYSTEM"
	AMDClockMemory = "GPU_CLOCK_TYPE_MEMORY"
)

// Metric names of NVIDIA's dcgm-exporter (units: %, 0..1, MiB, W, °C, MHz).
const (
	DCGMGPUUtil        = "DCGM_FI_DEV_GPU_UTIL"
	DCGMGrEngineActive = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
	DCGMMemCopyUtil    = "DCGM_FI_DEV_MEM_COPY_UTIL"
	DCGMFBUsed         = "DCGM_FI_DEV_FB_USED"
	DCGMFBFree         = "DCGM_FI_DEV_FB_FREE"
	DCGMPowerUsage     = "DCGM_FI_DEV_POWER_USAGE"
	DCGMPowerLimit     = "DCGM_FI_DEV_POWER_MGMT_LIMIT"
	DCGMGPUTemp        = "DCGM_FI_DEV_GPU_TEMP"
	DCGMMemoryTemp     = "DCGM_FI_DEV_MEMORY_TEMP"
	DCGMSMClock        = "DCGM_FI_DEV_SM_CLOCK"
	DCGMMemClock       = "DCGM_FI_DEV_MEM_CLOCK"
)

const (
	mb  = 1e6
	mib = 1 << 20
	mhz = 1e6
)

// ExporterOptions configures an exporter source.
type ExporterOptions struct {
	// URL of the exporter's metrics page (http or https).
	URL string
	// Client is the HTTP client (default: one with a 5s timeout).
	Client *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxBytes bounds the page size (default 16 MiB).
	MaxBytes int64
}

// Exporter reads GPUs from a metrics page in AMD device-metrics-exporter
// names, dcgm-exporter names, or both (a mixed page is fine). GPUs keep the
// exporter's pod, namespace and host labels; see Attach.
type Exporter struct {
	o ExporterOptions
}

// NewExporter checks the URL and returns the source.
func NewExporter(o ExporterOptions) (*Exporter, error) {
	if !strings.HasPrefix(o.URL, "http://") && !strings.HasPrefix(o.URL, "https://") {
		return nil, fmt.Errorf("exporter source: expected an http:// or https:// URL, found %q", o.URL)
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 5 * time.Second}
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 16 << 20
	}
	o.Now = nowFunc(o.Now)
	return &Exporter{o: o}, nil
}

// Name is "exporter".
func (e *Exporter) Name() string { return "exporter" }

// Read fetches and parses the page.
func (e *Exporter) Read(ctx context.Context) ([]GPU, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.o.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("exporter %s: %w", e.o.URL, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := e.o.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("exporter %s: %w", e.o.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("exporter %s: expected HTTP 200, found %s", e.o.URL, resp.Status)
	}
	now := e.o.Now()
	page, err := io.ReadAll(io.LimitReader(resp.Body, e.o.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("exporter %s: reading the page: %w", e.o.URL, err)
	}
	if int64(len(page)) > e.o.MaxBytes {
		return nil, fmt.Errorf("exporter %s: expected a page of at most %d bytes, found more", e.o.URL, e.o.MaxBytes)
	}
	gpus, err := parsePage(page, now)
	if err != nil {
		return gpus, fmt.Errorf("exporter %s: %w", e.o.URL, err)
	}
	return gpus, nil
}

// parsePage parses a fetched page: the common shape without expfmt
// (parseSimple), anything else with it (ParseExporter).
func parsePage(page []byte, now time.Time) ([]GPU, error) {
	gpus, err := parseSimple(page, now)
	if err != errNotSimple {
		return gpus, err
	}
	return ParseExporter(bytes.NewReader(page), now)
}

// ParseExporter parses a Prometheus text page in AMD or NVIDIA exporter
// names into GPUs read at now, ordered by host, then index. Families it does
// not know are ignored; a page without any is no GPUs, not an error.
func ParseExporter(r io.Reader, now time.Time) ([]GPU, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("expected a Prometheus text exposition page, found: %w", err)
	}
	b := &gpuSet{byKey: map[string]*GPU{}, now: now}
	var errs []error
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			v, ok := sampleValue(m)
			if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			lb := labelMap(m)
			if strings.HasPrefix(name, "gpu_") {
				if err := b.amd(name, lb, v); err != nil {
					errs = append(errs, err)
				}
			} else if strings.HasPrefix(name, "DCGM_") {
				if err := b.dcgm(name, lb, v); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return b.finish(), errors.Join(errs...)
}

func sampleValue(m *dto.Metric) (float64, bool) {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue(), true
	case m.Untyped != nil:
		return m.GetUntyped().GetValue(), true
	case m.Counter != nil:
		return m.GetCounter().GetValue(), true
	}
	return 0, false
}

func labelMap(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// gpuSet gathers series into GPUs keyed by (vendor, host, gpu index).
type gpuSet struct {
	byKey map[string]*GPU
	free  map[*GPU]float64 // AMD free VRAM (MB) / DCGM free FB (MiB), to derive total
	now   time.Time
}

func (b *gpuSet) get(vendor, host, id string, index int, lb map[string]string, podKey, nsKey, modelKey, serialKey string) *GPU {
	k := vendor + "\x00" + host + "\x00" + id
	g := b.byKey[k]
	if g == nil {
		g = &GPU{Index: index, Host: host, ReadTime: b.now}
		b.byKey[k] = g
	}
	if g.Pod == "" {
		g.Pod, g.Namespace = lb[podKey], lb[nsKey]
	}
	if g.Product == "" {
		g.Product = lb[modelKey]
	}
	if g.UniqueID == "" {
		g.UniqueID = lb[serialKey]
	}
	return g
}

func (b *gpuSet) amd(name string, lb map[string]string, v float64) error {
	switch name {
	case AMDGfxActivity, AMDUmcActivity, AMDUsedVRAM, AMDTotalVRAM, AMDFreeVRAM, AMDPowerUsage, AMDPackagePower,
		AMDJunctionTemp, AMDEdgeTemp, AMDMemoryTemp, AMDClock:
	default:
		return nil
	}
	id := lb["gpu_id"]
	idx, err := strconv.Atoi(id)
	if err != nil || idx < 0 {
		return fmt.Errorf("%s: expected a gpu_id label holding a GPU index, found %q", name, id)
	}
	g := b.get("amd", lb["hostname"], id, idx, lb, "pod", "namespace", "card_model", "serial_number")
	switch name {
	case AMDGfxActivity:
		g.GfxActivityPercent = F(v)
	case AMDUmcActivity:
		g.MemActivityPercent = F(v)
	case AMDUsedVRAM:
		g.VRAMUsedBytes = F(v * mb)
	case AMDTotalVRAM:
		g.VRAMTotalBytes = F(v * mb)
	case AMDFreeVRAM:
		b.setFree(g, v*mb)
	case AMDPowerUsage:
		g.PowerWatts = F(v)
	case AMDPackagePower:
		if g.PowerWatts == nil {
			g.PowerWatts = F(v)
		}
	case AMDJunctionTemp:
		g.JunctionTemperatureCelsius = F(v)
	case AMDEdgeTemp:
		g.EdgeTemperatureCelsius = F(v)
	case AMDMemoryTemp:
		g.MemoryTemperatureCelsius = F(v)
	case AMDClock:
		// Several clocks of a type (clock_index): the first one is the
		// primary (GFX0 / the memory clock).
		if ci := lb["clock_index"]; ci != "" && ci != "0" {
			return nil
		}
		switch lb["clock_type"] {
		case AMDClockSystem:
			g.SclkHz = F(v * mhz)
		case AMDClockMemory:
			g.MclkHz = F(v * mhz)
		}
	}
	return nil
}

func (b *gpuSet) dcgm(name string, lb map[string]string, v float64) error {
	switch name {
	case DCGMGPUUtil, DCGMGrEngineActive, DCGMMemCopyUtil, DCGMFBUsed, DCGMFBFree, DCGMPowerUsage, DCGMPowerLimit,
		DCGMGPUTemp, DCGMMemoryTemp, DCGMSMClock, DCGMMemClock:
	default:
		return nil
	}
	id := lb["gpu"]
	idx, err := strconv.Atoi(id)
	if err != nil || idx < 0 {
		return fmt.Errorf("%s: expected a gpu label holding a GPU index, found %q", name, id)
	}
	g := b.get("nvidia", lb["Hostname"], id, idx, lb, "pod", "namespace", "modelName", "UUID")
	switch name {
	case DCGMGPUUtil:
		g.GfxActivityPercent = F(v)
	case DCGMGrEngineActive:
		if g.GfxActivityPercent == nil {
			g.GfxActivityPercent = F(v * 100)
		}
	case DCGMMemCopyUtil:
		g.MemActivityPercent = F(v)
	case DCGMFBUsed:
		g.VRAMUsedBytes = F(v * mib)
	case DCGMFBFree:
		b.setFree(g, v*mib)
	case DCGMPowerUsage:
		g.PowerWatts = F(v)
	case DCGMPowerLimit:
		g.PowerCapWatts = F(v)
	case DCGMGPUTemp:
		// DCGM's GPU temperature is the die sensor; NVIDIA exposes no
		// separate hotspot through DCGM, so it is reported as edge.
		g.EdgeTemperatureCelsius = F(v)
	case DCGMMemoryTemp:
		g.MemoryTemperatureCelsius = F(v)
	case DCGMSMClock:
		g.SclkHz = F(v * mhz)
	case DCGMMemClock:
		g.MclkHz = F(v * mhz)
	}
	return nil
}

func (b *gpuSet) setFree(g *GPU, bytes float64) {
	if b.free == nil {
		b.free = map[*GPU]float64{}
	}
	b.free[g] = bytes
}

// finish derives what the page gave only indirectly (used = total − free,
// total = used + free) and orders the GPUs.
func (b *gpuSet) finish() []GPU {
	out := make([]GPU, 0, len(b.byKey))
	for _, g := range b.byKey {
		if free, ok := b.free[g]; ok {
			switch {
			case g.VRAMTotalBytes == nil && g.VRAMUsedBytes != nil:
				g.VRAMTotalBytes = F(*g.VRAMUsedBytes + free)
			case g.VRAMUsedBytes == nil && g.VRAMTotalBytes != nil:
				g.VRAMUsedBytes = F(math.Max(*g.VRAMTotalBytes-free, 0))
			}
		}
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		a, c := out[i], out[j]
		if a.Host != c.Host {
			return a.Host < c.Host
		}
		if a.Index != c.Index {
			return a.Index < c.Index
		}
		return a.UniqueID < c.UniqueID
	})
	return out
}

// EndpointRef names a model-server endpoint for Attach: its pod and
// namespace, and the node it runs on (the exporter's hostname label: a node
// name or an IP, whichever the exporter publishes).
type EndpointRef struct {
	Pod, Namespace, Host string
}

// Attach returns, for each endpoint, the GPUs that belong to it: those whose
// pod and namespace labels match, or, when none match and the endpoint names
// a host, every GPU on that host. Endpoints with neither get none.
func Attach(gpus []GPU, eps []EndpointRef) [][]GPU {
	type podKey struct{ pod, ns string }
	byPod := map[podKey][]GPU{}
	byHost := map[string][]GPU{}
	for _, g := range gpus {
		if g.Pod != "" {
			k := podKey{g.Pod, g.Namespace}
			byPod[k] = append(byPod[k], g)
		}
		if g.Host != "" {
			byHost[g.Host] = append(byHost[g.Host], g)
		}
	}
	out := make([][]GPU, len(eps))
	for i, ep := range eps {
		if ep.Pod != "" {
			if gs := byPod[podKey{ep.Pod, ep.Namespace}]; len(gs) > 0 {
				out[i] = gs
				continue
			}
		}
		if ep.Host != "" {
			out[i] = byHost[ep.Host]
		}
	}
	return out
}

// WriteExporter writes gpus as a Prometheus text page in AMD
// device-metrics-exporter names and units (what `gpustats serve` exports), so
// the exporter source reads it back. Absent values are not written. host,
// when set, labels GPUs that carry no host of their own.
func WriteExporter(w io.Writer, gpus []GPU, host string) error {
	type fam struct {
		name, help string
		val        func(g GPU) *float64
		scale      float64
		clock      string
	}
	fams := []fam{
		{AMDGfxActivity, "GPU graphics (compute) activity, percent", func(g GPU) *float64 { return g.GfxActivityPercent }, 1, ""},
		{AMDUmcActivity, "GPU memory controller activity, percent", func(g GPU) *float64 { return g.MemActivityPercent }, 1, ""},
		{AMDUsedVRAM, "used VRAM, MB", func(g GPU) *float64 { return g.VRAMUsedBytes }, 1 / mb, ""},
		{AMDTotalVRAM, "total VRAM, MB", func(g GPU) *float64 { return g.VRAMTotalBytes }, 1 / mb, ""},
		{AMDFreeVRAM, "free VRAM, MB", func(g GPU) *float64 {
			if g.VRAMTotalBytes == nil || g.VRAMUsedBytes == nil {
				return nil
			}
			return F(math.Max(*g.VRAMTotalBytes-*g.VRAMUsedBytes, 0))
		}, 1 / mb, ""},
		{AMDPowerUsage, "GPU power usage, W", func(g GPU) *float64 { return g.PowerWatts }, 1, ""},
		{AMDJunctionTemp, "GPU junction (hotspot) temperature, C", func(g GPU) *float64 { return g.JunctionTemperatureCelsius }, 1, ""},
		{AMDEdgeTemp, "GPU edge temperature, C", func(g GPU) *float64 { return g.EdgeTemperatureCelsius }, 1, ""},
		{AMDMemoryTemp, "GPU memory temperature, C", func(g GPU) *float64 { return g.MemoryTemperatureCelsius }, 1, ""},
		{AMDClock, "GPU clock, MHz", func(g GPU) *float64 { return g.SclkHz }, 1 / mhz, AMDClockSystem},
		{AMDClock, "GPU clock, MHz", func(g GPU) *float64 { return g.MclkHz }, 1 / mhz, AMDClockMemory},
	}
	var clock *dto.MetricFamily
	var out []*dto.MetricFamily
	for _, f := range fams {
		mf := &dto.MetricFamily{Name: strPtr(f.name), Help: strPtr(f.help), Type: dto.MetricType_GAUGE.Enum()}
		if f.name == AMDClock {
			if clock == nil {
				clock = mf
				out = append(out, mf)
			}
			mf = clock
		} else {
			out = append(out, mf)
		}
		for _, g := range gpus {
			v := f.val(g)
			if v == nil {
				continue
			}
			h := g.Host
			if h == "" {
				h = host
			}
			lp := []*dto.LabelPair{lbl("gpu_id", strconv.Itoa(g.Index))}
			for _, kv := range [][2]string{{"serial_number", g.UniqueID}, {"card_model", g.Product}, {"hostname", h}, {"pod", g.Pod}, {"namespace", g.Namespace}} {
				if kv[1] != "" {
					lp = append(lp, lbl(kv[0], kv[1]))
				}
			}
			if f.clock != "" {
				lp = append(lp, lbl("clock_index", "0"), lbl("clock_type", f.clock))
			}
			mf.Metric = append(mf.Metric, &dto.Metric{Label: lp, Gauge: &dto.Gauge{Value: F(*v * f.scale)}})
		}
	}
	for _, mf := range out {
		if len(mf.Metric) == 0 {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
			return err
		}
	}
	return nil
}

func strPtr(s string) *string { return &s }

func lbl(k, v string) *dto.LabelPair { return &dto.LabelPair{Name: strPtr(k), Value: strPtr(v)} }
