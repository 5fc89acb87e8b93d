// Package simulator serves simulated vLLM model servers: the OpenAI HTTP API
// as vLLM exposes it (/v1/completions, /v1/chat/completions with SSE
// streaming, /v1/models, /health), vLLM V1 /metrics, per-GPU telemetry in AMD
// device-metrics-exporter names, fault injection, and fleets of such servers
// described in YAML. The timing model lives in simulator/engine; this package
// only turns it into HTTP, emitting each token at its modelled time.
package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/fastepp/fastepp/simulator/engine"
)

// mix64 is SplitMix64's finaliser: a cheap, well-spread hash of a counter.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// unitFloat maps a hash to [0, 1).
func unitFloat(h uint64) float64 { return float64(h>>11) / (1 << 53) }

// Config describes one simulated server.
type Config struct {
	// Name identifies the server (the pod label of its GPU telemetry).
	Name string
	// ModelName is the model id clients send and /v1/models lists.
	ModelName string
	// Engine sizes the simulated vLLM engine (GPU and model profiles included).
	Engine engine.Config
	// MetricsFlavor names the /metrics dialect: "vllm" (default, vLLM V1) or
	// "sglang" (SGLang's names). The behaviour is vLLM's either way.
	MetricsFlavor string
	// LoRAAdapters are extra model ids served as adapters of ModelName.
	LoRAAdapters []string
	// DefaultMaxTokens is the generation length of chat requests without
	// max_tokens/max_completion_tokens; they end with "stop" (default 128).
	DefaultMaxTokens int
	// Namespace and Hostname label the GPU telemetry (default "default", "sim-node").
	Namespace, Hostname string
	// Faults are the initial fault-injection settings.
	Faults Faults
	// Seed makes injected errors and generated ids reproducible.
	Seed uint64
	// TokenTiming, when set, is called for every token written to a client
	// with how late it left relative to its modelled emission time.
	TokenTiming func(late time.Duration)
}

// maxBody bounds request bodies (a 128k-token prompt is ~0.5 MB).
const maxBody = 32 << 20

// Server is one simulated vLLM server.
type Server struct {
	cfg     Config
	eng     *engine.Engine
	clock   *engine.RealClock
	runner  atomic.Pointer[engine.Runner]
	faults  atomic.Pointer[Faults]
	gpu     gpuSampler
	mux     *http.ServeMux
	seq     atomic.Uint64 // requests, for their seeds
	scrapes atomic.Uint64 // /metrics scrapes, for their fault draws
	idBase  uint64

	mu      sync.Mutex // lifecycle below
	addr    string
	httpSrv *http.Server
	down    bool
	closed  bool // Close was called: no restart
	timer   *time.Timer
}

// New builds a server and starts its engine; call Listen to serve on a
// port, or use Handler directly.
func New(cfg Config) (*Server, error) {
	if cfg.ModelName == "" {
		cfg.ModelName = cfg.Engine.Model.ServedName
	}
	if cfg.ModelName == "" {
		return nil, errors.New("model name: expected a served model name, found none")
	}
	if cfg.Name == "" {
		cfg.Name = "sim"
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "sim-node"
	}
	switch cfg.MetricsFlavor {
	case "":
		cfg.MetricsFlavor = "vllm"
	case "vllm", "sglang":
	default:
		return nil, fmt.Errorf("engine (metrics flavour): expected vllm or sglang, found %q", cfg.MetricsFlavor)
	}
	if cfg.DefaultMaxTokens == 0 {
		cfg.DefaultMaxTokens = 128
	}
	if cfg.DefaultMaxTokens < 0 {
		return nil, fmt.Errorf("default max tokens: expected ≥ 1, found %d", cfg.DefaultMaxTokens)
	}
	for _, a := range cfg.LoRAAdapters {
		if a == "" || a == cfg.ModelName {
			return nil, fmt.Errorf("LoRA adapter %q: expected a non-empty name distinct from the base model %q", a, cfg.ModelName)
		}
	}
	if err := cfg.Faults.Validate(); err != nil {
		return nil, err
	}
	eng, err := engine.New(cfg.Engine)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, eng: eng, clock: engine.NewRealClock(), idBase: mix64(cfg.Seed ^ xxhash.Sum64String(cfg.Name))}
	s.setFaults(cfg.Faults)
	s.runner.Store(engine.Start(eng, s.clock))
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/v1/completions", func(w http.ResponseWriter, r *http.Request) { s.serveGeneration(w, r, false) })
	s.mux.HandleFunc("/v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { s.serveGeneration(w, r, true) })
	s.mux.HandleFunc("/v1/models", s.serveModels)
	s.mux.HandleFunc("/health", s.serveHealth)
	s.mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) { s.serveMetrics(w, r, true) })
	s.mux.HandleFunc("/gpu/metrics", func(w http.ResponseWriter, r *http.Request) { s.serveMetrics(w, r, false) })
	s.mux.HandleFunc("/admin/faults", s.serveFaults)
	s.mux.HandleFunc("/admin/crash", s.serveCrash)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: http.StatusNotFound, typ: "NotFoundError", message: "no route " + r.Method + " " + r.URL.Path})
	})
	return s, nil
}

