package extproc

import (
	"fmt"
	"log/slog"
	"math"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
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

// Options configure a Server. The zero value works: auto body mode, a 16 MiB
// body limit, no logging, every model accepted, priority 0, no metrics.
type Options struct {
	// BodyMode applies to streams whose first message has no protocol_config.
	BodyMode BodyMode
	// MaxBodyBytes is the request body limit (413 above it); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int
	// Logger receives, at debug level only, one line per decision with each
	// candidate's scores. Nothing is logged per request below debug. Nil
	// discards.
	Logger *slog.Logger
	// Models, when non-empty, is the allow-list of target model names this
	// pool serves; other models get 404.
	Models []string
	// Priority resolves the x-gateway-inference-objective header to a
	// priority (negative = sheddable). Nil, or ok == false, means 0.
	Priority func(objective string) (priority int, ok bool)
	// DisableSubsetFilter ignores the proxy's subset hint
	// (--disable-endpoint-subset-filter).
	DisableSubsetFilter bool
	// Registerer, when set, receives the request-path metrics (GIE names plus
	// fastepp_extproc_requests_total{code}).
	Registerer prometheus.Registerer
}

// GRPCServerOptions returns the grpc.ServerOptions the ext_proc listener
// should use (add TLS credentials to them): a receive limit large enough for
// a BUFFERED body of maxBodyBytes (0 means DefaultMaxBodyBytes) plus its
// envelope, and one stream worker per P, so that stream goroutines (and
// their grown stacks) are reused instead of started per request (~10% of the
// CPU per request on the loopback benchmark, floor and picker alike).
func GRPCServerOptions(maxBodyBytes int) []grpc.ServerOption {
	if maxBodyBytes <= 0 {
		maxBodyBytes = DefaultMaxBodyBytes
	}
	n := maxBodyBytes + 1<<20
	if n < 0 || n > math.MaxInt32 {
		n = math.MaxInt32
	}
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(n), grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0)))}
}
