package extproc

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Request tracing (Options.Tracer). Every function here returns at once when
// the stream has no span, so a server without a tracer pays one nil check per
// call site.

// SpanName is the name of the per-request span (GIE's).
const SpanName = "gateway.request"

// headerCarrier reads trace headers from the request's Envoy header map.
type headerCarrier []*corev3.HeaderValue

func (c headerCarrier) Get(key string) string {
	for _, h := range c {
		if h.GetKey() == key {
			return string(headerValue(h))
		}
	}
	return ""
}

func (c headerCarrier) Set(string, string) {} // read-only

func (c headerCarrier) Keys() []string {
	keys := make([]string, len(c))
	for i, h := range c {
		keys[i] = h.GetKey()
	}
	return keys
}

// mutationCarrier collects the headers a propagator injects, as header
// mutations for the upstream request.
type mutationCarrier struct{ set []*corev3.HeaderValueOption }

func (c *mutationCarrier) Get(string) string { return "" }
func (c *mutationCarrier) Set(key, value string) {
	c.set = append(c.set, setHeader(key, []byte(value)))
}
func (c *mutationCarrier) Keys() []string { return nil }

// startSpan opens the request's span from its headers.
func (st *stream) startSpan(hs []*corev3.HeaderValue) {
	s := st.srv
	if s.tracer == nil {
		return
	}
	ctx := s.propagator.Extract(st.ps.Context(), headerCarrier(hs))
	st.spanCtx, st.span = s.tracer.Start(ctx, SpanName, trace.WithSpanKind(trace.SpanKindServer))
}

// traceDecision records the decision on the span and returns the trace
// headers to add to the upstream request (nil without a span).
func (st *stream) traceDecision(model, target, dest string) []*corev3.HeaderValueOption {
	if st.span == nil {
		return nil
	}
	st.span.SetAttributes(
		attribute.String("model", model),
		attribute.String("target_model", target),
		attribute.String("destination_endpoint", dest),
	)
	var c mutationCarrier
	st.srv.propagator.Inject(st.spanCtx, &c)
	return c.set
}

// traceStatus records an answer that ended the request early.
func (st *stream) traceStatus(code int, msg string) {
	if st.span == nil {
		return
	}
	st.span.SetAttributes(attribute.Int("http.response.status_code", code))
	if code >= 500 {
		st.span.SetStatus(codes.Error, msg)
	} else {
		st.span.SetAttributes(attribute.String("error.message", msg))
	}
}

// endSpan closes the span (stream end, whatever the reason).
func (st *stream) endSpan() {
	if st.span == nil {
		return
	}
	st.span.End()
	st.span, st.spanCtx = nil, nil
}

// defaultPropagator is W3C trace context and baggage, as GIE sets.
func defaultPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}
