// Package engine is the simulator's model of one vLLM V1 engine: continuous
// batching with a per-step token budget and sequence cap, chunked prefill, a
// FCFS waiting queue, a paged KV cache with prefix caching (LRU reuse of free
// blocks), preemption by recompute, LoRA adapters with a loaded cap, and a
// roofline step-time model driven by GPU and model profiles.
//
// The engine is a pure state machine over engine time (a time.Duration since
// the engine's epoch). Two drivers supply the clock: Runner advances it in real
// time for HTTP servers, Simulate advances it in virtual time for fast,
// deterministic runs. It knows nothing about HTTP or Prometheus.
package engine

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// Config sizes one engine. Zero values take vLLM's defaults where vLLM has one.
type Config struct {
	GPU   GPU
	Model Model
	// TensorParallel is the number of GPUs the model is sharded over (default 1):
	// compute, bandwidth and memory scale with it, and every layer adds two
	// ring all-reduces of the step's activations over the GPU's interconnect.
	TensorParallel int
	// MaxNumSeqs caps the running batch (vLLM --max-num-seqs; default as
	// vLLM's OpenAI server picks it for the GPU, see GPU.BatchDefaults).
	MaxNumSeqs int
	// MaxNumBatchedTokens is the per-step token budget (vLLM
	// --max-num-batched-tokens; default as vLLM's OpenAI server picks it).
	MaxNumBatchedTokens int
	// BlockSize is the KV block size in tokens (default 16).
	BlockSize int
	// GPUMemoryUtilization is the share of HBM vLLM may use (default 0.9).
	GPUMemoryUtilization float64
	// NumGPUBlocks overrides the KV capacity computed from memory when > 0.
	NumGPUBlocks int
	// MaxModelLen caps prompt + output tokens (default: the model's, capped by KV capacity).
	MaxModelLen int
	// DisablePrefixCaching turns the prefix cache off.
	DisablePrefixCaching bool
	// MaxLoRAs is how many distinct adapters may run in one batch (vLLM --max-loras, default 1).
	MaxLoRAs int
	// LoRALoadTime is added to a step that brings an adapter not resident on the GPU.
	LoRALoadTime time.Duration
	// MaxWaiting bounds the waiting queue; 0 means unbounded (vLLM's behaviour).
	MaxWaiting int
}

// FinishReason says why a request ended.
type FinishReason uint8

// Finish reasons, as vLLM labels them in request_success_total.
const (
	NotFinished FinishReason = iota
	FinishStop
	FinishLength
	FinishAbort
)

func (f FinishReason) String() string {
	switch f {
	case FinishStop:
		return "stop"
	case FinishLength:
		return "length"
	case FinishAbort:
		return "abort"
	}
	return ""
}

// maxBlocks bounds the KV cache so a bad setting cannot exhaust host memory
// (16M blocks is 268M tokens at block size 16).
const maxBlocks = 1 << 24

// Errors returned by Submit.
var (
	ErrQueueFull       = errors.New("waiting queue is full")
	ErrContextTooLong  = errors.New("prompt plus max tokens exceeds the model's context length")
	ErrStopped         = errors.New("engine is stopped")
	ErrBadRequestShape = errors.New("request needs at least one prompt token and max tokens ≥ 1")
)

type reqState uint8

const (
	stateNew reqState = iota
	stateWaiting
	stateRunning
	stateFinished
)

// Request is one generation request. Create it with NewRequest; after Submit
// only the engine touches it, and callers read it through Engine.Progress.
type Request struct {
	// Arrival is set by Submit (real time) or taken from the Arrival (virtual time).
	Arrival time.Duration
	// Ready, when not nil, receives a non-blocking signal whenever the request
	// finishes, and also for every token when NotifyTokens is set (streaming).
	Ready chan struct{}
	// NotifyTokens asks for a Ready signal on every token, not only at the end.
	NotifyTokens bool

	maxTokens int
	stopAtMax bool
	lora      string
	seed      uint64

	tokens        []uint32 // prompt, then generated tokens
	promptLen     int
	hashes        []uint64 // chained hashes of full blocks of tokens
	blocks        []int32
	numComputed   int
	numRegistered int
	cachedTokens  int
	output        int
	tokenTimes    []time.Duration
	lastTokenAt   time.Duration
	state         reqState
	scheduled     bool
	reason        FinishReason
	finishedAt    time.Duration
}

