package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fastepp/fastepp/scheduler"
)

// TestUnsupportedTypes: every GIE v1.5.0 type fastepp refuses fails with the
// type, why and what to use instead, at the type's line; none is registered.
func TestUnsupportedTypes(t *testing.T) {
	reg := NewRegistry()
	types := UnsupportedTypes()
	if len(types) != 18 {
		t.Errorf("%d refused types, want 18: %v", len(types), types)
	}
	for _, typ := range types {
		t.Run(typ, func(t *testing.T) {
			if _, ok := reg.Lookup(typ); ok {
				t.Fatalf("%s is registered and refused", typ)
			}
			_, err := Load([]byte("plugins:\n- name: x\n  type: "+typ+"\n"), reg)
			u := unsupported[typ]
			want := `config line 3: plugin "x" (type ` + typ + `): not supported by fastepp: ` + u.why + "; instead: " + u.instead
			if err == nil || err.Error() != want {
				t.Errorf("err = %v\nwant %s", err, want)
			}
			if !strings.Contains(u.why, "fastepp") || u.instead == "" {
				t.Errorf("reason %q / instead %q: say what fastepp lacks and what to use", u.why, u.instead)
			}
		})
	}
	for _, typ := range []string{"predicted-latency-scorer", "predicted-latency-producer", "latency-slo-admitter", "slo-headroom-tier-filter", "latency-scorer",
		"global-strict-fairness-policy", "round-robin-fairness-policy", "fcfs-ordering-policy", "edf-ordering-policy", "slo-deadline-ordering-policy",
		"static-usage-limit-policy", "eviction-priority-then-time-ordering", "eviction-sheddable-filter",
		"k8s-notification-source", "endpoint-notification-source", "request-attribute-reporter", "passthrough-parser", "vllmgrpc-parser"} {
		if _, ok := unsupported[typ]; !ok {
			t.Errorf("GIE type %s is neither registered nor refused", typ)
		}
	}
}

// loadErr loads src and returns its error text ("" when it loads).
func loadErr(t *testing.T, src string) (string, *Loaded) {
	t.Helper()
	l, err := Load([]byte(src), NewRegistry())
	if err != nil {
		return err.Error(), nil
	}
	return "", l
}

// TestGIESections: the parser section (GIE's shape), the refused flowControl
// section, and where plugins that take no part in a pick may appear.
func TestGIESections(t *testing.T) {
	cases := []struct {
		name, yaml string
		err        string // "" = loads
		note       string // a note that must be there when it loads
	}{
		{"parser names openai-parser", "plugins:\n- {name: p, type: openai-parser}\n- type: queue-scorer\nparser: {pluginRef: p}\n", "", ""},
		{"parser names nothing", "plugins:\n- type: queue-scorer\nparser: {pluginRef: openai-parser}\n",
			`config line 3: parser: pluginRef "openai-parser" names no plugin; defined: queue-scorer`, ""},
		{"parser names a scorer", "plugins:\n- type: queue-scorer\nparser: {pluginRef: queue-scorer}\n",
			`config line 3: parser: plugin "queue-scorer" (type queue-scorer) is not a parser; known parser types: openai-parser`, ""},
		{"parser names a producer", "plugins:\n- type: inflight-load-producer\nparser: {pluginRef: inflight-load-producer}\n",
			`parser: plugin "inflight-load-producer" (type inflight-load-producer) is not a parser`, ""},
		{"parser without pluginRef", "parser: {}\n", "config line 1: parser: pluginRef is required", ""},
		{"parser unknown field", "parser: {pluginRef: p, name: x}\n", `parser: unknown field "name"; allowed: pluginRef`, ""},
		{"passthrough refused", "plugins:\n- type: passthrough-parser\nparser: {pluginRef: passthrough-parser}\n",
			`config line 2: plugin "passthrough-parser" (type passthrough-parser): not supported by fastepp: fastepp's ext_proc server reads every request body as OpenAI JSON`, ""},
		{"flowControl section refused", "featureGates: [flowControl]\nflowControl:\n  maxRequests: 100\n",
			"config line 3: flowControl: not supported by fastepp: it has no flow-control layer and queues no requests in the picker; instead: remove the section", ""},
		{"producer in a profile: ignored, as GIE", "plugins:\n- type: inflight-load-producer\n- type: queue-scorer\nschedulingProfiles:\n- name: p\n  plugins:\n  - pluginRef: inflight-load-producer\n  - pluginRef: queue-scorer\n", "",
			`profile "p": plugin "inflight-load-producer" (type inflight-load-producer) is a request data producer and takes no part in a pick; ignored there, as GIE ignores it`},
		{"parser in dataLayer refused", "plugins:\n- type: openai-parser\ndataLayer:\n  sources:\n  - pluginRef: openai-parser\n",
			`config line 5: dataLayer: plugin "openai-parser" (type openai-parser) is a parser; known data-layer types: core-metrics-extractor, gpu-metrics-source, metrics-data-source`, ""},
		{"not in the default profile", "plugins:\n- type: approx-prefix-cache-producer\n- type: openai-parser\n- type: prefix-cache-scorer\n", "",
			""},
		{"GIE gates", "featureGates: [dataLayer, enableLegacyMetrics, flowControl]\n", "", "feature gate enableLegacyMetrics: accepted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err, l := loadErr(t, tc.yaml)
			if tc.err != "" {
				if !strings.Contains(err, tc.err) {
					t.Errorf("err = %q\nwant %q", err, tc.err)
				}
				return
			}
			if err != "" {
				t.Fatal(err)
			}
			if tc.note != "" && !strings.Contains(strings.Join(l.Notes, "\n"), tc.note) {
				t.Errorf("notes %q, want %q", l.Notes, tc.note)
			}
			for _, pr := range l.Plan.Profiles {
				if len(pr.Filters)+len(pr.Scorers) > 1 {
					t.Errorf("profile %s has %d filters and %d scorers: a passive plugin got in", pr.Name, len(pr.Filters), len(pr.Scorers))
				}
			}
		})
	}
}

