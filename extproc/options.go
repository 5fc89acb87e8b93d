package extproc

import (
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// BodyMode is how request bodies arrive when the proxy does not say so in
// the first message's protocol_config (older Envoy). A protocol_config, when
// present, always wins: it states what the proxy does.
type BodyMode uint8

const (
	// ModeAuto: streamed when there is no protocol_config.
	ModeAuto BodyMode = iota
	// ModeStreamed is FULL_DUPLEX_STREAMED: headers, then body chunks
	// without waiting; nothing is answered until the body ends. Same as
	// ModeAuto; it exists so the flag can say it explicitly.
	ModeStreamed
	// ModeBuffered is BUFFERED: headers are answered at once, then the whole
	// body arrives in one message.
	ModeBuffered
)

func (m BodyMode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeStreamed:
		return "streamed"
	case ModeBuffered:
		return "buffered"
	}
	return fmt.Sprintf("BodyMode(%d)", uint8(m))
}

// ParseBodyMode parses the --request-body-mode flag value.
func ParseBodyMode(s string) (BodyMode, error) {
	switch s {
	case "auto", "":
		return ModeAuto, nil
	case "streamed":
		return ModeStreamed, nil
	case "buffered":
		return ModeBuffered, nil
	}
	return 0, fmt.Errorf("request body mode: expected auto, streamed or buffered, found %q", s)
}

// DefaultMaxBodyBytes is the request body limit when Options.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 16 << 20

// DefaultRequestIdleTimeout is the request-phase idle limit when
// Options.RequestIdleTimeout is 0.
const DefaultRequestIdleTimeout = 60 * time.Second

// DefaultMaxBufferedBytes is the limit on request body bytes buffered across
// all streams when Options.MaxBufferedBytes is 0 (1 GiB).
const DefaultMaxBufferedBytes int64 = 1 << 30

// Options configure a Server. The zero value works: auto body mode, a 16 MiB
// body limit, a 60s request idle timeout, 1 GiB of request bodies buffered at
// most, no logging, every model accepted, priority 0, no metrics.
type Options struct {
	// BodyMode applies to streams whose first message has no protocol_config.
	BodyMode BodyMode
	// MaxBodyBytes is the request body limit (413 above it); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int
	// RequestIdleTimeout is the longest wait for the next request-phase
	// message (request headers, body chunks, trailers) of a stream that has
	// not been answered yet. A stream that waits longer gets a 408
	// ImmediateResponse and its buffered body is released. Once the request
	// is answered or picked the stream is never timed (long generations are
	// normal); a stream picked at its headers (STREAMED) whose request body
	// then stalls this long only gives back its in-flight count. 0 means
	// DefaultRequestIdleTimeout; negative disables the limit.
	RequestIdleTimeout time.Duration
	// MaxBufferedBytes bounds the request body bytes held by all streams at
	// once while they wait for the body's end. A body chunk that would push
	// the total over it ends its stream with 503 (413 when the body alone is
	// over it), and the stream's buffer is released. 0 means
	// DefaultMaxBufferedBytes; negative is an error.
	MaxBufferedBytes int64
	// Logger receives, at debug level only, one line per decision with each
	// candidate's scores and one line per request refused with a 4xx (or
	// 429). Server-side failures are logged at warn (503, protocol errors)
	// or error (scheduling faults, panics), at most one line per second per
	// level with a count of the lines left out. Nil discards.
	Logger *slog.Logger
	// Models, when non-empty, is the allow-list of target model names this
	// pool serves; other models get 404. Names must be valid UTF-8. They
	// are also metric label values (see Registerer).
	Models []string
	// Priority resolves the x-gateway-inference-objective header to a
	// priority (negative = sheddable). Nil, or ok == false, means 0.
	Priority func(objective string) (priority int, ok bool)
	// DisableSubsetFilter ignores the proxy's subset hint
	// (--disable-endpoint-subset-filter).
	DisableSubsetFilter bool
	// Registerer, when set, receives the request-path metrics (GIE names plus
	// fastepp_extproc_requests_total{code}). Their model_name and
	// target_model_name labels carry only models the picker knows: Models,
	// and the models and LoRA adapters the pool's servers report in the
	// current snapshot. Any other name is counted under OtherModel, so
	// clients cannot grow the number of series.
	Registerer prometheus.Registerer
	// Tracer, when set, traces requests with OpenTelemetry as GIE does: one
	// server span "gateway.request" per stream, from the request headers to
	// the end of the response, child of the span the request headers carry
	// (W3C traceparent), with the model, target model, chosen endpoint and
	// status as attributes; the span's context is added to the upstream
	// request's headers. Nil: no tracing, and nothing is paid for it.
	Tracer trace.Tracer
	// Propagator reads and writes the trace headers; nil means W3C trace
	// context and baggage.
	Propagator propagation.TextMapPropagator
}

// GRPCServerOptions returns the grpc.ServerOptions the ext_proc listener
// should use (add TLS credentials to them): a receive limit large enough for
// a BUFFERED body of maxBodyBytes (0 means DefaultMaxBodyBytes) plus its
// envelope; one stream worker per P, so that stream goroutines (and
// their grown stacks) are reused instead of started per request (~10% of the
// CPU per request on the loopback benchmark, floor and picker alike); and
// the wire codec (wire.go), which Register's handler needs to decode without
// allocating (other services on the same server get the stock proto codec).
//
// The rest is grpc-go's defaults, by measurement (BenchmarkExtProc with
// FASTEPP_EXTPROC_BENCH_VARIANTS, 8 endpoints, -count 6, medians of
// server-cpu-µs/req on a shared 2-core machine, 2 KB / 220 KB bodies):
// default 72 / 521; 64 stream workers 72 / 613; 256 workers 76 / 663; static
// flow-control windows of 1 MiB per stream and 16 MiB per connection (no BDP
// pings) 84 / 646. Write and read buffers of 64 KiB did not measurably
// differ from the default 32 KiB; the write buffer is shared by default
// (SharedWriteBuffer is deprecated, always on); MaxConcurrentStreams is left
// unlimited: Envoy opens one stream per in-flight HTTP request, and a limit
// would queue requests in the proxy instead of here.
func GRPCServerOptions(maxBodyBytes int) []grpc.ServerOption {
	if maxBodyBytes <= 0 {
		maxBodyBytes = DefaultMaxBodyBytes
	}
	n := maxBodyBytes + 1<<20
	if n < 0 || n > math.MaxInt32 {
		n = math.MaxInt32
	}
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(n), grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))), grpc.ForceServerCodecV2(codec{})}
}
