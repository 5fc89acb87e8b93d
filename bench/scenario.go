package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	benchconfig "github.com/fastepp/fastepp/configs/bench"
	"github.com/fastepp/fastepp/loadgen"
	"github.com/fastepp/fastepp/simulator"
	"github.com/fastepp/fastepp/simulator/engine"
)

// DefaultScenario is the scenario `bench` and `make run` run when none is named.
const DefaultScenario = "default"

// Scenario is one comparison: a fleet, a workload with its rate ladder, and
// the strategies to run on it.
type Scenario struct {
	// Name is the file's base name without .yaml.
	Name string
	// Source is where the scenario came from ("embedded" or a file path).
	Source string
	// Description is the file's description.
	Description string
	// Fleet is one spec per simulated server, in port order.
	Fleet []simulator.ServerSpec
	// BasePort pins the fleet to 127.0.0.1:BasePort+i (0: free ports).
	BasePort int
	// Workload is the loadgen config with the ladder as its stages
	// (server.base_url is replaced by the gateway's for every run).
	Workload *loadgen.Config
	// Strategies are the scenario's default strategies.
	Strategies []Strategy
	// EPP tunes the in-process epp (same defaults as the epp binary).
	EPP EPPOptions
	// Settle is the idle time between two runs (default 1s), so that the
	// previous fleet's goroutines and connections are gone.
	Settle time.Duration
}

// EPPOptions are the epp flags a scenario may set.
type EPPOptions struct {
	RefreshInterval    time.Duration
	StalenessThreshold time.Duration
}

// scenarioFile is the YAML shape of a scenario.
type scenarioFile struct {
	Description  string    `yaml:"description"`
	Fleet        yaml.Node `yaml:"fleet"`
	Workload     yaml.Node `yaml:"workload"`
	WorkloadFile string    `yaml:"workload_file"`
	Ladder       []struct {
		Rate     float64          `yaml:"rate"`
		Duration loadgen.Duration `yaml:"duration"`
	} `yaml:"ladder"`
	Strategies []string `yaml:"strategies"`
	EPP        struct {
		RefreshMetricsInterval    string `yaml:"refresh_metrics_interval"`
		MetricsStalenessThreshold string `yaml:"metrics_staleness_threshold"`
	} `yaml:"epp"`
	Settle string `yaml:"settle"`
}

// placeholderURL stands in for the gateway's address until a run starts.
const placeholderURL = "http://127.0.0.1:1"

// ScenarioNames lists the embedded scenarios, sorted.
func ScenarioNames() []string {
	ents, _ := fs.ReadDir(benchconfig.FS, ".")
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// LoadScenario finds a scenario by name (an embedded one, see ScenarioNames)
// or by path (anything with a slash or ending in .yaml).
func LoadScenario(nameOrPath string) (*Scenario, error) {
	if nameOrPath == "" {
		nameOrPath = DefaultScenario
	}
	if strings.ContainsRune(nameOrPath, '/') || strings.HasSuffix(nameOrPath, ".yaml") || strings.HasSuffix(nameOrPath, ".yml") {
		b, err := os.ReadFile(nameOrPath)
		if err != nil {
			return nil, fmt.Errorf("scenario: %w", err)
		}
		name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(nameOrPath), ".yaml"), ".yml")
		return ParseScenario(name, nameOrPath, b, filepath.Dir(nameOrPath))
	}
	b, err := benchconfig.FS.ReadFile(nameOrPath + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("scenario %q: expected one of %s (or a path to a scenario file), found none of that name",
			nameOrPath, strings.Join(ScenarioNames(), ", "))
	}
	return ParseScenario(nameOrPath, "embedded", b, ".")
}

