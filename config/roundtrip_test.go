package config

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
)

// everyParam gives, for every registered plugin type, a value for each of
// its parameters (none of them the default), valid alone and together, in
// YAML flow form. TestEveryParameterRoundTrips keeps it complete; FuzzLoad
// seeds one config per entry.
var everyParam = map[string][][2]string{
	"prefix-cache-scorer": {{"blockSizeTokens", "32"}, {"blockSize", "128"}, {"maxPrefixBlocksToMatch", "100"},
		{"maxPrefixTokensToMatch", "640"}, {"lruCapacityPerServer", "5000"}, {"autoTune", "false"}, {"fullScoreMatchBlocks", "4"}},
	"approx-prefix-cache-producer": {{"blockSizeTokens", "32"}, {"blockSize", "128"}, {"maxPrefixBlocksToMatch", "100"},
		{"maxPrefixTokensToMatch", "640"}, {"lruCapacityPerServer", "5000"}, {"autoTune", "false"}},
	"prefix-cache-affinity-filter": {{"affinityThreshold", "0.95"}, {"explorationProbability", "0.02"}, {"maxTTFTPenaltyMs", "1500.5"}},
	"queue-scorer":                 nil,
	"running-requests-size-scorer": nil,
	"kv-cache-utilization-scorer":  nil,
	"lora-affinity-scorer":         nil,
	"token-load-scorer":            {{"queueThresholdTokens", "12345"}},
	"max-score-picker":             {{"maxNumOfEndpoints", "2"}},
	"random-picker":                {{"maxNumOfEndpoints", "3"}},
	"weighted-random-picker":       {{"maxNumOfEndpoints", "4"}},
	"single-profile-handler":       nil,
	"utilization-detector": {{"queueDepthThreshold", "7.5"}, {"kvCacheUtilThreshold", "0.75"},
		{"metricsStalenessThreshold", "1500ms"}, {"headroom", "0.3"}},
	"concurrency-detector":                 {{"concurrencyMode", "tokens"}, {"maxConcurrency", "50"}, {"maxTokenConcurrency", "200000"}, {"headroom", "0.15"}},
	"header-based-testing-filter":          nil,
	"inflight-load-producer":               nil,
	"openai-parser":                        nil,
	"destination-endpoint-served-verifier": nil,
	"gpu-metrics-source": {{"url", "http://exporter.monitoring:5000/metrics"}, {"urlTemplate", "http://{ip}:{port}/gpu/metrics"},
		{"interval", "500ms"}, {"stalenessThreshold", "3s"}, {"hostLabel", "example.com/node"}},
	"gpu-headroom-scorer": {{"activityWeight", "2"}, {"throttleWeight", "3"}, {"powerKnee", "0.8"}, {"junctionLimitCelsius", "100"},
		{"memoryLimitCelsius", "90"}, {"temperatureMarginCelsius", "10"}, {"clockBusyActivity", "0.6"}, {"clockDeficitFull", "0.2"}, {"neutralScore", "1"}},
	"capacity-queue-scorer": {{"capacities", "\"AMD Instinct MI300X=1,NVIDIA H100 80GB HBM3=0.6\""}, {"defaultCapacity", "0.8"}, {"scaleByGPUCount", "false"}, {"includeRequest", "false"}},
	"metrics-data-source":   {{"scheme", "https"}, {"path", "/stats/metrics"}, {"insecureSkipVerify", "true"}},
	"core-metrics-extractor": {{"engineLabelKey", "example.com/engine"}, {"defaultEngine", "sglang"},
		{"engineConfigs", `[{name: my-engine, queuedRequestsSpec: 'my_queue{kind="waiting"}', kvUsageSpec: my_kv}]`}},
}

// pluginYAML is a config of one plugin of typ with the given parameters.
func pluginYAML(typ string, params [][2]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "plugins:\n- type: %s\n", typ)
	if len(params) > 0 {
		b.WriteString("  parameters:\n")
		for _, p := range params {
			fmt.Fprintf(&b, "    %s: %s\n", p[0], p[1])
		}
	}
	return b.String()
}

// TestEveryParameterRoundTrips: for every registered type, a config giving
// every parameter a non-default value loads, and its effective config
// (--check-config's output) loads back to the same text: Load(Effective) ==
// Effective. The table must name exactly the parameters each type accepts.
func TestEveryParameterRoundTrips(t *testing.T) {
	reg := NewRegistry()
	for _, typ := range reg.Types() {
		params, ok := everyParam[typ]
		if !ok {
			t.Errorf("type %s: not in everyParam; give each of its parameters a value there", typ)
			continue
		}
		f, _ := reg.Lookup(typ)
		var names []string
		for _, p := range params {
			names = append(names, p[0])
		}
		want := slices.Clone(f.Params)
		sort.Strings(names)
		sort.Strings(want)
		if !slices.Equal(names, want) {
			t.Errorf("type %s: everyParam has %v, the type accepts %v", typ, names, want)
		}
		t.Run(typ, func(t *testing.T) {
			// Each parameter alone (FuzzLoad's seeds) loads and round-trips.
			for _, p := range params {
				src := pluginYAML(typ, [][2]string{p})
				l, err := Load([]byte(src), reg)
				if err != nil {
					t.Fatalf("%v\n%s", err, src)
				}
				if again, err := Load(l.Effective, reg); err != nil || string(again.Effective) != string(l.Effective) {
					t.Errorf("%s alone: effective config does not load back to itself (%v):\n%s", p[0], err, l.Effective)
				}
			}
			src := pluginYAML(typ, params)
			l, err := Load([]byte(src), reg)
			if err != nil {
				t.Fatalf("%v\n%s", err, src)
			}
			for _, p := range params {
				if !strings.Contains(string(l.Effective), "      "+p[0]+": ") {
					t.Errorf("parameter %s missing from the effective config:\n%s", p[0], l.Effective)
				}
			}
			again, err := Load(l.Effective, reg)
			if err != nil {
				t.Fatalf("effective config does not load: %v\n%s", err, l.Effective)
			}
			if string(again.Effective) != string(l.Effective) {
				t.Errorf("effective config is not a fixed point:\n%s\n---\n%s", l.Effective, again.Effective)
			}
			if !slices.Equal(again.Notes, l.Notes) {
				t.Errorf("notes changed on reload: %q, then %q", l.Notes, again.Notes)
			}
		})
	}
	for typ := range everyParam {
		if _, ok := reg.Lookup(typ); !ok {
			t.Errorf("everyParam names %s, which is not registered", typ)
		}
	}
}
