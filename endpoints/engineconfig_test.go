package endpoints

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	yaml "go.yaml.in/yaml/v3"

	"github.com/fastepp/fastepp/scheduler"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in    string
		name  string
		match []labelMatch
		err   string
	}{
		{"vllm:num_requests_waiting", "vllm:num_requests_waiting", nil, ""},
		{"  m  ", "m", nil, ""},
		{"m{}", "m", nil, ""},
		{`m{a="x"}`, "m", []labelMatch{{"a", "x"}}, ""},
		{`m{ a = x , b="y z",}`, "m", []labelMatch{{"a", "x"}, {"b", "y z"}}, ""},
		{`nv_trt_llm_request_metrics{request_type=waiting}`, "nv_trt_llm_request_metrics", []labelMatch{{"request_type", "waiting"}}, ""},
		{`m{a="q\"\\\n"}`, "m", []labelMatch{{"a", "q\"\\\n"}}, ""},
		{"", "", nil, "no metric name at the start"},
		{"9m", "", nil, "no metric name at the start"},
		{`{__name__="m"}`, "", nil, "no metric name at the start"},
		{"m x", "", nil, `expected '{' or the end after the metric name, found "x"`},
		{`m{a!="x"}`, "", nil, `only label=value equalities are supported, found != after label "a"`},
		{`m{a=~"x.*"}`, "", nil, "only label=value equalities are supported, found =~"},
		{`m{a="x"`, "", nil, "expected ',' or '}' after the value of label \"a\""},
		{`m{a="x}`, "", nil, `the value of label "a" has no closing '"'`},
		{`m{a}`, "", nil, `expected '=' after label "a"`},
		{`m{a=}`, "", nil, `expected a value for label "a"`},
		{`m{a="1",a="2"}`, "", nil, `label "a" appears twice`},
		{`m{__x="1"}`, "", nil, "reserved"},
		{`m{a="\t"}`, "", nil, `unknown escape \t`},
		{`m{a="1"} x`, "", nil, `unexpected "x" after '}'`},
	}
	for _, tt := range tests {
		got, err := parseSpec(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "expected a metric selector such as name") {
				t.Errorf("parseSpec(%q) error = %v; want one containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got.name != tt.name || !reflect.DeepEqual(got.match, tt.match) {
			t.Errorf("parseSpec(%q) = %q %v, %v; want %q %v", tt.in, got.name, got.match, err, tt.name, tt.match)
		}
	}
}

// yamlParams is a scheduler.Params whose structured parameters come from
// YAML through Decode, the method the config layer is asked to provide.
type yamlParams struct {
	scheduler.MapParams
	nodes map[string]*yaml.Node
}

func (p yamlParams) Has(name string) bool { return p.nodes[name] != nil || p.MapParams.Has(name) }
func (p yamlParams) Decode(name string, v any) error {
	if p.nodes[name] == nil {
		return nil
	}
	return p.nodes[name].Decode(v)
}

// paramsFromYAML parses a parameters mapping: strings go to MapParams,
// engineConfigs stays a node for Decode.
func paramsFromYAML(t *testing.T, text string) yamlParams {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	p := yamlParams{MapParams: scheduler.MapParams{}, nodes: map[string]*yaml.Node{}}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i].Value, m.Content[i+1]
		if k == "engineConfigs" {
			p.nodes[k] = v
		} else {
			p.MapParams[k] = v.Value
		}
	}
	return p
}

