package loadgen

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const base = `
load: {type: poisson, stages: [{rate: 15, duration: 50}, {rate: 30, duration: 60}], burstiness: 1.0, seed: 12345}
api: {type: chat, streaming: true}
server: {base_url: "http://127.0.0.1:8081", model_name: meta-llama/Llama-3.1-8B-Instruct, ignore_eos: true}
data:
  type: shared_prefix
  shared_prefix: {num_groups: 150, num_prompts_per_group: 5, system_prompt_len: 6000, question_len: 1200, output_len: 1000}
slo: {ttft: 2s, tpot: 100ms}
report: {percentiles: [50, 90, 95, 99], formats: [json, csv, html]}
`

func TestParseConfigLOADGENExample(t *testing.T) {
	c, err := ParseConfig([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.Load.SeedValue() != 12345 || len(c.Load.Stages) != 2 || c.Load.Stages[1].Rate != 30 ||
		time.Duration(c.Load.Stages[1].Duration) != 60*time.Second {
		t.Errorf("load decoded wrong: %+v", c.Load)
	}
	sp := c.Data.SharedPrefix
	if sp.NumGroups != 150 || sp.NumPromptsPerGroup != 5 || sp.SystemPromptLen.Fixed != 6000 || sp.QuestionLen.Fixed != 1200 || sp.OutputLen.Fixed != 1000 {
		t.Errorf("shared_prefix decoded wrong: %+v", sp)
	}
	if time.Duration(c.SLO.TTFT) != 2*time.Second || time.Duration(c.SLO.TPOT) != 100*time.Millisecond || c.SLO.Attainment != 0.9 {
		t.Errorf("slo decoded wrong: %+v", c.SLO)
	}
}

func TestParseConfigAliasesAndForms(t *testing.T) {
	cases := []struct {
		name  string
		yaml  string
		check func(*Config) string
	}{
		{"inference-perf shared_prefix aliases", strings.Replace(base, "num_groups: 150, num_prompts_per_group: 5",
			"num_unique_system_prompts: 7, num_users_per_system_prompt: 3", 1), func(c *Config) string {
			if c.Data.SharedPrefix.NumGroups != 7 || c.Data.SharedPrefix.NumPromptsPerGroup != 3 {
				return "aliases not folded"
			}
			return ""
		}},
		{"length as distribution", strings.Replace(base, "question_len: 1200",
			"question_len: {type: lognormal, mean: 1200, std_dev: 300, min: 100, max: 4000}", 1), func(c *Config) string {
			d := c.Data.SharedPrefix.QuestionLen.Dist
			if d == nil || d.Type != "lognormal" || *d.Mean != 1200 || *d.Max != 4000 {
				return "distribution not decoded"
			}
			return ""
		}},
		{"concurrency_level alias, base_seed", `
load: {type: concurrent, stages: [{concurrency_level: 4, num_requests: 100}], base_seed: 9}
server: {base_url: "http://127.0.0.1:1", model_name: m}
`, func(c *Config) string {
			if c.Load.Stages[0].Concurrency != 4 || c.Load.SeedValue() != 9 || c.Data.Type != DataRandom {
				return "alias/defaults wrong"
			}
			return ""
		}},
		{"durations as strings", `
load: {type: constant, stages: [{rate: 2, duration: 1m30s}], request_timeout: 30s}
server: {base_url: "http://127.0.0.1:1", model_name: m}
slo: {ttft: 0.5, e2e: 10s}
`, func(c *Config) string {
			if time.Duration(c.Load.Stages[0].Duration) != 90*time.Second || time.Duration(c.SLO.TTFT) != 500*time.Millisecond {
				return "durations wrong"
			}
			return ""
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(c); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func TestParseConfigErrorsNameTheField(t *testing.T) {
	srv := "server: {base_url: \"http://127.0.0.1:1\", model_name: m}\n"
	cases := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown top field", "lod: {}\n" + srv, []string{`unknown field "lod"`, "line 1", "load"}},
		{"typo in stage", "load: {type: constant, stages: [{rate: 1, duraton: 5}]}\n" + srv, []string{`"duraton"`, "load.stages[]", "duration"}},
		{"typo in distribution", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "data: {type: random, input_distribution: {mean: 5, stddev: 1}}\n", []string{`"stddev"`, "std_dev"}},
		{"bad load type", "load: {type: burst, stages: [{rate: 1, duration: 1}]}\n" + srv, []string{"load.type", `"burst"`, "constant, poisson"}},
		{"negative rate", "load: {stages: [{rate: -3, duration: 1}]}\n" + srv, []string{"load.stages[0].rate", "found -3"}},
		{"zero duration", "load: {stages: [{rate: 3}]}\n" + srv, []string{"load.stages[0].duration"}},
		{"no stages", "load: {type: poisson}\n" + srv, []string{"load.stages", "at least one stage"}},
		{"burstiness on constant", "load: {stages: [{rate: 1, duration: 1}], burstiness: 0.5}\n" + srv, []string{"load.burstiness", "poisson"}},
		{"zero burstiness", "load: {type: poisson, stages: [{rate: 1, duration: 1}], burstiness: 0}\n" + srv, []string{"load.burstiness", "[0.01, 1000]"}},
		{"concurrent without count", "load: {type: concurrent, stages: [{concurrency: 2}]}\n" + srv, []string{"load.stages[0].num_requests"}},
		{"rate in concurrent", "load: {type: concurrent, stages: [{concurrency: 2, num_requests: 5, rate: 3}]}\n" + srv, []string{"load.stages[0]", "rate/duration set"}},
		{"missing url", "load: {stages: [{rate: 1, duration: 1}]}\nserver: {model_name: m}\n", []string{"server.base_url", "nothing"}},
		{"bad url", "load: {stages: [{rate: 1, duration: 1}]}\nserver: {base_url: localhost:8000, model_name: m}\n", []string{"server.base_url", `"localhost:8000"`}},
		{"missing model", "load: {stages: [{rate: 1, duration: 1}]}\nserver: {base_url: \"http://127.0.0.1:1\"}\n", []string{"server.model_name"}},
		{"bad api", "load: {stages: [{rate: 1, duration: 1}]}\napi: {type: embeddings}\n" + srv, []string{"api.type", `"embeddings"`}},
		{"shared_prefix block with random", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "data: {type: random, shared_prefix: {num_groups: 1}}\n", []string{"data.shared_prefix", "data.type random"}},
		{"both alias and name", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "data: {type: shared_prefix, shared_prefix: {num_groups: 2, num_unique_system_prompts: 3}}\n", []string{"data.shared_prefix.num_groups", "not both"}},
		{"min over max", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "data: {type: random, input_distribution: {mean: 5, min: 10, max: 2}}\n", []string{"data.input_distribution.min", "min <= max"}},
		{"bad dist type", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "data: {type: random, input_distribution: {type: zipf, mean: 5}}\n", []string{"data.input_distribution.type", `"zipf"`}},
		{"bad length", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "data: {type: shared_prefix, shared_prefix: {question_len: lots}}\n", []string{"config field data.shared_prefix.question_len", "whole number of tokens", `"lots"`}},
		{"trace replay needs trace data", "load: {type: trace_replay}\n" + srv, []string{"data.type", "trace"}},
		{"trace without file", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "data: {type: trace, trace: {}}\n", []string{"data.trace.file"}},
		{"bad slo", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "slo: {ttft: soon}\n", []string{"config field slo.ttft", "duration like 2s", `"soon"`}},
		{"bad attainment", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "slo: {attainment: 1.5}\n", []string{"slo.attainment"}},
		{"bad percentile", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "report: {percentiles: [50, 101]}\n", []string{"report.percentiles[1]"}},
		{"bad format", "load: {stages: [{rate: 1, duration: 1}]}\n" + srv + "report: {formats: [pdf]}\n", []string{"report.formats[0]", `"pdf"`}},
		{"empty", "", []string{"empty file"}},
		{"not yaml", "load: [1, 2\n", []string{"invalid YAML"}},
		{"wrong shape", "load: 5\n" + srv, []string{"config field load", "LoadConfig"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted, want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestFieldErrorIsTyped(t *testing.T) {
	_, err := ParseConfig([]byte("load: {stages: [{rate: 0, duration: 1}]}\nserver: {base_url: \"http://127.0.0.1:1\", model_name: m}\n"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "load.stages[0].rate" {
		t.Fatalf("got %v, want a *FieldError for load.stages[0].rate", err)
	}
}

func TestSampleConfigsValidate(t *testing.T) {
	files, _ := filepath.Glob("../configs/loadgen/*.yaml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := LoadConfigFile(f); err != nil {
				// trace configs point at a file relative to the repo root.
				if !strings.Contains(err.Error(), "data.trace.file") {
					t.Error(err)
				}
			}
		})
	}
	if _, err := os.Stat("../configs/loadgen"); err == nil && len(files) == 0 {
		t.Error("configs/loadgen has no sample configs")
	}
}

func TestInferencePerfConfigPortsOver(t *testing.T) {
	// An inference-perf style config: worker settings, storage, metrics and
	// report.request_lifecycle are accepted, warned about, and mapped where
	// they mean something here.
	c := mustParse(t, `
load:
  type: constant
  interval: 15
  num_workers: 4
  worker_max_concurrency: 100
  stages: [{rate: 5, duration: 10}]
api: {type: completion, streaming: true}
server: {type: vllm, model_name: m, base_url: "http://127.0.0.1:8000", ignore_eos: true}
tokenizer: {pretrained_model_name_or_path: m}
data:
  type: shared_prefix
  shared_prefix: {num_unique_system_prompts: 4, num_users_per_system_prompt: 2, system_prompt_len: 100, question_len: 50, output_len: 20}
report:
  request_lifecycle: {summary: true, per_stage: true, per_request: false, percentiles: [50, 99.9]}
storage: {local_storage: {path: reports}}
metrics: {type: prometheus, prometheus: {url: "http://localhost:9090"}}
`)
	if len(c.Warnings) != 6 {
		t.Errorf("warnings %q, want 6 (interval, num_workers, worker_max_concurrency, storage, metrics, tokenizer)", c.Warnings)
	}
	if len(c.Report.Percentiles) != 2 || c.Report.Percentiles[1] != 99.9 || strings.Join(c.Report.Formats, ",") != "json,html" {
		t.Errorf("report %+v: want request_lifecycle percentiles and no CSV", c.Report)
	}
}
