package gpustats

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// GPU is one GPU's telemetry at ReadTime. A pointer field is nil (null in
// JSON) when the source or the card does not expose that value; it is never
// reported as 0 in its place. Units are in the field names: percent 0..100,
// bytes, watts, degrees Celsius, hertz.
type GPU struct {
	// Index is the GPU's position on its node as the source enumerates it
	// (sysfs: AMD cards in card-number order; amd-smi: processor order;
	// exporters: the gpu_id / gpu label).
	Index int `json:"index"`
	// Product is the marketing name ("AMD Instinct MI300X"), "" when unknown.
	Product string `json:"product,omitempty"`
	// UniqueID is the card's serial / unique id / UUID, "" when unknown.
	UniqueID string `json:"unique_id,omitempty"`

	GfxActivityPercent         *float64 `json:"gfx_activity_percent"`
	MemActivityPercent         *float64 `json:"mem_activity_percent"`
	VRAMUsedBytes              *float64 `json:"vram_used_bytes"`
	VRAMTotalBytes             *float64 `json:"vram_total_bytes"`
	PowerWatts                 *float64 `json:"power_watts"`
	PowerCapWatts              *float64 `json:"power_cap_watts"`
	EdgeTemperatureCelsius     *float64 `json:"edge_temperature_celsius"`
	JunctionTemperatureCelsius *float64 `json:"junction_temperature_celsius"`
	MemoryTemperatureCelsius   *float64 `json:"memory_temperature_celsius"`
	SclkHz                     *float64 `json:"sclk_hz"`
	MclkHz                     *float64 `json:"mclk_hz"`

	// ReadTime is when the source read the values (for exporter sources:
	// when the page was fetched).
	ReadTime time.Time `json:"read_time"`

	// Pod, Namespace and Host come from exporter labels (pod, namespace,
	// hostname / Hostname); node-local sources leave them empty.
	Pod       string `json:"pod,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Host      string `json:"host,omitempty"`
}

// F returns a pointer to v: a present value for a GPU field.
func F(v float64) *float64 { return &v }

// Source reads the GPUs of one place (a node's sysfs, the amd-smi library, an
// exporter page). Read may be called concurrently. It returns every GPU it
// found; a non-nil error together with a non-empty slice means some values
// could not be parsed (they are absent in the result), while an error with
// no GPUs means the read failed. Sources that hold resources (amd-smi)
// implement io.Closer; use Close.
type Source interface {
	Read(ctx context.Context) ([]GPU, error)
	Name() string
}

// Close closes s if it holds resources (io.Closer); otherwise it does nothing.
func Close(s Source) error {
	if c, ok := s.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Kinds of source New accepts.
const (
	KindAuto     = "auto"
	KindSysfs    = "sysfs"
	KindAMDSMI   = "amdsmi"
	KindExporter = "exporter"
	KindFake     = "fake"
)

// Kinds lists the values Options.Kind accepts ("" means auto).
var Kinds = []string{KindAuto, KindSysfs, KindAMDSMI, KindExporter, KindFake}

// Options selects and configures a source for New.
type Options struct {
	// Kind is one of Kinds; "" is auto.
	Kind string
	// SysfsRoot is the sysfs mount point (default "/sys").
	SysfsRoot string
	// ExporterURL is the metrics page of a device-metrics-exporter or
	// dcgm-exporter (required for KindExporter).
	ExporterURL string
	// Fake is what a fake source reports (default DemoGPUs).
	Fake []GPU
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ErrNotCompiledIn is returned by NewAMDSMI in a build without the amdsmi tag.
var ErrNotCompiledIn = errors.New("amd-smi support is not compiled in (build with -tags amdsmi and cgo, see the gpustats package doc)")

// New builds the source opts ask for. With Kind auto it tries, in order:
// amd-smi (if compiled in and amdsmi_init succeeds), sysfs (if an AMD card
// is found under SysfsRoot), and otherwise returns an empty source that
// reports no GPUs; auto never fails.
func New(opts Options) (Source, error) {
	switch opts.Kind {
	case "", KindAuto:
		if s, err := NewAMDSMI(opts.Now); err == nil {
			return s, nil
		}
		sy := NewSysfs(opts.SysfsRoot, opts.Now)
		if n, _ := sy.CountAMD(); n > 0 {
			return sy, nil
		}
		return Empty{}, nil
	case KindSysfs:
		return NewSysfs(opts.SysfsRoot, opts.Now), nil
	case KindAMDSMI:
		return NewAMDSMI(opts.Now)
	case KindExporter:
		if opts.ExporterURL == "" {
			return nil, errors.New("exporter source: expected an exporter URL (--exporter-url), found none")
		}
		return NewExporter(ExporterOptions{URL: opts.ExporterURL, Now: opts.Now})
	case KindFake:
		g := opts.Fake
		if g == nil {
			g = DemoGPUs()
		}
		return &Fake{GPUs: g, Now: opts.Now}, nil
	}
	return nil, fmt.Errorf("source: expected one of %v, found %q", Kinds, opts.Kind)
}

// Empty is the source New(auto) returns on a node without AMD GPUs: it
// reports none.
type Empty struct{}

// Read returns no GPUs.
func (Empty) Read(context.Context) ([]GPU, error) { return nil, nil }

// Name is "none".
func (Empty) Name() string { return "none" }

// Fake reports fixed GPUs (tests, demos). A zero ReadTime is set to Now.
type Fake struct {
	GPUs []GPU
	Err  error
	Now  func() time.Time
}

// Read returns a copy of f.GPUs and f.Err.
func (f *Fake) Read(ctx context.Context) ([]GPU, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := nowFunc(f.Now)()
	out := make([]GPU, len(f.GPUs))
	copy(out, f.GPUs)
	for i := range out {
		if out[i].ReadTime.IsZero() {
			out[i].ReadTime = now
		}
	}
	return out, f.Err
}

// Name is "fake".
func (f *Fake) Name() string { return "fake" }

// DemoGPUs is what the fake source reports by default: an MI300X (no edge
// sensor) and an MI250X GCD.
func DemoGPUs() []GPU {
	return []GPU{
		{
			Index: 0, Product: "AMD Instinct MI300X", UniqueID: "FAKE0000000000A0",
			GfxActivityPercent: F(62), MemActivityPercent: F(31),
			VRAMUsedBytes: F(172e9), VRAMTotalBytes: F(192e9),
			PowerWatts: F(540), PowerCapWatts: F(750),
			JunctionTemperatureCelsius: F(71), MemoryTemperatureCelsius: F(58),
			SclkHz: F(1.9e9), MclkHz: F(1.3e9),
		},
		{
			Index: 1, Product: "AMD Instinct MI250X", UniqueID: "FAKE0000000000A1",
			GfxActivityPercent: F(12), MemActivityPercent: F(4),
			VRAMUsedBytes: F(8e9), VRAMTotalBytes: F(68.7e9),
			PowerWatts: F(160), PowerCapWatts: F(500),
			EdgeTemperatureCelsius: F(41), JunctionTemperatureCelsius: F(47), MemoryTemperatureCelsius: F(44),
			SclkHz: F(0.8e9), MclkHz: F(1.6e9),
		},
	}
}

func nowFunc(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}