// TestGIENotes: what a GIE configuration changes quietly in GIE is said in
// Loaded.Notes, naming the plugin.
func TestGIENotes(t *testing.T) {
	cases := []struct {
		name, yaml, note string
	}{
		{"blockSize with blockSizeTokens", "plugins:\n- type: prefix-cache-scorer\n  parameters: {blockSize: 256, blockSizeTokens: 32}\n",
			`plugin "prefix-cache-scorer" (type prefix-cache-scorer): blockSize 256 (deprecated, in characters) is ignored because blockSizeTokens is set, as in GIE; blocks are 32 tokens`},
		{"producer overrides the scorer", "plugins:\n- name: px\n  type: prefix-cache-scorer\n- type: approx-prefix-cache-producer\n  parameters: {blockSizeTokens: 64}\n",
			`plugin "approx-prefix-cache-producer" (type approx-prefix-cache-producer): prefix-cache-scorer "px" uses this producer's index parameters (blockSizeTokens 64,`},
		{"affinity filter without an index", "plugins:\n- type: prefix-cache-affinity-filter\n",
			`plugin "prefix-cache-affinity-filter" (type prefix-cache-affinity-filter): no prefix-cache-scorer or approx-prefix-cache-producer in the configuration`},
		{"dataLayer gate", "featureGates: [dataLayer]\n", "feature gate dataLayer: accepted; fastepp always scrapes through its data layer"},
	}
	for _, tc := range cases {
		err, l := loadErr(t, tc.yaml)
		if err != "" {
			t.Errorf("%s: %s", tc.name, err)
			continue
		}
		if !strings.Contains(strings.Join(l.Notes, "\n"), tc.note) {
			t.Errorf("%s: notes %q\nwant %q", tc.name, l.Notes, tc.note)
		}
	}
	// Two producers: an error at the second's line.
	if err, _ := loadErr(t, "plugins:\n- name: a\n  type: approx-prefix-cache-producer\n- name: b\n  type: approx-prefix-cache-producer\n"); !strings.Contains(err, `config line 4: plugin "b" (type approx-prefix-cache-producer): a second approx-prefix-cache-producer (the first is "a")`) {
		t.Errorf("two producers: %q", err)
	}
}

