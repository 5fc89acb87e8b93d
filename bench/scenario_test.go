package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fastepp/fastepp/config"
	"github.com/fastepp/fastepp/loadgen"
	"github.com/fastepp/fastepp/simulator"
	"github.com/fastepp/fastepp/simulator/engine"
)

// TestEmbeddedScenarios: every shipped scenario loads, names only known
// strategies, and satisfies what the issue asks of it.
func TestEmbeddedScenarios(t *testing.T) {
	names := ScenarioNames()
	for _, want := range []string{"default", "burst", "mixed", "ci"} {
		if !contains(names, want) {
			t.Errorf("scenarios %v: missing %q", names, want)
		}
	}
	for _, n := range names {
		sc, err := LoadScenario(n)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if sc.Description == "" || len(sc.Strategies) == 0 || len(sc.Workload.Load.Stages) == 0 {
			t.Errorf("%s: description %q, %d strategies, %d stages", n, sc.Description, len(sc.Strategies), len(sc.Workload.Load.Stages))
		}
		if sc.Workload.Server.BaseURL != placeholderURL {
			t.Errorf("%s: base_url %q, want the placeholder", n, sc.Workload.Server.BaseURL)
		}
	}
	// The default scenario makes routing matter: the shared prefixes exceed
	// one server's KV cache and fit the fleet's.
	sc, err := LoadScenario("")
	if err != nil {
		t.Fatal(err)
	}
	cfgs, err := sc.ServerConfigs(1)
	if err != nil {
		t.Fatal(err)
	}
	sp := sc.Workload.Data.SharedPrefix
	working := sp.NumGroups * sp.SystemPromptLen.Fixed
	var one, fleet int
	for i, c := range cfgs {
		s, err := newEngineBlocks(c)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			one = s
		}
		fleet += s
	}
	if !(working > one && working < fleet) {
		t.Errorf("default: shared prefixes %d tokens, one server's KV %d tokens, fleet %d: want one < working set < fleet", working, one, fleet)
	}
	// make run's budget: the plan plus drains stays well under 3 minutes.
	if d := sc.PlannedDuration() * time.Duration(len(sc.Strategies)); d > 2*time.Minute {
		t.Errorf("default: %v of load in all (%d strategies), want <= 2m so make run ends within 3", d, len(sc.Strategies))
	}
	ci, err := LoadScenario("ci")
	if err != nil {
		t.Fatal(err)
	}
	if d := ci.PlannedDuration() * time.Duration(len(ci.Strategies)); d > 45*time.Second {
		t.Errorf("ci: %v of load, want <= 45s", d)
	}
}

const tinyScenario = `
description: tiny
fleet:
  defaults: {model_profile: llama-3.1-8b, gpu: mi300x, num_gpu_blocks: 600}
  servers: [{count: 2}]
workload:
  load: {type: poisson, seed: 5, request_timeout: 20s}
  api: {type: chat, streaming: true}
  server: {model_name: meta-llama/Llama-3.1-8B-Instruct, ignore_eos: true}
  data:
    type: shared_prefix
    shared_prefix: {num_groups: 3, num_prompts_per_group: 2, system_prompt_len: 600, question_len: 40, output_len: 8}
  report: {percentiles: [50, 90, 99]}
ladder: [{rate: 6, duration: 1s}, {rate: 12, duration: 1s}]
strategies: [round-robin, epp]
settle: 50ms
`

