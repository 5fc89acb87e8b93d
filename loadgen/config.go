package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// Load types (load.type).
const (
	LoadConstant    = "constant"
	LoadPoisson     = "poisson"
	LoadConcurrent  = "concurrent"
	LoadTraceReplay = "trace_replay"
)

// Data types (data.type).
const (
	DataRandom       = "random"
	DataSharedPrefix = "shared_prefix"
	DataMultiTurn    = "multi_turn"
	DataTrace        = "trace"
)

// API types (api.type).
const (
	APICompletion = "completion"
	APIChat       = "chat"
)

// Config is a whole load-generator run. Field names follow inference-perf.
type Config struct {
	Load   LoadConfig   `yaml:"load"`
	API    APIConfig    `yaml:"api"`
	Server ServerConfig `yaml:"server"`
	Data   DataConfig   `yaml:"data"`
	SLO    SLOConfig    `yaml:"slo"`
	Report ReportConfig `yaml:"report"`
	Sweep  SweepConfig  `yaml:"sweep"`

	// inference-perf sections that have no effect here; accepted so its
	// configs port over, and named in Warnings.
	Storage   yaml.Node `yaml:"storage"`
	Metrics   yaml.Node `yaml:"metrics"`
	Tokenizer yaml.Node `yaml:"tokenizer"`

	// Warnings lists accepted fields that change nothing (set by Normalize).
	Warnings []string `yaml:"-"`
}

// LoadConfig says when requests leave.
type LoadConfig struct {
	Type string `yaml:"type"`
	// Stages run back to back. constant/poisson: rate + duration;
	// concurrent: concurrency (alias concurrency_level) + num_requests;
	// trace_replay: optional duration windows over the trace.
	Stages []Stage `yaml:"stages"`
	// Burstiness is the gamma shape of inter-arrival times for poisson
	// (1 = Poisson process, <1 burstier, >1 smoother), as in vllm bench.
	Burstiness *float64 `yaml:"burstiness"`
	Seed       *int64   `yaml:"seed"`
	// BaseSeed is inference-perf's name for Seed.
	BaseSeed *int64 `yaml:"base_seed"`
	// RequestTimeout bounds one request (seconds or a duration string);
	// unset or 0 takes DefaultRequestTimeout, so a hung server ends a run.
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxInFlight caps open-loop in-flight requests; requests over the cap are
	// not sent and counted as error "client_in_flight_limit". 0 = no cap.
	MaxInFlight int `yaml:"max_in_flight"`
	// TimeScale speeds a trace_replay up (2 = twice as fast). Default 1.
	TimeScale float64 `yaml:"time_scale"`

	// inference-perf worker settings: one Go process needs none of them.
	Interval                *float64 `yaml:"interval"`
	NumWorkers              *int     `yaml:"num_workers"`
	WorkerMaxConcurrency    *int     `yaml:"worker_max_concurrency"`
	WorkerMaxTCPConnections *int     `yaml:"worker_max_tcp_connections"`
}

// Stage is one load stage.
type Stage struct {
	Rate             float64  `yaml:"rate"`
	Duration         Duration `yaml:"duration"`
	Concurrency      int      `yaml:"concurrency"`
	ConcurrencyLevel int      `yaml:"concurrency_level"`
	NumRequests      int      `yaml:"num_requests"`
}

// APIConfig picks the OpenAI endpoint.
type APIConfig struct {
	Type      string            `yaml:"type"`
	Streaming *bool             `yaml:"streaming"`
	Headers   map[string]string `yaml:"headers"`
}

// ServerConfig says where requests go.
type ServerConfig struct {
	Type      string `yaml:"type"` // informational (vllm, sglang, ...), as in inference-perf
	BaseURL   string `yaml:"base_url"`
	ModelName string `yaml:"model_name"`
	IgnoreEOS bool   `yaml:"ignore_eos"`
	APIKey    string `yaml:"api_key"`
}

// DataConfig says what requests contain.
type DataConfig struct {
	Type               string              `yaml:"type"`
	InputDistribution  *Distribution       `yaml:"input_distribution"`
	OutputDistribution *Distribution       `yaml:"output_distribution"`
	SharedPrefix       *SharedPrefixConfig `yaml:"shared_prefix"`
	MultiTurn          *MultiTurnConfig    `yaml:"multi_turn"`
	Trace              *TraceConfig        `yaml:"trace"`
}

