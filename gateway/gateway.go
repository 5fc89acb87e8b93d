package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fastepp/fastepp/extproc"
)

// Wire keys the gateway reads and sends (docs/PROTOCOL.md): extproc's, so
// that both ends of the local stack share one definition.
const (
	HeaderDestination   = extproc.HeaderDestination
	MetadataNamespaceLB = extproc.MetadataNamespaceLB
	ServedKey           = extproc.ServedKey
	HeaderRequestID     = extproc.HeaderRequestID
)

// Balancing modes of Direct mode (Config.Balance).
const (
	BalanceRoundRobin   = "round-robin"
	BalanceRandom       = "random"
	BalanceLeastRequest = "least-request"
)

// BalanceModes lists the Direct mode balancing modes, the default first.
var BalanceModes = []string{BalanceRoundRobin, BalanceRandom, BalanceLeastRequest}

// DefaultPaths are the paths the gateway forwards when Config.Paths is nil:
// the OpenAI API paths model servers serve (vLLM, SGLang, the simulator) and
// the servers' /health. Everything else (a simulator's /admin/crash, /metrics)
// is answered 404 by the gateway itself, as a gateway route for /v1 would.
var DefaultPaths = []string{
	"/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/embeddings", "/v1/responses", "/health",
}

// Defaults for the zero values of Config.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultEPPTimeout     = 10 * time.Second
	DefaultChunkSize      = 32 << 10
	DefaultMaxIdlePerHost = 256
	// MaxChunkSize bounds Config.ChunkSize (well under gRPC's message limits).
	MaxChunkSize = 4 << 20
)

// Config configures a Gateway. Exactly one of EPP and Direct is set.
type Config struct {
	// EPP is epp's ext_proc address, host:port.
	EPP string
	// EPPTLS dials EPP over TLS without verifying its certificate (epp's
	// default certificate is self-signed).
	EPPTLS bool
	// Direct, when non-empty, skips ext_proc: requests go to these ip:port
	// endpoints as Balance says (the next one on connection failure).
	Direct []string
	// Balance is Direct mode's balancing: BalanceRoundRobin (the default,
	// what a Kubernetes Service does), BalanceRandom, or BalanceLeastRequest
	// (power of two choices on the gateway's own in-flight counts, as
	// Envoy's LEAST_REQUEST). It must be empty in EPP mode.
	Balance string
	// Paths are the request paths forwarded (exact match, query aside);
	// others get 404 without reaching epp or an endpoint. Nil means
	// DefaultPaths: the OpenAI API and /health.
	Paths []string
	// ConnectTimeout bounds dialing an upstream endpoint; 0 means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an upstream's response
	// headers after the request was sent; 0 means no limit (a long prefill
	// under load can take many seconds).
	ResponseHeaderTimeout time.Duration
	// EPPTimeout bounds the wait for epp's routing answer (headers answer
	// and body echo) once the request body was sent; 0 means
	// DefaultEPPTimeout. On expiry the client gets 504.
	EPPTimeout time.Duration
	// ChunkSize is the largest body chunk sent to ext_proc and read from
	// upstreams; 0 means DefaultChunkSize.
	ChunkSize int
	// MaxIdleConnsPerHost is the keep-alive pool size per upstream; 0 means
	// DefaultMaxIdlePerHost.
	MaxIdleConnsPerHost int
	// Logger receives one debug line per failed request; nil discards.
	Logger *slog.Logger
}

// Gateway is an http.Handler proxying each request to the endpoint epp
// picks (or round-robin in direct mode). Create it with New; Close it when
// done. Safe for concurrent use.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	conn     *grpc.ClientConn
	client   extprocv3.ExternalProcessorClient
	direct   []string
	balance  string
	rr       atomic.Uint64
	inflight []atomic.Int64 // per direct endpoint (least-request)
	paths    map[string]bool
	pathList string

	probeMu   sync.Mutex
	probeAt   time.Time
	probeHint string
	transport *http.Transport

	chunks sync.Pool // *[]byte of cfg.ChunkSize
	bodies sync.Pool // *[]byte, reassembled request bodies
}

// maxPooledBody bounds the request body buffers kept for reuse.
const maxPooledBody = 4 << 20