// ParseScenario decodes a scenario strictly. dir resolves workload_file.
func ParseScenario(name, source string, text []byte, dir string) (*Scenario, error) {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("scenario %s: %s", name, fmt.Sprintf(format, a...))
	}
	var f scenarioFile
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fail("expected a YAML mapping with fleet, workload, ladder and strategies, found an empty file")
		}
		return nil, fail("%v (fields: description, fleet, workload, workload_file, ladder, strategies, epp, settle)", err)
	}
	sc := &Scenario{Name: name, Source: source, Description: strings.TrimSpace(f.Description),
		EPP: EPPOptions{RefreshInterval: 50 * time.Millisecond, StalenessThreshold: 2 * time.Second}, Settle: time.Second}

	// Fleet: the simulator's own fleet-file decoder, so the fields, defaults
	// and errors are the simulator's.
	if f.Fleet.Kind == 0 {
		return nil, fail("fleet: expected a simulator fleet (defaults, servers[], base_port) as in configs/simulator/fleet.yaml, found none")
	}
	ft, err := yaml.Marshal(&f.Fleet)
	if err != nil {
		return nil, fail("fleet: %v", err)
	}
	specs, basePort, err := simulator.ParseFleet(name+": fleet", ft, simulator.DefaultSpec())
	if err != nil {
		return nil, fail("%v", err)
	}
	if len(specs) == 0 {
		return nil, fail("fleet: expected at least one server, found none")
	}
	if basePort < 0 || basePort+len(specs)-1 > 65535 {
		return nil, fail("fleet.base_port: expected 0 (free ports) or 1..%d for %d servers, found %d", 65536-len(specs), len(specs), basePort)
	}
	sc.Fleet, sc.BasePort = specs, basePort
	if _, err := sc.ServerConfigs(1); err != nil {
		return nil, fail("fleet: %v", err)
	}

	// Workload: inline or a loadgen config file.
	var wt []byte
	switch {
	case f.Workload.Kind != 0 && f.WorkloadFile != "":
		return nil, fail("expected one of workload and workload_file, found both")
	case f.Workload.Kind != 0:
		if wt, err = yaml.Marshal(&f.Workload); err != nil {
			return nil, fail("workload: %v", err)
		}
	case f.WorkloadFile != "":
		p := f.WorkloadFile
		if !filepath.IsAbs(p) {
			// Relative to the scenario file; else to the working directory
			// (embedded scenarios name repository paths).
			if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
				p = filepath.Join(dir, p)
			}
		}
		if wt, err = os.ReadFile(p); err != nil {
			return nil, fail("workload_file: %v", err)
		}
	default:
		return nil, fail("expected a workload (a loadgen config, inline) or workload_file, found neither")
	}
	// The ladder becomes the workload's load.stages, and the gateway its
	// server.base_url, before loadgen validates it.
	var doc map[string]any
	if err := yaml.Unmarshal(wt, &doc); err != nil || doc == nil {
		return nil, fail("workload: expected a loadgen config (load, api, server, data, ...), found %s", firstLine(wt))
	}
	if len(f.Ladder) > 0 {
		load, _ := doc["load"].(map[string]any)
		if load == nil {
			load = map[string]any{}
		}
		var stages []map[string]any
		for i, st := range f.Ladder {
			if !(st.Rate > 0) || st.Duration <= 0 {
				return nil, fail("ladder[%d]: expected rate > 0 and duration > 0, found rate %v duration %v", i, st.Rate, time.Duration(st.Duration))
			}
			stages = append(stages, map[string]any{"rate": st.Rate, "duration": time.Duration(st.Duration).String()})
		}
		load["stages"] = stages
		doc["load"] = load
	}
	server, _ := doc["server"].(map[string]any)
	if server == nil {
		server = map[string]any{}
	}
	server["base_url"] = placeholderURL
	doc["server"] = server
	if wt, err = yaml.Marshal(doc); err != nil {
		return nil, fail("workload: %v", err)
	}
	wl, err := loadgen.ParseConfig(wt)
	if err != nil {
		return nil, fail("workload: %v", err)
	}
	switch wl.Load.Type {
	case loadgen.LoadConstant, loadgen.LoadPoisson:
	default:
		return nil, fail("workload: expected load.type constant or poisson (an open-loop rate ladder), found %q", wl.Load.Type)
	}
	sc.Workload = wl
	model := wl.Server.ModelName
	cfgs, _ := sc.ServerConfigs(1)
	for i, c := range cfgs {
		if c.ModelName == "" {
			c.ModelName = c.Engine.Model.ServedName // what simulator.New defaults it to
		}
		if c.ModelName != model {
			return nil, fail("workload: server.model_name %q is not served by fleet server %d (it serves %q): set the fleet's model or the workload's model_name", model, i, c.ModelName)
		}
	}

	if len(f.Strategies) == 0 {
		return nil, fail("strategies: expected a list such as [round-robin, epp], found none (known: %s)", strings.Join(StrategyNames(), ", "))
	}
	if sc.Strategies, err = ParseStrategies(strings.Join(f.Strategies, ",")); err != nil {
		return nil, fail("strategies: %v", err)
	}
	if v := f.EPP.RefreshMetricsInterval; v != "" {
		if sc.EPP.RefreshInterval, err = time.ParseDuration(v); err != nil || sc.EPP.RefreshInterval <= 0 {
			return nil, fail("epp.refresh_metrics_interval: expected a positive duration like 50ms, found %q", v)
		}
	}
	if v := f.EPP.MetricsStalenessThreshold; v != "" {
		if sc.EPP.StalenessThreshold, err = time.ParseDuration(v); err != nil || sc.EPP.StalenessThreshold <= 0 {
			return nil, fail("epp.metrics_staleness_threshold: expected a positive duration like 2s, found %q", v)
		}
	}
	if f.Settle != "" {
		if sc.Settle, err = time.ParseDuration(f.Settle); err != nil || sc.Settle < 0 {
			return nil, fail("settle: expected a duration like 1s, found %q", f.Settle)
		}
	}
	return sc, nil
}