// SharedPrefixConfig is inference-perf's shared_prefix block. num_groups is
// also accepted as num_unique_system_prompts and num_prompts_per_group as
// num_users_per_system_prompt.
type SharedPrefixConfig struct {
	NumGroups               int           `yaml:"num_groups"`
	NumUniqueSystemPrompts  int           `yaml:"num_unique_system_prompts"`
	NumPromptsPerGroup      int           `yaml:"num_prompts_per_group"`
	NumUsersPerSystemPrompt int           `yaml:"num_users_per_system_prompt"`
	SystemPromptLen         *Length       `yaml:"system_prompt_len"`
	QuestionLen             *Length       `yaml:"question_len"`
	OutputLen               *Length       `yaml:"output_len"`
	QuestionDistribution    *Distribution `yaml:"question_distribution"`
	OutputDistribution      *Distribution `yaml:"output_distribution"`
	Seed                    *int64        `yaml:"seed"`
	EnableMultiTurnChat     bool          `yaml:"enable_multi_turn_chat"`
}

// MultiTurnConfig describes conversations whose every turn resends the whole
// conversation so far plus a new user message.
type MultiTurnConfig struct {
	NumConversations int     `yaml:"num_conversations"`
	Turns            *Length `yaml:"turns"`
	SystemPromptLen  *Length `yaml:"system_prompt_len"`
	InputLen         *Length `yaml:"input_len"`
	OutputLen        *Length `yaml:"output_len"`
}

// TraceConfig names a JSONL trace: one object per line with timestamp
// (seconds), input_len, output_len and optional prefix_group.
type TraceConfig struct {
	File string `yaml:"file"`
}

// SLOConfig holds service-level objectives; goodput counts requests meeting
// all of them. Attainment is the share of requests that must meet them for a
// sweep to call a rate good (default 0.9). Percentile, when set (e.g. 90),
// states the SLO on percentiles instead, as capacity plans read it: the
// p<Percentile> TTFT and TPOT must be within ttft and tpot (`slo: {ttft: 1s,
// tpot: 50ms, percentile: 90}`); it also sets attainment to Percentile/100
// when attainment is not given, so sweeps judge the same share.
type SLOConfig struct {
	TTFT       Duration `yaml:"ttft"`
	TPOT       Duration `yaml:"tpot"`
	ITL        Duration `yaml:"itl"`
	E2E        Duration `yaml:"e2e"`
	NTPOT      Duration `yaml:"ntpot"`
	Attainment float64  `yaml:"attainment"`
	Percentile float64  `yaml:"percentile"`
}

// ReportConfig picks percentiles and output formats.
type ReportConfig struct {
	Percentiles []float64 `yaml:"percentiles"`
	Formats     []string  `yaml:"formats"`
	// RequestLifecycle is inference-perf's report block: its percentiles
	// apply when percentiles is unset, and per_request: false drops the CSV
	// when formats is unset.
	RequestLifecycle *RequestLifecycle `yaml:"request_lifecycle"`
}

// RequestLifecycle mirrors inference-perf's report.request_lifecycle.
type RequestLifecycle struct {
	Summary     *bool     `yaml:"summary"`
	PerStage    *bool     `yaml:"per_stage"`
	PerRequest  *bool     `yaml:"per_request"`
	PerAdapter  *bool     `yaml:"per_adapter"`
	Percentiles []float64 `yaml:"percentiles"`
}

// SweepConfig drives `loadgen sweep`.
type SweepConfig struct {
	MinRate       float64  `yaml:"min_rate"`
	MaxRate       float64  `yaml:"max_rate"`
	StageDuration Duration `yaml:"stage_duration"`
	// Precision stops bisection when (hi-lo)/hi falls below it. Default 0.05.
	Precision float64 `yaml:"precision"`
	MaxProbes int     `yaml:"max_probes"`
	// Replicas is the number of model-server replicas behind base_url, so
	// `loadgen plan` can scale. Unset (0) is taken as 1, and `loadgen sweep`
	// says so.
	Replicas int `yaml:"replicas"`
}

// Duration accepts a Go duration string ("2s", "150ms") or a number of seconds.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d column %d: expected a duration like 2s or a number of seconds, found a %s", n.Line, n.Column, kindName(n.Kind))
	}
	s := strings.TrimSpace(n.Value)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f > 1e9 || f < -1e9 {
			return fmt.Errorf("line %d column %d: expected a finite number of seconds, found %q", n.Line, n.Column, s)
		}
		*d = Duration(f * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d column %d: expected a duration like 2s or 150ms or a number of seconds, found %q", n.Line, n.Column, s)
	}
	*d = Duration(v)
	return nil
}