// TestSaturationDefault: without a saturationDetector section the detector
// is the plugin named utilization-detector, else the first of that type,
// else an implicit one; a concurrency-detector is used only when named.
func TestSaturationDefault(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       string // the detector's name; "" = error expected
		err        string
	}{
		{"concurrency-detector is not the default", "plugins:\n- type: concurrency-detector\n- type: queue-scorer\n", "utilization-detector", ""},
		{"concurrency-detector when named", "plugins:\n- type: concurrency-detector\nsaturationDetector: {pluginRef: concurrency-detector}\n", "concurrency-detector", ""},
		{"named utilization-detector first", "plugins:\n- {name: u1, type: utilization-detector}\n- {name: utilization-detector, type: utilization-detector, parameters: {queueDepthThreshold: 9}}\n", "utilization-detector", ""},
		{"else the first of the type", "plugins:\n- {name: c, type: concurrency-detector}\n- {name: u1, type: utilization-detector}\n", "u1", ""},
		{"the name taken by another type", "plugins:\n- {name: utilization-detector, type: queue-scorer}\n", "",
			`config line 2: plugin "utilization-detector" (type queue-scorer) is a scorer; with no saturationDetector section, the plugin named utilization-detector is the saturation detector, as in GIE`},
	}
	for _, tc := range cases {
		err, l := loadErr(t, tc.yaml)
		if tc.want == "" {
			if !strings.Contains(err, tc.err) {
				t.Errorf("%s: err %q, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != "" {
			t.Errorf("%s: %s", tc.name, err)
			continue
		}
		if got := l.Plan.Saturation.Name(); got != tc.want {
			t.Errorf("%s: saturation detector %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestDecodeParam: a structured parameter reaches the plugin through
// params.Decode with aliases expanded; a value too large once expanded is
// refused; an absent one leaves the target alone.
func TestDecodeParam(t *testing.T) {
	src := "plugins:\n- type: core-metrics-extractor\n  parameters:\n    engineConfigs:\n    - &e {name: a, kvUsageSpec: k}\n    - {name: b, kvUsageSpec: k2}\n" +
		"- type: metrics-data-source\ndataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n    extractors: [{pluginRef: core-metrics-extractor}]\n"
	err, l := loadErr(t, src)
	if err != "" {
		t.Fatal(err)
	}
	if len(l.Scrape.Engines) != 2 {
		t.Errorf("engines %+v, want 2", l.Scrape.Engines)
	}
	params := func(src string) *params {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		p, err := newParams(doc.Content[0])
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := params("list: [1, &x 2, *x]\n")
	var out []int
	if err := p.Decode("list", &out); err != nil || len(out) != 3 || out[2] != 2 {
		t.Errorf("Decode: %v %v", out, err)
	}
	if len(p.effective) != 1 || p.effective[0].Name != "list" || len(p.unused()) != 0 {
		t.Errorf("Decode recorded %v, unused %v", p.effective, p.unused())
	}
	var none []int
	if err := p.Decode("absent", &none); err != nil || none != nil {
		t.Errorf("Decode of an absent parameter: %v %v", none, err)
	}
	// Six levels of ten aliases: a million nodes once expanded.
	bomb := "list: [&a0 [k, k, k, k, k, k, k, k, k, k]"
	for i := 1; i <= 6; i++ {
		bomb += fmt.Sprintf(", &a%d [%s]", i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	bomb += "]\n"
	var n yaml.Node
	err2 := params(bomb).Decode("list", &n)
	if err2 == nil || !strings.Contains(err2.Error(), `parameter "list": expected a value of at most 100000 nodes`) {
		t.Errorf("alias bomb: %v", err2)
	}
}

// TestGoodConfigsPickAllocs: a steady-state pick through the plans of the
// configs that use the GIE v1.5.0 plugins (every filter, scorer, picker and
// detector in a profile, the detector shedding) allocates nothing.
func TestGoodConfigsPickAllocs(t *testing.T) {
	for _, f := range []string{"testdata/good/all-plugins.yaml", "testdata/good/gie-v15.yaml"} {
		l, err := Load(mustRead(t, f), NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		s := scheduler.New(l.Plan)
		now := time.Now()
		var states []scheduler.EndpointState
		for i := 0; i < 16; i++ {
			ep, _ := scheduler.ParseEndpoint(fmt.Sprintf("10.0.0.%d:8000", i+1))
			states = append(states, scheduler.EndpointState{H: scheduler.NewHandle(ep), Healthy: true,
				M: scheduler.Metrics{UpdatedAt: now, Waiting: i % 3, KVUsage: 0.1 * float64(i%5)}})
		}
		s.Publish(scheduler.NewSnapshot(states, now, 0))
		c := s.NewCycle()
		var prompts [][]byte
		for i := 0; i < 8; i++ {
			p := []byte(strings.Repeat(fmt.Sprintf("system prompt %d. ", i%2), 80))
			prompts = append(prompts, append(p, fmt.Sprintf("question %d", i)...))
		}
		req := scheduler.Request{Model: "m", Priority: -1}
		i := 0
		pick := func() {
			req.SetPrompt(prompts[i%len(prompts)])
			i++
			res, err := s.Pick(c, &req)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			res.Release()
		}
		for range 2 * len(prompts) {
			pick()
		}
		if a := testing.AllocsPerRun(300, pick); a != 0 {
			t.Errorf("%s: %v allocs per pick, want 0", f, a)
		}
	}
}
