// Package config decodes the GIE EndpointPickerConfig (YAML) strictly and
// turns it into an immutable scheduler.Plan. Unknown fields, unknown plugin
// types, unknown parameters, dangling pluginRefs, duplicate names and
// negative or non-finite weights are errors that name the plugin, the field,
// the line and what is allowed. GIE's defaulting rules apply: no config → the
// default (queue ×2, kv-cache ×2, prefix ×3); plugin name = type; one profile
// and no profile handler → single-profile-handler; a profile without a picker
// → max-score-picker; scorer weight 1; no saturation detector →
// utilization-detector with its defaults.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	eppconfig "github.com/fastepp/fastepp/configs/epp"
	"github.com/fastepp/fastepp/endpoints"
	"github.com/fastepp/fastepp/scheduler"
	"github.com/fastepp/fastepp/scorers"
)

// DefaultYAML is the configuration used when none is given: fastepp's
// recommended configuration, configs/epp/recommended.yaml (GIE's default
// scorers and weights, with prefix-cache-scorer fullScoreMatchBlocks: 64; the
// file says why, measured with the bench).
var DefaultYAML = embedded(eppconfig.Recommended)

// GIEDefaultYAML is the GIE EPP's own default configuration
// (configs/epp/gie-default.yaml): queue ×2, kv-cache ×2, prefix ×3.
var GIEDefaultYAML = embedded(eppconfig.GIEDefault)

func embedded(name string) []byte {
	b, err := eppconfig.FS.ReadFile(name)
	if err != nil {
		panic("config: embedded " + name + " missing: " + err.Error()) // a build defect, not input
	}
	return b
}

// APIVersions accepted in apiVersion.
var APIVersions = []string{"inference.networking.x-k8s.io/v1alpha1", "llm-d.ai/v1alpha1"}

// FeatureGates fastepp knows: GIE v1.5.0's three (flowControl, dataLayer,
// enableLegacyMetrics), accepted and inert, each with a note in
// Loaded.Notes, and prepareDataPlugins (earlier GIE releases).
var FeatureGates = []string{"flowControl", "dataLayer", "enableLegacyMetrics", "prepareDataPlugins"}

// gateNotes say why an accepted feature gate changes nothing.
var gateNotes = map[string]string{
	"flowControl":         "feature gate flowControl: accepted; fastepp does not queue requests in the picker (sheddable requests get 429 when the pool is saturated)",
	"dataLayer":           "feature gate dataLayer: accepted; fastepp always scrapes through its data layer (the gate is obsolete in GIE v1.5.0 too)",
	"enableLegacyMetrics": "feature gate enableLegacyMetrics: accepted; fastepp has one scraper, configured by dataLayer (GIE's legacy polling and its metric-name flags are not offered)",
}

// unsupported are the plugin types GIE v1.5.0 registers that fastepp refuses:
// why, and what to use instead. They are not in the registry, so a config
// that names one fails with this explanation instead of "unknown type".
var unsupported = map[string]struct{ why, instead string }{
	// Latency prediction: GIE's latency-predictor sidecars.
	"predicted-latency-scorer":   {whyLatency, "queue-scorer, kv-cache-utilization-scorer and prefix-cache-scorer (the default profile)"},
	"latency-scorer":             {whyLatency, "queue-scorer, kv-cache-utilization-scorer and prefix-cache-scorer (the default profile)"},
	"predicted-latency-producer": {whyLatency, "nothing: no fastepp plugin reads latency predictions; remove it"},
	"latency-slo-admitter":       {whyLatency, "a saturationDetector (utilization-detector or concurrency-detector), which sheds sheddable requests while the pool is saturated"},
	"slo-headroom-tier-filter":   {whyLatency, "utilization-detector or concurrency-detector as a filter in the profile, which drops overloaded endpoints"},
	// Flow control: fastepp queues nothing in the picker.
	"global-strict-fairness-policy":        {whyFlowControl, insteadFlowControl},
	"round-robin-fairness-policy":          {whyFlowControl, insteadFlowControl},
	"fcfs-ordering-policy":                 {whyFlowControl, insteadFlowControl},
	"edf-ordering-policy":                  {whyFlowControl, insteadFlowControl},
	"slo-deadline-ordering-policy":         {whyFlowControl, insteadFlowControl},
	"static-usage-limit-policy":            {whyFlowControl, insteadFlowControl},
	"eviction-priority-then-time-ordering": {whyFlowControl, insteadFlowControl},
	"eviction-sheddable-filter":            {whyFlowControl, insteadFlowControl},
	// Kubernetes notifications: no Kubernetes discovery yet.
	"k8s-notification-source":      {whyKubernetes, insteadKubernetes},
	"endpoint-notification-source": {whyKubernetes, insteadKubernetes},
	// Request control and parsing that fastepp's ext_proc server does not do.
	"request-attribute-reporter": {"it evaluates CEL expressions over the response usage and returns them as ext_proc dynamic metadata; fastepp evaluates no CEL and its ext_proc server sends no such metadata",
		"remove it; fastepp reads the same usage for its token metrics (inference_objective_input_tokens, inference_objective_output_tokens)"},
	"passthrough-parser": {"fastepp's ext_proc server reads every request body as OpenAI JSON in one pass (model, prompt, stream) and answers 400 to a body that is not JSON; passing bodies through uninterpreted needs ext_proc support it does not have",
		"openai-parser (the default: omit the parser section)"},
	"vllmgrpc-parser": {"fastepp's ext_proc server reads OpenAI HTTP request bodies; it does not parse vLLM's gRPC payloads",
		"vLLM's OpenAI-compatible HTTP API with openai-parser (the default: omit the parser section)"},
}

