package extproc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fastepp/fastepp/scheduler"
)

// Wire keys (docs/PROTOCOL.md).
const (
	HeaderDestination   = "x-gateway-destination-endpoint"
	MetadataNamespaceLB = "envoy.lb"
	SubsetNamespace     = "envoy.lb.subset_hint"
	SubsetKey           = "x-gateway-destination-endpoint-subset"
	ServedKey           = "x-gateway-destination-endpoint-served"
	HeaderObjective     = "x-gateway-inference-objective"
	HeaderFairnessID    = "x-gateway-inference-fairness-id"
	HeaderModelRewrite  = "x-gateway-model-name-rewrite"
	HeaderRequestID     = "x-request-id"
	// HeaderTestEndpointSelection names the endpoints GIE's conformance
	// tests steer a request to (read by header-based-testing-filter): a
	// comma-separated list of "IP" or "IP:port".
	HeaderTestEndpointSelection = "test-epp-endpoint-selection"
	// The llm-d router's names for the objective and the fairness id. When a
	// request carries both names of one key, the x-llm-d-* value wins.
	HeaderLLMDObjective  = "x-llm-d-inference-objective"
	HeaderLLMDFairnessID = "x-llm-d-inference-fairness-id"
)

// MaxChunk is the largest body chunk docs/PROTOCOL.md allows in one
// StreamedBodyResponse.
const MaxChunk = 62000

// echoChunk is the chunk size the server echoes with. It is below MaxChunk so
// that a marshalled message fits grpc-go's 32 KiB buffer tier: a 62,000-byte
// message lands in the 1 MiB tier, which grpc zeroes on every Get (profiled:
// a third of the CPU with 220 KB bodies, on both ends of the stream).
const echoChunk = 32<<10 - 64

// maxPooledBuf bounds the body buffers kept for reuse.
const maxPooledBuf = 4 << 20

// Server is the ext_proc service. Create it with New and register it with
// Register; it is safe for concurrent streams.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	sched       *scheduler.Scheduler
	mode        BodyMode
	maxBody     int
	idleTimeout time.Duration // <= 0: request phase not timed
	maxBuffered int64
	log         *slog.Logger
	models      map[string]struct{} // allow-list; nil accepts every model
	allow       []string            // the allow-list as given, for the known set
	priority    func(string) (int, bool)
	noSubset    bool
	m           *metrics

	streams sync.Pool // *stream
	cycles  sync.Pool // *scheduler.Cycle

	internMu sync.RWMutex
	intern   map[string]string

	// Models that may be label values (models.go), per snapshot.
	known atomic.Pointer[knownModels]

	buffered atomic.Int64 // request body bytes held by all streams

	errLog, warnLog logLimiter

	tracer trace.Tracer // nil: no tracing
	// Plugins of the plan that add a response header (conformance tests).
	respHeaders []scheduler.ResponseHeaderer
	propagator  propagation.TextMapPropagator

	open atomic.Int64
}

// Open is the number of streams being served (for graceful shutdown and
// leak checks).
func (s *Server) Open() int64 { return s.open.Load() }