// NewRequest builds a request for prompt token IDs. maxTokens is the number of
// tokens to generate; stopAtMax reports the end as "stop" (the model ended on
// its own) rather than "length". seed picks the generated text; lora names an
// adapter ("" for the base model).
func NewRequest(prompt []uint32, maxTokens int, stopAtMax bool, lora string, seed uint64) *Request {
	toks := make([]uint32, len(prompt), len(prompt)+min(max(maxTokens, 0), 1<<12)) // grows past 4k outputs
	copy(toks, prompt)
	return &Request{tokens: toks, promptLen: len(prompt), maxTokens: maxTokens, stopAtMax: stopAtMax, lora: lora, seed: seed}
}

// PromptTokens is the prompt length in tokens.
func (r *Request) PromptTokens() int { return r.promptLen }

// Progress is a consistent view of one request.
type Progress struct {
	Output       int // tokens generated so far
	CachedTokens int // prompt tokens served from the prefix cache
	Done         bool
	Reason       FinishReason
	FinishedAt   time.Duration
}

// Engine is one simulated vLLM engine. All methods are safe for concurrent use.
type Engine struct {
	mu  sync.Mutex
	cfg Config

	numBlocks   int
	maxModelLen int
	flops       float64 // aggregate FLOP/s × mfu
	bw          float64 // aggregate B/s × mbu
	weightBytes float64
	kvPerToken  float64
	attnPerPair float64 // attention FLOPs of one (query, context token) pair
	arBytes     float64 // activation bytes one all-reduce sums per token
	arPerByte   float64 // seconds per byte of one all-reduce (ring: 2(n−1)/n / link B/s)
	arFixed     float64 // seconds per all-reduce independent of size (ring: 2(n−1) hops)
	arPerStep   float64 // all-reduces per step (two per layer under tensor parallelism)
	perSeq      float64 // seconds each running sequence adds to a step
	overhead    time.Duration
	latencyMul  float64
	maxLag      time.Duration // real time only: re-anchor the timeline when the driver is this late

	kv         *kvCache
	waiting    []*Request
	running    []*Request
	step       Step
	stepActive bool
	lastEnd    time.Duration
	stopped    bool
	loraSlots  []string       // resident adapters, least recently used first
	loraActive map[string]int // running requests per adapter

	st counters
}

// Step is one engine iteration: the requests it ran and how many tokens each.
type Step struct {
	Start, End time.Duration
	Tokens     int   // tokens computed in the step
	Context    int   // context tokens read by attention
	Pairs      int64 // (query, context token) pairs attention computes
	reqs       []*Request
	counts     []int
}

// Size is the number of requests in the step.
func (s *Step) Size() int { return len(s.reqs) }

type counters struct {
	prefixQueries, prefixHits, preemptions uint64
	promptTokens, generationTokens         uint64
	success                                [4]uint64
	busy, memBusy, lag                     time.Duration
	ttft, itl, e2e, queue                  *Histogram
	promptLen, genLen                      *Histogram
}