// Seconds returns d in seconds.
func (d Duration) Seconds() float64 { return time.Duration(d).Seconds() }

// Length is a token count: a fixed number or a distribution.
type Length struct {
	Fixed int
	Dist  *Distribution
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *Length) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		v, err := strconv.Atoi(strings.TrimSpace(n.Value))
		if err != nil {
			return fmt.Errorf("line %d column %d: expected a whole number of tokens or a distribution {type, mean, std_dev, min, max}, found %q", n.Line, n.Column, n.Value)
		}
		l.Fixed = v
		return nil
	case yaml.MappingNode:
		var d Distribution
		if err := decodeStrict(n, &d); err != nil {
			return err
		}
		l.Dist = &d
		return nil
	}
	return fmt.Errorf("line %d column %d: expected a number of tokens or a distribution, found a %s", n.Line, n.Column, kindName(n.Kind))
}

// Distribution is inference-perf's length distribution. Type is normal
// (default, clipped to [min,max]), lognormal, uniform, poisson or fixed.
type Distribution struct {
	Type     string   `yaml:"type"`
	Min      *int     `yaml:"min"`
	Max      *int     `yaml:"max"`
	Mean     *float64 `yaml:"mean"`
	StdDev   *float64 `yaml:"std_dev"`
	Variance *float64 `yaml:"variance"`
	// TotalCount is accepted for inference-perf compatibility and ignored.
	TotalCount *int `yaml:"total_count"`
}

// decodeStrict decodes a node, rejecting unknown fields.
func decodeStrict(n *yaml.Node, out any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		// line numbers of a re-marshalled node are relative; re-anchor them.
		return reanchor(err, n.Line-1)
	}
	return nil
}

var lineRe = regexp.MustCompile(`line (\d+)`)

func reanchor(err error, offset int) error {
	msg := lineRe.ReplaceAllStringFunc(err.Error(), func(s string) string {
		v, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
		return fmt.Sprintf("line %d", v+offset)
	})
	return errors.New(msg)
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

// FieldError is a config error naming the field, what was expected and what
// was found.
type FieldError struct {
	Field    string
	Expected string
	Found    string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("config field %s: expected %s, found %s", e.Field, e.Expected, e.Found)
}

// LoadConfigFile reads, decodes strictly, defaults and validates a config.
//
// Relative paths inside the file (data.trace.file) are resolved against the
// config file's directory, so a config works from any working directory.
func LoadConfigFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if t := c.Data.Trace; t != nil && t.File != "" && !filepath.IsAbs(t.File) {
		t.File = filepath.Join(filepath.Dir(path), t.File)
	}
	return c, nil
}

// DefaultRequestTimeout bounds one request when load.request_timeout is
// unset: long enough for any generation a benchmark asks for, short enough
// that a hung server ends the run with errors instead of never.
const DefaultRequestTimeout = 10 * time.Minute

// MaxConcurrency bounds concurrent clients and load.max_in_flight: each
// request in flight holds a goroutine, a connection and a file descriptor.
const MaxConcurrency = 100_000

var unknownFieldRe = regexp.MustCompile(`line (\d+): field (\S+) not found in type loadgen\.(\w+)`)

// ParseConfig decodes YAML strictly (unknown fields are errors), applies
// defaults and validates. The error names the offending field.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{Field: "(document)", Expected: "a YAML mapping with load, server and data", Found: "an empty file"}
		}
		var root yaml.Node
		_ = yaml.Unmarshal(b, &root)
		return nil, explainYAMLError(err, &root)
	}
	if err := c.Normalize(); err != nil {
		return nil, err
	}
	return &c, nil
}

var lineColRe = regexp.MustCompile(`line (\d+)(?: column (\d+))?: (.*)`)

// fieldAt names the field whose value sits at line:col (col 0 = the only
// scalar value on that line), or "".
func fieldAt(n *yaml.Node, line, col int, path string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if f := fieldAt(c, line, col, path); f != "" {
				return f
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if v.Line == line && (v.Column == col || col == 0 && v.Kind == yaml.ScalarNode) {
				return p
			}
			if f := fieldAt(v, line, col, p); f != "" {
				return f
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if c.Line == line && c.Column == col {
				return p
			}
			if f := fieldAt(c, line, col, p); f != "" {
				return f
			}
		}
	}
	return ""
}