// New validates cfg and returns a gateway. The ext_proc connection is made
// lazily (the first request dials), like Envoy's gRPC client.
func New(cfg Config) (*Gateway, error) {
	if cfg.EPP == "" && len(cfg.Direct) == 0 {
		return nil, errors.New("gateway: expected an epp address or a direct endpoint list, found neither")
	}
	if cfg.EPP != "" && len(cfg.Direct) > 0 {
		return nil, errors.New("gateway: expected an epp address or a direct endpoint list, found both")
	}
	if cfg.ConnectTimeout < 0 || cfg.ResponseHeaderTimeout < 0 || cfg.EPPTimeout < 0 {
		return nil, errors.New("gateway: expected timeouts >= 0, found a negative one")
	}
	if cfg.ChunkSize < 0 || cfg.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("gateway: expected a chunk size in 0..%d bytes, found %d", MaxChunkSize, cfg.ChunkSize)
	}
	switch cfg.Balance {
	case "":
		if len(cfg.Direct) > 0 {
			cfg.Balance = BalanceRoundRobin
		}
	case BalanceRoundRobin, BalanceRandom, BalanceLeastRequest:
		if cfg.EPP != "" {
			return nil, fmt.Errorf("gateway: balancing %q applies to direct mode only; with epp, epp picks", cfg.Balance)
		}
	default:
		return nil, fmt.Errorf("gateway: balancing: expected one of %s, found %q", strings.Join(BalanceModes, ", "), cfg.Balance)
	}
	if cfg.Paths != nil && len(cfg.Paths) == 0 {
		return nil, errors.New("gateway: paths: expected at least one path to forward, found none")
	}
	for _, p := range cfg.Paths {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?# ") {
			return nil, fmt.Errorf("gateway: paths: expected absolute paths without query, found %q", p)
		}
	}
	if cfg.MaxIdleConnsPerHost < 0 {
		return nil, fmt.Errorf("gateway: expected MaxIdleConnsPerHost >= 0, found %d", cfg.MaxIdleConnsPerHost)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.EPPTimeout == 0 {
		cfg.EPPTimeout = DefaultEPPTimeout
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.MaxIdleConnsPerHost == 0 {
		cfg.MaxIdleConnsPerHost = DefaultMaxIdlePerHost
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, balance: cfg.Balance}
	paths := cfg.Paths
	if paths == nil {
		paths = DefaultPaths
	}
	g.paths = make(map[string]bool, len(paths))
	for _, p := range paths {
		g.paths[p] = true
	}
	g.pathList = strings.Join(paths, ", ")
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	for _, ep := range cfg.Direct {
		hp, err := ParseEndpoint(ep)
		if err != nil {
			return nil, fmt.Errorf("gateway: direct endpoint list: %w", err)
		}
		g.direct = append(g.direct, hp)
	}
	g.inflight = make([]atomic.Int64, len(g.direct))
	if cfg.EPP != "" {
		if _, _, err := net.SplitHostPort(cfg.EPP); err != nil {
			return nil, fmt.Errorf("gateway: epp address: expected host:port, found %q", cfg.EPP)
		}
		creds := insecure.NewCredentials()
		if cfg.EPPTLS {
			creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // epp's default cert is self-signed; local runs only
		}
		conn, err := grpc.NewClient(cfg.EPP, grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			return nil, fmt.Errorf("gateway: epp client for %q: %w", cfg.EPP, err)
		}
		g.conn = conn
		g.client = extprocv3.NewExternalProcessorClient(conn)
	}
	dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	g.transport = &http.Transport{
		Proxy:                 nil, // never an HTTP proxy from the environment: endpoints are pod IPs
		DialContext:           dialer.DialContext,
		MaxIdleConns:          0, // no global cap; per host below
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		DisableCompression:    true, // relay Accept-Encoding and bodies as they are
		ForceAttemptHTTP2:     false,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	size := cfg.ChunkSize
	g.chunks.New = func() any { b := make([]byte, size); return &b }
	g.bodies.New = func() any { b := make([]byte, 0, 16<<10); return &b }
	return g, nil
}

// Close releases the ext_proc connection and idle upstream connections.
func (g *Gateway) Close() error {
	g.transport.CloseIdleConnections()
	if g.conn != nil {
		return g.conn.Close()
	}
	return nil
}

// Balance is the Direct mode balancing ("" with epp).
func (g *Gateway) Balance() string { return g.balance }

// ServeHTTP proxies one client request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.paths[r.URL.Path] {
		writeError(w, http.StatusNotFound, "path "+strconv.Quote(r.URL.Path)+" is not routed: this gateway forwards only "+g.pathList)
		return
	}
	if g.client == nil {
		g.serveDirect(w, r)
		return
	}
	g.serveExtProc(w, r)
}

// ParseEndpoint checks that s is host:port with a numeric port and returns
// it normalised (spaces trimmed).
func ParseEndpoint(s string) (string, error) {
	s = strings.TrimSpace(s)
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", fmt.Errorf("expected ip:port, found %q", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("expected a port in 1..65535 in %q, found %q", s, port)
	}
	return s, nil
}

// ParseEndpoints parses a comma-separated ip:port list (empty items are
// skipped; at least one is required).
func ParseEndpoints(list string) ([]string, error) {
	var out []string
	for _, item := range strings.Split(list, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		hp, err := ParseEndpoint(item)
		if err != nil {
			return nil, err
		}
		out = append(out, hp)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("expected a comma-separated ip:port list, found %q", list)
	}
	return out, nil
}

func (g *Gateway) getChunk() *[]byte  { return g.chunks.Get().(*[]byte) }
func (g *Gateway) putChunk(b *[]byte) { g.chunks.Put(b) }

func (g *Gateway) getBody(hint int64) *[]byte {
	b := g.bodies.Get().(*[]byte)
	if hint > 0 && hint <= maxPooledBody && int64(cap(*b)) < hint {
		*b = make([]byte, 0, hint)
	}
	*b = (*b)[:0]
	return b
}

func (g *Gateway) putBody(b *[]byte) {
	if cap(*b) > maxPooledBody {
		return
	}
	*b = (*b)[:0]
	g.bodies.Put(b)
}