// TestEngineConfigsParameter: core-metrics-extractor's engineConfigs in
// GIE's YAML shape, through a Params with Decode (line numbers in errors)
// and through MapParams; every malformed entry is refused with the entry,
// the field and what was expected.
func TestEngineConfigsParameter(t *testing.T) {
	reg := scheduler.NewRegistry()
	RegisterPlugins(reg)
	tests := []struct {
		name, yaml string
		want       []EngineConfig // when err is ""
		err        string
	}{
		{"custom engine, default switched to it", `
defaultEngine: my-engine
engineConfigs:
- name: my-engine
  queuedRequestsSpec: "my_queue{kind=\"waiting\"}"
  runningRequestsSpec: my_running
  kvUsageSpec: my_kv
  cacheInfoSpec: my_cache
  cacheBlockSizeLabelName: bs
  cacheNumBlocksLabelName: nb
`, []EngineConfig{{Name: "my-engine", QueuedRequestsSpec: `my_queue{kind="waiting"}`, RunningRequestsSpec: "my_running",
			KVUsageSpec: "my_kv", CacheInfoSpec: "my_cache", CacheBlockSizeLabelName: "bs", CacheNumBlocksLabelName: "nb"}}, ""},
		{"empty list: built-ins only", "engineConfigs: []\n", []EngineConfig{}, ""},
		{"null list", "engineConfigs:\n", nil, ""},
		{"not a list", "engineConfigs: {name: x}\n", nil, "engineConfigs (line 1): expected a list of engine configs {name, queuedRequestsSpec, ...}, found an object"},
		{"item not an object", "engineConfigs: [x]\n", nil, `engineConfigs[0] (line 1): expected an object {name, queuedRequestsSpec, ...}, found the value "x"`},
		{"unknown field", "engineConfigs:\n- name: a\n  queueSpec: q\n", nil,
			`engineConfigs[0] (line 2): unknown field "queueSpec" (line 3); allowed: name, queuedRequestsSpec, runningRequestsSpec, kvUsageSpec, loraSpec, cacheInfoSpec, cacheBlockSizeLabelName, cacheNumBlocksLabelName, cacheBlockSizeSpec, cacheNumBlocksSpec`},
		{"not a string", "engineConfigs:\n- name: a\n  kvUsageSpec: 1\n", nil, `engineConfigs[0] (line 2): field "kvUsageSpec" (line 3): expected a string, found "1"`},
		{"twice", "engineConfigs:\n- name: a\n  kvUsageSpec: x\n  kvUsageSpec: y\n", nil, `field "kvUsageSpec" given twice`},
		{"no name", "engineConfigs:\n- kvUsageSpec: x\n", nil, "engineConfigs[0]: name: expected an engine name (the value of the engine label), found none"},
		{"reserved name", "engineConfigs:\n- {name: Default, kvUsageSpec: x}\n", nil, `name: "Default" is reserved`},
		{"duplicate name", "engineConfigs:\n- {name: a, kvUsageSpec: x}\n- {name: A, kvUsageSpec: y}\n", nil,
			`engineConfigs[1] (A): name: expected each engine once, found "A" again (first in engineConfigs[0])`},
		{"bad spec", "engineConfigs:\n- {name: a, kvUsageSpec: 'k{x!=\"1\"}'}\n", nil, `engineConfigs[0] (a): kvUsageSpec: expected a metric selector`},
		{"no core spec", "engineConfigs:\n- {name: a, loraSpec: l}\n", nil, "expected at least one of queuedRequestsSpec, runningRequestsSpec, kvUsageSpec"},
		{"label name without cacheInfoSpec", "engineConfigs:\n- {name: a, kvUsageSpec: k, cacheBlockSizeLabelName: bs}\n", nil,
			"cacheBlockSizeLabelName: names a label of cacheInfoSpec's metric, but cacheInfoSpec is empty"},
		{"bad label name", "engineConfigs:\n- {name: a, kvUsageSpec: k, cacheInfoSpec: c, cacheNumBlocksLabelName: 'n-b'}\n", nil,
			`cacheNumBlocksLabelName: expected a label name ([a-zA-Z_][a-zA-Z0-9_]*), found "n-b"`},
		{"default engine not configured", "defaultEngine: mine\nengineConfigs:\n- {name: other, kvUsageSpec: k}\n", nil,
			`defaultEngine: expected one of vllm, sglang, trtllm, triton-tensorrt-llm, other, trtllm-serve, found "mine"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl, err := reg.New(CoreMetricsExtractorType, "", paramsFromYAML(t, tt.yaml))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v\nwant one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sc, err := ScrapeConfigFrom([]scheduler.Plugin{pl})
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.want) > 0 || sc.Engines != nil {
				if !reflect.DeepEqual(sc.Engines, tt.want) {
					t.Fatalf("Engines = %+v\nwant %+v", sc.Engines, tt.want)
				}
			}
		})
	}

	// The same through MapParams: Go values and YAML-like values.
	for _, v := range []any{
		[]EngineConfig{{Name: "x", KVUsageSpec: "k"}},
		[]any{map[string]any{"name": "x", "kvUsageSpec": "k"}},
	} {
		pl, err := reg.New(CoreMetricsExtractorType, "", scheduler.MapParams{"engineConfigs": v, "defaultEngine": "x"})
		if err != nil {
			t.Fatalf("%T: %v", v, err)
		}
		sc, err := ScrapeConfigFrom([]scheduler.Plugin{pl})
		if err != nil || !reflect.DeepEqual(sc.Engines, []EngineConfig{{Name: "x", KVUsageSpec: "k"}}) || sc.DefaultEngine != "x" {
			t.Fatalf("%T: %+v, %v", v, sc, err)
		}
	}

	// A Params that can neither decode nor is a MapParams: refused, saying why.
	if _, err := reg.New(CoreMetricsExtractorType, "", plainParams{scheduler.MapParams{"engineConfigs": 1}}); err == nil ||
		!strings.Contains(err.Error(), "cannot pass a list parameter to a plugin (its scheduler.Params has no Decode method)") {
		t.Fatalf("params without Decode: err = %v", err)
	}
}

// plainParams hides MapParams' type: a Params with getters only.
type plainParams struct{ m scheduler.MapParams }

func (p plainParams) Int(n string, d int) (int, error)           { return p.m.Int(n, d) }
func (p plainParams) Float(n string, d float64) (float64, error) { return p.m.Float(n, d) }
func (p plainParams) Bool(n string, d bool) (bool, error)        { return p.m.Bool(n, d) }
func (p plainParams) String(n string, d string) (string, error)  { return p.m.String(n, d) }
func (p plainParams) Duration(n string, d time.Duration) (time.Duration, error) {
	return p.m.Duration(n, d)
}
func (p plainParams) Has(n string) bool { return p.m.Has(n) }

// TestEngineConfigsReachTheScraper: a custom engine (metric names told apart
// by a label, as Triton does) and a replaced built-in are what the pool's
// scrapers read, on real loopback servers.
func TestEngineConfigsReachTheScraper(t *testing.T) {
	page := "# TYPE my_requests gauge\n" +
		"my_requests{state=\"waiting\",model_name=\"a\"} 4\n" +
		"my_requests{state=\"running\",model_name=\"a\"} 6\n" +
		"my_requests{state=\"running\",model_name=\"b\"} 1\n" +
		"my_kv{model_name=\"a\"} 0.5\n" +
		"my_blocks{kind=\"size\"} 32\nmy_blocks{kind=\"count\"} 1000\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, page) }))
	defer srv.Close()
	engines := []EngineConfig{
		{Name: "mine", QueuedRequestsSpec: "my_requests{state=waiting}", RunningRequestsSpec: `my_requests{state="running"}`,
			KVUsageSpec: "my_kv", CacheBlockSizeSpec: "my_blocks{kind=size}", CacheNumBlocksSpec: "my_blocks{kind=count}"},
		// vllm replaced: its pods now read the same custom names.
		{Name: "vllm", QueuedRequestsSpec: "my_requests{state=waiting}", KVUsageSpec: "my_kv"},
	}
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   scheduler.Metrics
	}{
		{"custom engine", map[string]string{EngineLabel: "Mine"}, scheduler.Metrics{Waiting: 4, Running: 7, KVUsage: 0.5, Models: []string{"a", "b"}, BlockSize: 32, NumGPUBlocks: 1000}},
		{"replaced vllm (default engine)", nil, scheduler.Metrics{Waiting: 4, KVUsage: 0.5, Models: []string{"a"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sched := scheduler.New(nil)
			opt := fastOptions(t)
			opt.Scrape = ScrapeConfig{Engines: engines}
			tg := targetOf(t, srv.URL)
			tg.Labels = tt.labels
			p := NewPool(sched, Static{tg}, opt)
			defer p.Close()
			eventually(t, "custom names scraped", func() bool {
				e := state(sched, tg.HostPort())
				return e != nil && e.Fresh
			})
			got := state(sched, tg.HostPort()).M
			got.UpdatedAt, got.InflightAtScrape = tt.want.UpdatedAt, tt.want.InflightAtScrape
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}

	// Invalid engines given in code (not through the plugin) fail every
	// scrape with the reason instead of being ignored.
	sched := scheduler.New(nil)
	opt := fastOptions(t)
	opt.Scrape = ScrapeConfig{Engines: []EngineConfig{{Name: "bad"}}}
	tg := targetOf(t, srv.URL)
	p := NewPool(sched, Static{tg}, opt)
	defer p.Close()
	eventually(t, "engine error", func() bool {
		st := p.EndpointStats()
		return len(st) == 1 && strings.Contains(st[0].LastError, "engineConfigs[0] (bad): expected at least one of")
	})
}

// TestModelsFromModelName: Metrics.Models lists the distinct model_name
// values of the core families, and a steady page hands out the same slice
// (no allocation) while a changed set gets a new one.
func TestModelsFromModelName(t *testing.T) {
	page := func(models ...string) []byte {
		var b strings.Builder
		for i, m := range models {
			fmt.Fprintf(&b, "vllm:num_requests_waiting{model_name=%q,engine=\"%d\"} 1\n", m, i)
			fmt.Fprintf(&b, "vllm:kv_cache_usage_perc{model_name=%q} 0.1\n", m)
		}
		b.WriteString("vllm:lora_requests_info{model_name=\"not-core\",running_lora_adapters=\"\"} 1\n")
		return []byte(b.String())
	}
	var p pageParser
	var a accumulator
	var m scheduler.Metrics
	step := func(data []byte) []string {
		t.Helper()
		if err := p.parse(data, engines[0], &a); err != nil {
			t.Fatal(err)
		}
		a.fill(&m)
		return m.Models
	}
	one := page("base", "base", "lora-x")
	first := step(one)
	if !reflect.DeepEqual(first, []string{"base", "lora-x"}) {
		t.Fatalf("Models = %q, want [base lora-x]", first)
	}
	again := step(one)
	if unsafe.SliceData(again) != unsafe.SliceData(first) {
		t.Error("an unchanged page built a new Models slice")
	}
	if n := testing.AllocsPerRun(100, func() { step(one) }); n != 0 {
		t.Errorf("steady page: %v allocations per parse+fill, want 0", n)
	}
	reordered := step(page("lora-x", "base"))
	if unsafe.SliceData(reordered) != unsafe.SliceData(first) {
		t.Error("the same set in another order built a new Models slice")
	}
	changed := step(page("base"))
	if !reflect.DeepEqual(changed, []string{"base"}) || !reflect.DeepEqual(first, []string{"base", "lora-x"}) {
		t.Fatalf("changed set: Models = %q (previous slice now %q)", changed, first)
	}
	if none := step([]byte("vllm:num_requests_waiting 1\n")); none != nil {
		t.Fatalf("no model_name: Models = %q, want nil", none)
	}
}

// TestScrapeConfigPortAndPrecedence: Port moves the metrics page to another
// port of the endpoint's address; parameters given in the config override
// the base (flags), parameters left out keep it.
func TestScrapeConfigPortAndPrecedence(t *testing.T) {
	tg := targetOf(t, "http://10.0.0.1:8000")
	for _, tt := range []struct {
		c    ScrapeConfig
		want string
	}{
		{ScrapeConfig{}, "http://10.0.0.1:8000/metrics"},
		{ScrapeConfig{Port: 9400, Scheme: "https", Path: "/m"}, "https://10.0.0.1:9400/m"},
	} {
		if got := tt.c.URL(tg); got != tt.want {
			t.Errorf("%+v: URL = %s, want %s", tt.c, got, tt.want)
		}
	}
	v6 := targetOf(t, "http://[::1]:8000")
	if got := (ScrapeConfig{Port: 9}).URL(v6); got != "http://[::1]:9/metrics" {
		t.Errorf("IPv6 with Port: %s", got)
	}
	own := tg
	own.MetricsURL = "http://10.0.0.9:1/x"
	if got := (ScrapeConfig{Port: 9}).URL(own); got != own.MetricsURL {
		t.Errorf("a target's own MetricsURL must win over Port: %s", got)
	}

	reg := scheduler.NewRegistry()
	RegisterPlugins(reg)
	base := ScrapeConfig{Scheme: "https", Path: "/flag", InsecureSkipVerify: true, Port: 9400}
	for _, tt := range []struct {
		name   string
		params scheduler.MapParams
		want   ScrapeConfig
	}{
		{"no parameters: the flags", nil, ScrapeConfig{Scheme: "https", Path: "/flag", InsecureSkipVerify: true, Port: 9400, EngineLabelKey: EngineLabel, DefaultEngine: "vllm"}},
		{"path and verification from the config", scheduler.MapParams{"path": "/cfg", "insecureSkipVerify": false},
			ScrapeConfig{Scheme: "https", Path: "/cfg", InsecureSkipVerify: false, Port: 9400, EngineLabelKey: EngineLabel, DefaultEngine: "vllm"}},
		{"scheme from the config", scheduler.MapParams{"scheme": "http"},
			ScrapeConfig{Scheme: "http", Path: "/flag", InsecureSkipVerify: true, Port: 9400, EngineLabelKey: EngineLabel, DefaultEngine: "vllm"}},
	} {
		pl, err := reg.New(MetricsDataSourceType, "", tt.params)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ScrapeConfigOver(base, []scheduler.Plugin{pl})
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, %v\nwant %+v", tt.name, got, err, tt.want)
		}
	}
}