func explainYAMLError(err error, root *yaml.Node) error {
	msg := err.Error()
	ms := unknownFieldRe.FindAllStringSubmatch(msg, -1)
	if len(ms) == 0 {
		var parts []string
		for _, line := range strings.Split(strings.TrimPrefix(msg, "yaml: unmarshal errors:\n"), "\n") {
			m := lineColRe.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				continue
			}
			l, _ := strconv.Atoi(m[1])
			c, _ := strconv.Atoi(m[2])
			if f := fieldAt(root, l, c, ""); f != "" {
				parts = append(parts, fmt.Sprintf("config field %s (line %d): %s", f, l, m[3]))
			}
		}
		if len(parts) > 0 {
			return errors.New(strings.Join(parts, "; "))
		}
		return fmt.Errorf("invalid YAML: %w", err)
	}
	var parts []string
	for _, m := range ms {
		section, allowed := sectionOf(m[3])
		parts = append(parts, fmt.Sprintf("line %s: unknown field %q in %s (expected one of: %s)", m[1], m[2], section, strings.Join(allowed, ", ")))
	}
	return errors.New(strings.Join(parts, "; "))
}

var sectionNames = map[string]any{
	"Config":             Config{},
	"LoadConfig":         LoadConfig{},
	"Stage":              Stage{},
	"APIConfig":          APIConfig{},
	"ServerConfig":       ServerConfig{},
	"DataConfig":         DataConfig{},
	"SharedPrefixConfig": SharedPrefixConfig{},
	"MultiTurnConfig":    MultiTurnConfig{},
	"TraceConfig":        TraceConfig{},
	"SLOConfig":          SLOConfig{},
	"ReportConfig":       ReportConfig{},
	"SweepConfig":        SweepConfig{},
	"RequestLifecycle":   RequestLifecycle{},
	"Distribution":       Distribution{},
}

var sectionPaths = map[string]string{
	"Config": "the top level", "LoadConfig": "load", "Stage": "load.stages[]", "APIConfig": "api",
	"ServerConfig": "server", "DataConfig": "data", "SharedPrefixConfig": "data.shared_prefix",
	"MultiTurnConfig": "data.multi_turn", "TraceConfig": "data.trace", "SLOConfig": "slo",
	"ReportConfig": "report", "SweepConfig": "sweep", "Distribution": "a distribution",
	"RequestLifecycle": "report.request_lifecycle",
}

func sectionOf(typeName string) (string, []string) {
	v, ok := sectionNames[typeName]
	if !ok {
		return typeName, nil
	}
	t := reflect.TypeOf(v)
	var names []string
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			names = append(names, tag)
		}
	}
	sort.Strings(names)
	return sectionPaths[typeName], names
}

// Streaming reports whether responses are streamed (default true).
func (a APIConfig) StreamingOn() bool { return a.Streaming == nil || *a.Streaming }

// Seed returns the configured seed (load.seed or load.base_seed), default 1.
func (l LoadConfig) SeedValue() int64 {
	if l.Seed != nil {
		return *l.Seed
	}
	if l.BaseSeed != nil {
		return *l.BaseSeed
	}
	return 1
}