// New returns a server that picks with sched. It registers the request-path
// metrics on opts.Registerer when set (an error if they already are).
func New(sched *scheduler.Scheduler, opts Options) (*Server, error) {
	if sched == nil {
		return nil, errors.New("extproc: expected a scheduler, found nil")
	}
	if opts.MaxBodyBytes < 0 {
		return nil, errors.New("extproc: expected MaxBodyBytes >= 0, found " + strconv.Itoa(opts.MaxBodyBytes))
	}
	if opts.BodyMode > ModeBuffered {
		return nil, errors.New("extproc: expected body mode auto, streamed or buffered, found " + opts.BodyMode.String())
	}
	if opts.MaxBufferedBytes < 0 {
		return nil, errors.New("extproc: expected MaxBufferedBytes >= 0, found " + strconv.FormatInt(opts.MaxBufferedBytes, 10))
	}
	for _, name := range opts.Models {
		if name == "" || !utf8.ValidString(name) {
			return nil, errors.New("extproc: expected Models to hold non-empty UTF-8 model names, found " + strconv.Quote(name))
		}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		sched:       sched,
		mode:        opts.BodyMode,
		maxBody:     opts.MaxBodyBytes,
		idleTimeout: opts.RequestIdleTimeout,
		maxBuffered: opts.MaxBufferedBytes,
		log:         opts.Logger,
		priority:    opts.Priority,
		noSubset:    opts.DisableSubsetFilter,
		m:           m,
		intern:      map[string]string{},
		tracer:      opts.Tracer,
		propagator:  opts.Propagator,
	}
	if s.propagator == nil {
		s.propagator = defaultPropagator()
	}
	if plan := sched.Plan(); plan != nil {
		for _, p := range plan.Plugins {
			if rh, ok := p.(scheduler.ResponseHeaderer); ok {
				s.respHeaders = append(s.respHeaders, rh)
			}
		}
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.idleTimeout == 0 {
		s.idleTimeout = DefaultRequestIdleTimeout
	}
	if s.maxBuffered == 0 {
		s.maxBuffered = DefaultMaxBufferedBytes
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if len(opts.Models) > 0 {
		s.allow = append([]string(nil), opts.Models...)
		s.models = make(map[string]struct{}, len(opts.Models))
		for _, name := range opts.Models {
			s.models[name] = struct{}{}
		}
	}
	s.known.Store(newKnownModels(s.allow, nil))
	sched.OnPublish(s.updateKnown) // the pool's model names, per snapshot
	s.streams.New = func() any { return new(stream) }
	s.cycles.New = func() any { return sched.NewCycle() }
	return s, nil
}

// Register adds the service to a grpc.Server (see GRPCServerOptions).
// It registers the generated service's name and method with a handler of
// its own that decodes each message into the stream's pooled message tree;
// with GRPCServerOptions' codec that decoding allocates nothing.
func (s *Server) Register(g *grpc.Server) {
	g.RegisterService(&serviceDesc, s)
}

// internModel returns b as a string, shared across requests for the same
// model name (no allocation once seen).
func (s *Server) internModel(b []byte) string {
	s.internMu.RLock()
	v, ok := s.intern[string(b)]
	s.internMu.RUnlock()
	if ok {
		return v
	}
	v = string(b)
	s.internMu.Lock()
	if len(s.intern) < 4096 {
		s.intern[v] = v
	}
	s.internMu.Unlock()
	return v
}

type phase uint8

const (
	phHeaders  phase = iota // waiting for request headers
	phBody                  // receiving the request body
	phResponse              // request answered; passing the response through
	phDone                  // response ended
)

// stream is the per-stream state, pooled. Everything is reset between uses.
type stream struct {
	srv *Server
	ps  extprocv3.ExternalProcessor_ProcessServer

	span    trace.Span      // the request's span (Options.Tracer), else nil
	spanCtx context.Context // its context, for injection

	first        bool
	observe      bool // the current message is in observability mode: answer nothing
	buffered     bool // BUFFERED or BUFFERED_PARTIAL: answer headers at once, decide on the body message
	partial      bool // BUFFERED_PARTIAL: the one body message may be a truncated prefix
	pickAtHdrs   bool // NONE or STREAMED: the body cannot reach the decision; pick at headers
	respDuplex   bool // response body mode: FULL_DUPLEX_STREAMED
	passThrough  bool // STREAMED: body chunks still come after a pick at the headers
	truncated    bool // BUFFERED_PARTIAL: decided on a prefix of the body
	post         bool // :method POST
	phase        phase
	start        time.Time
	path         []byte
	requestIDRaw []byte
	requestID    string // set when generated, or converted for debug logs
	genID        bool
	rewrite      []byte
	objective    []byte
	fairness     []byte
	contentLen   int
	subset       []netip.Addr
	hasSubset    bool
	testSel      []byte // test-epp-endpoint-selection, when hasTestSel
	hasTestSel   bool
	body         []byte // accumulated request body (aliases buf or the single message)
	buf          []byte // pooled accumulation buffer
	held         int64  // body bytes counted in Server.buffered
	out          []byte // pooled buffer for a rewritten body
	dest         []byte
	origModelTok []byte

	scan scanner
	info bodyInfo
	req  scheduler.Request

	cycle    *scheduler.Cycle
	res      *scheduler.Result
	acct     *scheduler.Handle // endpoint charged with the in-flight request
	tokens   int64
	mm       *modelMetrics
	usage    usageScanner
	restore  modelRestorer
	released bool
	respSeen bool  // a response body message arrived
	respLen  int64 // response body bytes
	clBuf    []byte
	rep      replies

	// The gRPC stream and decode target when served through Register
	// (wire.go); unused when Process is called directly.
	fps fastStream
	in  wireReq

	// Request-phase idle timing (idle.go). The handler holds mu while it
	// works on a request-phase message and releases it while it waits in
	// Recv; the idle timer's callback takes it to check and end the stream.
	mu       sync.Mutex
	idleOn   bool   // guarded by mu: the request phase is being timed
	expired  bool   // guarded by mu: the timer answered 408 and ended the request
	armed    bool   // guarded by mu: the timer will tick
	msgs     uint32 // guarded by mu: request-phase messages received
	seenMsgs uint32 // guarded by mu: msgs at the last tick
	idle     int    // guarded by mu: ticks in a row without a message
	timer    *time.Timer
	track    bool // handler's own: it takes mu around each message
	locked   bool // handler's own: it holds mu
}

func (st *stream) reset() {
	st.ps = nil
	st.in.reset()
	st.first, st.observe = true, false
	st.buffered, st.partial, st.pickAtHdrs, st.respDuplex = false, false, false, false
	st.passThrough, st.truncated, st.post = false, false, false
	st.phase = phHeaders
	st.path, st.requestIDRaw, st.requestID, st.genID, st.rewrite, st.objective, st.fairness = nil, nil, "", false, nil, nil, nil
	st.contentLen = -1
	st.subset, st.hasSubset = st.subset[:0], false
	st.testSel, st.hasTestSel = nil, false
	st.body = nil
	st.buf, st.out, st.dest = st.buf[:0], st.out[:0], st.dest[:0]
	st.held = 0
	st.origModelTok = st.origModelTok[:0]
	st.req.Reset()
	st.res, st.acct, st.tokens, st.mm = nil, nil, 0, nil
	st.usage.reset()
	st.restore.reset()
	st.released, st.respSeen, st.respLen = false, false, 0
}

// Process serves one ext_proc stream (one HTTP request and its response).
// A grpc.Server set up with Register and GRPCServerOptions calls serve
// directly, with the stream's pooled decode target (wire.go).
func (s *Server) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	return s.serve(s.getStream(), ps)
}

// getStream takes a stream from the pool, reset.
func (s *Server) getStream() *stream {
	st := s.streams.Get().(*stream)
	st.srv = s
	st.reset()
	return st
}

func (s *Server) serve(st *stream, ps extprocv3.ExternalProcessor_ProcessServer) (err error) {
	s.begin(st, ps)
	defer func() {
		if r := recover(); r != nil {
			s.end(st, r)
			err = nil
			return
		}
		s.end(st, nil)
	}()
	for {
		st.waitUnlock()
		msg, rerr := ps.Recv()
		if done, err := st.next(msg, rerr); done {
			return err
		}
	}
}

// begin starts serving st on ps: the stream counts as open, and its
// request phase is timed (the caller then holds st.mu: it calls
// st.waitUnlock before it waits for a message).
func (s *Server) begin(st *stream, ps extprocv3.ExternalProcessor_ProcessServer) {
	s.open.Add(1)
	st.ps = ps
	st.startIdle()
}

// next takes what a Recv returned (a message, or an error with io.EOF for
// the proxy's end of the stream) and handles it. done means the stream is
// over, with err (nil, or the broken stream's error); else the caller calls
// st.waitUnlock and waits for the next message.
func (st *stream) next(msg *extprocv3.ProcessingRequest, rerr error) (done bool, err error) {
	if st.track && st.lockExpired() {
		// The idle timer answered 408 while we waited: the request is
		// over, whatever Recv returned.
		return true, nil
	}
	if rerr != nil {
		if rerr == io.EOF {
			// The proxy closed the stream: the response ended here when it
			// did not send (or we were not sent) its end.
			if st.phase == phResponse {
				st.finish()
			}
			return true, nil
		}
		return true, rerr // broken stream or client cancel: state is released by end
	}
	done, err = st.handle(msg)
	return done || err != nil, err
}

// end releases a stream's state once it is over and pools it; r is a
// recovered panic (a bug, not bad input), or nil. After a panic the request
// is answered 500 if it is still open, and the state is dropped rather than
// pooled.
func (s *Server) end(st *stream, r any) {
	defer s.open.Add(-1)
	st.endSpan()
	st.stopIdle()
	st.unbuffer()
	st.release()
	if st.cycle != nil {
		s.cycles.Put(st.cycle)
		st.cycle = nil
	}
	st.in.release()
	if r != nil {
		if ok, skipped := s.errLog.allow(); ok {
			s.log.Error("extproc: panic in stream", "panic", r, "similar_lines_skipped", skipped)
		}
		if st.phase < phResponse {
			_ = st.immediate(500, "internal error")
		}
		return
	}
	st.ps = nil
	st.fps = fastStream{}
	if cap(st.buf) > maxPooledBuf {
		st.buf = nil
	}
	if cap(st.out) > maxPooledBuf {
		st.out = nil
	}
	st.body, st.req.Body, st.req.CacheSalt = nil, nil, nil
	st.rep.clear()
	s.streams.Put(st)
}

// handle processes one message; done ends the stream (after an immediate
// response). A non-nil error means the stream is broken (Send failed).
func (st *stream) handle(msg *extprocv3.ProcessingRequest) (done bool, err error) {
	// Observability mode: the proxy ignores answers, so send none.
	st.observe = msg.GetObservabilityMode()
	if st.first {
		st.first = false
		st.setModes(msg.GetProtocolConfig())
		st.readSubset(msg.GetMetadataContext())
	}
	switch r := msg.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return st.requestHeaders(r.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		return st.requestBody(r.RequestBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		if st.phase == phBody {
			if done, err := st.endOfBody(); done || err != nil {
				return done, err
			}
		}
		st.endIdle() // the request phase is over
		return false, st.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}})
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		st.endIdle() // the response has begun
		return false, st.responseHeaders(r.ResponseHeaders, msg.GetMetadataContext())
	case *extprocv3.ProcessingRequest_ResponseBody:
		return false, st.responseBody(r.ResponseBody)
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		st.finish()
		return false, st.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}})
	case nil:
		return false, nil // flow-control only message
	}
	return st.fail(500, "unexpected ext_proc message type")
}