// Engine is the server's engine.
func (s *Server) Engine() *engine.Engine { return s.eng }

// Config is the server's configuration with defaults applied.
func (s *Server) Config() Config { return s.cfg }

// Handler serves the whole API.
func (s *Server) Handler() http.Handler { return s.mux }

// Listen binds addr (use 127.0.0.1:port) and serves in the background.
func (s *Server) Listen(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpSrv != nil {
		return fmt.Errorf("server %s already listens on %s", s.cfg.Name, s.addr)
	}
	return s.serveLocked(addr)
}

// serveLocked binds addr and serves on it in the background; s.mu is held.
func (s *Server) serveLocked(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server %s: listen on %s: %w", s.cfg.Name, addr, err)
	}
	s.addr = ln.Addr().String()
	s.httpSrv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	go func(srv *http.Server) { _ = srv.Serve(ln) }(s.httpSrv)
	return nil
}

// Addr is the address Listen bound.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops serving and the engine.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	s.closed = true
}

// Crash simulates a process crash: the listener and every connection close,
// in-flight requests are lost (counted as aborted) and the KV cache is
// dropped. If restartAfter > 0 the server comes back on the same address
// after that long, with an empty cache.
func (s *Server) Crash(restartAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.stopLocked()
	if restartAfter > 0 {
		s.timer = time.AfterFunc(restartAfter, func() { _ = s.Restart() })
	}
}

// stopLocked closes the listener, every connection and the engine; s.mu is held.
// Handlers never take s.mu while they wait, so closing here cannot deadlock.
func (s *Server) stopLocked() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if s.httpSrv != nil {
		_ = s.httpSrv.Close()
		s.httpSrv = nil
	}
	s.down = true
	s.runner.Load().Stop()
}

// Restart brings a crashed server back: a fresh engine state (empty KV cache)
// and, if it was listening, the same address.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down || s.closed {
		return nil
	}
	s.eng.Reset(s.clock.Now())
	s.runner.Store(engine.Start(s.eng, s.clock))
	s.down = false
	if s.addr == "" {
		return nil
	}
	return s.serveLocked(s.addr)
}

// lookupModel resolves a request's model id to the LoRA adapter it names
// ("" for the base model).
func (s *Server) lookupModel(name string) (string, bool) {
	if name == s.cfg.ModelName {
		return "", true
	}
	for _, a := range s.cfg.LoRAAdapters {
		if a == name {
			return a, true
		}
	}
	return "", false
}