const (
	whyLatency         = "it needs GIE's latency-predictor sidecars (training and prediction servers), which fastepp does not run"
	whyFlowControl     = "it is a flow-control policy, and fastepp has no flow-control layer: it queues no requests in the picker"
	insteadFlowControl = "remove it; sheddable requests (priority < 0) get 429 while the saturationDetector reports saturation"
	whyKubernetes      = "it watches Kubernetes objects, and fastepp has no Kubernetes discovery yet"
	insteadKubernetes  = "remove it (and its dataLayer.sources entry); endpoints come from --endpoints or --endpoints-file"
)

// UnsupportedTypes lists the GIE plugin types fastepp refuses, sorted.
func UnsupportedTypes() []string {
	ts := make([]string, 0, len(unsupported))
	for t := range unsupported {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// Bounds on a configuration: far above any real one, low enough that a
// hostile or broken file costs milliseconds and megabytes, not minutes.
const (
	// MaxConfigBytes bounds the YAML text.
	MaxConfigBytes = 1 << 20
	// MaxPlugins bounds the plugins list; MaxProfiles the scheduling
	// profiles; MaxProfilePlugins the references in one profile.
	MaxPlugins, MaxProfiles, MaxProfilePlugins = 1000, 100, 1000
	// MaxWeight bounds a scorer weight: totals stay finite and exact.
	MaxWeight = 1e6
)

// Loaded is a decoded, validated configuration.
type Loaded struct {
	Plan *scheduler.Plan
	// DataLayer are the data-layer plugins dataLayer.sources names, in order
	// (metrics-data-source, core-metrics-extractor, ...).
	DataLayer []scheduler.Plugin
	// Scrape is what DataLayer says about scraping, for endpoints.Options.
	Scrape endpoints.ScrapeConfig
	// GPU is what a gpu-metrics-source in DataLayer says about GPU
	// telemetry (nil when there is none), for endpoints.NewGPUEnricher.
	GPU          *endpoints.GPUConfig
	FeatureGates []string
	// Effective is the configuration with every default filled in, as YAML.
	Effective []byte
	// Notes are things the operator should know: feature gates accepted but
	// inert, parameters ignored as GIE ignores them, plugins that take no
	// part here, how plugins were bound to each other.
	Notes []string
	// Parser is the plugin the parser section names (nil when there is none:
	// fastepp's ext_proc server reads OpenAI bodies either way).
	Parser scheduler.Plugin
}

// Error is a configuration error with its line (0 when unknown).
type Error struct {
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("config line %d: %s", e.Line, e.Msg)
	}
	return "config: " + e.Msg
}

func errAt(n *yaml.Node, format string, a ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{Line: line, Msg: fmt.Sprintf(format, a...)}
}

// NewRegistry returns a registry with every plugin type the epp binary knows:
// the scheduling plugins of package scorers and the data-layer plugins of
// package endpoints.
func NewRegistry() *scheduler.Registry {
	r := scheduler.NewRegistry()
	scorers.Register(r)
	endpoints.RegisterPlugins(r)
	return r
}

// Default loads DefaultYAML.
func Default(reg *scheduler.Registry) (*Loaded, error) { return Load(DefaultYAML, reg) }

// DefaultPlan is the plan the binary runs when no config is given (DefaultYAML
// with every default applied, saturation detector included). Tests and
// benchmarks use it so they measure what users run.
func DefaultPlan() (*scheduler.Plan, error) {
	l, err := Default(NewRegistry())
	if err != nil {
		return nil, err
	}
	return l.Plan, nil
}

// Load decodes data (empty or whitespace-only → the default) against reg.
func Load(data []byte, reg *scheduler.Registry) (*Loaded, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		data = DefaultYAML
	}
	if len(data) > MaxConfigBytes {
		return nil, &Error{Msg: fmt.Sprintf("expected a configuration of at most %d bytes, found %d bytes", MaxConfigBytes, len(data))}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, &Error{Msg: "not valid YAML: " + err.Error()}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, &Error{Line: extra.Line, Msg: "expected one YAML document, found more"}
	}
	if len(doc.Content) == 0 {
		return nil, &Error{Msg: "empty document"}
	}
	b := &builder{reg: reg, byName: map[string]*entry{}}
	if err := b.decode(doc.Content[0]); err != nil {
		return nil, err
	}
	return b.build()
}

