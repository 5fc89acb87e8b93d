package endpoints

import (
	"fmt"
	"strings"

	"github.com/fastepp/fastepp/scheduler"
)

// Data-layer plugin types of the GIE EndpointPickerConfig. They configure how
// this package scrapes model servers; they take no part in a pick. Their
// parameters decode into ScrapeConfig (ScrapeConfigFrom), which NewPool takes
// in Options.Scrape.
const (
	// MetricsDataSourceType: where the metrics page is (scheme, path, TLS).
	MetricsDataSourceType = "metrics-data-source"
	// CoreMetricsExtractorType: which engine's metric names to read, chosen
	// by a pod label.
	CoreMetricsExtractorType = "core-metrics-extractor"
)

// ScrapeConfig says where each endpoint's metrics page is and how to read it.
// The zero value means the defaults (DefaultScrapeConfig).
type ScrapeConfig struct {
	// Scheme ("http" or "https") and Path of the metrics page, used for
	// targets without their own MetricsURL.
	Scheme, Path string
	// InsecureSkipVerify skips verifying the servers' certificates on https
	// scrapes (model servers usually serve self-signed ones).
	InsecureSkipVerify bool
	// EngineLabelKey is the pod label that names an endpoint's engine;
	// DefaultEngine is used when an endpoint lacks it.
	EngineLabelKey, DefaultEngine string
}

// DefaultScrapeConfig is GIE's default: http://ip:port/metrics, engine from
// the label EngineLabel, vllm when absent.
func DefaultScrapeConfig() ScrapeConfig {
	return ScrapeConfig{Scheme: "http", Path: "/metrics", EngineLabelKey: EngineLabel, DefaultEngine: "vllm"}
}

// withDefaults fills unset fields from DefaultScrapeConfig.
func (c ScrapeConfig) withDefaults() ScrapeConfig {
	d := DefaultScrapeConfig()
	if c.Scheme == "" {
		c.Scheme = d.Scheme
	}
	if c.Path == "" {
		c.Path = d.Path
	}
	if c.EngineLabelKey == "" {
		c.EngineLabelKey = d.EngineLabelKey
	}
	if c.DefaultEngine == "" {
		c.DefaultEngine = d.DefaultEngine
	}
	return c
}

// URL is the metrics page of t: its own MetricsURL, else scheme://ip:port/path.
func (c ScrapeConfig) URL(t Target) string {
	if t.MetricsURL != "" {
		return t.MetricsURL
	}
	c = c.withDefaults()
	return c.Scheme + "://" + t.HostPort() + c.Path
}

// engineFor returns the engine t's labels name (DefaultEngine when absent).
func (c ScrapeConfig) engineFor(labels map[string]string) (*engine, error) {
	c = c.withDefaults()
	return engineNamed(labels[c.EngineLabelKey], c.DefaultEngine, "label "+c.EngineLabelKey)
}

// scrapeConfigurer is what the data-layer plugins implement: each sets its
// part of a ScrapeConfig.
type scrapeConfigurer interface {
	scheduler.Plugin
	configure(c *ScrapeConfig)
}

// ScrapeConfigFrom merges the data-layer plugins of a config (in order) into
// one ScrapeConfig; nil gives the default. A plugin of another package is an
// error naming it (the registry only lets data-layer kinds through, so this
// means a type was registered under the wrong kind).
func ScrapeConfigFrom(plugins []scheduler.Plugin) (ScrapeConfig, error) {
	c := DefaultScrapeConfig()
	for _, p := range plugins {
		sc, ok := p.(scrapeConfigurer)
		if !ok {
			return c, fmt.Errorf("data layer: plugin %q (type %s) is not a data-layer plugin of this build; known: %s, %s",
				p.Name(), p.Type(), MetricsDataSourceType, CoreMetricsExtractorType)
		}
		sc.configure(&c)
	}
	return c, nil
}

type metricsDataSource struct {
	name               string
	scheme, path       string
	insecureSkipVerify bool
}

type coreMetricsExtractor struct {
	name                string
	labelKey, defEngine string
}

// Interface guards: the data-layer kind only promises scheduler.Plugin; this
// package reads them through scrapeConfigurer.
var (
	_ scrapeConfigurer = (*metricsDataSource)(nil)
	_ scrapeConfigurer = (*coreMetricsExtractor)(nil)
)

func (d *metricsDataSource) Type() string { return MetricsDataSourceType }
func (d *metricsDataSource) Name() string { return d.name }
func (d *metricsDataSource) configure(c *ScrapeConfig) {
	c.Scheme, c.Path, c.InsecureSkipVerify = d.scheme, d.path, d.insecureSkipVerify
}

func (d *coreMetricsExtractor) Type() string { return CoreMetricsExtractorType }
func (d *coreMetricsExtractor) Name() string { return d.name }
func (d *coreMetricsExtractor) configure(c *ScrapeConfig) {
	c.EngineLabelKey, c.DefaultEngine = d.labelKey, d.defEngine
}

// RegisterPlugins adds the data-layer plugin types to r.
func RegisterPlugins(r *scheduler.Registry) {
	def := DefaultScrapeConfig()
	r.MustRegister(MetricsDataSourceType, scheduler.Factory{
		Kind:   scheduler.KindDataLayer,
		Proto:  (*metricsDataSource)(nil),
		Params: []string{"scheme", "path", "insecureSkipVerify"},
		Doc:    "where model-server metrics are scraped (scheme, path, TLS verification)",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			d := &metricsDataSource{name: name}
			var err error
			if d.scheme, err = p.String("scheme", def.Scheme); err != nil {
				return nil, err
			}
			if d.scheme != "http" && d.scheme != "https" {
				return nil, fmt.Errorf("scheme: expected http or https, found %q", d.scheme)
			}
			if d.path, err = p.String("path", def.Path); err != nil {
				return nil, err
			}
			if !strings.HasPrefix(d.path, "/") {
				return nil, fmt.Errorf("path: expected an absolute path such as /metrics, found %q", d.path)
			}
			if d.insecureSkipVerify, err = p.Bool("insecureSkipVerify", false); err != nil {
				return nil, err
			}
			return d, nil
		},
	})
	r.MustRegister(CoreMetricsExtractorType, scheduler.Factory{
		Kind:   scheduler.KindDataLayer,
		Proto:  (*coreMetricsExtractor)(nil),
		Params: []string{"engineLabelKey", "defaultEngine"},
		Doc:    "reads queue, running, KV usage, LoRA and cache config with the metric names of each engine (" + strings.Join(EngineNames(), ", ") + ")",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			d := &coreMetricsExtractor{name: name}
			if p.Has("engineConfigs") {
				return nil, fmt.Errorf("engineConfigs: not supported; fastepp reads the metric names of the engines %s (docs/COMPAT.md), chosen by the pod label named in engineLabelKey (default %s)",
					strings.Join(EngineNames(), ", "), EngineLabel)
			}
			var err error
			if d.labelKey, err = p.String("engineLabelKey", def.EngineLabelKey); err != nil {
				return nil, err
			}
			if d.labelKey == "" {
				return nil, fmt.Errorf("engineLabelKey: expected a label name, found an empty string")
			}
			if d.defEngine, err = p.String("defaultEngine", def.DefaultEngine); err != nil {
				return nil, err
			}
			if _, err := engineNamed(d.defEngine, "", "defaultEngine"); err != nil {
				return nil, err
			}
			return d, nil
		},
	})
}
