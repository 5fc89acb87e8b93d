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
	// EngineLabelKey and DefaultEngine choose the engine's metric names
	// (core-metrics-extractor).
	EngineLabelKey, DefaultEngine string
}

// DataLayerSettings returns a data-layer plugin's settings (ok false for
// plugins of other kinds).
func DataLayerSettings(p scheduler.Plugin) (scheme, path string, insecure bool, engineLabelKey, defaultEngine string, ok bool) {
	d, ok := p.(*dataLayer)
	if !ok {
		return "", "", false, "", "", false
	}
	return d.Scheme, d.Path, d.InsecureSkipVerify, d.EngineLabelKey, d.DefaultEngine, true
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
			if p.Has("engineConfigs") {
				return nil, fmt.Errorf("engineConfigs: not supported; fastepp reads the vllm, sglang and trtllm metric names of its COMPAT table, chosen by the pod label inference.networking.k8s.io/engine-type")
			}
			var err error
			if d.EngineLabelKey, err = p.String("engineLabelKey", "inference.networking.k8s.io/engine-type"); err != nil {
				return nil, err
			}
			if d.DefaultEngine, err = p.String("defaultEngine", "vllm"); err != nil {
				return nil, err
			}
			switch d.DefaultEngine {
			case "vllm", "sglang", "trtllm", "trtllm-serve":
			default:
				return nil, fmt.Errorf("defaultEngine: expected vllm, sglang or trtllm, found %q", d.DefaultEngine)
			}
			return d, nil
		},
	})
}