// New validates cfg, fills in defaults and sizes the KV cache.
func New(cfg Config) (*Engine, error) {
	if err := cfg.GPU.validate(); err != nil {
		return nil, fmt.Errorf("gpu profile: %w", err)
	}
	if err := cfg.Model.validate(); err != nil {
		return nil, fmt.Errorf("model profile: %w", err)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	seqs, toks := cfg.GPU.BatchDefaults(false)
	def(&cfg.TensorParallel, 1)
	def(&cfg.MaxNumSeqs, seqs)
	def(&cfg.MaxNumBatchedTokens, toks)
	def(&cfg.BlockSize, 16)
	def(&cfg.MaxLoRAs, 1)
	if cfg.GPUMemoryUtilization == 0 {
		cfg.GPUMemoryUtilization = 0.9
	}
	ints := []struct {
		name string
		v    int
		max  int
	}{
		{"tensor parallel size", cfg.TensorParallel, 64}, {"max-num-seqs", cfg.MaxNumSeqs, 1 << 16},
		{"max-num-batched-tokens", cfg.MaxNumBatchedTokens, 1 << 22}, {"block-size", cfg.BlockSize, 1024},
		{"max-loras", cfg.MaxLoRAs, 1024},
	}
	for _, c := range ints {
		if c.v < 1 || c.v > c.max {
			return nil, fmt.Errorf("%s: expected 1..%d, found %d", c.name, c.max, c.v)
		}
	}
	if cfg.NumGPUBlocks < 0 || cfg.MaxModelLen < 0 || cfg.MaxWaiting < 0 || cfg.LoRALoadTime < 0 {
		return nil, fmt.Errorf("num-gpu-blocks %d, max-model-len %d, max-waiting %d, lora load time %v: expected none negative",
			cfg.NumGPUBlocks, cfg.MaxModelLen, cfg.MaxWaiting, cfg.LoRALoadTime)
	}
	if !(cfg.GPUMemoryUtilization > 0 && cfg.GPUMemoryUtilization <= 1) {
		return nil, fmt.Errorf("gpu-memory-utilization: expected a fraction in (0, 1], found %g", cfg.GPUMemoryUtilization)
	}
	tp := float64(cfg.TensorParallel)
	mfu, mbu := cfg.GPU.Efficiency(cfg.Model)
	e := &Engine{
		cfg:         cfg,
		flops:       cfg.GPU.PeakTFLOPS(cfg.Model) * 1e12 * mfu * tp,
		bw:          cfg.GPU.HBMTBps * 1e12 * mbu * tp,
		weightBytes: cfg.Model.WeightBytes(),
		kvPerToken:  cfg.Model.KVBytesPerToken(),
		attnPerPair: cfg.Model.AttentionFLOPsPerPair(),
		perSeq:      (cfg.GPU.PerSeqUS + cfg.GPU.PerSeqLayerUS*float64(cfg.Model.Layers)) * 1e-6,
		overhead:    cfg.GPU.Overhead(),
		latencyMul:  1,
	}
	if n := cfg.TensorParallel; n > 1 {
		if !(cfg.GPU.InterconnectGBps > 0) {
			return nil, fmt.Errorf("tensor parallel size %d: the GPU profile needs interconnect_gbps > 0, found %g", n, cfg.GPU.InterconnectGBps)
		}
		ring := 2 * float64(n-1)
		e.arBytes = float64(cfg.Model.HiddenSize) * 2 // BF16 activations, also for FP8 weights
		e.arPerByte = ring / float64(n) / (cfg.GPU.InterconnectGBps * 1e9)
		e.arFixed = ring * cfg.GPU.AllReduceHopUS * 1e-6
		e.arPerStep = 2 * float64(cfg.Model.Layers)
	}
	e.numBlocks = cfg.NumGPUBlocks
	if e.numBlocks == 0 {
		budget := cfg.GPU.HBMGB*1e9*tp*cfg.GPUMemoryUtilization - e.weightBytes - cfg.Model.ReserveGB*1e9*tp
		e.numBlocks = int(budget / (e.kvPerToken * float64(cfg.BlockSize)))
		if e.numBlocks < 1 {
			return nil, fmt.Errorf("model does not fit: %.1f GB of weights + %.1f GB reserve exceed %.0f%% of %d × %.0f GB HBM; use a larger GPU or tensor parallelism",
				e.weightBytes/1e9, cfg.Model.ReserveGB*tp, cfg.GPUMemoryUtilization*100, cfg.TensorParallel, cfg.GPU.HBMGB)
		}
	}
	e.maxModelLen = cfg.Model.MaxModelLen
	if cfg.MaxModelLen > 0 {
		e.maxModelLen = cfg.MaxModelLen
	}
	if e.numBlocks > maxBlocks {
		return nil, fmt.Errorf("KV cache of %d blocks: expected at most %d (lower num-gpu-blocks or raise block-size)", e.numBlocks, maxBlocks)
	}
	if kvCap := e.numBlocks * cfg.BlockSize; e.maxModelLen > kvCap {
		e.maxModelLen = kvCap
	}
	e.kv = newKVCache(e.numBlocks, cfg.BlockSize, !cfg.DisablePrefixCaching)
	e.loraActive = map[string]int{}
	e.st = newCounters(e.maxModelLen)
	return e, nil
}

// NumGPUBlocks is the KV capacity in blocks.
func (e *Engine) NumGPUBlocks() int { return e.numBlocks }

// MaxModelLen is the longest prompt + output the engine accepts.
func (e *Engine) MaxModelLen() int { return e.maxModelLen }

// Config returns the configuration with defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// SetLatencyMultiplier scales every later step's duration (fault injection).
func (e *Engine) SetLatencyMultiplier(m float64) {
	if !(m > 0) || math.IsInf(m, 0) {
		m = 1
	}
	e.mu.Lock()
	e.latencyMul = m
	e.mu.Unlock()
}

// Batch is what a step's duration depends on.
type Batch struct {
	Seqs    int // sequences in the step
	Tokens  int // new tokens computed (prefill chunks + one per decode)
	Context int // context tokens whose KV attention reads (Σ per sequence of computed + new)
	// Pairs is the attention work: Σ over new tokens of the context each
	// attends to (causal: a chunk of n tokens after c computed ones has
	// n·c + n(n+1)/2 pairs).
	Pairs int64
}

// OneSequence is the batch of a single sequence computing tokens new tokens
// that end at position context.
func OneSequence(tokens, context int) Batch {
	n, c := int64(tokens), int64(context-tokens)
	return Batch{Seqs: 1, Tokens: tokens, Context: context, Pairs: n*c + n*(n+1)/2}
}

// StepTime is the duration of a step of one sequence computing tokens new
// tokens that end at position context (see BatchTime).
func (e *Engine) StepTime(tokens, context int) time.Duration {
	return e.BatchTime(OneSequence(tokens, context))
}

// BatchTime is the modelled duration of a step:
//
//	overhead + seqs·(per_seq + layers·per_seq_layer)
//	  + max((2·P·T + attn·pairs) / (FLOPS·mfu·tp), (W + context·kv_bytes) / (BW·mbu·tp))
//	  + 2·layers · (2(tp−1)/tp · T·hidden·2 B / link B/s + 2(tp−1)·hop)    (tp > 1)
//
// The roofline term takes the slower of compute (weights' GEMMs and
// attention, which grows with context) and HBM traffic (weights and the KV
// read); the all-reduce term is a ring all-reduce of the step's activations
// after attention and after the MLP of every layer, not overlapped.
func (e *Engine) BatchTime(b Batch) time.Duration {
	d, _ := e.batchTime(b)
	return d
}

func (e *Engine) batchTime(b Batch) (time.Duration, bool) {
	compute := (2*e.cfg.Model.ParamsB*1e9*float64(b.Tokens) + e.attnPerPair*float64(b.Pairs)) / e.flops
	memory := (e.weightBytes + float64(b.Context)*e.kvPerToken) / e.bw
	comm := e.arPerStep * (e.arPerByte*e.arBytes*float64(b.Tokens) + e.arFixed)
	sec := math.Max(compute, memory) + comm + e.perSeq*float64(b.Seqs)
	return e.overhead + time.Duration(sec*1e9), memory >= compute
}

// Submit queues r at time now. It fails if the queue is full, the request
// does not fit the context, or the engine is stopped.
func (e *Engine) Submit(r *Request, now time.Duration) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.submit(r, now)
}