// setModes takes the body modes from the first message's protocol_config
// (what the proxy actually does); without one, from Options.BodyMode (auto
// means streamed), for the response too.
func (st *stream) setModes(pc *extprocv3.ProtocolConfiguration) {
	if pc == nil {
		st.buffered = st.srv.mode == ModeBuffered
		st.respDuplex = !st.buffered
		return
	}
	switch pc.RequestBodyMode {
	case filterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
	case filterv3.ProcessingMode_BUFFERED:
		st.buffered = true
	case filterv3.ProcessingMode_BUFFERED_PARTIAL:
		st.buffered, st.partial = true, true
	default:
		// NONE: no body comes. STREAMED: headers go upstream once answered,
		// so the body cannot influence routing. Pick at headers.
		st.pickAtHdrs = true
		st.passThrough = pc.RequestBodyMode == filterv3.ProcessingMode_STREAMED
	}
	st.respDuplex = pc.ResponseBodyMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
}

// readSubset reads the proxy's subset hint from the metadata context.
func (st *stream) readSubset(md *corev3.Metadata) {
	if md == nil || st.srv.noSubset {
		return
	}
	ns := md.FilterMetadata[SubsetNamespace]
	if ns == nil {
		return
	}
	v, ok := ns.Fields[SubsetKey]
	if !ok {
		return
	}
	st.hasSubset = true
	switch k := v.GetKind().(type) {
	case *structpb.Value_ListValue:
		for _, e := range k.ListValue.GetValues() {
			st.addSubset(e.GetStringValue())
		}
	case *structpb.Value_StringValue:
		for _, e := range strings.Split(k.StringValue, ",") {
			st.addSubset(e)
		}
	}
}

