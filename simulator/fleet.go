package simulator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fastepp/fastepp/simulator/engine"
)

// ServerSpec is one server's settings as a fleet file (or the command line)
// states them, before profiles are resolved.
type ServerSpec struct {
	Count                int      `yaml:"count"`  // servers in a group (groups only; default 1)
	Engine               string   `yaml:"engine"` // /metrics names: vllm (default) or sglang
	Model                string   `yaml:"model"`  // served model name (default: the profile's served_name)
	ModelProfile         string   `yaml:"model_profile"`
	GPU                  string   `yaml:"gpu"`
	TensorParallelSize   int      `yaml:"tensor_parallel_size"`
	MaxNumSeqs           int      `yaml:"max_num_seqs"`
	MaxNumBatchedTokens  int      `yaml:"max_num_batched_tokens"`
	BlockSize            int      `yaml:"block_size"`
	GPUMemoryUtilization float64  `yaml:"gpu_memory_utilization"`
	NumGPUBlocks         int      `yaml:"num_gpu_blocks"`
	MaxModelLen          int      `yaml:"max_model_len"`
	EnablePrefixCaching  bool     `yaml:"enable_prefix_caching"`
	LoRAAdapters         []string `yaml:"lora_adapters"`
	MaxLoRAs             int      `yaml:"max_loras"`
	LoRALoadMS           float64  `yaml:"lora_load_ms"`
	MaxWaiting           int      `yaml:"max_waiting"`
	DefaultMaxTokens     int      `yaml:"default_max_tokens"`
	Namespace            string   `yaml:"namespace"`
	Hostname             string   `yaml:"hostname"`
	Faults               Faults   `yaml:"faults"`
}

// DefaultSpec is a single Llama-3.1-8B server on an MI300X with vLLM's
// defaults; MaxNumSeqs and MaxNumBatchedTokens 0 take vLLM's OpenAI-server
// defaults for the GPU (engine.GPU.BatchDefaults).
func DefaultSpec() ServerSpec {
	return ServerSpec{
		Count: 1, Engine: "vllm", ModelProfile: "llama-3.1-8b", GPU: "mi300x", TensorParallelSize: 1,
		BlockSize: 16, GPUMemoryUtilization: 0.9,
		EnablePrefixCaching: true, MaxLoRAs: 1, DefaultMaxTokens: 128,
		Namespace: "default", Hostname: "sim-node", Faults: Faults{LatencyMultiplier: 1},
	}
}

// Resolve turns a spec into a server Config named name, looking up its profiles.
func (sp ServerSpec) Resolve(p *engine.Profiles, name string, seed uint64) (Config, error) {
	g, err := p.GPU(sp.GPU)
	if err != nil {
		return Config{}, err
	}
	m, err := p.Model(sp.ModelProfile)
	if err != nil {
		return Config{}, err
	}
	ints := []struct {
		name string
		v    int
	}{
		{"tensor_parallel_size", sp.TensorParallelSize}, {"block_size", sp.BlockSize}, {"max_loras", sp.MaxLoRAs},
		{"default_max_tokens", sp.DefaultMaxTokens},
	}
	for _, c := range ints {
		if c.v < 1 {
			return Config{}, fmt.Errorf("%s (--%s): expected ≥ 1, found %d", c.name, strings.ReplaceAll(c.name, "_", "-"), c.v)
		}
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"max_num_seqs", sp.MaxNumSeqs}, {"max_num_batched_tokens", sp.MaxNumBatchedTokens}} {
		if c.v < 0 {
			return Config{}, fmt.Errorf("%s (--%s): expected ≥ 0 (0: vLLM's default for the GPU), found %d", c.name, strings.ReplaceAll(c.name, "_", "-"), c.v)
		}
	}
	if !(sp.GPUMemoryUtilization > 0 && sp.GPUMemoryUtilization <= 1) {
		return Config{}, fmt.Errorf("gpu_memory_utilization: expected a fraction in (0, 1], found %g", sp.GPUMemoryUtilization)
	}
	if sp.LoRALoadMS < 0 {
		return Config{}, fmt.Errorf("lora_load_ms: expected ≥ 0, found %g", sp.LoRALoadMS)
	}
	return Config{
		Name:          name,
		ModelName:     sp.Model,
		MetricsFlavor: sp.Engine,
		Engine: engine.Config{
			GPU: g, Model: m, TensorParallel: sp.TensorParallelSize,
			MaxNumSeqs: sp.MaxNumSeqs, MaxNumBatchedTokens: sp.MaxNumBatchedTokens, BlockSize: sp.BlockSize,
			GPUMemoryUtilization: sp.GPUMemoryUtilization, NumGPUBlocks: sp.NumGPUBlocks, MaxModelLen: sp.MaxModelLen,
			DisablePrefixCaching: !sp.EnablePrefixCaching, MaxLoRAs: sp.MaxLoRAs,
			LoRALoadTime: time.Duration(sp.LoRALoadMS * float64(time.Millisecond)), MaxWaiting: sp.MaxWaiting,
		},
		LoRAAdapters:     sp.LoRAAdapters,
		DefaultMaxTokens: sp.DefaultMaxTokens,
		Namespace:        sp.Namespace,
		Hostname:         sp.Hostname,
		Faults:           sp.Faults,
		Seed:             seed,
	}, nil
}