func (e *Engine) submit(r *Request, now time.Duration) error {
	if e.stopped {
		return ErrStopped
	}
	if r.promptLen < 1 || r.maxTokens < 1 || r.state != stateNew {
		return ErrBadRequestShape
	}
	if r.maxTokens > e.maxModelLen-r.promptLen { // (no overflow for any maxTokens)
		return ErrContextTooLong
	}
	if e.cfg.MaxWaiting > 0 && len(e.waiting) >= e.cfg.MaxWaiting {
		return ErrQueueFull
	}
	r.Arrival = now
	r.state = stateWaiting
	e.waiting = append(e.waiting, r)
	return nil
}

// Abort ends r with reason "abort" and frees its blocks (client went away).
func (e *Engine) Abort(r *Request, now time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.abort(r, now)
}

func (e *Engine) abort(r *Request, now time.Duration) {
	switch r.state {
	case stateWaiting:
		e.waiting = removeReq(e.waiting, r)
	case stateRunning:
		e.running = removeReq(e.running, r)
		e.leftRunning(r)
	default:
		return
	}
	e.finish(r, FinishAbort, now)
}

func removeReq(list []*Request, r *Request) []*Request {
	for i, x := range list {
		if x == r {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = nil
			return list[:len(list)-1]
		}
	}
	return list
}