type entry struct {
	name, typ string
	kind      scheduler.Kind
	plugin    scheduler.Plugin
	params    *params
	line      int
	implicit  bool // added by defaulting

	// The plugin's roles, asserted once (checked) when it is built; the
	// registry guarantees the one its kind promises is set.
	filter  scheduler.Filter
	scorer  scheduler.Scorer
	picker  scheduler.Picker
	handler scheduler.ProfileHandler
	sat     scheduler.SaturationDetector
	passive scorers.Passive // set for the request-control types (no part in a pick)
}

func newEntry(name, typ string, kind scheduler.Kind, plug scheduler.Plugin, p *params) *entry {
	e := &entry{name: name, typ: typ, kind: kind, plugin: plug, params: p}
	e.filter, _ = plug.(scheduler.Filter)
	e.scorer, _ = plug.(scheduler.Scorer)
	e.picker, _ = plug.(scheduler.Picker)
	e.handler, _ = plug.(scheduler.ProfileHandler)
	e.sat, _ = plug.(scheduler.SaturationDetector)
	e.passive, _ = plug.(scorers.Passive)
	return e
}

type profileRef struct {
	ref    string
	weight *float64
	node   *yaml.Node
}

type profileSpec struct {
	name string
	refs []profileRef
	node *yaml.Node
}

// dlSource is one dataLayer.sources entry: a source plugin and its extractors.
type dlSource struct {
	ref        *yaml.Node
	extractors []*yaml.Node
}

type builder struct {
	reg        *scheduler.Registry
	entries    []*entry
	byName     map[string]*entry
	profiles   []profileSpec
	satRef     *yaml.Node
	satLegacy  *yaml.Node
	parserRef  *yaml.Node // parser.pluginRef
	dlSources  []dlSource // dataLayer.sources
	gates      []string
	notes      []string
	apiVersion string
}

// fields checks a mapping's keys against allowed and returns them by name.
func fields(n *yaml.Node, where string, allowed ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, errAt(n, "%s: expected a mapping, found %s", where, describe(n))
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(allowed, k.Value) {
			return nil, errAt(k, "%s: unknown field %q; allowed: %s", where, k.Value, strings.Join(allowed, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, errAt(k, "%s: field %q given twice", where, k.Value)
		}
		out[k.Value] = n.Content[i+1]
	}
	return out, nil
}

func str(n *yaml.Node, where string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return "", errAt(n, "%s: expected a string, found %s", where, describe(n))
	}
	return n.Value, nil
}

func list(n *yaml.Node, where string) ([]*yaml.Node, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, errAt(n, "%s: expected a list, found %s", where, describe(n))
	}
	return n.Content, nil
}

