package endpoints

import (
	"bytes"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fastepp/fastepp/scheduler"
)

// BenchmarkParse is the per-scrape parse cost on a real vLLM v1 page with the
// targeted parser (what scrapers run).
func BenchmarkParse(b *testing.B) {
	data := readTestdata(b, "vllm-v1-metrics.txt")
	var p pageParser
	var a accumulator
	var m scheduler.Metrics
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := p.parse(data, engines[0], &a); err != nil {
			b.Fatal(err)
		}
		a.fill(&m)
	}
	if m.Running != 8 {
		b.Fatalf("Running = %d, want 8", m.Running)
	}
}

// BenchmarkParseExpfmt is the same page through expfmt's TextParser, the
// reason the targeted parser exists.
func BenchmarkParseExpfmt(b *testing.B) {
	data := readTestdata(b, "vllm-v1-metrics.txt")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		tp := expfmt.NewTextParser(model.UTF8Validation)
		if _, err := tp.TextToMetricFamilies(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