// Progress reports r's state and appends the engine times of its generated
// tokens from index from onwards to times.
func (e *Engine) Progress(r *Request, from int, times []time.Duration) ([]time.Duration, Progress) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if from < len(r.tokenTimes) {
		times = append(times, r.tokenTimes[from:]...)
	}
	return times, Progress{Output: r.output, CachedTokens: r.cachedTokens, Done: r.state == stateFinished, Reason: r.reason, FinishedAt: r.finishedAt}
}

// Plan schedules the next step at or after now; it returns nil when there is
// nothing to run or a step is already in flight. The step ends at Step.End
// and must then be passed to Complete.
func (e *Engine) Plan(now time.Duration) *Step {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.plan(now)
}

func (e *Engine) plan(now time.Duration) *Step {
	if e.stepActive || e.stopped || (len(e.running) == 0 && len(e.waiting) == 0) {
		return nil
	}
	// A busy engine starts the next step where the last one ended (the
	// modelled timeline never drifts with the driver's lateness); an idle one
	// starts when the oldest waiting request arrived.
	start := e.lastEnd
	if len(e.running) == 0 {
		start = max(start, min(e.waiting[0].Arrival, now))
	}
	// A driver starved of CPU for longer than maxLag does not replay the
	// missed steps back to back (clients would see a burst of tokens); the
	// timeline moves to now and the skipped time is counted as lag.
	if e.maxLag > 0 && now-start > e.maxLag {
		e.st.lag += now - start
		start = now
	}
	bs := e.cfg.BlockSize
	s := &e.step
	s.reqs, s.counts, s.Tokens, s.Context, s.Pairs = s.reqs[:0], s.counts[:0], 0, 0, 0
	budget := e.cfg.MaxNumBatchedTokens
	preempted := false

	for i := 0; i < len(e.running) && budget > 0; i++ {
		r := e.running[i]
		n := min(len(r.tokens)-r.numComputed, budget)
		if n <= 0 {
			continue
		}
		need := ceilDiv(r.numComputed+n, bs) - len(r.blocks)
		for need > e.kv.numFree {
			victim := e.running[len(e.running)-1]
			e.running = e.running[:len(e.running)-1]
			e.preempt(victim)
			preempted = true
			if victim == r {
				break
			}
		}
		if r.state != stateRunning {
			break // r preempted itself: nothing after it is left to run
		}
		r.blocks, _ = e.kv.allocate(r.blocks, need)
		s.add(r, n)
		budget -= n
	}

	if !preempted {
		for idx := 0; idx < len(e.waiting) && budget > 0 && len(e.running) < e.cfg.MaxNumSeqs; {
			r := e.waiting[idx]
			if r.Arrival > start {
				break // arrived (in real time) after this step began: it joins the next one
			}
			if r.lora != "" && !e.loraAdmissible(r.lora) {
				idx++
				continue
			}
			total := len(r.tokens)
			e.ensureHashes(r, total/bs)
			hits, fromFree := e.kv.lookup(r.hashes, (total-1)/bs)
			computed := hits * bs
			n := min(total-computed, budget)
			need := ceilDiv(computed+n, bs) - hits
			if need+fromFree > e.kv.numFree {
				break
			}
			r.blocks = e.kv.take(r.blocks[:0], r.hashes[:hits])
			r.blocks, _ = e.kv.allocate(r.blocks, need)
			r.numComputed, r.numRegistered = computed, hits
			e.st.prefixQueries += uint64(total)
			e.st.prefixHits += uint64(computed)
			if !r.scheduled {
				r.scheduled = true
				r.cachedTokens = min(computed, r.promptLen)
				e.st.queue.Observe((start - r.Arrival).Seconds())
			}
			r.state = stateRunning
			copy(e.waiting[idx:], e.waiting[idx+1:])
			e.waiting[len(e.waiting)-1] = nil
			e.waiting = e.waiting[:len(e.waiting)-1]
			e.running = append(e.running, r)
			if r.lora != "" {
				e.loraActive[r.lora]++
			}
			s.add(r, n)
			budget -= n
		}
	}
	if len(s.reqs) == 0 {
		return nil
	}
	d, memBound := e.batchTime(Batch{Seqs: len(s.reqs), Tokens: s.Tokens, Context: s.Context, Pairs: s.Pairs})
	d = time.Duration(float64(d) * e.latencyMul)
	d += e.loadAdapters(s)
	s.Start, s.End = start, start+d
	e.stepActive = true
	e.st.busy += d
	if memBound {
		e.st.memBusy += d
	}
	return s
}