func (b *builder) decode(root *yaml.Node) error {
	top, err := fields(root, "EndpointPickerConfig", "apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles", "saturationDetector", "dataLayer", "flowControl", "parser")
	if err != nil {
		return err
	}
	if n := top["flowControl"]; n != nil {
		return errAt(n, "flowControl: not supported by fastepp: it has no flow-control layer and queues no requests in the picker; instead: remove the section (the flowControl feature gate is accepted and inert; sheddable requests get 429 while the saturationDetector reports saturation)")
	}
	if n := top["parser"]; n != nil {
		f, err := fields(n, "parser", "pluginRef")
		if err != nil {
			return err
		}
		if f["pluginRef"] == nil {
			return errAt(n, "parser: pluginRef is required (the name of an openai-parser plugin)")
		}
		b.parserRef = f["pluginRef"]
	}
	if n := top["apiVersion"]; n != nil {
		v, err := str(n, "apiVersion")
		if err != nil {
			return err
		}
		if !slices.Contains(APIVersions, v) {
			return errAt(n, "apiVersion: expected one of %s, found %q", strings.Join(APIVersions, ", "), v)
		}
		b.apiVersion = v
	}
	if n := top["kind"]; n != nil {
		v, err := str(n, "kind")
		if err != nil {
			return err
		}
		if v != "EndpointPickerConfig" {
			return errAt(n, "kind: expected EndpointPickerConfig, found %q", v)
		}
	}
	if n := top["featureGates"]; n != nil {
		items, err := list(n, "featureGates")
		if err != nil {
			return err
		}
		for _, it := range items {
			g, err := str(it, "featureGates")
			if err != nil {
				return err
			}
			if !slices.Contains(FeatureGates, g) {
				return errAt(it, "featureGates: unknown gate %q; known: %s", g, strings.Join(FeatureGates, ", "))
			}
			b.gates = append(b.gates, g)
			if note, ok := gateNotes[g]; ok {
				b.notes = append(b.notes, note)
			}
		}
	}
	if n := top["plugins"]; n != nil {
		items, err := list(n, "plugins")
		if err != nil {
			return err
		}
		if len(items) > MaxPlugins {
			return errAt(n, "plugins: expected at most %d plugins, found %d", MaxPlugins, len(items))
		}
		for i, it := range items {
			if err := b.decodePlugin(i, it); err != nil {
				return err
			}
		}
	}
	if n := top["schedulingProfiles"]; n != nil {
		items, err := list(n, "schedulingProfiles")
		if err != nil {
			return err
		}
		if len(items) > MaxProfiles {
			return errAt(n, "schedulingProfiles: expected at most %d profiles, found %d", MaxProfiles, len(items))
		}
		for i, it := range items {
			if err := b.decodeProfile(i, it); err != nil {
				return err
			}
		}
	}
	if n := top["saturationDetector"]; n != nil {
		f, err := fields(n, "saturationDetector", "pluginRef", "queueDepthThreshold", "kvCacheUtilThreshold", "metricsStalenessThreshold")
		if err != nil {
			return err
		}
		if r := f["pluginRef"]; r != nil {
			if len(f) > 1 {
				return errAt(n, "saturationDetector: expected either pluginRef or the threshold fields, found both")
			}
			b.satRef = r
		} else {
			b.satLegacy = n
		}
	}
	if n := top["dataLayer"]; n != nil {
		f, err := fields(n, "dataLayer", "sources")
		if err != nil {
			return err
		}
		if s := f["sources"]; s != nil {
			items, err := list(s, "dataLayer.sources")
			if err != nil {
				return err
			}
			for i, it := range items {
				where := fmt.Sprintf("dataLayer.sources[%d]", i)
				sf, err := fields(it, where, "pluginRef", "extractors")
				if err != nil {
					return err
				}
				if sf["pluginRef"] == nil {
					return errAt(it, "%s: pluginRef is required", where)
				}
				src := dlSource{ref: sf["pluginRef"]}
				if ex := sf["extractors"]; ex != nil {
					exs, err := list(ex, where+".extractors")
					if err != nil {
						return err
					}
					for j, e := range exs {
						ef, err := fields(e, fmt.Sprintf("%s.extractors[%d]", where, j), "pluginRef")
						if err != nil {
							return err
						}
						if ef["pluginRef"] == nil {
							return errAt(e, "%s.extractors[%d]: pluginRef is required", where, j)
						}
						src.extractors = append(src.extractors, ef["pluginRef"])
					}
				}
				b.dlSources = append(b.dlSources, src)
			}
		}
	}
	return nil
}

func (b *builder) decodePlugin(i int, n *yaml.Node) error {
	where := fmt.Sprintf("plugins[%d]", i)
	f, err := fields(n, where, "name", "type", "parameters")
	if err != nil {
		return err
	}
	tn := f["type"]
	if tn == nil {
		return errAt(n, "%s: type is required; known types: %s", where, strings.Join(b.reg.Types(), ", "))
	}
	typ, err := str(tn, where+".type")
	if err != nil {
		return err
	}
	name := typ
	if nn := f["name"]; nn != nil {
		if name, err = str(nn, where+".name"); err != nil {
			return err
		}
		if name == "" {
			return errAt(nn, "%s.name: expected a non-empty name (omit it to use the type)", where)
		}
	}
	where = fmt.Sprintf("plugin %q (type %s)", name, typ)
	fac, ok := b.reg.Lookup(typ)
	if u, refused := unsupported[typ]; refused && !ok {
		return errAt(tn, "%s: not supported by fastepp: %s; instead: %s", where, u.why, u.instead)
	}
	if !ok {
		return errAt(tn, "%s: %v", where, &scheduler.UnknownTypeError{Type: typ, Known: b.reg.Types()})
	}
	if prev, dup := b.byName[name]; dup {
		return errAt(n, "%s: name already used by the plugin at line %d; give one of them a distinct name", where, prev.line)
	}
	p, err := newParams(f["parameters"])
	if err != nil {
		return errAt(n, "%s: %v", where, err)
	}
	plug, err := b.reg.New(typ, name, p)
	if err != nil {
		if pe, ok := err.(*paramError); ok {
			return &Error{Line: pe.line, Msg: where + ": " + pe.msg}
		}
		return errAt(n, "%s: %v", where, err)
	}
	if un := p.unused(); len(un) > 0 {
		allowed := "none"
		if len(fac.Params) > 0 {
			allowed = strings.Join(fac.Params, ", ")
		}
		return errAt(un[0], "%s: unknown parameter %q; allowed: %s", where, un[0].Value, allowed)
	}
	e := newEntry(name, typ, fac.Kind, plug, p)
	e.line = n.Line
	b.entries = append(b.entries, e)
	b.byName[name] = e
	return nil
}