func (st *stream) addSubset(s string) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		st.subset = append(st.subset, ap.Addr().Unmap())
	} else if a, err := netip.ParseAddr(s); err == nil {
		st.subset = append(st.subset, a.Unmap())
	}
}

// parseTestSelection appends the endpoints of a test-epp-endpoint-selection
// value: "IP:port" entries, or "IP" ones (port 0: any port; IPv6 with or
// without brackets). Entries that are neither are skipped, as GIE does.
func parseTestSelection(dst []netip.AddrPort, v []byte) []netip.AddrPort {
	for _, e := range strings.Split(string(v), ",") {
		e = strings.TrimSpace(e)
		if ap, err := netip.ParseAddrPort(e); err == nil {
			dst = append(dst, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		} else if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(e, "["), "]")); err == nil {
			dst = append(dst, netip.AddrPortFrom(a.Unmap(), 0))
		}
	}
	return dst
}

func headerValue(h *corev3.HeaderValue) []byte {
	if len(h.RawValue) > 0 {
		return h.RawValue
	}
	return []byte(h.Value)
}

func (st *stream) requestHeaders(h *extprocv3.HttpHeaders) (bool, error) {
	if st.phase != phHeaders {
		return st.fail(500, "request headers received twice")
	}
	st.start = time.Now()
	var fallback []byte
	var llmdObjective, llmdFairness bool // an x-llm-d-* name was read: it wins
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch hv.Key {
		case ":path":
			st.path = headerValue(hv)
		case ":method":
			st.post = string(headerValue(hv)) == "POST"
		case "x-original-path", "x-forwarded-path":
			if fallback == nil {
				fallback = headerValue(hv)
			}
		case "content-length":
			if n, err := strconv.Atoi(string(headerValue(hv))); err == nil && n >= 0 {
				st.contentLen = n
			}
		case HeaderRequestID:
			st.requestIDRaw = headerValue(hv)
		case HeaderModelRewrite:
			st.rewrite = headerValue(hv)
		case HeaderObjective:
			if !llmdObjective {
				st.objective = headerValue(hv)
			}
		case HeaderLLMDObjective:
			st.objective, llmdObjective = headerValue(hv), true
		case HeaderFairnessID:
			if !llmdFairness {
				st.fairness = headerValue(hv)
			}
		case HeaderLLMDFairnessID:
			st.fairness, llmdFairness = headerValue(hv), true
		case HeaderTestEndpointSelection:
			st.testSel, st.hasTestSel = headerValue(hv), true
		}
	}
	if len(st.path) == 0 {
		st.path = fallback
	}
	st.startSpan(h.GetHeaders().GetHeaders())
	if len(st.requestIDRaw) == 0 {
		st.requestID, st.genID = uuid.NewString(), true
	}
	if st.contentLen > st.srv.maxBody {
		return st.fail(413, "request body of "+strconv.Itoa(st.contentLen)+" bytes is over the limit of "+strconv.Itoa(st.srv.maxBody)+" bytes")
	}
	if h.GetEndOfStream() && st.post {
		// A POST without a body: what a whitespace body gets.
		return st.fail(400, "request body: expected a JSON object, found an empty body")
	}
	if h.GetEndOfStream() || st.pickAtHdrs {
		if h.GetEndOfStream() {
			st.passThrough = false // no body follows
		}
		return st.decide(nil, false)
	}
	st.phase = phBody
	if st.buffered {
		return false, st.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}})
	}
	return false, nil
}