func (s *Step) add(r *Request, n int) {
	s.reqs = append(s.reqs, r)
	s.counts = append(s.counts, n)
	s.Tokens += n
	s.Context += r.numComputed + n
	s.Pairs += int64(n)*int64(r.numComputed) + int64(n)*int64(n+1)/2
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// preempt frees a running request's blocks and puts it at the head of the
// waiting queue; it will recompute its prompt and the tokens generated so far.
func (e *Engine) preempt(r *Request) {
	e.leftRunning(r)
	e.kv.free(r.blocks)
	r.blocks = r.blocks[:0]
	r.numComputed, r.numRegistered = 0, 0
	r.state = stateWaiting
	e.waiting = append(e.waiting, nil)
	copy(e.waiting[1:], e.waiting)
	e.waiting[0] = r
	e.st.preemptions++
}

// ensureHashes extends r's chained block hashes to cover its first n full blocks.
func (e *Engine) ensureHashes(r *Request, n int) {
	bs := e.cfg.BlockSize
	for j := len(r.hashes); j < n; j++ {
		var parent uint64
		if j > 0 {
			parent = r.hashes[j-1]
		} else if r.lora != "" {
			parent = blockHash(0, Tokenize(nil, r.lora))
		}
		r.hashes = append(r.hashes, blockHash(parent, r.tokens[j*bs:(j+1)*bs]))
	}
}

// Complete applies a planned step at its end time: advances every request,
// emits a token for each whose sequence is fully computed, finishes those
// that reached their length, and registers newly full blocks in the prefix cache.
func (e *Engine) Complete(s *Step) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.complete(s)
}