func (b *builder) decodeProfile(i int, n *yaml.Node) error {
	where := fmt.Sprintf("schedulingProfiles[%d]", i)
	f, err := fields(n, where, "name", "plugins")
	if err != nil {
		return err
	}
	if f["name"] == nil {
		return errAt(n, "%s: name is required", where)
	}
	name, err := str(f["name"], where+".name")
	if err != nil {
		return err
	}
	for _, p := range b.profiles {
		if p.name == name {
			return errAt(n, "%s: profile name %q used twice", where, name)
		}
	}
	ps := profileSpec{name: name, node: n}
	if pl := f["plugins"]; pl != nil {
		items, err := list(pl, where+".plugins")
		if err != nil {
			return err
		}
		if len(items) > MaxProfilePlugins {
			return errAt(pl, "%s.plugins: expected at most %d plugin references, found %d", where, MaxProfilePlugins, len(items))
		}
		for j, it := range items {
			w := fmt.Sprintf("profile %q plugins[%d]", name, j)
			rf, err := fields(it, w, "pluginRef", "weight")
			if err != nil {
				return err
			}
			if rf["pluginRef"] == nil {
				return errAt(it, "%s: pluginRef is required", w)
			}
			ref, err := str(rf["pluginRef"], w+".pluginRef")
			if err != nil {
				return err
			}
			pr := profileRef{ref: ref, node: it}
			if wn := rf["weight"]; wn != nil {
				v, err := floatOf(wn)
				if err != nil || v < 0 || v > MaxWeight {
					return errAt(wn, "%s (pluginRef %q): weight: expected a number in 0..%d, found %s", w, ref, int(MaxWeight), describe(wn))
				}
				pr.weight = &v
			}
			ps.refs = append(ps.refs, pr)
		}
	}
	b.profiles = append(b.profiles, ps)
	return nil
}

func (b *builder) names() string {
	var ns []string
	for _, e := range b.entries {
		ns = append(ns, e.name)
	}
	if len(ns) == 0 {
		return "(no plugins defined)"
	}
	return strings.Join(ns, ", ")
}

// implicit instantiates a defaulted plugin of typ with default parameters.
func (b *builder) implicit(typ string) (*entry, error) {
	name := typ
	for i := 2; b.byName[name] != nil; i++ {
		name = fmt.Sprintf("%s-%d", typ, i)
	}
	fac, ok := b.reg.Lookup(typ)
	if !ok {
		return nil, &Error{Msg: "internal: default plugin type " + typ + " not registered"}
	}
	p, _ := newParams(nil)
	plug, err := b.reg.New(typ, name, p)
	if err != nil {
		return nil, err
	}
	e := newEntry(name, typ, fac.Kind, plug, p)
	e.implicit = true
	b.entries = append(b.entries, e)
	b.byName[name] = e
	return e, nil
}

