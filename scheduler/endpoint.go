package scheduler

import (
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// Endpoint is the identity of one model-server endpoint: one pod and port.
type Endpoint struct {
	// Name is a human name (pod name, or the address when there is none).
	Name string
	// Namespace of the pod, empty outside Kubernetes.
	Namespace string
	// Addr and Port locate the endpoint.
	Addr netip.Addr
	Port uint16
	// Labels are the pod labels (engine type, role, ...). Never mutated.
	Labels map[string]string
}

// HostPort returns "ip:port", IPv6 bracketed.
func (e Endpoint) HostPort() string {
	return netip.AddrPortFrom(e.Addr, e.Port).String()
}

// Metrics is what the picker knows about an endpoint from its model server's
// last metrics page (package endpoints scrapes and parses it).
type Metrics struct {
	Waiting int // requests queued in the model server
	Running int // requests in execution batches
	// KVUsage is KV-cache usage in 0..1.
	KVUsage float64
	// Models are the model names the server reports serving (the model_name
	// labels of its metrics page; LoRA adapters are in ActiveAdapters). The
	// slice is shared between snapshots while unchanged: never mutate it.
	Models []string
	// LoRA state from vllm:lora_requests_info.
	ActiveAdapters  []string
	WaitingAdapters []string
	MaxLoRA         int
	// Cache configuration from vllm:cache_config_info (0 when unknown).
	BlockSize    int
	NumGPUBlocks int
	// UpdatedAt is when these values were scraped. Zero means never.
	UpdatedAt time.Time
	// InflightAtScrape is Handle.Inflight() read when the scrape was taken;
	// the scheduler adds what was dispatched since then to the scraped load.
	InflightAtScrape int64
}

// Handle is the stable, shared identity of an endpoint across snapshots. The
// pool creates one per endpoint and keeps it while the endpoint exists; the
// scheduler counts in-flight requests on it. Safe for concurrent use.
type Handle struct {
	Endpoint
	hostPort string
	id       uint32 // unique per process; keys per-endpoint plugin state

	inflight       atomic.Int64
	inflightTokens atomic.Int64
	dispatched     atomic.Uint64
	// watch is the fast path's load index leaf for this endpoint (nil when
	// none): Acquire and Release mark it dirty (scheduler/fastpath.go).
	watch atomic.Pointer[loadWatch]
}

var handleIDs atomic.Uint32

// NewHandle returns a handle for e. Call it once per endpoint, not per scrape.
func NewHandle(e Endpoint) *Handle {
	return &Handle{Endpoint: e, hostPort: e.HostPort(), id: handleIDs.Add(1)}
}

// HostPort is the precomputed "ip:port" (what goes into x-gateway-destination-endpoint).
func (h *Handle) HostPort() string { return h.hostPort }

// ID is a process-unique number for the endpoint, stable while the handle lives.
func (h *Handle) ID() uint32 { return h.id }

// Inflight is the number of requests dispatched to this endpoint and not yet released.
func (h *Handle) Inflight() int64 { return h.inflight.Load() }

// InflightTokens is the estimated prompt tokens of the in-flight requests.
func (h *Handle) InflightTokens() int64 { return h.inflightTokens.Load() }

// Dispatched is the total number of requests ever dispatched here.
func (h *Handle) Dispatched() uint64 { return h.dispatched.Load() }

// Acquire records one dispatched request of the given estimated prompt tokens.
func (h *Handle) Acquire(tokens int64) {
	h.inflight.Add(1)
	h.inflightTokens.Add(tokens)
	h.dispatched.Add(1)
	if w := h.watch.Load(); w != nil {
		w.ix.markDirty(w.rank)
	}
}

// Release records the end of a request started with Acquire(tokens).
func (h *Handle) Release(tokens int64) {
	h.inflight.Add(-1)
	h.inflightTokens.Add(-tokens)
	if w := h.watch.Load(); w != nil {
		w.ix.markDirty(w.rank)
	}
}

func (h *Handle) String() string { return h.Name + "(" + h.hostPort + ")" }

// ParseEndpoint parses "ip:port" into an Endpoint named after the address.
func ParseEndpoint(s string) (Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return Endpoint{}, &InputError{What: "endpoint", Expected: "ip:port (e.g. 10.0.0.1:8000 or [::1]:8000)", Found: strconv.Quote(s)}
	}
	if ap.Port() == 0 {
		return Endpoint{}, &InputError{What: "endpoint", Expected: "a port in 1..65535", Found: strconv.Quote(s)}
	}
	return Endpoint{Name: s, Addr: ap.Addr().Unmap(), Port: ap.Port()}, nil
}

// InputError says what was expected and what was found.
type InputError struct {
	What, Expected, Found string
}

func (e *InputError) Error() string {
	return e.What + ": expected " + e.Expected + ", found " + e.Found
}
