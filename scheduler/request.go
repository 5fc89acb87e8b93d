package scheduler

import "net/netip"

// Span is a byte range [Start, End) in a request body.
type Span struct{ Start, End int }

// Request is the scheduler's view of one inference request. The caller owns
// it and may reuse it across requests (Reset); the scheduler never keeps it.
type Request struct {
	// ID is the request id (x-request-id), for logs.
	ID string
	// Model is the target model name after any rewrite. It seeds prefix
	// hashes and selects LoRA adapters.
	Model string
	// Body holds the request bytes; Spans are the prompt's byte ranges in it,
	// in order (prompt string, message contents, ...). Hashing reads the
	// prompt straight from Body: it is never copied.
	Body  []byte
	Spans []Span
	// CacheSalt, when set, also seeds prefix hashes (vLLM cache_salt).
	CacheSalt []byte
	// Priority from the InferenceObjective; negative means sheddable.
	Priority int
	// Subset, when HasSubset, restricts candidates to endpoints with these
	// IPs (the proxy's subset hint). HasSubset with no addresses → no candidates.
	Subset    []netip.Addr
	HasSubset bool
	// Explain asks Pick to record per-scorer scores (allocates; debug only).
	Explain bool
	// TestEndpoints, when HasTestEndpoints, are the endpoints the request's
	// test-epp-endpoint-selection header names (GIE's conformance tests; read
	// by header-based-testing-filter); a port of 0 means any port of that IP.
	TestEndpoints    []netip.AddrPort
	HasTestEndpoints bool

	one [1]Span
}

// SetPrompt makes p the whole prompt (Body = p, one span), without allocating.
func (r *Request) SetPrompt(p []byte) {
	r.Body = p
	r.one[0] = Span{0, len(p)}
	r.Spans = r.one[:]
}

// PromptLen is the number of prompt bytes.
func (r *Request) PromptLen() int {
	n := 0
	for _, s := range r.Spans {
		n += s.End - s.Start
	}
	return n
}

// EstimatedTokens approximates prompt tokens as bytes/4 (at least 1).
func (r *Request) EstimatedTokens() int64 {
	n := int64(r.PromptLen() / 4)
	if n < 1 {
		n = 1
	}
	return n
}

// Reset clears r for reuse, keeping slice capacity.
func (r *Request) Reset() {
	r.ID, r.Model = "", ""
	r.Body, r.Spans, r.CacheSalt = nil, r.Spans[:0], nil
	r.Priority = 0
	r.Subset, r.HasSubset = r.Subset[:0], false
	r.Explain = false
	r.TestEndpoints, r.HasTestEndpoints = r.TestEndpoints[:0], false
}
