package benchmark

import (
	"bytes"
	"fmt"
	"math"

	"go.yaml.in/yaml/v3"

	"github.com/fastepp/fastepp/simulator/engine"
)

// Row is one published `vllm bench latency` measurement of
// simulator/testdata/validation.yaml.
type Row struct {
	Name               string  `yaml:"name"`
	Role               string  `yaml:"role"` // calibration or validation
	GPU                string  `yaml:"gpu"`
	ModelProfile       string  `yaml:"model_profile"`
	TensorParallelSize int     `yaml:"tensor_parallel_size"`
	BatchSize          int     `yaml:"batch_size"`
	InputLen           int     `yaml:"input_len"`
	OutputLen          int     `yaml:"output_len"`
	MeasuredMS         float64 `yaml:"measured_ms"`
	Source             string  `yaml:"source"`
}

// Bound is the largest relative error the row may show: 15% for low-batch
// latency (batch ≤ 8), 25% otherwise.
func (r Row) Bound() float64 {
	if r.BatchSize <= 8 {
		return 0.15
	}
	return 0.25
}

// Result is a row run through Latency.
type Result struct {
	Row
	SimulatedMS float64
	Error       float64 // (simulated − measured) / measured
}

// ParseTable decodes a validation table strictly and checks every row.
func ParseTable(text []byte) ([]Row, error) {
	var t struct {
		Rows []Row `yaml:"rows"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("validation table: %w", err)
	}
	seen := map[string]bool{}
	for i, r := range t.Rows {
		switch {
		case r.Name == "" || seen[r.Name]:
			return nil, fmt.Errorf("row %d: expected a unique name, found %q", i, r.Name)
		case r.Role != "calibration" && r.Role != "validation":
			return nil, fmt.Errorf("row %s: role: expected calibration or validation, found %q", r.Name, r.Role)
		case !(r.MeasuredMS > 0):
			return nil, fmt.Errorf("row %s: measured_ms: expected > 0, found %g", r.Name, r.MeasuredMS)
		case r.Source == "":
			return nil, fmt.Errorf("row %s: source: expected where the measurement was published, found nothing", r.Name)
		}
		seen[r.Name] = true
	}
	return t.Rows, nil
}

// RunRow runs one row through Latency (iters timed iterations after one
// warm-up) on the profiles p.
func RunRow(p *engine.Profiles, r Row, iters int) (Result, error) {
	g, err := p.GPU(r.GPU)
	if err != nil {
		return Result{}, err
	}
	m, err := p.Model(r.ModelProfile)
	if err != nil {
		return Result{}, err
	}
	res, err := Latency(engine.Config{GPU: g, Model: m, TensorParallel: r.TensorParallelSize},
		LatencyParams{InputLen: r.InputLen, OutputLen: r.OutputLen, BatchSize: r.BatchSize, NumIters: iters, NumItersWarmup: 1})
	if err != nil {
		return Result{}, fmt.Errorf("row %s: %w", r.Name, err)
	}
	sim := res.AvgLatency * 1e3
	return Result{Row: r, SimulatedMS: sim, Error: (sim - r.MeasuredMS) / r.MeasuredMS}, nil
}

// Within reports whether the result's error is inside the row's bound.
func (r Result) Within() bool { return math.Abs(r.Error) <= r.Bound() }