func (e *Engine) complete(s *Step) {
	bs := e.cfg.BlockSize
	end := s.End
	finished := false
	for i, r := range s.reqs {
		if r.state != stateRunning {
			continue // aborted or preempted while the step ran
		}
		r.numComputed += s.counts[i]
		full := r.numComputed / bs
		e.ensureHashes(r, full)
		for j := r.numRegistered; j < full; j++ {
			e.kv.register(r.blocks[j], r.hashes[j])
		}
		r.numRegistered = full
		if r.numComputed < len(r.tokens) {
			continue // a prefill chunk that has not reached the end
		}
		_, id := OutputToken(r.seed, r.output)
		r.tokens = append(r.tokens, id)
		r.output++
		r.tokenTimes = append(r.tokenTimes, end)
		e.st.generationTokens++
		if r.output == 1 {
			e.st.ttft.Observe((end - r.Arrival).Seconds())
			e.st.promptTokens += uint64(r.promptLen)
		} else {
			e.st.itl.Observe((end - r.lastTokenAt).Seconds())
		}
		r.lastTokenAt = end
		if r.output >= r.maxTokens {
			reason := FinishLength
			if r.stopAtMax {
				reason = FinishStop
			}
			r.state = stateFinished // removed from running below
			finished = true
			e.leftRunning(r)
			e.finish(r, reason, end)
		} else if r.NotifyTokens {
			notify(r)
		}
	}
	if finished {
		kept := e.running[:0]
		for _, r := range e.running {
			if r.state == stateRunning {
				kept = append(kept, r)
			}
		}
		clear(e.running[len(kept):])
		e.running = kept
	}
	e.lastEnd = end
	e.stepActive = false
}

func (e *Engine) finish(r *Request, reason FinishReason, now time.Duration) {
	e.kv.free(r.blocks)
	r.blocks = nil
	r.hashes = nil
	r.state = stateFinished
	r.reason = reason
	r.finishedAt = now
	e.st.success[reason]++
	e.st.e2e.Observe((now - r.Arrival).Seconds())
	e.st.promptLen.Observe(float64(r.promptLen))
	e.st.genLen.Observe(float64(r.output))
	notify(r)
}

func notify(r *Request) {
	if r.Ready != nil {
		select {
		case r.Ready <- struct{}{}:
		default:
		}
	}
}

// loraAdmissible reports whether a request for adapter name may join the
// running batch: its adapter already runs, or fewer than MaxLoRAs do.
func (e *Engine) loraAdmissible(name string) bool {
	return e.loraActive[name] > 0 || len(e.loraActive) < e.cfg.MaxLoRAs
}

// leftRunning releases r's share of its adapter when it leaves the batch.
func (e *Engine) leftRunning(r *Request) {
	if r.lora == "" {
		return
	}
	if e.loraActive[r.lora]--; e.loraActive[r.lora] <= 0 {
		delete(e.loraActive, r.lora)
	}
}

// loadAdapters makes the step's adapters resident (LRU over MaxLoRAs slots)
// and returns the load time of those that were not.
func (e *Engine) loadAdapters(s *Step) time.Duration {
	var d time.Duration
	for _, r := range s.reqs {
		if r.lora == "" {
			continue
		}
		hit := -1
		for i, name := range e.loraSlots {
			if name == r.lora {
				hit = i
				break
			}
		}
		if hit >= 0 {
			e.loraSlots = append(append(e.loraSlots[:hit:hit], e.loraSlots[hit+1:]...), r.lora)
			continue
		}
		d += e.cfg.LoRALoadTime
		if len(e.loraSlots) >= e.cfg.MaxLoRAs {
			e.loraSlots = append(e.loraSlots[:0], e.loraSlots[1:]...)
		}
		e.loraSlots = append(e.loraSlots, r.lora)
	}
	return d
}

// Stop aborts every request and refuses new ones until Reset.
func (e *Engine) Stop(now time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopped = true
	for len(e.running) > 0 {
		e.abort(e.running[0], now)
	}
	for len(e.waiting) > 0 {
		e.abort(e.waiting[0], now)
	}
	e.stepActive = false
}

// Reset restarts a stopped engine with an empty KV cache, as a restarted
// server process would; cumulative counters are kept (a scraper sees a restart
// through the uptime of its own series, not here).
func (e *Engine) Reset(now time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.kv = newKVCache(e.numBlocks, e.cfg.BlockSize, !e.cfg.DisablePrefixCaching)
	e.loraSlots = nil
	e.lastEnd = now
	e.stopped = false
}
