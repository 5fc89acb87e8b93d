package endpoints

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"

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
	// Port is the port of the metrics page for targets without their own
	// MetricsURL; 0 means the endpoint's own port (GIE's
	// --model-server-metrics-port).
	Port uint16
	// InsecureSkipVerify skips verifying the servers' certificates on https
	// scrapes (model servers usually serve self-signed ones).
	InsecureSkipVerify bool
	// EngineLabelKey is the pod label that names an endpoint's engine;
	// DefaultEngine is used when an endpoint lacks it.
	EngineLabelKey, DefaultEngine string
	// Engines add engines to the built-in ones or replace built-ins of the
	// same name (core-metrics-extractor's engineConfigs); nil: built-ins only.
	Engines []EngineConfig
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

// URL is the metrics page of t: its own MetricsURL, else
// scheme://ip:port/path, where port is Port when set, else t's own.
func (c ScrapeConfig) URL(t Target) string {
	if t.MetricsURL != "" {
		return t.MetricsURL
	}
	c = c.withDefaults()
	hp := t.HostPort()
	if c.Port != 0 {
		hp = net.JoinHostPort(t.Addr.String(), strconv.Itoa(int(c.Port)))
	}
	return c.Scheme + "://" + hp + c.Path
}

// engineTable returns the engines c can name (built-ins plus Engines).
func (c ScrapeConfig) engineTable() (*engineTable, error) { return newEngineTable(c.Engines) }

// Validate checks the engines and that DefaultEngine names one of them.
func (c ScrapeConfig) Validate() error {
	t, err := c.engineTable()
	if err != nil {
		return err
	}
	c = c.withDefaults()
	_, err = t.named(c.DefaultEngine, "", "defaultEngine")
	return err
}

// engineFor returns the engine labels name in t (DefaultEngine when absent).
func (c ScrapeConfig) engineFor(t *engineTable, labels map[string]string) (*engine, error) {
	c = c.withDefaults()
	return t.named(labels[c.EngineLabelKey], c.DefaultEngine, "label "+c.EngineLabelKey)
}

// scrapeConfigurer is what the data-layer plugins implement: each sets the
// parts of a ScrapeConfig its configuration gave explicitly.
type scrapeConfigurer interface {
	scheduler.Plugin
	configure(c *ScrapeConfig)
}

// ScrapeConfigFrom merges the data-layer plugins of a config (in order) into
// one ScrapeConfig; nil gives the default. A plugin of another package is an
// error naming it (the registry only lets data-layer kinds through, so this
// means a type was registered under the wrong kind).
func ScrapeConfigFrom(plugins []scheduler.Plugin) (ScrapeConfig, error) {
	return ScrapeConfigOver(DefaultScrapeConfig(), plugins)
}

// ScrapeConfigOver is ScrapeConfigFrom starting from base instead of the
// default: each plugin parameter given in the config replaces base's value,
// parameters left out keep it. This is GIE's precedence for the deprecated
// --model-server-metrics-* flags, which set the defaults that
// metrics-data-source's parameters override.
func ScrapeConfigOver(base ScrapeConfig, plugins []scheduler.Plugin) (ScrapeConfig, error) {
	c := base.withDefaults()
	for _, p := range plugins {
		if _, gpu := p.(*gpuMetricsSource); gpu {
			continue // GPUConfigFrom reads it
		}
		sc, ok := p.(scrapeConfigurer)
		if !ok {
			return c, fmt.Errorf("data layer: plugin %q (type %s) is not a data-layer plugin of this build; known: %s, %s, %s",
				p.Name(), p.Type(), MetricsDataSourceType, CoreMetricsExtractorType, GPUMetricsSourceType)
		}
		sc.configure(&c)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("data layer: %w", err)
	}
	return c, nil
}

type metricsDataSource struct {
	name               string
	scheme, path       string
	insecureSkipVerify bool
	given              map[string]bool // parameters set in the config
}

type coreMetricsExtractor struct {
	name                string
	labelKey, defEngine string
	engines             []EngineConfig
	given               map[string]bool
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
	if d.given["scheme"] {
		c.Scheme = d.scheme
	}
	if d.given["path"] {
		c.Path = d.path
	}
	if d.given["insecureSkipVerify"] {
		c.InsecureSkipVerify = d.insecureSkipVerify
	}
}

func (d *coreMetricsExtractor) Type() string { return CoreMetricsExtractorType }
func (d *coreMetricsExtractor) Name() string { return d.name }
func (d *coreMetricsExtractor) configure(c *ScrapeConfig) {
	if d.given["engineLabelKey"] {
		c.EngineLabelKey = d.labelKey
	}
	if d.given["defaultEngine"] {
		c.DefaultEngine = d.defEngine
	}
	if d.given["engineConfigs"] {
		c.Engines = d.engines
	}
}

// givenParams records which of names p has.
func givenParams(p scheduler.Params, names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		if p.Has(n) {
			m[n] = true
		}
	}
	return m
}