func (st *stream) requestBody(b *extprocv3.HttpBody) (bool, error) {
	if st.pickAtHdrs && st.phase >= phResponse {
		// STREAMED after a pick at headers: pass each chunk through.
		if b.GetEndOfStream() {
			st.endIdle() // the request body is over
		}
		return false, st.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}})
	}
	if st.phase != phBody {
		return st.fail(500, "request body received before the request headers or after the body ended")
	}
	chunk := b.GetBody()
	if n := len(st.buf) + len(chunk); n > st.srv.maxBody {
		return st.fail(413, "request body of at least "+strconv.Itoa(n)+" bytes is over the limit of "+strconv.Itoa(st.srv.maxBody)+" bytes")
	}
	if code, msg := st.buffer(int64(len(chunk))); code != 0 {
		return st.fail(code, msg)
	}
	if st.body == nil && len(st.buf) == 0 && b.GetEndOfStream() {
		st.body = chunk // the whole body in one message: no copy
	} else {
		if len(st.buf) == 0 && cap(st.buf) < max(st.contentLen, len(chunk)) {
			// Preallocate from Content-Length, but never more than
			// maxPooledBuf on a header's word: beyond that, grow as bytes arrive.
			st.buf = make([]byte, 0, max(min(st.contentLen, maxPooledBuf), len(chunk), 4096))
		}
		st.buf = append(st.buf, chunk...)
		st.body = st.buf
	}
	if !b.GetEndOfStream() {
		if st.partial {
			// BUFFERED_PARTIAL over the proxy's buffer: a prefix of the
			// body, not a JSON document. Decide without it.
			st.truncated = true
			return st.decide(nil, true)
		}
		if st.buffered {
			// BUFFERED sends one message; should a proxy send more, answer
			// each so that it keeps going.
			return false, st.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}})
		}
		return false, nil
	}
	return st.endOfBody()
}

func (st *stream) endOfBody() (bool, error) {
	return st.decide(st.body, true)
}

// pickErrStatus maps scheduler errors to HTTP statuses.
func pickErrStatus(err error) (int, string) {
	switch {
	case errors.Is(err, scheduler.ErrNoEndpoints):
		return 503, "no healthy endpoint available for this request: " + err.Error()
	case errors.Is(err, scheduler.ErrNoCapacity), errors.Is(err, scheduler.ErrShed):
		return 429, err.Error()
	}
	return 500, "scheduling failed: " + err.Error()
}

// decide answers the request (pick), then ends what the request phase held:
// the buffered-bytes count, an outsized buffer, and the idle timing. bodySeen
// says the request had a body phase (possibly empty); without one it is a
// headers-only request.
func (st *stream) decide(body []byte, bodySeen bool) (bool, error) {
	done, err := st.pick(body, bodySeen)
	// The body has been scanned, hashed and echoed: it no longer counts
	// against MaxBufferedBytes, and an outsized buffer is not kept for the
	// rest of the response.
	st.unbuffer()
	if cap(st.buf) > maxPooledBuf || cap(st.out) > maxPooledBuf {
		st.buf, st.out = nil, nil
		st.body, st.req.Body, st.req.CacheSalt = nil, nil, nil
		st.rep.clear() // the answers sent hold the body too
	}
	if !done && err == nil && !st.passThrough {
		st.endIdle() // answered; a STREAMED body still to come stays timed
	}
	return done, err
}

// utf8Error describes the first invalid UTF-8 byte of b, "" when b is valid.
func utf8Error(b []byte) string {
	if utf8.Valid(b) {
		return ""
	}
	i := 0
	for i < len(b) {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			break
		}
		i += n
	}
	return "invalid byte 0x" + strconv.FormatUint(uint64(b[i]), 16) + " at offset " + strconv.Itoa(i)
}

