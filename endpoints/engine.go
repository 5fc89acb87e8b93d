package endpoints

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/fastepp/fastepp/scheduler"
)

// EngineLabel is the pod label that names a model server's engine.
const EngineLabel = "inference.networking.k8s.io/engine-type"

// family is one metric family an engine reports.
type family uint8

const (
	famNone      family = iota
	famWaiting          // queued requests (summed over series)
	famRunning          // running requests (summed)
	famKV               // KV-cache usage 0..1 (max)
	famKVOld            // older KV-cache usage name, used when famKV is absent (max)
	famLoRA             // LoRA info: labels, value = timestamp (newest series wins)
	famCache            // cache config: labels
	famBlockSize        // cache block size as a sample value (max)
	famNumBlocks        // number of cache blocks as a sample value (max)
	famCount
)

// famSet is a set of families (bit f set = family f). Several families of
// one engine may share a metric name and differ by label matchers.
type famSet uint16

func (s famSet) has(f family) bool { return s&(1<<f) != 0 }

// coreFamilies are the families an endpoint is scored on; a page with none
// of them is a failed scrape.
var coreFamilies = [...]family{famWaiting, famRunning, famKV}

// labelMatch is one label equality of a metricSpec.
type labelMatch struct{ name, value string }

// metricSpec selects the series of one family on a metrics page: a metric
// name and label equalities each series must carry (GIE's engineConfigs spec,
// e.g. nv_trt_llm_request_metrics{request_type="waiting"}).
type metricSpec struct {
	name  string
	match []labelMatch
	text  string // as written, for messages
}

// matches reports whether a sample's labels satisfy every label equality.
func (s *metricSpec) matches(ls []label) bool {
	for _, m := range s.match {
		v, ok := findLabel(ls, m.name)
		if !ok || string(v) != m.value {
			return false
		}
	}
	return true
}

// engine says which metric names and labels one engine exposes.
type engine struct {
	name  string
	specs [famCount]metricSpec // name "" when the engine has no such family
	// cache config labels
	blockSizeLabel, numBlocksLabel string
}

// lookup returns the families of e that read the metric called name (none:
// the metric is not wanted).
func (e *engine) lookup(name []byte) famSet {
	var s famSet
	for f := famWaiting; f < famCount; f++ {
		if n := e.specs[f].name; len(n) == len(name) && n == string(name) {
			s |= 1 << f
		}
	}
	return s
}

// first returns the lowest family of s (for messages).
func (e *engine) first(s famSet) family {
	for f := famWaiting; f < famCount; f++ {
		if s.has(f) {
			return f
		}
	}
	return famNone
}

// EngineConfig gives one engine's metric names, in the format of GIE's
// core-metrics-extractor engineConfigs: each spec is a metric name with
// optional label equalities, name or name{label="value",...} (values may be
// unquoted, as in GIE); an empty spec means the engine has no such metric.
// An entry whose Name is a built-in engine replaces it; others add an engine.
type EngineConfig struct {
	Name                string // engine label value (case-insensitive); "default" is reserved
	QueuedRequestsSpec  string // waiting requests (summed over matching series)
	RunningRequestsSpec string // running requests (summed)
	KVUsageSpec         string // KV-cache usage 0..1 (the maximum)
	LoRASpec            string // LoRA info, vLLM's label format (the newest series)
	CacheInfoSpec       string // cache config info: block size and block count as labels
	// CacheBlockSizeLabelName and CacheNumBlocksLabelName name the labels of
	// CacheInfoSpec (default block_size, num_gpu_blocks).
	CacheBlockSizeLabelName, CacheNumBlocksLabelName string
	// CacheBlockSizeSpec and CacheNumBlocksSpec read block size and block
	// count from sample values instead (the maximum).
	CacheBlockSizeSpec, CacheNumBlocksSpec string
}

// engineConfigFields are the YAML keys of an EngineConfig, in GIE's order.
var engineConfigFields = []string{
	"name", "queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "loraSpec", "cacheInfoSpec",
	"cacheBlockSizeLabelName", "cacheNumBlocksLabelName", "cacheBlockSizeSpec", "cacheNumBlocksSpec",
}

