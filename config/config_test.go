package config

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/<name>, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./config -update to create it)", err)
	}
	if string(want) != string(got) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestGoodConfigs loads every testdata/good config and compares the effective
// config (all defaults filled in) with its .golden file.
func TestGoodConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	if len(files) < 4 {
		t.Fatalf("found %d good configs", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, _ := os.ReadFile(f)
			l, err := Load(data, NewRegistry())
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			golden(t, strings.TrimSuffix(f, ".yaml")+".golden", l.Effective)
			// The effective config is itself a valid config that yields the same.
			again, err := Load(l.Effective, NewRegistry())
			if err != nil {
				t.Fatalf("effective config does not load: %v\n%s", err, l.Effective)
			}
			if string(again.Effective) != string(l.Effective) {
				t.Errorf("effective config is not a fixed point:\n%s\nvs\n%s", l.Effective, again.Effective)
			}
		})
	}
}

// TestBadConfigs: every testdata/bad config fails with the message in its
// .err golden file.
func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) < 10 {
		t.Fatalf("found %d bad configs", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, _ := os.ReadFile(f)
			_, err := Load(data, NewRegistry())
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			golden(t, strings.TrimSuffix(f, ".yaml")+".err", []byte(err.Error()+"\n"))
		})
	}
}

func TestDefaultPlan(t *testing.T) {
	l, err := Default(NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p := l.Plan
	if len(p.Profiles) != 1 {
		t.Fatalf("%d profiles", len(p.Profiles))
	}
	want := map[string]float64{"queue-scorer": 2, "kv-cache-utilization-scorer": 2, "prefix-cache-scorer": 3}
	got := map[string]float64{}
	for _, s := range p.Profiles[0].Scorers {
		got[s.Type()] = s.Weight
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s weight %v, want %v", k, got[k], w)
		}
	}
	if p.Profiles[0].Picker.Type() != "max-score-picker" || p.Handler.Type() != "single-profile-handler" {
		t.Errorf("picker %s handler %s", p.Profiles[0].Picker.Type(), p.Handler.Type())
	}
	if p.Saturation == nil || p.Saturation.Type() != "utilization-detector" {
		t.Errorf("saturation detector %v, want utilization-detector", p.Saturation)
	}
	// Empty text is the default too.
	e, err := Load([]byte("  \n"), NewRegistry())
	if err != nil || string(e.Effective) != string(l.Effective) {
		t.Errorf("empty config: %v", err)
	}
}

// TestLoadedPlanPicks: a loaded plan actually schedules.
func TestLoadedPlanPicks(t *testing.T) {
	data, _ := os.ReadFile("testdata/good/all-plugins.yaml")
	l, err := Load(data, NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// Notes: the flowControl gate. Data layer: metrics-data-source,
	// core-metrics-extractor and gpu-metrics-source (into l.GPU).
	if l.GPU == nil || l.GPU.URLTemplate != "http://{ip}:{port}/gpu/metrics" {
		t.Errorf("GPU config %+v, want the urlTemplate of all-plugins.yaml", l.GPU)
	}
	if len(l.DataLayer) != 3 || len(l.FeatureGates) != 1 || len(l.Notes) != 1 || l.Parser == nil {
		t.Errorf("data layer %d, gates %v, notes %v", len(l.DataLayer), l.FeatureGates, l.Notes)
	}
	s := scheduler.New(l.Plan)
	var states []scheduler.EndpointState
	for _, a := range []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"} {
		ep, _ := scheduler.ParseEndpoint(a)
		states = append(states, scheduler.EndpointState{H: scheduler.NewHandle(ep), Healthy: true})
	}
	now := time.Now()
	for i := range states {
		states[i].M.UpdatedAt = now
	}
	s.Publish(scheduler.NewSnapshot(states, now, 0))
	res, err := s.Pick(s.NewCycle(), &scheduler.Request{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	if len(res.Endpoints) != 3 {
		t.Errorf("maxNumOfEndpoints 3: got %d endpoints", len(res.Endpoints))
	}
}

// TestAllPluginsCoversRegistry keeps testdata/good/all-plugins.yaml a config
// that uses every registered plugin type, so each new type is loaded,
// defaulted and rendered by TestGoodConfigs.
func TestAllPluginsCoversRegistry(t *testing.T) {
	l, err := Load(mustRead(t, "testdata/good/all-plugins.yaml"), NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, p := range l.Plan.Plugins {
		used[p.Type()] = true
	}
	for _, typ := range NewRegistry().Types() {
		if !used[typ] {
			t.Errorf("plugin type %s is registered but not in testdata/good/all-plugins.yaml", typ)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConfigBounds: a hostile or broken configuration is refused quickly,
// with the bound and what was found.
func TestConfigBounds(t *testing.T) {
	many := func(n int, item string) string { return strings.Repeat(item, n) }
	tests := []struct {
		name, yaml, want string
	}{
		{"too large", "plugins:\n- type: queue-scorer\n#" + strings.Repeat("x", MaxConfigBytes), "expected a configuration of at most 1048576 bytes, found 1048607 bytes"},
		{"too many plugins", "plugins:\n" + many(MaxPlugins+1, "- type: queue-scorer\n"), "plugins: expected at most 1000 plugins, found 1001"},
		{"too many profiles", "schedulingProfiles:\n" + many(MaxProfiles+1, "- name: p\n"), "schedulingProfiles: expected at most 100 profiles, found 101"},
		{"too many references", "plugins:\n- type: queue-scorer\nschedulingProfiles:\n- name: p\n  plugins:\n" + many(MaxProfilePlugins+1, "  - pluginRef: queue-scorer\n"), "expected at most 1000 plugin references, found 1001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.yaml), NewRegistry())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestEngineConfigsFromYAML: core-metrics-extractor's engineConfigs, written
// in GIE's YAML shape, reach the scrape configuration (and round-trip).
func TestEngineConfigsFromYAML(t *testing.T) {
	yml := `plugins:
- type: metrics-data-source
- type: core-metrics-extractor
  parameters:
    defaultEngine: mine
    engineConfigs:
    - name: mine
      queuedRequestsSpec: "my_requests{state=waiting}"
      runningRequestsSpec: my_running
      kvUsageSpec: my_kv
- type: queue-scorer
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{pluginRef: core-metrics-extractor}]
`
	l, err := Load([]byte(yml), NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if l.Scrape.DefaultEngine != "mine" || len(l.Scrape.Engines) != 1 || l.Scrape.Engines[0].Name != "mine" ||
		l.Scrape.Engines[0].QueuedRequestsSpec != "my_requests{state=waiting}" || l.Scrape.Engines[0].KVUsageSpec != "my_kv" {
		t.Fatalf("scrape config %+v: want engine mine with its specs", l.Scrape)
	}
	again, err := Load(l.Effective, NewRegistry())
	if err != nil || !bytes.Equal(again.Effective, l.Effective) {
		t.Fatalf("effective config does not round-trip: %v", err)
	}
}