// Normalize applies defaults, folds aliases and validates. It is idempotent.
func (c *Config) Normalize() error {
	c.Warnings = nil
	for _, x := range []struct {
		name string
		set  bool
	}{{"storage", c.Storage.Kind != 0}, {"metrics", c.Metrics.Kind != 0}, {"tokenizer", c.Tokenizer.Kind != 0},
		{"load.interval", c.Load.Interval != nil}, {"load.num_workers", c.Load.NumWorkers != nil},
		{"load.worker_max_concurrency", c.Load.WorkerMaxConcurrency != nil},
		{"load.worker_max_tcp_connections", c.Load.WorkerMaxTCPConnections != nil}} {
		if x.set {
			c.Warnings = append(c.Warnings, x.name+": inference-perf setting with no effect here (ignored)")
		}
	}
	l := &c.Load
	if l.Type == "" {
		l.Type = LoadConstant
	}
	switch l.Type {
	case LoadConstant, LoadPoisson, LoadConcurrent, LoadTraceReplay:
	default:
		return &FieldError{"load.type", "one of constant, poisson, concurrent, trace_replay", quote(l.Type)}
	}
	if l.Seed != nil && l.BaseSeed != nil && *l.Seed != *l.BaseSeed {
		return &FieldError{"load.seed", "seed or its alias base_seed, not both", "both set to different values"}
	}
	if l.Burstiness != nil {
		if l.Type != LoadPoisson {
			return &FieldError{"load.burstiness", "burstiness only with load.type poisson", "load.type " + l.Type}
		}
		if !(*l.Burstiness >= 0.01 && *l.Burstiness <= 1000) {
			return &FieldError{"load.burstiness", "a gamma shape in [0.01, 1000] (1 = Poisson, < 1 burstier)", fmtF(*l.Burstiness)}
		}
	}
	if l.RequestTimeout < 0 {
		return &FieldError{"load.request_timeout", "a duration >= 0", time.Duration(l.RequestTimeout).String()}
	}
	if l.RequestTimeout == 0 {
		l.RequestTimeout = Duration(DefaultRequestTimeout)
	}
	if l.MaxInFlight < 0 || l.MaxInFlight > MaxConcurrency {
		return &FieldError{"load.max_in_flight", fmt.Sprintf("a count in [0, %d] (0 = no cap)", MaxConcurrency), strconv.Itoa(l.MaxInFlight)}
	}
	if l.TimeScale == 0 {
		l.TimeScale = 1
	}
	if !(l.TimeScale > 0) || math.IsInf(l.TimeScale, 0) {
		return &FieldError{"load.time_scale", "a speed-up factor > 0", fmtF(l.TimeScale)}
	}
	if l.TimeScale != 1 && l.Type != LoadTraceReplay {
		return &FieldError{"load.time_scale", "time_scale only with load.type trace_replay", "load.type " + l.Type}
	}
	if len(l.Stages) == 0 && l.Type != LoadTraceReplay {
		return &FieldError{"load.stages", "at least one stage", "none"}
	}
	for i := range l.Stages {
		s := &l.Stages[i]
		f := fmt.Sprintf("load.stages[%d]", i)
		if s.ConcurrencyLevel != 0 {
			if s.Concurrency != 0 && s.Concurrency != s.ConcurrencyLevel {
				return &FieldError{f + ".concurrency", "concurrency or its alias concurrency_level, not both", "both set"}
			}
			s.Concurrency = s.ConcurrencyLevel
			s.ConcurrencyLevel = 0
		}
		switch l.Type {
		case LoadConstant, LoadPoisson:
			if !(s.Rate > 0) || math.IsInf(s.Rate, 0) {
				return &FieldError{f + ".rate", "a request rate > 0 (requests/s)", fmtF(s.Rate)}
			}
			if s.Duration <= 0 {
				return &FieldError{f + ".duration", "a duration > 0 (seconds or like 30s)", durS(s.Duration)}
			}
			if s.Concurrency != 0 || s.NumRequests != 0 {
				return &FieldError{f, "rate and duration only for load.type " + l.Type, "concurrency/num_requests set"}
			}
			if s.Rate*s.Duration.Seconds() > 1e9 {
				return &FieldError{f, "at most 1e9 requests in a stage", fmtF(s.Rate*s.Duration.Seconds()) + " (rate × duration)"}
			}
		case LoadConcurrent:
			if s.Concurrency <= 0 || s.Concurrency > MaxConcurrency {
				return &FieldError{f + ".concurrency", fmt.Sprintf("a number of concurrent clients in [1, %d] (each holds a connection and a file descriptor)", MaxConcurrency), strconv.Itoa(s.Concurrency)}
			}
			if s.NumRequests <= 0 {
				return &FieldError{f + ".num_requests", "a number of requests > 0", strconv.Itoa(s.NumRequests)}
			}
			if s.Rate != 0 || s.Duration != 0 {
				return &FieldError{f, "concurrency and num_requests only for load.type concurrent", "rate/duration set"}
			}
		case LoadTraceReplay:
			if s.Duration <= 0 {
				return &FieldError{f + ".duration", "a window of the trace > 0 seconds", durS(s.Duration)}
			}
			if s.Rate != 0 || s.Concurrency != 0 || s.NumRequests != 0 {
				return &FieldError{f, "only duration for load.type trace_replay (times come from the trace)", "rate/concurrency/num_requests set"}
			}
		}
	}

	a := &c.API
	if a.Type == "" {
		a.Type = APICompletion
	}
	if a.Type != APICompletion && a.Type != APIChat {
		return &FieldError{"api.type", "completion or chat", quote(a.Type)}
	}

	s := &c.Server
	if s.BaseURL == "" {
		return &FieldError{"server.base_url", "an http(s) URL like http://127.0.0.1:8000", "nothing"}
	}
	u, err := url.Parse(s.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &FieldError{"server.base_url", "an http(s) URL like http://127.0.0.1:8000", quote(s.BaseURL)}
	}
	if s.ModelName == "" {
		return &FieldError{"server.model_name", "the model name the server serves", "nothing"}
	}

	if err := c.Data.normalize(l.Type); err != nil {
		return err
	}

	o := &c.SLO
	for _, d := range []struct {
		name string
		v    Duration
	}{{"slo.ttft", o.TTFT}, {"slo.tpot", o.TPOT}, {"slo.itl", o.ITL}, {"slo.e2e", o.E2E}, {"slo.ntpot", o.NTPOT}} {
		if d.v < 0 {
			return &FieldError{d.name, "a duration >= 0", durS(d.v)}
		}
	}
	if o.Percentile != 0 && !(o.Percentile > 0 && o.Percentile < 100) {
		return &FieldError{"slo.percentile", "a percentile in (0, 100), e.g. 90", fmtF(o.Percentile)}
	}
	if o.Attainment == 0 {
		o.Attainment = 0.9
		if o.Percentile != 0 {
			o.Attainment = o.Percentile / 100
		}
	}
	if !(o.Attainment > 0 && o.Attainment <= 1) {
		return &FieldError{"slo.attainment", "a share in (0, 1]", fmtF(o.Attainment)}
	}

	r := &c.Report
	if rl := r.RequestLifecycle; rl != nil {
		if len(r.Percentiles) == 0 && len(rl.Percentiles) > 0 {
			r.Percentiles = rl.Percentiles
		}
		if len(r.Formats) == 0 && rl.PerRequest != nil && !*rl.PerRequest {
			r.Formats = []string{"json", "html"}
		}
		r.RequestLifecycle = nil
	}
	if len(r.Percentiles) == 0 {
		r.Percentiles = []float64{50, 90, 95, 99}
	}
	for i, p := range r.Percentiles {
		if !(p > 0 && p <= 100) {
			return &FieldError{fmt.Sprintf("report.percentiles[%d]", i), "a percentile in (0, 100]", fmtF(p)}
		}
	}
	if len(r.Formats) == 0 {
		r.Formats = []string{"json", "csv", "html"}
	}
	for i, f := range r.Formats {
		if f != "json" && f != "csv" && f != "html" {
			return &FieldError{fmt.Sprintf("report.formats[%d]", i), "json, csv or html", quote(f)}
		}
	}

	w := &c.Sweep
	if w.MinRate < 0 || math.IsInf(w.MinRate, 0) || math.IsNaN(w.MinRate) {
		return &FieldError{"sweep.min_rate", "a rate >= 0", fmtF(w.MinRate)}
	}
	if w.MaxRate < 0 || math.IsInf(w.MaxRate, 0) || math.IsNaN(w.MaxRate) {
		return &FieldError{"sweep.max_rate", "a rate >= 0", fmtF(w.MaxRate)}
	}
	if w.MaxRate > 0 && w.MinRate > w.MaxRate {
		return &FieldError{"sweep.min_rate", "min_rate <= max_rate (" + fmtF(w.MaxRate) + ")", fmtF(w.MinRate)}
	}
	if w.StageDuration < 0 {
		return &FieldError{"sweep.stage_duration", "a duration > 0", durS(w.StageDuration)}
	}
	if w.Precision < 0 || w.Precision >= 1 {
		return &FieldError{"sweep.precision", "a relative precision in (0, 1)", fmtF(w.Precision)}
	}
	if w.MaxProbes < 0 {
		return &FieldError{"sweep.max_probes", "a count >= 0", strconv.Itoa(w.MaxProbes)}
	}
	if w.Replicas < 0 {
		return &FieldError{"sweep.replicas", "a replica count >= 1", strconv.Itoa(w.Replicas)}
	}
	// Replicas 0 stays 0 (unset: the sweep records 1 and says it assumed it).
	return nil
}