// field returns a pointer to the field of c that YAML key k sets (nil for an
// unknown key).
func (c *EngineConfig) field(k string) *string {
	switch k {
	case "name":
		return &c.Name
	case "queuedRequestsSpec":
		return &c.QueuedRequestsSpec
	case "runningRequestsSpec":
		return &c.RunningRequestsSpec
	case "kvUsageSpec":
		return &c.KVUsageSpec
	case "loraSpec":
		return &c.LoRASpec
	case "cacheInfoSpec":
		return &c.CacheInfoSpec
	case "cacheBlockSizeLabelName":
		return &c.CacheBlockSizeLabelName
	case "cacheNumBlocksLabelName":
		return &c.CacheNumBlocksLabelName
	case "cacheBlockSizeSpec":
		return &c.CacheBlockSizeSpec
	case "cacheNumBlocksSpec":
		return &c.CacheNumBlocksSpec
	}
	return nil
}

// builtinEngines are GIE v1.5.0's default engineConfigs, except that trtllm
// is our name of GIE's trtllm-serve (which stays an alias).
var builtinEngines = []EngineConfig{
	{
		Name:                "vllm",
		QueuedRequestsSpec:  "vllm:num_requests_waiting",
		RunningRequestsSpec: "vllm:num_requests_running",
		KVUsageSpec:         "vllm:kv_cache_usage_perc",
		LoRASpec:            "vllm:lora_requests_info",
		CacheInfoSpec:       "vllm:cache_config_info",
	},
	{
		Name:                    "sglang",
		QueuedRequestsSpec:      "sglang:num_queue_reqs",
		RunningRequestsSpec:     "sglang:num_running_reqs",
		KVUsageSpec:             "sglang:token_usage",
		CacheInfoSpec:           "sglang:cache_config_info",
		CacheBlockSizeLabelName: "page_size",
		CacheNumBlocksLabelName: "num_pages",
	},
	{
		Name:                "trtllm",
		QueuedRequestsSpec:  "trtllm_num_requests_waiting",
		RunningRequestsSpec: "trtllm_num_requests_running",
		KVUsageSpec:         "trtllm_kv_cache_utilization",
		CacheBlockSizeSpec:  "trtllm_kv_cache_tokens_per_block",
		CacheNumBlocksSpec:  "trtllm_kv_cache_max_blocks",
	},
	{
		Name:                "triton-tensorrt-llm",
		QueuedRequestsSpec:  `nv_trt_llm_request_metrics{request_type="waiting"}`,
		RunningRequestsSpec: `nv_trt_llm_request_metrics{request_type="scheduled"}`,
		KVUsageSpec:         `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}`,
		CacheBlockSizeSpec:  `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per"}`,
		CacheNumBlocksSpec:  `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max"}`,
	},
}

// vllmOldKV is vLLM's KV usage name before v0.10, read when the page lacks
// the newer one (built-in vllm only).
const vllmOldKV = "vllm:gpu_cache_usage_perc"

// engineAliases are other accepted names of a built-in engine: {alias, engine name}.
var engineAliases = [][2]string{{"trtllm-serve", "trtllm"}}

// engineTable maps engine label values to engines.
type engineTable struct {
	byName map[string]*engine // lower-case names and aliases
	names  []string           // accepted names for messages: built-ins, added, aliases
}

// builtinTable holds builtinEngines; engines lists them in order.
var builtinTable, engines = mustBuiltinTable()

func mustBuiltinTable() (*engineTable, []*engine) {
	t := &engineTable{byName: map[string]*engine{}}
	var list []*engine
	for _, c := range builtinEngines {
		e, err := compileEngine(c)
		if err != nil {
			panic(fmt.Sprintf("built-in engine %s: %v", c.Name, err))
		}
		if e.name == "vllm" {
			e.specs[famKVOld] = metricSpec{name: vllmOldKV, text: vllmOldKV}
		}
		t.byName[e.name] = e
		t.names = append(t.names, e.name)
		list = append(list, e)
	}
	for _, a := range engineAliases {
		t.byName[a[0]] = t.byName[a[1]]
		t.names = append(t.names, a[0])
	}
	return t, list
}

// EngineNames lists the engine names accepted without engineConfigs (values
// of the engine label and of defaultEngine), aliases last.
func EngineNames() []string { return slices.Clone(builtinTable.names) }

