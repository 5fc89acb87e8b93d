// Package gateway owns fastepp's small Envoy stand-in for local runs,
// benchmarks and tests: an HTTP reverse proxy that asks epp where each
// request goes over Envoy's ext_proc protocol, exactly as Envoy does in
// FULL_DUPLEX_STREAMED mode (docs/PROTOCOL.md), then proxies.
//
// Per client request it owns: one ext_proc stream (request headers with
// protocol_config FULL_DUPLEX_STREAMED, the body in chunks, the
// RequestHeaders answer with its header mutation and envoy.lb metadata, the
// echoed body reassembled from StreamedResponse chunks, ImmediateResponse
// relayed to the client), the upstream request to the chosen endpoint (the
// next one of a fallback list on connection failure), and the response
// relayed through ext_proc chunk by chunk and flushed to the client as each
// chunk comes back (SSE is never buffered). A client disconnect cancels the
// stream so epp releases its in-flight accounting.
//
// Direct mode (Config.Direct) skips ext_proc and spreads requests over fixed
// endpoints as Config.Balance says: round-robin (the "Kubernetes Service"
// baseline), random, or least-request (power of two choices on the
// gateway's own in-flight counts, as Envoy's LEAST_REQUEST).
//
// Only Config.Paths (default: the OpenAI API paths and /health) are
// forwarded; other paths get 404 from the gateway itself. When a stream to
// epp fails to connect, the 500 says why (ProbeEPP: nothing listening, TLS
// expected, plaintext expected).
//
// It does not own picking (extproc, scheduler), the pool (endpoints) or
// flags and serving (cmd/gateway). It is not a production proxy: no TLS to
// clients, no HTTP/2 upstream, no retries beyond connection failures, no
// trailers.
package gateway