func (b *builder) build() (*Loaded, error) {
	// No profiles: one "default" profile with every filter, scorer and picker.
	if len(b.profiles) == 0 {
		ps := profileSpec{name: "default"}
		for _, e := range b.entries {
			switch e.kind {
			case scheduler.KindFilter, scheduler.KindScorer, scheduler.KindPicker:
				ps.refs = append(ps.refs, profileRef{ref: e.name})
			}
		}
		b.profiles = append(b.profiles, ps)
	}
	var profiles []*scheduler.Profile
	for _, ps := range b.profiles {
		prof := &scheduler.Profile{Name: ps.name}
		for _, r := range ps.refs {
			e := b.byName[r.ref]
			if e == nil {
				return nil, errAt(r.node, "profile %q: pluginRef %q names no plugin; defined: %s", ps.name, r.ref, b.names())
			}
			if e.passive != nil {
				// GIE ignores plugins of no scheduling role in a profile.
				b.notes = append(b.notes, fmt.Sprintf("profile %q: plugin %q (type %s) is a %s and takes no part in a pick; ignored there, as GIE ignores it", ps.name, e.name, e.typ, e.passive.Role()))
				continue
			}
			if r.weight != nil && e.kind != scheduler.KindScorer {
				return nil, errAt(r.node, "profile %q: plugin %q (type %s) is a %s: weight applies to scorers only", ps.name, e.name, e.typ, e.kind)
			}
			switch {
			case e.kind == scheduler.KindScorer:
				w := 1.0
				if r.weight != nil {
					w = *r.weight
				}
				prof.Scorers = append(prof.Scorers, scheduler.WeightedScorer{Scorer: e.scorer, Weight: w})
			case e.kind == scheduler.KindPicker:
				if prof.Picker != nil {
					return nil, errAt(r.node, "profile %q: second picker %q; a profile has one picker (already %q)", ps.name, e.name, prof.Picker.Name())
				}
				prof.Picker = e.picker
			case e.kind == scheduler.KindFilter:
				prof.Filters = append(prof.Filters, e.filter)
			default:
				if e.filter != nil { // e.g. utilization-detector: also a filter
					prof.Filters = append(prof.Filters, e.filter)
					continue
				}
				return nil, errAt(r.node, "profile %q: plugin %q (type %s) is a %s and cannot be used in a profile; profiles take filters, scorers and one picker", ps.name, e.name, e.typ, e.kind)
			}
		}
		if prof.Picker == nil {
			e, err := b.implicit("max-score-picker")
			if err != nil {
				return nil, err
			}
			prof.Picker = e.picker
		}
		profiles = append(profiles, prof)
	}
	// Profile handler.
	var handler scheduler.ProfileHandler
	for _, e := range b.entries {
		if e.kind == scheduler.KindProfileHandler {
			if handler != nil {
				return nil, errAt(&yaml.Node{Line: e.line}, "plugin %q (type %s): a second profile handler; only one is allowed (already %q)", e.name, e.typ, handler.Name())
			}
			handler = e.handler
		}
	}
	if handler == nil {
		if len(profiles) != 1 {
			return nil, &Error{Msg: fmt.Sprintf("%d scheduling profiles need a profile-handler plugin; known handler types: %s", len(profiles), strings.Join(b.reg.TypesOf(scheduler.KindProfileHandler), ", "))}
		}
		e, err := b.implicit("single-profile-handler")
		if err != nil {
			return nil, err
		}
		handler = e.handler
	}
	// Saturation detector.
	var sat scheduler.SaturationDetector
	switch {
	case b.satRef != nil:
		ref, err := str(b.satRef, "saturationDetector.pluginRef")
		if err != nil {
			return nil, err
		}
		e := b.byName[ref]
		if e == nil {
			return nil, errAt(b.satRef, "saturationDetector: pluginRef %q names no plugin; defined: %s", ref, b.names())
		}
		s := e.sat
		if s == nil {
			return nil, errAt(b.satRef, "saturationDetector: plugin %q (type %s) is a %s, not a saturation detector; known: %s", ref, e.typ, e.kind, strings.Join(b.reg.TypesOf(scheduler.KindSaturation), ", "))
		}
		sat = s
	case b.satLegacy != nil:
		const typ = "utilization-detector"
		fac, ok := b.reg.Lookup(typ)
		if !ok {
			return nil, &Error{Msg: "internal: default plugin type " + typ + " not registered"}
		}
		p, _ := newParams(b.satLegacy)
		plug, err := b.reg.New(typ, typ, p)
		if err != nil {
			return nil, errAt(b.satLegacy, "saturationDetector: %v", err)
		}
		e := newEntry(typ, typ, fac.Kind, plug, p)
		e.implicit = true
		if b.byName[e.name] != nil {
			return nil, errAt(b.satLegacy, "saturationDetector: thresholds given while a plugin named utilization-detector exists; use pluginRef")
		}
		b.entries = append(b.entries, e)
		b.byName[e.name] = e
		sat = e.sat
	default:
		// GIE uses the plugin named utilization-detector, else a new one with
		// defaults; fastepp also takes the first of type utilization-detector
		// (another detector type, such as concurrency-detector, is used for
		// shedding only when saturationDetector names it, as in GIE).
		if e := b.byName[scorers.UtilizationDetectorType]; e != nil {
			if e.sat == nil {
				return nil, errAt(&yaml.Node{Line: e.line}, "plugin %q (type %s) is a %s; with no saturationDetector section, the plugin named %s is the saturation detector, as in GIE; rename it or add saturationDetector.pluginRef",
					e.name, e.typ, e.kind, scorers.UtilizationDetectorType)
			}
			sat = e.sat
		}
		for _, e := range b.entries {
			if sat == nil && e.typ == scorers.UtilizationDetectorType {
				sat = e.sat
			}
		}
		if sat == nil {
			e, err := b.implicit("utilization-detector")
			if err != nil {
				return nil, err
			}
			sat = e.sat
		}
	}
	// Data layer references.
	var dl []scheduler.Plugin
	var dlNames [][]string // per source: the source's name, then its extractors'
	for _, src := range b.dlSources {
		var names []string
		for _, r := range append([]*yaml.Node{src.ref}, src.extractors...) {
			ref, err := str(r, "dataLayer pluginRef")
			if err != nil {
				return nil, err
			}
			e := b.byName[ref]
			if e == nil {
				return nil, errAt(r, "dataLayer: pluginRef %q names no plugin; defined: %s", ref, b.names())
			}
			if e.kind != scheduler.KindDataLayer || e.passive != nil {
				kind := string(e.kind)
				if e.passive != nil {
					kind = e.passive.Role()
				}
				return nil, errAt(r, "dataLayer: plugin %q (type %s) is a %s; known data-layer types: %s", ref, e.typ, kind, strings.Join(b.dataLayerTypes(), ", "))
			}
			dl = append(dl, e.plugin)
			names = append(names, ref)
		}
		dlNames = append(dlNames, names)
	}
	scrape, err := endpoints.ScrapeConfigFrom(dl)
	if err != nil {
		return nil, &Error{Msg: err.Error()}
	}
	gpu, err := endpoints.GPUConfigFrom(dl)
	if err != nil {
		return nil, &Error{Msg: err.Error()}
	}
	// Parser.
	var parser scheduler.Plugin
	if b.parserRef != nil {
		ref, err := str(b.parserRef, "parser.pluginRef")
		if err != nil {
			return nil, err
		}
		e := b.byName[ref]
		if e == nil {
			return nil, errAt(b.parserRef, "parser: pluginRef %q names no plugin; defined: %s", ref, b.names())
		}
		if e.passive == nil || e.passive.Role() != scorers.RoleParser {
			return nil, errAt(b.parserRef, "parser: plugin %q (type %s) is not a parser; known parser types: %s", ref, e.typ, strings.Join(b.parserTypes(), ", "))
		}
		parser = e.plugin
	}
	var plugins []scheduler.Plugin
	for _, e := range b.entries {
		plugins = append(plugins, e.plugin)
	}
	if err := b.bind(plugins, profiles); err != nil {
		return nil, err
	}
	plan, err := scheduler.NewPlan(handler, profiles, sat, plugins)
	if err != nil {
		return nil, &Error{Msg: err.Error()}
	}
	eff, err := b.effective(profiles, sat, dlNames, parser)
	if err != nil {
		return nil, err
	}
	return &Loaded{Plan: plan, DataLayer: dl, Scrape: scrape, GPU: gpu, FeatureGates: b.gates, Effective: eff, Notes: b.notes, Parser: parser}, nil
}