func TestParseScenario(t *testing.T) {
	sc, err := ParseScenario("tiny", "test", []byte(tinyScenario), ".")
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Fleet) != 2 || sc.BasePort != 0 || sc.Settle != 50*time.Millisecond {
		t.Errorf("fleet %d servers, base port %d, settle %v", len(sc.Fleet), sc.BasePort, sc.Settle)
	}
	st := sc.Workload.Load.Stages
	if len(st) != 2 || st[0].Rate != 6 || time.Duration(st[1].Duration) != time.Second {
		t.Errorf("ladder → stages %+v", st)
	}
	if sc.EPP.RefreshInterval != 50*time.Millisecond || sc.EPP.StalenessThreshold != 2*time.Second {
		t.Errorf("epp defaults %+v, want the epp binary's 50ms / 2s", sc.EPP)
	}
	if got := sc.FleetLine(); got != "2 × llama-3.1-8b on mi300x" {
		t.Errorf("FleetLine %q", got)
	}
	if got := sc.LadderLine(); got != "6 → 12 req/s, 1s each (poisson)" {
		t.Errorf("LadderLine %q", got)
	}

	mixed := strings.Replace(tinyScenario, "servers: [{count: 2}]", "servers: [{count: 1}, {count: 1, gpu: mi325x}]", 1)
	sc, err = ParseScenario("mixed", "test", []byte(mixed), ".")
	if err != nil {
		t.Fatal(err)
	}
	cfgs, _ := sc.ServerConfigs(1)
	if cfgs[0].Name != "sim-0-mi300x" || cfgs[1].Name != "sim-1-mi325x" {
		t.Errorf("mixed fleet names %q %q, want the GPU in them", cfgs[0].Name, cfgs[1].Name)
	}

	// A workload file, relative to the scenario's directory.
	dir := t.TempDir()
	wl := `load: {type: constant, stages: [{rate: 1, duration: 1}]}
api: {type: completion}
server: {base_url: "http://example.invalid", model_name: meta-llama/Llama-3.1-8B-Instruct}
data: {type: random, input_distribution: {min: 10, max: 20, mean: 15}, output_distribution: {min: 2, max: 4, mean: 3}}
`
	if err := os.WriteFile(filepath.Join(dir, "wl.yaml"), []byte(wl), 0o644); err != nil {
		t.Fatal(err)
	}
	file := `fleet: {servers: [{count: 1}]}
workload_file: wl.yaml
strategies: [least-request]
`
	path := filepath.Join(dir, "mine.yaml")
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	sc, err = LoadScenario(path)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "mine" || sc.Workload.Load.Type != loadgen.LoadConstant || len(sc.Workload.Load.Stages) != 1 ||
		sc.Workload.Server.BaseURL != placeholderURL || sc.Strategies[0].Balance != "least-request" {
		t.Errorf("from file: %+v", sc)
	}
}