func (s *Server) serveGeneration(w http.ResponseWriter, r *http.Request, chat bool) {
	if r.Method != http.MethodPost {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: "MethodNotAllowed", message: "expected POST, found " + r.Method})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, badRequest("", "reading request body: %v", err))
		return
	}
	if len(body) > maxBody {
		writeError(w, &apiError{status: http.StatusRequestEntityTooLarge, typ: "BadRequestError", message: fmt.Sprintf("request body exceeds %d bytes", maxBody)})
		return
	}
	req, aerr := decodeRequest(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	lora, ok := s.lookupModel(req.Model)
	if !ok {
		writeError(w, &apiError{status: http.StatusNotFound, typ: "NotFoundError", param: "model", message: fmt.Sprintf("The model `%s` does not exist.", req.Model)})
		return
	}
	var toks []uint32
	maxTokens, stopAtMax := 16, false // vLLM's completions default max_tokens is 16
	if chat {
		toks, aerr = chatTokens(req.Messages)
		maxTokens, stopAtMax = s.cfg.DefaultMaxTokens, true
		if req.MaxCompletionTokens != nil {
			maxTokens, stopAtMax = *req.MaxCompletionTokens, false
		} else if req.MaxTokens != nil {
			maxTokens, stopAtMax = *req.MaxTokens, false
		}
	} else {
		toks, aerr = promptTokens(req.Prompt)
		if req.MaxTokens != nil {
			maxTokens = *req.MaxTokens
		}
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if maxTokens < 1 {
		writeError(w, badRequest("max_tokens", "max_tokens must be at least 1, got %d.", maxTokens))
		return
	}
	if limit := s.eng.MaxModelLen(); maxTokens > limit-len(toks) {
		what := "prompt"
		if chat {
			what = "messages"
		}
		writeError(w, badRequest(what, "This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the %s, %d in the completion). Please reduce the length of the %s or completion.",
			limit, len(toks)+maxTokens, len(toks), what, maxTokens, what))
		return
	}
	n := s.seq.Add(1)
	seed := mix64(s.idBase + n) // request id, generated text and fault draw
	f := s.faults.Load()
	if f.ErrorRate > 0 && unitFloat(seed) < f.ErrorRate {
		writeError(w, &apiError{status: http.StatusInternalServerError, typ: "InternalServerError", message: "injected failure (simulator fault injection)"})
		return
	}
	g := &generation{
		s: s, w: w, chat: chat, stream: req.Stream,
		includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage,
		seed:         seed,
		req:          engine.NewRequest(toks, maxTokens, stopAtMax, lora, seed),
	}
	g.req.Ready = make(chan struct{}, 1)
	g.req.NotifyTokens = g.stream
	runner := s.runner.Load()
	if err := runner.Submit(g.req); err != nil {
		switch {
		case errors.Is(err, engine.ErrQueueFull):
			writeError(w, &apiError{status: http.StatusTooManyRequests, typ: "RateLimitError", message: "The waiting queue is full; retry later."})
		case errors.Is(err, engine.ErrStopped):
			writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: "ServiceUnavailableError", message: "The engine is not running."})
		default:
			writeError(w, badRequest("", "%v", err))
		}
		return
	}
	g.serve(r.Context(), runner, req.Model)
}

// generation streams or returns one request's output.
type generation struct {
	s            *Server
	w            http.ResponseWriter
	chat         bool
	stream       bool
	includeUsage bool
	seed         uint64
	req          *engine.Request
	buf          []byte
	times        []time.Duration
}

func (g *generation) serve(ctx context.Context, runner *engine.Runner, model string) {
	id := g.idString()
	created := strconv.FormatInt(time.Now().Unix(), 10)
	object := "text_completion"
	if g.chat {
		object = "chat.completion"
		if g.stream {
			object = "chat.completion.chunk"
		}
	}
	modelJSON, _ := json.Marshal(model)
	// head is every response's common prefix up to "choices".
	head := []byte(`{"id":"` + id + `","object":"` + object + `","created":` + created + `,"model":` + string(modelJSON) + `,"choices":`)
	if g.stream {
		h := g.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		g.w.WriteHeader(http.StatusOK)
	}
	rc := http.NewResponseController(g.w)
	sent := 0
	var p engine.Progress
	for {
		select {
		case <-g.req.Ready:
		case <-ctx.Done():
			runner.Abort(g.req)
			return
		}
		g.times, p = g.s.eng.Progress(g.req, sent, g.times[:0])
		if p.Done && p.Reason == engine.FinishAbort {
			return // the engine stopped (crash): the connection goes with it
		}
		if !g.stream {
			if p.Done {
				g.writeFull(head, p)
				g.observe(p.FinishedAt)
				return
			}
			continue
		}
		g.buf = g.buf[:0]
		for k := range g.times {
			i := sent + k
			last := p.Done && i == p.Output-1
			if i == 0 && g.chat {
				g.buf = g.appendChunk(g.buf, head, `{"role":"assistant","content":""}`, "", "")
			}
			text, _ := engine.OutputToken(g.seed, i)
			reason := ""
			if last {
				reason = p.Reason.String()
			}
			g.buf = g.appendChunk(g.buf, head, "", text, reason)
		}
		if p.Done && g.includeUsage {
			g.buf = append(g.buf, "data: "...)
			g.buf = append(g.buf, head...)
			g.buf = append(g.buf, `[],"usage":`...)
			g.buf = appendUsage(g.buf, g.req.PromptTokens(), p.Output, p.CachedTokens)
			g.buf = append(g.buf, "}\n\n"...)
		}
		if p.Done {
			g.buf = append(g.buf, "data: [DONE]\n\n"...)
		}
		if _, err := g.w.Write(g.buf); err != nil {
			runner.Abort(g.req)
			return
		}
		_ = rc.Flush()
		for _, t := range g.times {
			g.observe(t)
		}
		sent += len(g.times)
		if p.Done {
			return
		}
	}
}

