package endpoints

import (
	"math"
	"strconv"
	"strings"

	"github.com/fastepp/fastepp/scheduler"
)

// EngineLabel is the pod label that names a model server's engine.
const EngineLabel = "inference.networking.k8s.io/engine-type"

// family is one metric family an engine reports.
type family uint8

const (
	famNone    family = iota
	famWaiting        // queued requests (summed over series)
	famRunning        // running requests (summed)
	famKV             // KV-cache usage 0..1 (max)
	famKVOld          // older KV-cache usage name, used when famKV is absent (max)
	famLoRA           // LoRA info: labels, value = timestamp (newest series wins)
	famCache          // cache config: labels
	famCount
)

// engine says which metric names and labels one engine exposes.
type engine struct {
	name  string
	names [famCount]string // "" when the engine has no such family
	// cache config labels
	blockSizeLabel, numBlocksLabel string
}

var engines = []*engine{
	{
		name: "vllm",
		names: [famCount]string{
			famWaiting: "vllm:num_requests_waiting",
			famRunning: "vllm:num_requests_running",
			famKV:      "vllm:kv_cache_usage_perc",
			famKVOld:   "vllm:gpu_cache_usage_perc",
			famLoRA:    "vllm:lora_requests_info",
			famCache:   "vllm:cache_config_info",
		},
		blockSizeLabel: "block_size",
		numBlocksLabel: "num_gpu_blocks",
	},
	{
		name: "sglang",
		names: [famCount]string{
			famWaiting: "sglang:num_queue_reqs",
			famRunning: "sglang:num_running_reqs",
			famKV:      "sglang:token_usage",
			famCache:   "sglang:cache_config_info",
		},
		blockSizeLabel: "page_size",
		numBlocksLabel: "num_pages",
	},
	{
		name: "trtllm",
		names: [famCount]string{
			famWaiting: "trtllm_num_requests_waiting",
			famRunning: "trtllm_num_requests_running",
			famKV:      "trtllm_kv_cache_utilization",
		},
	},
}

// engineAliases are other accepted names of an engine: {alias, engine name}.
var engineAliases = [][2]string{{"trtllm-serve", "trtllm"}}

// EngineNames lists the accepted engine names (values of the engine label and
// of defaultEngine), aliases last.
func EngineNames() []string {
	var out []string
	for _, e := range engines {
		out = append(out, e.name)
	}
	for _, a := range engineAliases {
		out = append(out, a[0])
	}
	return out
}

// engineNamed returns the engine called v (case-insensitive), or def when v
// is empty; what names the label or parameter for the error.
func engineNamed(v, def, what string) (*engine, error) {
	if v == "" {
		v = def
	}
	name := strings.ToLower(v)
	for _, a := range engineAliases {
		if a[0] == name {
			name = a[1]
		}
	}
	for _, e := range engines {
		if e.name == name {
			return e, nil
		}
	}
	return nil, &scheduler.InputError{
		What:     what,
		Expected: "one of " + strings.Join(EngineNames(), ", "),
		Found:    strconv.Quote(v),
	}
}

// engineFor returns the engine named by labels[EngineLabel] (vllm when
// absent): the default data-layer configuration.
func engineFor(labels map[string]string) (*engine, error) {
	return DefaultScrapeConfig().engineFor(labels)
}

// lookup returns the family of a metric name for e (famNone if unwanted).
func (e *engine) lookup(name []byte) family {
	for f := famWaiting; f < famCount; f++ {
		if n := e.names[f]; len(n) == len(name) && n == string(name) {
			return f
		}
	}
	return famNone
}

// label is one label pair of a sample; slices point into parser scratch space.
type label struct{ name, value []byte }

func findLabel(ls []label, name string) ([]byte, bool) {
	for i := len(ls) - 1; i >= 0; i-- {
		if string(ls[i].name) == name {
			return ls[i].value, true
		}
	}
	return nil, false
}

// accumulator combines the samples of one page into scheduler.Metrics. It is
// reused across scrapes of one endpoint (reset before each page).
type accumulator struct {
	e    *engine
	seen [famCount]bool
	sum  [famCount]float64 // waiting, running: sums; kv: max

	loraTS                    float64
	loraRunning, loraWaiting  []byte // copies, reused
	loraMax                   []byte
	blockSize, numBlocks      int
	prevRunStr, prevWaitStr   string
	prevRunList, prevWaitList []string
}

