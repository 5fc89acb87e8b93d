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
	// FP8TFLOPS is the dense FP8 peak; 0 means the GPU has no FP8 tensor
	// cores and FP8 weights are computed in BF16 (weight-only, as on A100).
	FP8TFLOPS float64 `yaml:"fp8_tflops"`
	// FP8MFU and FP8MBU are the efficiencies of steps over FP8 weights
	// (FP8 GEMMs and GEMVs are tuned apart from BF16 ones); 0 means mfu, mbu.
	FP8MFU float64 `yaml:"fp8_mfu"`
	FP8MBU float64 `yaml:"fp8_mbu"`
	// InterconnectGBps is the GPU-to-GPU bandwidth per GPU and direction
	// (NVLink, Infinity Fabric) that tensor-parallel all-reduces use.
	InterconnectGBps float64 `yaml:"interconnect_gbps"`
	// AllReduceHopUS is the latency of one ring step of an all-reduce
	// (launch + synchronisation), in microseconds.
	AllReduceHopUS float64 `yaml:"allreduce_hop_us"`
	// PerSeqUS is the host-side cost each sequence adds to a step
	// (scheduling, input preparation, sampling), in microseconds.
	PerSeqUS float64 `yaml:"per_seq_us"`
	// PerSeqLayerUS is the GPU-side cost each sequence adds to every layer
	// of a step, in microseconds: work the roofline's max() hides at small
	// batch (per-token GEMM rows, per-sequence attention) that real engines
	// do not overlap; it makes decode slow down with batch size.
	PerSeqLayerUS float64 `yaml:"per_seq_layer_us"`
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
	// HiddenSize is the residual width: the size of the activations a
	// tensor-parallel all-reduce sums, per token.
	HiddenSize int `yaml:"hidden_size"`
	// AttentionHeads is the number of query heads; with HeadDim it sizes the
	// attention FLOPs, which grow with context.
	AttentionHeads int `yaml:"attention_heads"`
	// KVDtypeBytes is the KV cache's element size; 0 means DtypeBytes. FP8
	// checkpoints keep a BF16 KV cache unless vLLM runs with
	// --kv-cache-dtype fp8.
	KVDtypeBytes int `yaml:"kv_dtype_bytes"`
}

// WeightBytes is the size of the weights in bytes (DtypeBytes per parameter:
// 2 for BF16, 1 for FP8).
func (m Model) WeightBytes() float64 { return m.ParamsB * 1e9 * float64(m.DtypeBytes) }

// KVBytesPerToken is the KV-cache footprint of one token: K and V for every
// layer and KV head.
func (m Model) KVBytesPerToken() float64 {
	kv := m.KVDtypeBytes
	if kv == 0 {
		kv = m.DtypeBytes
	}
	return float64(2 * m.Layers * m.KVHeads * m.HeadDim * kv)
}

// AttentionFLOPsPerPair is the attention cost of one query token attending
// to one context token: QKᵀ and AV, 2 FLOPs per multiply-add each, over
// every layer and query head.
func (m Model) AttentionFLOPsPerPair() float64 {
	return float64(4 * m.Layers * m.AttentionHeads * m.HeadDim)
}

// PeakTFLOPS is the dense peak the GEMMs of model m run at on g: FP8 for
// FP8 weights on a GPU with FP8 tensor cores, BF16 otherwise.
func (g GPU) PeakTFLOPS(m Model) float64 {
	if m.DtypeBytes == 1 && g.FP8TFLOPS > 0 {
		return g.FP8TFLOPS
	}
	return g.BF16TFLOPS
}

// Efficiency is the (mfu, mbu) pair for model m's weights on g: the FP8
// figures for FP8 weights where the profile sets them, the BF16 ones otherwise.
func (g GPU) Efficiency(m Model) (mfu, mbu float64) {
	mfu, mbu = g.MFU, g.MBU
	if m.DtypeBytes == 1 {
		if g.FP8MFU > 0 {
			mfu = g.FP8MFU
		}
		if g.FP8MBU > 0 {
			mbu = g.FP8MBU
		}
	}
	return mfu, mbu
}

// BatchDefaults are vLLM's default max_num_seqs and max_num_batched_tokens
// for a GPU, as vLLM's EngineArgs.get_batch_defaults picks them: GPUs with at
// least 70 GiB other than A100 get 1024 sequences and 16384 tokens for the
// offline LLM class (what `vllm bench latency` runs) or 8192 for the OpenAI
// server; the rest get 256 sequences and 8192 or 2048 tokens.
func (g GPU) BatchDefaults(offline bool) (maxNumSeqs, maxNumBatchedTokens int) {
	const gib = 1 << 30
	large := g.HBMGB*1e9 >= 70*gib && !strings.Contains(strings.ToLower(g.CardModel+" "+g.CardSeries), "a100")
	switch {
	case large && offline:
		return 1024, 16384
	case large:
		return 1024, 8192
	case offline:
		return 256, 8192
	}
	return 256, 2048
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
	nonNeg := []struct {
		name string
		v    float64
	}{
		{"fp8_tflops", g.FP8TFLOPS}, {"interconnect_gbps", g.InterconnectGBps},
		{"allreduce_hop_us", g.AllReduceHopUS}, {"per_seq_us", g.PerSeqUS}, {"per_seq_layer_us", g.PerSeqLayerUS},
	}
	for _, c := range nonNeg {
		if !(c.v >= 0 && c.v <= 1e6) {
			return fmt.Errorf("%s: expected a number in [0, 1e6], found %g", c.name, c.v)
		}
	}
	for _, c := range []struct {
		name string
		v    float64
	}{{"fp8_mfu", g.FP8MFU}, {"fp8_mbu", g.FP8MBU}} {
		if !(c.v >= 0 && c.v <= 1) {
			return fmt.Errorf("%s: expected a fraction in [0, 1] (0: as BF16), found %g", c.name, c.v)
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
	if m.HiddenSize <= 0 || m.AttentionHeads <= 0 {
		return fmt.Errorf("hidden_size %d, attention_heads %d: expected both > 0", m.HiddenSize, m.AttentionHeads)
	}
	if m.KVDtypeBytes < 0 {
		return fmt.Errorf("kv_dtype_bytes: expected ≥ 0 (0: dtype_bytes), found %d", m.KVDtypeBytes)
	}
	if m.MaxModelLen <= 0 {
		return fmt.Errorf("max_model_len: expected > 0, found %d", m.MaxModelLen)
	}
	if m.ReserveGB < 0 {
		return fmt.Errorf("reserve_gb: expected ≥ 0, found %g", m.ReserveGB)
	}
	return nil
}

// DefaultProfiles returns the default fleet profiles embedded from
// configs/simulator (gpus.yaml, models.yaml).
func DefaultProfiles() (*Profiles, error) {
	return embeddedProfiles("gpus.yaml", "models.yaml")
}

// AllProfiles is DefaultProfiles plus the reference GPUs of
// gpus-reference.yaml (A100), which the validation table needs but the
// picker's product table does not list yet.
func AllProfiles() (*Profiles, error) {
	return embeddedProfiles("gpus.yaml", "gpus-reference.yaml", "models.yaml")
}

func embeddedProfiles(names ...string) (*Profiles, error) {
	p := &Profiles{}
	for _, name := range names {
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