func (g *generation) observe(modelled time.Duration) {
	if f := g.s.cfg.TokenTiming; f != nil {
		f(time.Since(g.s.clock.Wall(modelled)))
	}
}

func (g *generation) idString() string {
	prefix := "cmpl-"
	if g.chat {
		prefix = "chatcmpl-"
	}
	return prefix + strconv.FormatUint(g.seed, 16)
}

// appendChunk appends one SSE event: a chat delta (raw JSON delta, or a
// content delta of text) or a completion text chunk.
func (g *generation) appendChunk(b, head []byte, rawDelta, text, reason string) []byte {
	b = append(b, "data: "...)
	b = append(b, head...)
	b = append(b, `[{"index":0,`...)
	if g.chat {
		b = append(b, `"delta":`...)
		if rawDelta != "" {
			b = append(b, rawDelta...)
		} else {
			b = append(b, `{"content":`...)
			b = strconv.AppendQuote(b, text)
			b = append(b, '}')
		}
		b = append(b, `,"logprobs":null,"finish_reason":`...)
	} else {
		b = append(b, `"text":`...)
		b = strconv.AppendQuote(b, text)
		b = append(b, `,"logprobs":null,"finish_reason":`...)
	}
	if reason == "" {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendQuote(b, reason)
	}
	if !g.chat {
		b = append(b, `,"stop_reason":null`...)
	}
	b = append(b, "}]"...)
	if g.includeUsage {
		b = append(b, `,"usage":null`...)
	}
	return append(b, "}\n\n"...)
}

func (g *generation) writeFull(head []byte, p engine.Progress) {
	var text bytes.Buffer
	for i := range p.Output {
		t, _ := engine.OutputToken(g.seed, i)
		text.WriteString(t)
	}
	b := append(g.buf[:0], head...)
	b = append(b, `[{"index":0,`...)
	if g.chat {
		b = append(b, `"message":{"role":"assistant","content":`...)
		b = strconv.AppendQuote(b, text.String())
		b = append(b, `,"tool_calls":[]},"logprobs":null,"finish_reason":`...)
	} else {
		b = append(b, `"text":`...)
		b = strconv.AppendQuote(b, text.String())
		b = append(b, `,"logprobs":null,"finish_reason":`...)
	}
	b = strconv.AppendQuote(b, p.Reason.String())
	b = append(b, `,"stop_reason":null}],"usage":`...)
	b = appendUsage(b, g.req.PromptTokens(), p.Output, p.CachedTokens)
	b = append(b, '}')
	g.w.Header().Set("Content-Type", "application/json")
	_, _ = g.w.Write(b)
}

func (s *Server) serveModels(w http.ResponseWriter, r *http.Request) {
	type model struct {
		ID          string  `json:"id"`
		Object      string  `json:"object"`
		Created     int64   `json:"created"`
		OwnedBy     string  `json:"owned_by"`
		Root        string  `json:"root"`
		Parent      *string `json:"parent"`
		MaxModelLen int     `json:"max_model_len"`
	}
	now := time.Now().Unix()
	list := []model{{ID: s.cfg.ModelName, Object: "model", Created: now, OwnedBy: "vllm", Root: s.cfg.ModelName, MaxModelLen: s.eng.MaxModelLen()}}
	for _, a := range s.cfg.LoRAAdapters {
		parent := s.cfg.ModelName
		list = append(list, model{ID: a, Object: "model", Created: now, OwnedBy: "vllm", Root: a, Parent: &parent, MaxModelLen: s.eng.MaxModelLen()})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": list})
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// serveMetrics serves the engine's metrics (vLLM or SGLang names, if
// withEngine) followed by the GPU telemetry, after any injected delay or failure.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, withEngine bool) {
	f := s.faults.Load()
	if f.MetricsDelayMS > 0 {
		select {
		case <-time.After(time.Duration(f.MetricsDelayMS) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}
	if f.MetricsErrorRate > 0 && unitFloat(mix64(s.idBase^s.scrapes.Add(1)<<1)) < f.MetricsErrorRate {
		http.Error(w, "injected /metrics failure (simulator fault injection)", http.StatusInternalServerError)
		return
	}
	st := s.eng.Stats()
	now := s.clock.Now()
	fams := s.gpuFamilies(st, now)
	switch {
	case !withEngine:
	case s.cfg.MetricsFlavor == "sglang":
		fams = append(s.sglangFamilies(st), fams...)
	default:
		fams = append(s.vllmFamilies(st, float64(time.Now().UnixNano())/1e9), fams...)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_ = writeFamilies(w, fams)
}