func (d *DataConfig) normalize(loadType string) error {
	if d.Type == "" {
		d.Type = DataRandom
	}
	blocks := map[string]bool{
		DataSharedPrefix: d.SharedPrefix != nil,
		DataMultiTurn:    d.MultiTurn != nil,
		DataTrace:        d.Trace != nil,
	}
	for name, set := range blocks {
		if set && d.Type != name {
			return &FieldError{"data." + name, "the " + name + " block only with data.type " + name, "data.type " + d.Type}
		}
	}
	if d.Type != DataRandom && (d.InputDistribution != nil || d.OutputDistribution != nil) {
		return &FieldError{"data.input_distribution", "input/output_distribution only with data.type random", "data.type " + d.Type}
	}
	if loadType == LoadTraceReplay && d.Type != DataTrace {
		return &FieldError{"data.type", "trace (load.type trace_replay takes its timestamps from the trace)", quote(d.Type)}
	}
	switch d.Type {
	case DataRandom:
		if d.InputDistribution == nil {
			d.InputDistribution = &Distribution{Mean: ptr(512.0), StdDev: ptr(200.0), Min: ptr(10), Max: ptr(1024)}
		}
		if d.OutputDistribution == nil {
			d.OutputDistribution = &Distribution{Mean: ptr(512.0), StdDev: ptr(200.0), Min: ptr(10), Max: ptr(1024)}
		}
		if err := d.InputDistribution.normalize("data.input_distribution"); err != nil {
			return err
		}
		return d.OutputDistribution.normalize("data.output_distribution")
	case DataSharedPrefix:
		sp := d.SharedPrefix
		if sp == nil {
			return &FieldError{"data.shared_prefix", "a shared_prefix block {num_groups, num_prompts_per_group, system_prompt_len, question_len, output_len}", "nothing"}
		}
		if err := alias(&sp.NumGroups, &sp.NumUniqueSystemPrompts, "data.shared_prefix.num_groups", "num_unique_system_prompts", 10); err != nil {
			return err
		}
		if err := alias(&sp.NumPromptsPerGroup, &sp.NumUsersPerSystemPrompt, "data.shared_prefix.num_prompts_per_group", "num_users_per_system_prompt", 10); err != nil {
			return err
		}
		if sp.QuestionDistribution != nil {
			if sp.QuestionLen != nil && sp.QuestionLen.Dist != nil {
				return &FieldError{"data.shared_prefix.question_distribution", "either question_len as a distribution or question_distribution, not both", "both"}
			}
			sp.QuestionLen = &Length{Dist: sp.QuestionDistribution}
			sp.QuestionDistribution = nil
		}
		if sp.OutputDistribution != nil {
			if sp.OutputLen != nil && sp.OutputLen.Dist != nil {
				return &FieldError{"data.shared_prefix.output_distribution", "either output_len as a distribution or output_distribution, not both", "both"}
			}
			sp.OutputLen = &Length{Dist: sp.OutputDistribution}
			sp.OutputDistribution = nil
		}
		for _, x := range []struct {
			name string
			l    **Length
			def  int
		}{{"system_prompt_len", &sp.SystemPromptLen, 100}, {"question_len", &sp.QuestionLen, 50}, {"output_len", &sp.OutputLen, 50}} {
			if *x.l == nil {
				*x.l = &Length{Fixed: x.def}
			}
			if err := (*x.l).normalize("data.shared_prefix."+x.name, x.name != "system_prompt_len"); err != nil {
				return err
			}
		}
		if w := sp.SystemPromptLen.maxLen(); w > corpusWords && float64(w)*float64(sp.NumGroups) > maxPrefixWords {
			return &FieldError{"data.shared_prefix.system_prompt_len", fmt.Sprintf("num_groups × system_prompt_len <= %d tokens (the prompts are held in memory)", int(maxPrefixWords)),
				fmt.Sprintf("%d × %d", sp.NumGroups, w)}
		}
	case DataMultiTurn:
		mt := d.MultiTurn
		if mt == nil {
			return &FieldError{"data.multi_turn", "a multi_turn block {num_conversations, turns, system_prompt_len, input_len, output_len}", "nothing"}
		}
		if mt.NumConversations == 0 {
			mt.NumConversations = 10
		}
		if mt.NumConversations < 0 || mt.NumConversations > 1_000_000 {
			return &FieldError{"data.multi_turn.num_conversations", "a count in [1, 1000000]", strconv.Itoa(mt.NumConversations)}
		}
		for _, x := range []struct {
			name     string
			l        **Length
			def      int
			positive bool
		}{{"turns", &mt.Turns, 5, true}, {"system_prompt_len", &mt.SystemPromptLen, 0, false}, {"input_len", &mt.InputLen, 100, true}, {"output_len", &mt.OutputLen, 100, true}} {
			if *x.l == nil {
				*x.l = &Length{Fixed: x.def}
			}
			if err := (*x.l).normalize("data.multi_turn."+x.name, x.positive); err != nil {
				return err
			}
		}
		if t := mt.Turns.maxLen(); t > 10000 {
			return &FieldError{"data.multi_turn.turns", "at most 10000 turns per conversation", strconv.Itoa(t)}
		}
	case DataTrace:
		if d.Trace == nil || d.Trace.File == "" {
			return &FieldError{"data.trace.file", "a JSONL trace file path", "nothing"}
		}
	default:
		return &FieldError{"data.type", "one of random, shared_prefix, multi_turn, trace", quote(d.Type)}
	}
	return nil
}

