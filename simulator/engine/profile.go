package engine

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	simconfig "github.com/fastepp/fastepp/configs/simulator"
)

// GPU is one accelerator profile: the spec-sheet figures of the roofline
// model, the efficiency factors applied to them, and the figures the
// simulated telemetry needs.
type GPU struct {
	CardModel  string  `yaml:"card_model"`
	CardSeries string  `yaml:"card_series"`
	Vendor     string  `yaml:"vendor"`
	BF16TFLOPS float64 `yaml:"bf16_tflops"`
	HBMGB      float64 `yaml:"hbm_gb"`
	HBMTBps    float64 `yaml:"hbm_tbps"`
	TDPWatts   float64 `yaml:"tdp_watts"`
	IdleWatts  float64 `yaml:"idle_watts"`
	MaxSclkMHz float64 `yaml:"max_sclk_mhz"`
	MclkMHz    float64 `yaml:"mclk_mhz"`
	EdgeSensor bool    `yaml:"edge_sensor"`
	MFU        float64 `yaml:"mfu"`
	MBU        float64 `yaml:"mbu"`
	OverheadMS float64 `yaml:"overhead_ms"`
}

// Model is one model profile: the figures that size weights and KV cache.
type Model struct {
	ServedName  string  `yaml:"served_name"`
	ParamsB     float64 `yaml:"params_b"`
	Layers      int     `yaml:"layers"`
	KVHeads     int     `yaml:"kv_heads"`
	HeadDim     int     `yaml:"head_dim"`
	DtypeBytes  int     `yaml:"dtype_bytes"`
	MaxModelLen int     `yaml:"max_model_len"`
	ReserveGB   float64 `yaml:"reserve_gb"`
}

// WeightBytes is the size of the weights in bytes.
func (m Model) WeightBytes() float64 { return m.ParamsB * 1e9 * float64(m.DtypeBytes) }

// KVBytesPerToken is the KV-cache footprint of one token: K and V for every
// layer and KV head.
func (m Model) KVBytesPerToken() float64 {
	return float64(2 * m.Layers * m.KVHeads * m.HeadDim * m.DtypeBytes)
}

// Overhead is the fixed per-step cost.
func (g GPU) Overhead() time.Duration {
	return time.Duration(g.OverheadMS * float64(time.Millisecond))
}

// Profiles is a set of named GPU and model profiles.
type Profiles struct {
	GPUs   map[string]GPU   `yaml:"gpus"`
	Models map[string]Model `yaml:"models"`
}

// ParseProfiles decodes profile YAML strictly (unknown fields are errors)
// and merges it into p; name says where the text came from, for errors.
func (p *Profiles) ParseProfiles(name string, text []byte) error {
	var in Profiles
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("profiles %s: %w", name, err)
	}
	if p.GPUs == nil {
		p.GPUs = map[string]GPU{}
	}
	if p.Models == nil {
		p.Models = map[string]Model{}
	}
	for k, g := range in.GPUs {
		if err := g.validate(); err != nil {
			return fmt.Errorf("profiles %s: gpu %q: %w", name, k, err)
		}
		p.GPUs[strings.ToLower(k)] = g
	}
	for k, m := range in.Models {
		if err := m.validate(); err != nil {
			return fmt.Errorf("profiles %s: model %q: %w", name, k, err)
		}
		p.Models[strings.ToLower(k)] = m
	}
	return nil
}

// GPU returns the named GPU profile or an error listing the known ones.
func (p *Profiles) GPU(name string) (GPU, error) {
	g, ok := p.GPUs[strings.ToLower(name)]
	if !ok {
		return GPU{}, fmt.Errorf("unknown GPU profile %q: expected one of %s", name, strings.Join(p.GPUNames(), ", "))
	}
	return g, nil
}

// Model returns the named model profile or an error listing the known ones.
func (p *Profiles) Model(name string) (Model, error) {
	m, ok := p.Models[strings.ToLower(name)]
	if !ok {
		return Model{}, fmt.Errorf("unknown model profile %q: expected one of %s", name, strings.Join(p.ModelNames(), ", "))
	}
	return m, nil
}

// GPUNames lists the GPU profile names, sorted.
func (p *Profiles) GPUNames() []string { return sortedKeys(p.GPUs) }

// ModelNames lists the model profile names, sorted.
func (p *Profiles) ModelNames() []string { return sortedKeys(p.Models) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (g GPU) validate() error {
	checks := []struct {
		name string
		v    float64
		max  float64
	}{
		{"bf16_tflops", g.BF16TFLOPS, 1e6},
		{"hbm_gb", g.HBMGB, 1e5},
		{"hbm_tbps", g.HBMTBps, 1e3},
		{"tdp_watts", g.TDPWatts, 1e5},
		{"mfu", g.MFU, 1},
		{"mbu", g.MBU, 1},
	}
	for _, c := range checks {
		if !(c.v > 0 && c.v <= c.max) {
			return fmt.Errorf("%s: expected a number in (0, %g], found %g", c.name, c.max, c.v)
		}
	}
	if g.OverheadMS < 0 || g.IdleWatts < 0 || g.IdleWatts > g.TDPWatts {
		return fmt.Errorf("overhead_ms %g / idle_watts %g: expected overhead ≥ 0 and 0 ≤ idle ≤ tdp_watts %g", g.OverheadMS, g.IdleWatts, g.TDPWatts)
	}
	return nil
}

func (m Model) validate() error {
	if !(m.ParamsB > 0) {
		return fmt.Errorf("params_b: expected > 0, found %g", m.ParamsB)
	}
	if m.Layers <= 0 || m.KVHeads <= 0 || m.HeadDim <= 0 || m.DtypeBytes <= 0 {
		return fmt.Errorf("layers %d, kv_heads %d, head_dim %d, dtype_bytes %d: expected all > 0", m.Layers, m.KVHeads, m.HeadDim, m.DtypeBytes)
	}
	if m.MaxModelLen <= 0 {
		return fmt.Errorf("max_model_len: expected > 0, found %d", m.MaxModelLen)
	}
	if m.ReserveGB < 0 {
		return fmt.Errorf("reserve_gb: expected ≥ 0, found %g", m.ReserveGB)
	}
	return nil
}

// DefaultProfiles returns the profiles embedded from configs/simulator.
func DefaultProfiles() (*Profiles, error) {
	p := &Profiles{}
	for _, name := range []string{"gpus.yaml", "models.yaml"} {
		text, err := simconfig.FS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("embedded profiles: %w", err)
		}
		if err := p.ParseProfiles(name, text); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// LoadProfileFiles merges profile YAML files (each may hold gpus:, models:
// or both) over p, later files overriding earlier names.
func (p *Profiles) LoadProfileFiles(paths ...string) error {
	for _, path := range paths {
		text, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("profiles: %w", err)
		}
		if err := p.ParseProfiles(path, text); err != nil {
			return err
		}
	}
	return nil
}
