package endpoints

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fastepp/fastepp/scheduler"
)

// extractTargeted runs the targeted parser on one page.
func extractTargeted(data []byte, e *engine) (scheduler.Metrics, []string, error) {
	var p pageParser
	var a accumulator
	var m scheduler.Metrics
	if err := p.parse(data, e, &a); err != nil {
		return m, nil, err
	}
	a.fill(&m)
	return m, a.missing(), nil
}

// extractExpfmt is the reference: expfmt parses the whole page, then the same
// accumulator combines the wanted families' plain values.
func extractExpfmt(data []byte, e *engine) (m scheduler.Metrics, missing []string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("expfmt panicked: %v", r)
		}
	}()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := tp.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		return m, nil, err
	}
	var a accumulator
	a.reset(e)
	var ls []label
	for f := famWaiting; f < famCount; f++ {
		mf := mfs[e.specs[f].name]
		if mf == nil || e.specs[f].name == "" {
			continue
		}
		for _, s := range mf.GetMetric() {
			var v float64
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				v = s.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				v = s.GetCounter().GetValue()
			case dto.MetricType_UNTYPED:
				v = s.GetUntyped().GetValue()
			default:
				continue
			}
			ls = ls[:0]
			for _, l := range s.GetLabel() {
				ls = append(ls, label{name: []byte(l.GetName()), value: []byte(l.GetValue())})
			}
			if e.specs[f].matches(ls) {
				a.add(f, v, ls)
			}
		}
	}
	a.fill(&m)
	return m, a.missing(), nil
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtractEngines(t *testing.T) {
	tests := []struct {
		file, engine string
		want         scheduler.Metrics
		missing      []string
	}{
		{"vllm-v1-metrics.txt", "vllm", scheduler.Metrics{
			Waiting: 0, Running: 8, KVUsage: 0.0421, Models: []string{"meta-llama/Llama-3.1-8B-Instruct"},
			ActiveAdapters: []string{"sql-lora", "chat-lora"}, MaxLoRA: 2,
			BlockSize: 16, NumGPUBlocks: 27648,
		}, nil},
		{"vllm-dp.txt", "vllm", scheduler.Metrics{
			Waiting: 9, Running: 8, KVUsage: 0.625, Models: []string{"m"},
			ActiveAdapters: []string{"sql-lora", "chat-lora"}, WaitingAdapters: []string{"tool-lora"}, MaxLoRA: 4,
			BlockSize: 16, NumGPUBlocks: 27650,
		}, nil},
		{"vllm-v0-old.txt", "", scheduler.Metrics{Waiting: 6, Running: 5, KVUsage: 0.91, Models: []string{"base", "base-lora"}}, nil},
		{"sglang.txt", "sglang", scheduler.Metrics{
			Waiting: 7, Running: 23, KVUsage: 0.47, Models: []string{"qwen"}, BlockSize: 1, NumGPUBlocks: 65536,
		}, nil},
		{"trtllm.txt", "trtllm-serve", scheduler.Metrics{Waiting: 2, Running: 6, KVUsage: 0.3125, Models: []string{"llama"}}, nil},
		// Triton's TensorRT-LLM backend: one metric per kind, told apart by a label.
		{"triton-trtllm.txt", "triton-tensorrt-llm", scheduler.Metrics{Waiting: 3, Running: 5, KVUsage: 0.375, BlockSize: 64, NumGPUBlocks: 6240}, nil},
		// A vLLM page read as sglang has none of sglang's families.
		{"vllm-v1-metrics.txt", "sglang", scheduler.Metrics{},
			[]string{"sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage"}},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.engine, func(t *testing.T) {
			e, err := engineFor(map[string]string{EngineLabel: tt.engine})
			if err != nil {
				t.Fatal(err)
			}
			data := readTestdata(t, tt.file)
			for name, fn := range map[string]func([]byte, *engine) (scheduler.Metrics, []string, error){
				"targeted": extractTargeted, "expfmt": extractExpfmt,
			} {
				got, missing, err := fn(data, e)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("%s:\n got %+v\nwant %+v", name, got, tt.want)
				}
				if !reflect.DeepEqual(missing, tt.missing) {
					t.Errorf("%s: missing = %q, want %q", name, missing, tt.missing)
				}
			}
		})
	}
}

func TestEngineFor(t *testing.T) {
	for _, tt := range []struct{ label, want, err string }{
		{"", "vllm", ""}, {"vllm", "vllm", ""}, {"SGLang", "sglang", ""}, {"trtllm", "trtllm", ""},
		{"trtllm-serve", "trtllm", ""}, {"Triton-TensorRT-LLM", "triton-tensorrt-llm", ""},
		{"tgi", "", `expected one of vllm, sglang, trtllm, triton-tensorrt-llm, trtllm-serve, found "tgi"`},
	} {
		e, err := engineFor(map[string]string{EngineLabel: tt.label})
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err = %v, want %q", tt.label, err, tt.err)
			}
		case err != nil || e.name != tt.want:
			t.Errorf("%q: got %v, %v; want %s", tt.label, e, err, tt.want)
		}
	}
	if e, err := engineFor(nil); err != nil || e.name != "vllm" {
		t.Errorf("no labels: got %v, %v; want vllm", e, err)
	}
}