// bind collects each plugin's notes (scorers.Noter) and lets the plugins
// that work with others find them (scorers.Binder), once, before the plan is
// made. Notes name the plugin; an error names it and its line.
func (b *builder) bind(plugins []scheduler.Plugin, profiles []*scheduler.Profile) error {
	for _, e := range b.entries {
		if n, ok := e.plugin.(scorers.Noter); ok {
			for _, note := range n.Notes() {
				b.notes = append(b.notes, fmt.Sprintf("plugin %q (type %s): %s", e.name, e.typ, note))
			}
		}
	}
	for _, e := range b.entries {
		bd, ok := e.plugin.(scorers.Binder)
		if !ok {
			continue
		}
		notes, err := bd.Bind(plugins, profiles)
		if err != nil {
			return errAt(&yaml.Node{Line: e.line}, "plugin %q (type %s): %v", e.name, e.typ, err)
		}
		for _, note := range notes {
			b.notes = append(b.notes, fmt.Sprintf("plugin %q (type %s): %s", e.name, e.typ, note))
		}
	}
	return nil
}

// dataLayerTypes lists the registered types dataLayer.sources may name.
func (b *builder) dataLayerTypes() []string { return b.reg.TypesOf(scheduler.KindDataLayer) }

// parserTypes lists the registered parser types.
func (b *builder) parserTypes() []string {
	var ts []string
	for _, t := range b.reg.TypesOf(scheduler.KindRequestControl) {
		if f, _ := b.reg.Lookup(t); isPassive(f.Proto) && f.Proto.(scorers.Passive).Role() == scorers.RoleParser {
			ts = append(ts, t)
		}
	}
	return ts
}