func TestScenarioErrors(t *testing.T) {
	good := tinyScenario
	for _, tc := range []struct {
		name, text, want string
	}{
		{"empty", "", "found an empty file"},
		{"unknown field", good + "colour: blue\n", "field colour not found"},
		{"no fleet", strings.Replace(good, "fleet:", "flet:", 1), "field flet not found"},
		{"bad gpu", strings.Replace(good, "gpu: mi300x", "gpu: tpu9", 1), "tpu9"},
		{"no workload", good[:strings.Index(good, "workload:")] + "strategies: [epp]\n", "expected a workload"},
		{"unknown strategy", strings.Replace(good, "[round-robin, epp]", "[round-robin, fastest]", 1), `unknown strategy "fastest": expected one of round-robin, random, least-request, epp-gie-default, epp, epp-gpu-aware, external=HOST:PORT, epp=FILE`},
		{"no strategies", strings.Replace(good, "strategies: [round-robin, epp]", "strategies: []", 1), "strategies: expected a list"},
		{"bad ladder", strings.Replace(good, "{rate: 6, duration: 1s}", "{rate: 0, duration: 1s}", 1), "ladder[0]: expected rate > 0"},
		{"wrong model", strings.Replace(good, "model_name: meta-llama/Llama-3.1-8B-Instruct", "model_name: other", 1), `server.model_name "other" is not served by fleet server 0`},
		{"closed loop", strings.Replace(strings.Replace(good, "type: poisson, ", "type: concurrent, ", 1), "ladder: [{rate: 6, duration: 1s}, {rate: 12, duration: 1s}]", "", 1) + "", "load"},
		{"bad settle", strings.Replace(good, "settle: 50ms", "settle: soon", 1), "settle: expected a duration"},
		{"bad epp", good + "epp: {refresh_metrics_interval: -1s}\n", "epp.refresh_metrics_interval"},
	} {
		_, err := ParseScenario("x", "test", []byte(tc.text), ".")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := LoadScenario("nope"); err == nil || !strings.Contains(err.Error(), `scenario "nope": expected one of burst, ci, default, mixed`) {
		t.Errorf("unknown scenario: %v", err)
	}
	if _, err := LoadScenario("/does/not/exist.yaml"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseStrategy(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mine.yaml")
	if err := os.WriteFile(cfg, []byte("plugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: p, plugins: [{pluginRef: queue-scorer}]}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in, name, kind, balance, addr, source, err string
	}{
		{in: "round-robin", name: "round-robin", kind: KindDirect, balance: "round-robin"},
		{in: " random ", name: "random", kind: KindDirect, balance: "random"},
		{in: "least-request", name: "least-request", kind: KindDirect, balance: "least-request"},
		{in: "epp", name: "epp", kind: KindEPP, source: "configs/epp/recommended.yaml"},
		{in: "epp-gie-default", name: "epp-gie-default", kind: KindEPP, source: "configs/epp/gie-default.yaml"},
		{in: "external=127.0.0.1:9002", name: "external=127.0.0.1:9002", kind: KindExternal, addr: "127.0.0.1:9002"},
		{in: "external=epp.local:9002", name: "external=epp.local:9002", kind: KindExternal, addr: "epp.local:9002"},
		{in: "epp=" + cfg, name: "epp=mine", kind: KindEPP, source: cfg},
		{in: "external=9002", err: `expected external=HOST:PORT`},
		{in: "external=:9002", err: `expected external=HOST:PORT`},
		{in: "external=h:99999", err: `expected external=HOST:PORT`},
		{in: "epp=", err: "expected epp=FILE"},
		{in: "epp=/nope.yaml", err: "no such file"},
		{in: "least_request", err: `unknown strategy "least_request": expected one of round-robin, random,`},
		{in: "", err: "unknown strategy"},
	} {
		st, err := ParseStrategy(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if st.Name != tc.name || st.Kind != tc.kind || st.Balance != tc.balance || st.Address != tc.addr || st.ConfigSource != tc.source {
			t.Errorf("%q: %+v", tc.in, st)
		}
		if tc.kind == KindEPP && len(st.EPPConfig) == 0 {
			t.Errorf("%q: no config", tc.in)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"round-robin,epp", "round-robin epp"},
		{"epp, round-robin,", "epp round-robin"},
		{"epp,epp", `strategy "epp": listed twice`},
		{",", "expected at least one strategy"},
		{"epp,nope", `unknown strategy "nope"`},
	} {
		got, err := ParseStrategies(tc.in)
		var names []string
		for _, s := range got {
			names = append(names, s.Name)
		}
		if err != nil {
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
			}
			continue
		}
		if strings.Join(names, " ") != tc.want {
			t.Errorf("%q: %v, want %s", tc.in, names, tc.want)
		}
	}
}

// TestEPPConfigsLoad: the shipped EndpointPickerConfigs decode, the GIE
// one is GIE's default plan, and the GPU-aware one scrapes GPU telemetry.
func TestEPPConfigsLoad(t *testing.T) {
	for _, name := range []string{"epp", "epp-gie-default", "epp-gpu-aware"} {
		st, err := ParseStrategy(name)
		if err != nil {
			t.Fatal(err)
		}
		l, err := loadPlan(st)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if (l.GPU != nil) != (name == "epp-gpu-aware") {
			t.Errorf("%s: GPU telemetry configured %v", name, l.GPU != nil)
		}
		if name == "epp" {
			def, err := config.Default(config.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			if string(l.Effective) != string(def.Effective) {
				t.Errorf("the epp strategy's effective config differs from the binary's default:\n%s\nvs\n%s", l.Effective, def.Effective)
			}
		}
	}
}

// newEngineBlocks is a server's KV cache in tokens.
func newEngineBlocks(c simulator.Config) (int, error) {
	e, err := engine.New(c.Engine)
	if err != nil {
		return 0, err
	}
	defer e.Stop(0)
	return e.NumGPUBlocks() * e.Config().BlockSize, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
