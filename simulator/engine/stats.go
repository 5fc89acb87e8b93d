package engine

import (
	"sort"
	"time"
)

// Histogram is a fixed-bucket histogram (Prometheus semantics: bucket i
// counts observations ≤ Bounds[i]; the last count is the +Inf overflow).
type Histogram struct {
	Bounds []float64
	Counts []uint64 // len(Bounds)+1, not cumulative
	Sum    float64
	Count  uint64
}

// NewHistogram returns an empty histogram over bounds (ascending).
func NewHistogram(bounds []float64) *Histogram {
	return &Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds)+1)}
}

// Observe adds one value.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.Bounds, v)
	h.Counts[i]++
	h.Sum += v
	h.Count++
}

func (h *Histogram) clone() Histogram {
	return Histogram{Bounds: h.Bounds, Counts: append([]uint64(nil), h.Counts...), Sum: h.Sum, Count: h.Count}
}

// Bucket boundaries of vLLM V1's histograms (vllm/v1/metrics/loggers.py).
var (
	TTFTBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}
	ITLBuckets  = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}
	// RequestLatencyBuckets serve e2e latency and queue time.
	RequestLatencyBuckets = []float64{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}
)

// TokenBuckets is vLLM's 1-2-5 series up to maxLen, used for request token counts.
func TokenBuckets(maxLen int) []float64 {
	var out []float64
	for m := 1.0; ; m *= 10 {
		for _, f := range []float64{1, 2, 5} {
			if v := f * m; v <= float64(maxLen) {
				out = append(out, v)
			} else {
				return out
			}
		}
	}
}

func newCounters(maxModelLen int) counters {
	tb := TokenBuckets(maxModelLen)
	return counters{
		ttft: NewHistogram(TTFTBuckets), itl: NewHistogram(ITLBuckets),
		e2e: NewHistogram(RequestLatencyBuckets), queue: NewHistogram(RequestLatencyBuckets),
		promptLen: NewHistogram(tb), genLen: NewHistogram(tb),
	}
}

// Stats is a snapshot of everything the simulator's /metrics and GPU
// telemetry publish.
type Stats struct {
	Running, Waiting         int
	UsedBlocks, NumGPUBlocks int
	BlockSize                int
	KVUsage                  float64 // 0..1, vLLM's definition: 1 − free/total
	PrefixQueries            uint64  // tokens looked up in the prefix cache
	PrefixHits               uint64  // tokens found there
	Preemptions              uint64
	PromptTokens             uint64
	GenerationTokens         uint64
	Success                  map[string]uint64 // by finish reason: stop, length, abort
	TTFT, ITL, E2E, Queue    Histogram
	PromptLen, GenerationLen Histogram
	RunningLoRAs             []string
	WaitingLoRAs             []string
	MaxLoRAs                 int
	// Busy is the cumulative modelled GPU time; MemBusy the part of it in
	// memory-bound steps.
	Busy, MemBusy time.Duration
	// Lag is the cumulative time a real-time driver fell behind the model by
	// more than MaxLag and re-anchored the timeline (0 in virtual time).
	Lag time.Duration
	// WeightBytes and KVBlockBytes size the simulated VRAM.
	WeightBytes, ReserveBytes, KVBlockBytes float64
}

// Stats returns a snapshot.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	used := e.kv.used()
	return Stats{
		Running: len(e.running), Waiting: len(e.waiting),
		UsedBlocks: used, NumGPUBlocks: e.numBlocks, BlockSize: e.cfg.BlockSize,
		KVUsage:       float64(used) / float64(e.numBlocks),
		PrefixQueries: e.st.prefixQueries, PrefixHits: e.st.prefixHits,
		Preemptions:  e.st.preemptions,
		PromptTokens: e.st.promptTokens, GenerationTokens: e.st.generationTokens,
		Success: map[string]uint64{
			"stop": e.st.success[FinishStop], "length": e.st.success[FinishLength], "abort": e.st.success[FinishAbort],
		},
		TTFT: e.st.ttft.clone(), ITL: e.st.itl.clone(), E2E: e.st.e2e.clone(), Queue: e.st.queue.clone(),
		PromptLen: e.st.promptLen.clone(), GenerationLen: e.st.genLen.clone(),
		RunningLoRAs: sortedKeys(e.loraActive), WaitingLoRAs: distinctLoRAs(e.waiting),
		MaxLoRAs: e.cfg.MaxLoRAs,
		Busy:     e.st.busy, MemBusy: e.st.memBusy, Lag: e.st.lag,
		WeightBytes:  e.weightBytes,
		ReserveBytes: e.cfg.Model.ReserveGB * 1e9 * float64(e.cfg.TensorParallel),
		KVBlockBytes: e.kvPerToken * float64(e.cfg.BlockSize),
	}
}

func distinctLoRAs(list []*Request) []string {
	var out []string
	for _, r := range list {
		if r.lora == "" {
			continue
		}
		dup := false
		for _, s := range out {
			if s == r.lora {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, r.lora)
		}
	}
	return out
}