func isPassive(p scheduler.Plugin) bool { _, ok := p.(scorers.Passive); return ok }

// effective renders the configuration with all defaults.
func (b *builder) effective(profiles []*scheduler.Profile, sat scheduler.SaturationDetector, dataLayer [][]string, parser scheduler.Plugin) ([]byte, error) {
	type kv = yaml.Node
	doc := &yaml.Node{Kind: yaml.MappingNode}
	add := func(m *yaml.Node, k string, v *yaml.Node) {
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, v)
	}
	scalar := func(v any) *yaml.Node {
		if n, ok := v.(*yaml.Node); ok { // a structured parameter (params.Decode), as given
			return n
		}
		n := &yaml.Node{}
		if err := n.Encode(v); err != nil {
			return &yaml.Node{Kind: yaml.ScalarNode, Value: fmt.Sprint(v)}
		}
		return n
	}
	api := b.apiVersion
	if api == "" {
		api = APIVersions[0]
	}
	add(doc, "apiVersion", scalar(api))
	add(doc, "kind", scalar("EndpointPickerConfig"))
	if len(b.gates) > 0 {
		add(doc, "featureGates", scalar(b.gates))
	}
	pl := &yaml.Node{Kind: yaml.SequenceNode}
	for _, e := range b.entries {
		m := &kv{Kind: yaml.MappingNode}
		add(m, "name", scalar(e.name))
		add(m, "type", scalar(e.typ))
		if len(e.params.effective) > 0 {
			pm := &kv{Kind: yaml.MappingNode}
			for _, p := range e.params.effective {
				add(pm, p.Name, scalar(p.Value))
			}
			add(m, "parameters", pm)
		}
		pl.Content = append(pl.Content, m)
	}
	add(doc, "plugins", pl)
	sp := &yaml.Node{Kind: yaml.SequenceNode}
	for _, p := range profiles {
		m := &kv{Kind: yaml.MappingNode}
		add(m, "name", scalar(p.Name))
		refs := &kv{Kind: yaml.SequenceNode}
		for _, f := range p.Filters {
			r := &kv{Kind: yaml.MappingNode}
			add(r, "pluginRef", scalar(f.Name()))
			refs.Content = append(refs.Content, r)
		}
		for _, s := range p.Scorers {
			r := &kv{Kind: yaml.MappingNode}
			add(r, "pluginRef", scalar(s.Name()))
			w := s.Weight
			if w == math.Trunc(w) {
				add(r, "weight", scalar(int64(w)))
			} else {
				add(r, "weight", scalar(w))
			}
			refs.Content = append(refs.Content, r)
		}
		r := &kv{Kind: yaml.MappingNode}
		add(r, "pluginRef", scalar(p.Picker.Name()))
		refs.Content = append(refs.Content, r)
		add(m, "plugins", refs)
		sp.Content = append(sp.Content, m)
	}
	add(doc, "schedulingProfiles", sp)
	if sat != nil {
		m := &kv{Kind: yaml.MappingNode}
		add(m, "pluginRef", scalar(sat.Name()))
		add(doc, "saturationDetector", m)
	}
	if len(dataLayer) > 0 {
		srcs := &kv{Kind: yaml.SequenceNode}
		for _, names := range dataLayer {
			m := &kv{Kind: yaml.MappingNode}
			add(m, "pluginRef", scalar(names[0]))
			if len(names) > 1 {
				exs := &kv{Kind: yaml.SequenceNode}
				for _, n := range names[1:] {
					e := &kv{Kind: yaml.MappingNode}
					add(e, "pluginRef", scalar(n))
					exs.Content = append(exs.Content, e)
				}
				add(m, "extractors", exs)
			}
			srcs.Content = append(srcs.Content, m)
		}
		dl := &kv{Kind: yaml.MappingNode}
		add(dl, "sources", srcs)
		add(doc, "dataLayer", dl)
	}
	if parser != nil {
		m := &kv{Kind: yaml.MappingNode}
		add(m, "pluginRef", scalar(parser.Name()))
		add(doc, "parser", m)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, errors.Join(&Error{Msg: "rendering the effective config"}, err)
	}
	return buf.Bytes(), nil
}