// newEngineTable returns the built-in engines with the configured ones
// added or replacing built-ins of the same name. Errors name the entry, its
// field and what was wrong.
func newEngineTable(configs []EngineConfig) (*engineTable, error) {
	if len(configs) == 0 {
		return builtinTable, nil
	}
	t := &engineTable{byName: maps.Clone(builtinTable.byName)}
	var added []string
	seen := map[string]int{}
	var errs []error
	for i, c := range configs {
		where := fmt.Sprintf("engineConfigs[%d]", i)
		if c.Name != "" {
			where += " (" + c.Name + ")"
		}
		key := strings.ToLower(c.Name)
		switch {
		case c.Name == "":
			errs = append(errs, fmt.Errorf("%s: name: expected an engine name (the value of the engine label), found none", where))
			continue
		case key == "default":
			errs = append(errs, fmt.Errorf("%s: name: %q is reserved (GIE's fallback mapping); choose another name", where, c.Name))
			continue
		}
		if j, dup := seen[key]; dup {
			errs = append(errs, fmt.Errorf("%s: name: expected each engine once, found %q again (first in engineConfigs[%d])", where, c.Name, j))
			continue
		}
		seen[key] = i
		e, err := compileEngine(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if _, known := t.byName[key]; !known {
			added = append(added, key)
		}
		t.byName[key] = e
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, e := range engines {
		t.names = append(t.names, e.name)
	}
	t.names = append(t.names, added...)
	for _, a := range engineAliases {
		t.names = append(t.names, a[0])
	}
	return t, nil
}

// named returns the engine called v (case-insensitive), or def when v is
// empty; what names the label or parameter for the error.
func (t *engineTable) named(v, def, what string) (*engine, error) {
	if v == "" {
		v = def
	}
	if e := t.byName[strings.ToLower(v)]; e != nil {
		return e, nil
	}
	return nil, &scheduler.InputError{
		What:     what,
		Expected: "one of " + strings.Join(t.names, ", "),
		Found:    strconv.Quote(v),
	}
}

// engineFor returns the engine named by labels[EngineLabel] (vllm when
// absent): the default data-layer configuration.
func engineFor(labels map[string]string) (*engine, error) {
	return DefaultScrapeConfig().engineFor(builtinTable, labels)
}

// compileEngine checks one EngineConfig and builds its engine.
func compileEngine(c EngineConfig) (*engine, error) {
	e := &engine{name: strings.ToLower(c.Name), blockSizeLabel: "block_size", numBlocksLabel: "num_gpu_blocks"}
	var errs []error
	for _, s := range []struct {
		f   family
		key string
		v   string
	}{
		{famWaiting, "queuedRequestsSpec", c.QueuedRequestsSpec},
		{famRunning, "runningRequestsSpec", c.RunningRequestsSpec},
		{famKV, "kvUsageSpec", c.KVUsageSpec},
		{famLoRA, "loraSpec", c.LoRASpec},
		{famCache, "cacheInfoSpec", c.CacheInfoSpec},
		{famBlockSize, "cacheBlockSizeSpec", c.CacheBlockSizeSpec},
		{famNumBlocks, "cacheNumBlocksSpec", c.CacheNumBlocksSpec},
	} {
		if s.v == "" {
			continue
		}
		spec, err := parseSpec(s.v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.key, err))
			continue
		}
		e.specs[s.f] = spec
	}
	for _, l := range []struct {
		key, v string
		dst    *string
	}{
		{"cacheBlockSizeLabelName", c.CacheBlockSizeLabelName, &e.blockSizeLabel},
		{"cacheNumBlocksLabelName", c.CacheNumBlocksLabelName, &e.numBlocksLabel},
	} {
		if l.v == "" {
			continue
		}
		switch {
		case !validLabelName(l.v):
			errs = append(errs, fmt.Errorf("%s: expected a label name ([a-zA-Z_][a-zA-Z0-9_]*), found %q", l.key, l.v))
		case c.CacheInfoSpec == "":
			errs = append(errs, fmt.Errorf("%s: names a label of cacheInfoSpec's metric, but cacheInfoSpec is empty", l.key))
		default:
			*l.dst = l.v
		}
	}
	if len(errs) == 0 && e.specs[famWaiting].name == "" && e.specs[famRunning].name == "" && e.specs[famKV].name == "" {
		errs = append(errs, errors.New("expected at least one of queuedRequestsSpec, runningRequestsSpec, kvUsageSpec (an endpoint is scored on them), found none"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return e, nil
}

// parseSpec parses a metric spec: a metric name, then optionally label
// equalities in braces, name{a="x", b=y}. Values may be double-quoted (with
// the escapes \\ \" \n) or bare, as GIE accepts. Other PromQL matchers (!=,
// =~, !~) are refused: GIE silently drops them, which would select series
// the operator meant to exclude.
func parseSpec(text string) (metricSpec, error) {
	bad := func(format string, args ...any) (metricSpec, error) {
		return metricSpec{}, fmt.Errorf("expected a metric selector such as name or name{label=\"value\"}, found %q: %s", text, fmt.Sprintf(format, args...))
	}
	s := strings.TrimSpace(text)
	i := 0
	for i < len(s) && nameCont(s[i], true) && !(i == 0 && s[i] >= '0' && s[i] <= '9') {
		i++
	}
	if i == 0 {
		return bad("no metric name at the start")
	}
	spec := metricSpec{name: s[:i], text: text}
	k := skipBlankStr(s, i)
	if k == len(s) {
		return spec, nil
	}
	if s[k] != '{' {
		return bad("expected '{' or the end after the metric name, found %q", s[k:])
	}
	k++
	for {
		k = skipBlankStr(s, k)
		if k >= len(s) {
			return bad("expected '}', found the end")
		}
		if s[k] == '}' {
			k++
			break
		}
		start := k
		for k < len(s) && nameCont(s[k], false) && !(k == start && s[k] >= '0' && s[k] <= '9') {
			k++
		}
		ln := s[start:k]
		if ln == "" {
			return bad("expected a label name at %q", s[k:])
		}
		if strings.HasPrefix(ln, "__") {
			return bad("label names starting with __ are reserved, found %q", ln)
		}
		k = skipBlankStr(s, k)
		if op := s[k:min(k+2, len(s))]; op == "!=" || op == "=~" || op == "!~" {
			return bad("only label=value equalities are supported, found %s after label %q", op, ln)
		}
		if k >= len(s) || s[k] != '=' {
			return bad("expected '=' after label %q", ln)
		}
		k = skipBlankStr(s, k+1)
		var val string
		if k < len(s) && s[k] == '"' {
			var b strings.Builder
			k++
			for ; k < len(s) && s[k] != '"'; k++ {
				if s[k] == '\\' && k+1 < len(s) {
					k++
					switch s[k] {
					case '\\', '"':
						b.WriteByte(s[k])
					case 'n':
						b.WriteByte('\n')
					default:
						return bad("unknown escape \\%c in the value of label %q", s[k], ln)
					}
					continue
				}
				b.WriteByte(s[k])
			}
			if k >= len(s) {
				return bad("the value of label %q has no closing '\"'", ln)
			}
			k++
			val = b.String()
		} else {
			start := k
			for k < len(s) && s[k] != ',' && s[k] != '}' && s[k] != '"' && !isBlank(s[k]) {
				k++
			}
			if k == start {
				return bad("expected a value for label %q", ln)
			}
			val = s[start:k]
		}
		for _, m := range spec.match {
			if m.name == ln {
				return bad("label %q appears twice", ln)
			}
		}
		spec.match = append(spec.match, labelMatch{ln, val})
		k = skipBlankStr(s, k)
		if k < len(s) && s[k] == ',' {
			k++
			continue
		}
		if k < len(s) && s[k] == '}' {
			k++
			break
		}
		return bad("expected ',' or '}' after the value of label %q", ln)
	}
	if k = skipBlankStr(s, k); k != len(s) {
		return bad("unexpected %q after '}'", s[k:])
	}
	return spec, nil
}

func skipBlankStr(s string, k int) int {
	for k < len(s) && isBlank(s[k]) {
		k++
	}
	return k
}

// validLabelName reports whether s is a legacy Prometheus label name.
func validLabelName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameCont(s[i], false) {
			return false
		}
	}
	return true
}