// pick scans the body (when not empty), picks and answers the request; an
// empty body phase is refused (unless BUFFERED_PARTIAL truncated it).
func (st *stream) pick(body []byte, bodySeen bool) (bool, error) {
	hasBody := len(body) > 0
	s := st.srv
	if bodySeen && !hasBody && !st.truncated {
		return st.fail(400, "request body: expected a JSON object, found an empty body")
	}
	req := &st.req
	req.Reset()
	a := apiOf(string(st.path))
	if len(st.path) == 0 {
		a = apiOf(defaultPath)
	}
	var origModel, origLabel string
	if hasBody {
		if err := st.scan.scanBody(body, a, &st.info); err != nil {
			return st.fail(400, err.Error())
		}
		tok := body[st.info.modelTok.Start:st.info.modelTok.End]
		raw := tok[1 : len(tok)-1]
		if e := utf8Error(raw); e != "" {
			return st.fail(400, "request body: expected \"model\" to be a valid UTF-8 string, found "+e+" of its value")
		}
		if len(raw) == 0 {
			return st.fail(400, "request body: expected \"model\" to name a model, found an empty string")
		}
		if st.info.modelEsc {
			origModel = unquote(tok)
			origLabel = s.modelLabel(origModel)
		} else {
			origModel, origLabel = s.modelName(raw)
		}
		req.Body = body
		req.Spans = st.info.promptSpans(a)
		if st.info.hasCacheSalt {
			req.CacheSalt = body[st.info.cacheSalt.Start:st.info.cacheSalt.End]
		}
	}
	target, targetLabel := origModel, origLabel
	if hasBody && len(st.rewrite) > 0 && string(st.rewrite) != origModel {
		if e := utf8Error(st.rewrite); e != "" {
			return st.fail(400, "header "+HeaderModelRewrite+": expected a model name in valid UTF-8, found "+e)
		}
		target, targetLabel = s.modelName(st.rewrite)
	}
	if s.m != nil {
		st.mm = s.m.model(origLabel, targetLabel)
		st.mm.req.Inc()
		if hasBody {
			st.mm.reqSize.Observe(float64(len(body)))
		}
	}
	if hasBody && s.models != nil {
		if _, ok := s.models[target]; !ok {
			return st.fail(404, "model "+strconv.Quote(target)+" is not served by this pool")
		}
	}
	debug := s.log.Enabled(context.Background(), slog.LevelDebug)
	if debug && st.requestID == "" {
		st.requestID = string(st.requestIDRaw)
	}
	req.Model = target
	req.ID = st.requestID
	if len(st.objective) > 0 && s.priority != nil {
		if p, ok := s.priority(string(st.objective)); ok {
			req.Priority = p
		}
	}
	req.Subset = append(req.Subset[:0], st.subset...)
	req.HasSubset = st.hasSubset
	if st.hasTestSel {
		req.TestEndpoints, req.HasTestEndpoints = parseTestSelection(req.TestEndpoints[:0], st.testSel), true
	}
	req.Explain = debug

	if st.cycle == nil {
		st.cycle = s.cycles.Get().(*scheduler.Cycle)
	}
	t0 := time.Now()
	res, err := s.sched.Pick(st.cycle, req)
	if s.m != nil {
		s.m.e2e.Observe(time.Since(t0).Seconds())
	}
	if err != nil {
		code, text := pickErrStatus(err)
		if code == 500 {
			// Not a known scheduling outcome: a fault of ours.
			return st.failAt(slog.LevelError, code, text)
		}
		return st.fail(code, text)
	}
	st.res, st.acct, st.tokens = res, res.Endpoints[0], res.Tokens
	if st.mm != nil {
		st.mm.running.Inc()
	}
	if s.m != nil {
		s.m.byStatus[0].Inc()
	}

	// Destination: primary then fallbacks, comma-separated.
	dest := res.Endpoints[0].HostPort()
	st.dest = append(st.dest[:0], dest...)
	if len(res.Endpoints) > 1 {
		for _, h := range res.Endpoints[1:] {
			st.dest = append(st.dest, ',')
			st.dest = append(st.dest, h.HostPort()...)
		}
		dest = string(st.dest)
	}
	if debug {
		st.logDecision(origModel, target, dest, res)
	}

	// Model rewrite: splice the new name into the original bytes.
	out := body
	changed := false
	if hasBody && target != origModel {
		tok := body[st.info.modelTok.Start:st.info.modelTok.End]
		newTok, _ := json.Marshal(target)
		st.out = append(st.out[:0], body[:st.info.modelTok.Start]...)
		st.out = append(st.out, newTok...)
		st.out = append(st.out, body[st.info.modelTok.End:]...)
		out, changed = st.out, true
		st.origModelTok = append(st.origModelTok[:0], tok...)
		st.restore.set(newTok, st.origModelTok)
	}

	var reqID, cl []byte
	if st.genID {
		reqID = []byte(st.requestID)
	}
	if changed {
		st.clBuf = strconv.AppendInt(st.clBuf[:0], int64(len(out)), 10)
		cl = st.clBuf
	}
	traceHdrs := st.traceDecision(origModel, target, dest)
	st.phase = phResponse
	if !st.buffered || !bodySeen {
		// FULL_DUPLEX_STREAMED or headers-only: the headers answer, then the
		// body echo (an empty body is one empty message with EndOfStream).
		if err := st.send(st.rep.decisionReply(st.dest, dest, reqID, cl, traceHdrs, false, nil)); err != nil || !bodySeen {
			return false, err
		}
		return false, st.echo(out)
	}
	// BUFFERED: everything on the body answer, the body only if it changed.
	var newBody []byte
	if changed {
		newBody = out
	}
	return false, st.send(st.rep.decisionReply(st.dest, dest, reqID, cl, traceHdrs, true, newBody))
}