// FleetFile is the YAML shape of a fleet (see configs/simulator/fleet.yaml):
// defaults applied to every group, then groups in port order.
type FleetFile struct {
	BasePort int         `yaml:"base_port"`
	Defaults yaml.Node   `yaml:"defaults"`
	Servers  []yaml.Node `yaml:"servers"`
}

// ParseFleet decodes a fleet file strictly over base (the defaults the file's
// own defaults refine) and returns one spec per server plus the file's
// base_port (0 if unset).
func ParseFleet(name string, text []byte, base ServerSpec) ([]ServerSpec, int, error) {
	var f FleetFile
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("fleet %s: expected base_port, defaults and servers, found an empty file", name)
		}
		return nil, 0, fmt.Errorf("fleet %s: %w", name, err)
	}
	if f.BasePort < 0 || f.BasePort > 65535 {
		return nil, 0, fmt.Errorf("fleet %s: base_port: expected 1..65535, found %d", name, f.BasePort)
	}
	defaults := base
	if err := overlay(&defaults, &f.Defaults); err != nil {
		return nil, 0, fmt.Errorf("fleet %s: defaults: %w", name, err)
	}
	if len(f.Servers) == 0 {
		return nil, 0, fmt.Errorf("fleet %s: servers: expected at least one group, found none", name)
	}
	var out []ServerSpec
	for i := range f.Servers {
		sp := defaults
		sp.Count = 1
		sp.LoRAAdapters = append([]string(nil), defaults.LoRAAdapters...)
		if err := overlay(&sp, &f.Servers[i]); err != nil {
			return nil, 0, fmt.Errorf("fleet %s: servers[%d]: %w", name, i, err)
		}
		if sp.Count < 1 || sp.Count > MaxServers {
			return nil, 0, fmt.Errorf("fleet %s: servers[%d].count: expected 1..%d, found %d", name, i, MaxServers, sp.Count)
		}
		for range sp.Count {
			out = append(out, sp)
		}
	}
	if len(out) > MaxServers {
		return nil, 0, fmt.Errorf("fleet %s: expected at most %d servers in all, found %d", name, MaxServers, len(out))
	}
	return out, f.BasePort, nil
}

// overlay decodes node over sp strictly: only the keys present change.
func overlay(sp *ServerSpec, node *yaml.Node) error {
	if node.Kind == 0 {
		return nil
	}
	text, err := yaml.Marshal(node)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(sp); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// MaxServers bounds one process's fleet (each server keeps its KV block table,
// ~2 MB for an MI300X-sized cache).
const MaxServers = 1024

// Fleet is a set of servers listening on consecutive ports.
type Fleet struct {
	Servers []*Server
}

// StartFleet builds and starts one server per config on 127.0.0.1:basePort+i.
// basePort 0 picks free ports. On error, servers already started are closed.
func StartFleet(cfgs []Config, basePort int) (*Fleet, error) {
	return StartFleetOn(cfgs, "127.0.0.1", basePort)
}

// StartFleetOn is StartFleet on the address host (an IP or host name, as
// --bind-address takes it: "0.0.0.0" or "::" for every interface, as in a pod).
func StartFleetOn(cfgs []Config, host string, basePort int) (*Fleet, error) {
	f := &Fleet{}
	for i, c := range cfgs {
		s, err := New(c)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("server %d (%s): %w", i, c.Name, err)
		}
		port := 0
		if basePort > 0 {
			port = basePort + i
		}
		if err := s.Listen(net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
			s.Close()
			f.Close()
			return nil, err
		}
		f.Servers = append(f.Servers, s)
	}
	return f, nil
}

// Close stops every server.
func (f *Fleet) Close() {
	for _, s := range f.Servers {
		s.Close()
	}
}