func (a *accumulator) reset(e *engine) {
	a.e = e
	a.seen = [famCount]bool{}
	a.sum = [famCount]float64{}
	a.loraTS = math.Inf(-1)
	a.loraRunning = a.loraRunning[:0]
	a.loraWaiting = a.loraWaiting[:0]
	a.loraMax = a.loraMax[:0]
	a.blockSize, a.numBlocks = 0, 0
}

// add records one sample of family f with a plain (gauge, counter or
// untyped) value.
func (a *accumulator) add(f family, v float64, ls []label) {
	if math.IsNaN(v) {
		return // an engine that has not computed a value yet: ignore the series
	}
	switch f {
	case famWaiting, famRunning:
		a.sum[f] += v
		a.seen[f] = true
	case famKV, famKVOld:
		if !a.seen[f] || v > a.sum[f] {
			a.sum[f] = v
		}
		a.seen[f] = true
	case famLoRA:
		if a.seen[f] && !(v > a.loraTS) {
			return
		}
		a.seen[f] = true
		a.loraTS = v
		r, _ := findLabel(ls, "running_lora_adapters")
		w, _ := findLabel(ls, "waiting_lora_adapters")
		m, _ := findLabel(ls, "max_lora")
		a.loraRunning = append(a.loraRunning[:0], r...)
		a.loraWaiting = append(a.loraWaiting[:0], w...)
		a.loraMax = append(a.loraMax[:0], m...)
	case famCache:
		a.seen[f] = true
		if b, ok := findLabel(ls, a.e.blockSizeLabel); ok {
			if n, ok := atoi(b); ok && n > a.blockSize {
				a.blockSize = n
			}
		}
		if b, ok := findLabel(ls, a.e.numBlocksLabel); ok {
			if n, ok := atoi(b); ok && n > a.numBlocks {
				a.numBlocks = n
			}
		}
	}
}

// atoi parses a non-negative decimal integer (also "16.0" as vLLM may print).
func atoi(b []byte) (int, bool) {
	s := strings.TrimSpace(string(b))
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, true
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f < math.MaxInt32 && f == math.Trunc(f) {
		return int(f), true
	}
	return 0, false
}

// missing reports the core families (waiting, running, KV usage) the page
// lacked, as metric names.
func (a *accumulator) missing() []string {
	var out []string
	for _, f := range [...]family{famWaiting, famRunning, famKV} {
		if a.seen[f] || (f == famKV && a.seen[famKVOld]) || a.e.names[f] == "" {
			continue
		}
		out = append(out, a.e.names[f])
	}
	return out
}

// foundCore reports whether the page had at least one core family.
func (a *accumulator) foundCore() bool {
	return a.seen[famWaiting] || a.seen[famRunning] || a.seen[famKV] || a.seen[famKVOld]
}

// fill writes the combined values into m (UpdatedAt and InflightAtScrape are
// left to the caller). Adapter lists are reused from the previous page when
// unchanged, so a steady server costs no allocation here.
func (a *accumulator) fill(m *scheduler.Metrics) {
	m.Waiting = toCount(a.sum[famWaiting])
	m.Running = toCount(a.sum[famRunning])
	kv := a.sum[famKV]
	if !a.seen[famKV] {
		kv = a.sum[famKVOld]
	}
	m.KVUsage = clampUsage(kv)
	m.ActiveAdapters, m.WaitingAdapters, m.MaxLoRA = nil, nil, 0
	if a.seen[famLoRA] {
		if string(a.loraRunning) != a.prevRunStr {
			a.prevRunStr = string(a.loraRunning)
			a.prevRunList = splitList(a.prevRunStr)
		}
		if string(a.loraWaiting) != a.prevWaitStr {
			a.prevWaitStr = string(a.loraWaiting)
			a.prevWaitList = splitList(a.prevWaitStr)
		}
		m.ActiveAdapters, m.WaitingAdapters = a.prevRunList, a.prevWaitList
		if n, ok := atoi(a.loraMax); ok {
			m.MaxLoRA = n
		}
	}
	m.BlockSize, m.NumGPUBlocks = a.blockSize, a.numBlocks
}

// splitList splits a comma-separated adapter list, dropping blanks.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func toCount(v float64) int {
	switch {
	case !(v > 0): // also NaN
		return 0
	case v >= math.MaxInt32:
		return math.MaxInt32
	}
	return int(v + 0.5)
}

func clampUsage(v float64) float64 {
	switch {
	case !(v > 0):
		return 0
	case v > 1:
		return 1
	}
	return v
}