// echo sends body back in chunks of at most echoChunk bytes, the last with
// EndOfStream (an empty body is one empty message).
func (st *stream) echo(body []byte) error {
	for {
		n := min(len(body), echoChunk)
		last := n == len(body)
		if err := st.send(st.rep.requestEcho(body[:n], last)); err != nil {
			return err
		}
		if last {
			return nil
		}
		body = body[n:]
	}
}

func setHeader(key string, val []byte) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, RawValue: val},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func (st *stream) logDecision(model, target, dest string, res *scheduler.Result) {
	cands := make([]string, 0, len(res.Explain))
	for _, e := range res.Explain {
		var b strings.Builder
		b.WriteString(e.Endpoint)
		b.WriteString(" total=")
		b.WriteString(strconv.FormatFloat(e.Total, 'g', 4, 64))
		for _, sc := range e.Scores {
			b.WriteByte(' ')
			b.WriteString(sc.Scorer)
			b.WriteByte('=')
			b.WriteString(strconv.FormatFloat(sc.Score, 'g', 4, 64))
			b.WriteByte('x')
			b.WriteString(strconv.FormatFloat(sc.Weight, 'g', 4, 64))
		}
		cands = append(cands, b.String())
	}
	st.srv.log.Debug("extproc: picked",
		"request_id", st.requestID, "model", model, "target_model", target,
		"prompt_bytes", st.req.PromptLen(), "objective", string(st.objective), "priority", st.req.Priority,
		"fairness_id", string(st.fairness),
		"subset", st.hasSubset, "profile", res.Profile, "destination", dest,
		slog.Any("candidates", cands))
}

func (st *stream) responseHeaders(h *extprocv3.HttpHeaders, md *corev3.Metadata) error {
	st.readServed(md)
	if h.GetEndOfStream() {
		st.finish()
	}
	var set []*corev3.HeaderValueOption
	if hs := st.srv.respHeaders; len(hs) > 0 {
		lb, hasLB := md.GetFilterMetadata()[MetadataNamespaceLB]
		served := lb.GetFields()[ServedKey].GetStringValue()
		for _, p := range hs {
			if k, v := p.ResponseHeader(served, hasLB); k != "" {
				set = append(set, setHeader(k, []byte(v)))
			}
		}
	}
	return st.send(st.rep.responseHeaders(st.restore.active() && st.restore.lengthChanges(), set))
}

// readServed moves in-flight accounting to the endpoint that actually served
// the request when the proxy says so and it was one of ours.
func (st *stream) readServed(md *corev3.Metadata) {
	if md == nil || st.acct == nil || st.released {
		return
	}
	served := md.FilterMetadata[MetadataNamespaceLB].GetFields()[ServedKey].GetStringValue()
	if served == "" || served == st.acct.HostPort() {
		return
	}
	for _, h := range st.res.Endpoints[1:] {
		if h.HostPort() == served {
			st.acct.Release(st.tokens)
			h.Acquire(st.tokens)
			st.acct = h
			return
		}
	}
}

func (st *stream) responseBody(b *extprocv3.HttpBody) error {
	chunk := b.GetBody()
	st.respSeen = true
	st.respLen += int64(len(chunk))
	st.usage.feed(chunk)
	out := chunk
	if st.restore.active() {
		out = st.restore.process(chunk, b.GetEndOfStream())
	}
	if b.GetEndOfStream() {
		st.finish()
	}
	if st.respDuplex {
		return st.send(st.rep.responseEcho(out, b.GetEndOfStream()))
	}
	var mutated []byte
	if len(out) != len(chunk) || (len(out) > 0 && &out[0] != &chunk[0]) {
		mutated = out
		if mutated == nil {
			mutated = []byte{}
		}
	}
	return st.send(st.rep.responseBody(mutated))
}