func alias(primary, alt *int, field, altName string, def int) error {
	if *alt != 0 {
		if *primary != 0 && *primary != *alt {
			return &FieldError{field, "the field or its alias " + altName + ", not both", "both set"}
		}
		*primary = *alt
		*alt = 0
	}
	if *primary == 0 {
		*primary = def
	}
	if *primary < 0 || *primary > 1_000_000 {
		return &FieldError{field, "a count in [1, 1000000]", strconv.Itoa(*primary)}
	}
	return nil
}

const maxTokens = 10_000_000

// maxPrefixWords bounds the shared-prefix text held in memory.
const maxPrefixWords = 50_000_000

// maxLen is the largest value a normalized Length can take.
func (l *Length) maxLen() int {
	if l.Dist != nil {
		return *l.Dist.Max
	}
	return l.Fixed
}

func (l *Length) normalize(field string, positive bool) error {
	if l.Dist != nil {
		return l.Dist.normalize(field)
	}
	lo := 0
	if positive {
		lo = 1
	}
	if l.Fixed < lo || l.Fixed > maxTokens {
		return &FieldError{field, fmt.Sprintf("a token count in [%d, %d] or a distribution", lo, maxTokens), strconv.Itoa(l.Fixed)}
	}
	return nil
}

func (d *Distribution) normalize(field string) error {
	if d.Type == "" {
		d.Type = "normal"
	}
	switch d.Type {
	case "normal", "lognormal", "uniform", "poisson", "fixed":
	default:
		return &FieldError{field + ".type", "one of normal, lognormal, uniform, poisson, fixed", quote(d.Type)}
	}
	if d.Variance != nil {
		if d.StdDev != nil {
			return &FieldError{field + ".variance", "std_dev or variance, not both", "both"}
		}
		if *d.Variance < 0 {
			return &FieldError{field + ".variance", "a variance >= 0", fmtF(*d.Variance)}
		}
		d.StdDev = ptr(math.Sqrt(*d.Variance))
		d.Variance = nil
	}
	if d.Mean == nil {
		switch {
		case d.Type == "uniform" && d.Min != nil && d.Max != nil:
			d.Mean = ptr(float64(*d.Min+*d.Max) / 2)
		default:
			return &FieldError{field + ".mean", "a mean token count", "nothing"}
		}
	}
	if d.StdDev == nil {
		d.StdDev = ptr(0.0)
	}
	if math.IsNaN(*d.Mean) || *d.Mean < 0 || *d.Mean > maxTokens {
		return &FieldError{field + ".mean", fmt.Sprintf("a mean in [0, %d]", maxTokens), fmtF(*d.Mean)}
	}
	if math.IsNaN(*d.StdDev) || *d.StdDev < 0 || *d.StdDev > maxTokens {
		return &FieldError{field + ".std_dev", "a standard deviation >= 0", fmtF(*d.StdDev)}
	}
	if d.Min == nil {
		d.Min = ptr(1)
	}
	if d.Max == nil {
		d.Max = ptr(int(math.Ceil(*d.Mean + 5**d.StdDev)))
		if *d.Max < *d.Min {
			d.Max = ptr(*d.Min)
		}
	}
	if *d.Min < 0 {
		return &FieldError{field + ".min", "a token count >= 0", strconv.Itoa(*d.Min)}
	}
	if *d.Max > maxTokens {
		return &FieldError{field + ".max", fmt.Sprintf("a token count <= %d", maxTokens), strconv.Itoa(*d.Max)}
	}
	if *d.Min > *d.Max {
		return &FieldError{field + ".min", fmt.Sprintf("min <= max (%d)", *d.Max), strconv.Itoa(*d.Min)}
	}
	if d.Type == "lognormal" && *d.Mean <= 0 {
		return &FieldError{field + ".mean", "a mean > 0 for lognormal", fmtF(*d.Mean)}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func quote(s string) string {
	if s == "" {
		return "nothing"
	}
	return strconv.Quote(s)
}

func fmtF(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func durS(d Duration) string { return time.Duration(d).String() }