// ServerConfigs resolves the fleet into simulator configs named sim-0,
// sim-1, ... (with the GPU when the fleet is mixed), seeded from seed.
func (sc *Scenario) ServerConfigs(seed uint64) ([]simulator.Config, error) {
	prof, err := engine.DefaultProfiles()
	if err != nil {
		return nil, err
	}
	mixed := false
	for _, s := range sc.Fleet {
		if s.GPU != sc.Fleet[0].GPU || s.ModelProfile != sc.Fleet[0].ModelProfile || s.TensorParallelSize != sc.Fleet[0].TensorParallelSize {
			mixed = true
		}
	}
	out := make([]simulator.Config, len(sc.Fleet))
	for i, s := range sc.Fleet {
		name := fmt.Sprintf("sim-%d", i)
		if mixed {
			name = fmt.Sprintf("sim-%d-%s", i, s.GPU)
			if s.TensorParallelSize > 1 {
				name += fmt.Sprintf("x%d", s.TensorParallelSize)
			}
		}
		if out[i], err = s.Resolve(prof, name, seed+uint64(i)); err != nil {
			return nil, fmt.Errorf("server %d: %w", i, err)
		}
	}
	return out, nil
}

// PlannedDuration is the ladder's total send time.
func (sc *Scenario) PlannedDuration() time.Duration {
	var d time.Duration
	for _, s := range sc.Workload.Load.Stages {
		d += time.Duration(s.Duration)
	}
	return d
}

// FleetLine describes the fleet in one line: "8 × llama-3.1-70b on mi300x".
func (sc *Scenario) FleetLine() string {
	type key struct {
		gpu, model string
		tp         int
	}
	var order []key
	n := map[key]int{}
	for _, s := range sc.Fleet {
		k := key{s.GPU, s.ModelProfile, max(1, s.TensorParallelSize)}
		if n[k] == 0 {
			order = append(order, k)
		}
		n[k]++
	}
	var parts []string
	for _, k := range order {
		gpu := k.gpu
		if k.tp > 1 {
			gpu = fmt.Sprintf("%d×%s", k.tp, k.gpu)
		}
		parts = append(parts, fmt.Sprintf("%d × %s on %s", n[k], k.model, gpu))
	}
	return strings.Join(parts, " + ")
}

// LadderLine describes the rate ladder: "2 → 4 → 8 req/s, 10 s each".
func (sc *Scenario) LadderLine() string {
	var rates, durs []string
	same := true
	st := sc.Workload.Load.Stages
	for i, s := range st {
		rates = append(rates, trimFloat(s.Rate))
		durs = append(durs, time.Duration(s.Duration).String())
		if i > 0 && s.Duration != st[0].Duration {
			same = false
		}
	}
	if same && len(st) > 0 {
		return fmt.Sprintf("%s req/s, %s each (%s)", strings.Join(rates, " → "), durs[0], sc.Workload.Load.Type)
	}
	parts := make([]string, len(rates))
	for i := range rates {
		parts[i] = rates[i] + " req/s × " + durs[i]
	}
	return strings.Join(parts, " → ") + " (" + sc.Workload.Load.Type + ")"
}

// WorkloadLine describes the workload's data in one line.
func (sc *Scenario) WorkloadLine() string {
	d := sc.Workload.Data
	if d.Type == loadgen.DataSharedPrefix && d.SharedPrefix != nil {
		sp := d.SharedPrefix
		return fmt.Sprintf("shared prefix: %d groups × %d prompts, system prompt %s tokens, question %s, output %s",
			sp.NumGroups, sp.NumPromptsPerGroup, lengthText(sp.SystemPromptLen), lengthText(sp.QuestionLen), lengthText(sp.OutputLen))
	}
	return d.Type
}

func lengthText(l *loadgen.Length) string {
	if l == nil {
		return "?"
	}
	if l.Dist == nil {
		return fmt.Sprint(l.Fixed)
	}
	if l.Dist.Mean != nil {
		return fmt.Sprintf("~%v", *l.Dist.Mean)
	}
	return l.Dist.Type
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 60 {
		s = s[:60] + "..."
	}
	return fmt.Sprintf("%q", s)
}