// finish ends the request at response end: metrics, then release.
func (st *stream) finish() {
	if st.phase == phDone {
		return
	}
	st.phase = phDone
	if st.mm != nil && st.res != nil {
		st.mm.duration.Observe(time.Since(st.start).Seconds())
		if st.usage.found {
			st.mm.inTok.Observe(float64(st.usage.prompt))
			st.mm.outTok.Observe(float64(st.usage.completion))
		}
		if st.respSeen {
			st.mm.respSize.Observe(float64(st.respLen))
		}
	}
	st.release()
}

// release returns the in-flight accounting exactly once.
func (st *stream) release() {
	if st.res == nil || st.released {
		return
	}
	st.released = true
	if st.acct == st.res.Endpoints[0] {
		st.res.Release()
	} else {
		st.acct.Release(st.tokens)
	}
	if st.mm != nil {
		st.mm.running.Dec()
	}
}

func (st *stream) send(r *extprocv3.ProcessingResponse) error {
	if st.observe {
		return nil
	}
	return st.ps.Send(r)
}

// fail answers the request with an ImmediateResponse and ends the stream.
// Refusals the client caused (4xx, and 429 for load) are logged at debug
// level only; 5xx at warn, at most one line per second.
func (st *stream) fail(code int, msg string) (bool, error) {
	if code >= 500 {
		return st.failAt(slog.LevelWarn, code, msg)
	}
	return st.failAt(slog.LevelDebug, code, msg)
}

// failAt is fail with the log level given: debug lines are all written (when
// debug is on), warn and error lines at most one per second each.
func (st *stream) failAt(level slog.Level, code int, msg string) (bool, error) {
	s := st.srv
	st.traceStatus(code, msg)
	switch {
	case level >= slog.LevelError:
		if ok, skipped := s.errLog.allow(); ok {
			st.logFailure(level, code, msg, skipped)
		}
	case level >= slog.LevelWarn:
		if ok, skipped := s.warnLog.allow(); ok {
			st.logFailure(level, code, msg, skipped)
		}
	default:
		if s.log.Enabled(context.Background(), level) {
			st.logFailure(level, code, msg, 0)
		}
	}
	if s.m != nil {
		s.m.byStatus[statusIndex(code)].Inc()
		if st.mm != nil {
			if c := st.mm.errs[statusIndex(code)]; c != nil {
				c.Inc()
			}
		} else {
			s.m.errTotal.WithLabelValues("", "", gieErrorCode(code)).Inc()
		}
	}
	st.phase = phDone
	return true, st.immediate(code, msg)
}

// logFailure writes one line about a refused request.
func (st *stream) logFailure(level slog.Level, code int, msg string, skipped int64) {
	id := st.requestID
	if id == "" {
		id = string(st.requestIDRaw)
	}
	attrs := []slog.Attr{slog.String("request_id", id), slog.Int("status", code), slog.String("error", msg)}
	if skipped > 0 {
		attrs = append(attrs, slog.Int64("similar_lines_skipped", skipped))
	}
	st.srv.log.LogAttrs(context.Background(), level, "extproc: request refused", attrs...)
}

// errorType is the OpenAI-style error type for an HTTP status.
func errorType(code int) string {
	switch code {
	case 400:
		return "invalid_request_error"
	case 404:
		return "not_found_error"
	case 408:
		return "timeout_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 502:
		return "bad_gateway"
	case 503:
		return "service_unavailable"
	case 504:
		return "gateway_timeout"
	}
	return "internal_error"
}

// ErrorBody is the OpenAI/vLLM error envelope
// {"error":{"message":...,"type":...,"code":<status>}} that epp answers with
// (and the gateway stand-in uses for its own errors).
func ErrorBody(code int, msg string) []byte {
	m, _ := json.Marshal(msg) // a string always marshals
	b := make([]byte, 0, len(m)+80)
	b = append(b, `{"error":{"message":`...)
	b = append(b, m...)
	b = append(b, `,"type":"`...)
	b = append(b, errorType(code)...)
	b = append(b, `","code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	return append(b, "}}"...)
}

func (st *stream) immediate(code int, msg string) error {
	return st.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(code)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			setHeader("content-type", []byte("application/json")),
		}},
		Body: ErrorBody(code, msg),
	}}})
}

// unquote decodes a JSON string token the scanner validated (escapes only).
func unquote(tok []byte) string {
	var v string
	if err := json.Unmarshal(tok, &v); err != nil {
		return string(tok[1 : len(tok)-1])
	}
	return v
}