// RegisterPlugins adds the data-layer plugin types to r: GIE's
// metrics-data-source and core-metrics-extractor, and fastepp's
// gpu-metrics-source.
func RegisterPlugins(r *scheduler.Registry) {
	registerGPUSource(r)
	def := DefaultScrapeConfig()
	r.MustRegister(MetricsDataSourceType, scheduler.Factory{
		Kind:   scheduler.KindDataLayer,
		Proto:  (*metricsDataSource)(nil),
		Params: []string{"scheme", "path", "insecureSkipVerify"},
		Doc:    "where model-server metrics are scraped (scheme, path, TLS verification)",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			d := &metricsDataSource{name: name, given: givenParams(p, "scheme", "path", "insecureSkipVerify")}
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
		Params: []string{"engineLabelKey", "defaultEngine", "engineConfigs"},
		Doc:    "reads queue, running, KV usage, LoRA and cache config with the metric names of each engine (" + strings.Join(EngineNames(), ", ") + "; more, or other names, with engineConfigs)",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			d := &coreMetricsExtractor{name: name, given: givenParams(p, "engineLabelKey", "defaultEngine", "engineConfigs")}
			var err error
			if d.given["engineConfigs"] {
				if d.engines, err = decodeEngineConfigs(p); err != nil {
					return nil, err
				}
			}
			table, err := newEngineTable(d.engines)
			if err != nil {
				return nil, err
			}
			if d.labelKey, err = p.String("engineLabelKey", def.EngineLabelKey); err != nil {
				return nil, err
			}
			if d.labelKey == "" {
				return nil, fmt.Errorf("engineLabelKey: expected a label name, found an empty string")
			}
			if d.defEngine, err = p.String("defaultEngine", def.DefaultEngine); err != nil {
				return nil, err
			}
			if _, err := table.named(d.defEngine, "", "defaultEngine"); err != nil {
				return nil, err
			}
			return d, nil
		},
	})
}

// paramDecoder is what a scheduler.Params implements when it can hand a
// structured parameter to a plugin: Decode decodes parameter name into v
// (here a *yaml.Node, which keeps kinds, tags and lines) and marks it used.
type paramDecoder interface {
	Decode(name string, v any) error
}

// decodeEngineConfigs reads the engineConfigs parameter: from a
// scheduler.MapParams (a []EngineConfig, or YAML-like []any of maps), or from
// a Params that implements paramDecoder (the config layer). The value is a
// list of objects with the keys of EngineConfig (engineConfigFields), string
// values only; anything else is an error naming the entry, key and line.
func decodeEngineConfigs(p scheduler.Params) ([]EngineConfig, error) {
	var n yaml.Node
	switch pp := p.(type) {
	case scheduler.MapParams:
		v := pp["engineConfigs"]
		if ec, ok := v.([]EngineConfig); ok {
			return slices.Clone(ec), nil
		}
		if err := n.Encode(v); err != nil {
			return nil, fmt.Errorf("engineConfigs: expected a list of engine configs, found %T: %v", v, err)
		}
	case paramDecoder:
		if err := pp.Decode("engineConfigs", &n); err != nil {
			return nil, fmt.Errorf("engineConfigs: %w", err)
		}
	default:
		return nil, fmt.Errorf("engineConfigs: this build's configuration layer cannot pass a list parameter to a plugin "+
			"(its scheduler.Params has no Decode method); without engineConfigs fastepp reads the metric names of the engines %s (docs/COMPAT.md), "+
			"chosen by the pod label named in engineLabelKey (default %s)", strings.Join(EngineNames(), ", "), EngineLabel)
	}
	return engineConfigsFromNode(&n)
}

// engineConfigsFromNode checks and converts the YAML of engineConfigs.
func engineConfigsFromNode(n *yaml.Node) ([]EngineConfig, error) {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	at := func(n *yaml.Node) string {
		if n.Line > 0 {
			return fmt.Sprintf(" (line %d)", n.Line)
		}
		return ""
	}
	if n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return nil, nil // engineConfigs: (null) is an empty list, as in GIE
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("engineConfigs%s: expected a list of engine configs {name, queuedRequestsSpec, ...}, found %s", at(n), kindName(n))
	}
	out := make([]EngineConfig, 0, len(n.Content))
	for i, item := range n.Content {
		where := fmt.Sprintf("engineConfigs[%d]%s", i, at(item))
		if item.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%s: expected an object {name, queuedRequestsSpec, ...}, found %s", where, kindName(item))
		}
		var c EngineConfig
		seen := map[string]bool{}
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			dst := c.field(k.Value)
			switch {
			case k.Kind != yaml.ScalarNode || dst == nil:
				return nil, fmt.Errorf("%s: unknown field %s%s; allowed: %s", where, found(k), at(k), strings.Join(engineConfigFields, ", "))
			case seen[k.Value]:
				return nil, fmt.Errorf("%s: field %q given twice%s", where, k.Value, at(k))
			case v.Kind != yaml.ScalarNode || (v.Tag != "!!str" && v.Tag != "!!null"):
				return nil, fmt.Errorf("%s: field %q%s: expected a string, found %s", where, k.Value, at(v), found(v))
			}
			seen[k.Value] = true
			if v.Tag == "!!str" {
				*dst = v.Value
			}
		}
		out = append(out, c)
	}
	return out, nil
}