// Pages exercising the text format's corners; each is checked against expfmt.
var trickyPages = []string{
	"vllm:num_requests_waiting 3\n",
	"vllm:num_requests_waiting-3\n",
	"vllm:num_requests_waiting{} 4 1700000000000\n",
	"  vllm:num_requests_waiting\t{ a = \"b\" , } 5\n",
	"{\"vllm:num_requests_waiting\"} 6\n",
	"{a=\"x\", \"vllm:num_requests_waiting\"} 7\n",
	"\"vllm:num_requests_waiting\"{a=\"1\"} 8\n",
	"vllm:num_\"requests_waiting\" 9\n",
	"# TYPE vllm:num_requests_waiting summary\nvllm:num_requests_waiting{quantile=\"0.5\"} 1\nvllm:num_requests_waiting_sum 3\nvllm:num_requests_waiting_count 2\n",
	"# TYPE vllm:num_requests_waiting counter\nvllm:num_requests_waiting 2\nvllm:num_requests_waiting{x=\"y\"} 3\n",
	"#TYPE vllm:kv_cache_usage_perc GAUGE\nvllm:kv_cache_usage_perc NaN\nvllm:kv_cache_usage_perc 0.5\n",
	"vllm:kv_cache_usage_perc +Inf\n",
	"vllm:lora_requests_info{running_lora_adapters=\"a\\\\b,c\\\"d\\ne\",max_lora=\"3\"} 5\n",
	"vllm:lora_requests_info{max_lora=\"1\",running_lora_adapters=\"x\"} 5\nvllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"y\"} 5\n",
	"vllm:cache_config_info{block_size=\"16.0\",num_gpu_blocks=\"x\"} 1\n",
	"# HELP vllm:num_requests_running a \\\\ help\nvllm:num_requests_running 1e1\n",
	"vllm:num_requests_running 0x1p3\n",
	"vllm:num_requests_running 1_0\n",
	"vllm:num_requests_running{a=\"\xff\"} 1\n",
	"vllm:num_requests_running 1\n# TYPE vllm:num_requests_running gauge\n",
	"{} 1\n",
	"vllm:num_requests_running",
	"vllm:num_requests_running{a=\"b\n",
}

func TestTargetedMatchesExpfmt(t *testing.T) {
	e := engines[0]
	compared := 0
	for _, page := range trickyPages {
		if compareParsers(t, e, []byte(page)) {
			compared++
		}
	}
	// Most tricky pages are valid text format: make sure they were compared.
	if compared < 14 {
		t.Fatalf("expfmt accepted only %d of %d tricky pages; the comparison is not exercised", compared, len(trickyPages))
	}
	for _, f := range []string{"vllm-v1-metrics.txt", "vllm-dp.txt", "vllm-v0-old.txt"} {
		compareParsers(t, e, readTestdata(t, f))
	}
}

// compareParsers checks that on every page expfmt accepts, the targeted parser
// extracts the same values (and never panics on the others). It reports
// whether expfmt accepted the page.
func compareParsers(t *testing.T, e *engine, data []byte) bool {
	t.Helper()
	want, wantMissing, werr := extractExpfmt(data, e)
	got, gotMissing, gerr := extractTargeted(data, e)
	if werr != nil {
		return false // expfmt rejects the page; the targeted parser may be lenient
	}
	if gerr != nil {
		t.Fatalf("page %q: targeted parser failed (%v) where expfmt succeeded", data, gerr)
	}
	if !metricsEqual(got, want) || !reflect.DeepEqual(gotMissing, wantMissing) {
		t.Fatalf("page %q:\ntargeted %+v missing %q\n  expfmt %+v missing %q", data, got, gotMissing, want, wantMissing)
	}
	return true
}

func metricsEqual(a, b scheduler.Metrics) bool {
	fa, fb := a.KVUsage, b.KVUsage
	a.KVUsage, b.KVUsage = 0, 0
	return reflect.DeepEqual(a, b) && (fa == fb || (math.IsNaN(fa) && math.IsNaN(fb)))
}

// FuzzTargetedParser compares the targeted parser with expfmt on the values
// extracted for each engine. The seed corpus (testdata pages and the tricky
// pages) runs in every plain `go test`.
func FuzzTargetedParser(f *testing.F) {
	for _, p := range trickyPages {
		f.Add([]byte(p), uint8(0))
	}
	for _, s := range []struct {
		file string
		eng  uint8
	}{{"vllm-v1-metrics.txt", 0}, {"vllm-dp.txt", 0}, {"vllm-v0-old.txt", 0}, {"sglang.txt", 1}, {"trtllm.txt", 2}, {"triton-trtllm.txt", 3}} {
		f.Add(readTestdata(f, s.file), s.eng)
	}
	f.Fuzz(func(t *testing.T, data []byte, eng uint8) {
		compareParsers(t, engines[int(eng)%len(engines)], data)
	})
}
