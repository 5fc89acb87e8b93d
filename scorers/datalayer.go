package scorers

import (
	"fmt"

	"github.com/fastepp/fastepp/scheduler"
)

// Data-layer plugin types of the GIE config. fastepp's scraper reads the
// metric names of COMPAT.md per engine; these entries are accepted so the GIE
// default config loads unchanged. Custom engineConfigs are refused with a
// clear error rather than silently ignored.
const (
	MetricsDataSourceType    = "metrics-data-source"
	CoreMetricsExtractorType = "core-metrics-extractor"
)

type dataLayer struct {
	base
	// Scheme and Path of the metrics endpoint (metrics-data-source).
	Scheme, Path string
	// InsecureSkipVerify for https scrapes.
	InsecureSkipVerify bool
}

func registerDataLayer(r *scheduler.Registry) {
	r.Register(MetricsDataSourceType, scheduler.Factory{
		Kind:   scheduler.KindDataLayer,
		Params: []string{"scheme", "path", "insecureSkipVerify"},
		Doc:    "scrapes model-server metrics (scheme, path)",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			d := &dataLayer{base: newBase(MetricsDataSourceType, name)}
			var err error
			if d.Scheme, err = p.String("scheme", "http"); err != nil {
				return nil, err
			}
			if d.Scheme != "http" && d.Scheme != "https" {
				return nil, fmt.Errorf("scheme: expected http or https, found %q", d.Scheme)
			}
			if d.Path, err = p.String("path", "/metrics"); err != nil {
				return nil, err
			}
			if d.InsecureSkipVerify, err = p.Bool("insecureSkipVerify", false); err != nil {
				return nil, err
			}
			return d, nil
		},
	})
	r.Register(CoreMetricsExtractorType, scheduler.Factory{
		Kind:   scheduler.KindDataLayer,
		Params: []string{"engineLabelKey", "defaultEngine"},
		Doc:    "extracts queue, running, KV usage, LoRA and cache config per engine (vllm, sglang, trtllm)",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			d := &dataLayer{base: newBase(CoreMetricsExtractorType, name)}
			if _, err := p.String("engineLabelKey", "inference.networking.k8s.io/engine-type"); err != nil {
				return nil, err
			}
			eng, err := p.String("defaultEngine", "vllm")
			if err != nil {
				return nil, err
			}
			switch eng {
			case "vllm", "sglang", "trtllm", "trtllm-serve":
			default:
				return nil, fmt.Errorf("defaultEngine: expected vllm, sglang or trtllm, found %q", eng)
			}
			return d, nil
		},
	})
}
