package extproc

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestTracing: with a tracer, each request is one server span named
// gateway.request, child of the span in the request's traceparent, carrying
// the model, the target model and the chosen endpoint; the upstream request
// gets a traceparent of that span. A refused request's span records the
// status. Without a tracer nothing is traced (every other test).
func TestTracing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(testCtx(t))
	f := newFixture(t, 2, nil, Options{Tracer: tp.Tracer("fastepp/extproc")})

	const parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	s := f.open(t)
	hr, _ := roundTrip(t, s, "/v1/completions", []byte(`{"model":"m","prompt":"p"}`), 0,
		"traceparent", "00-"+parentTrace+"-00f067aa0ba902b7-01")
	common := hr.GetRequestHeaders().GetResponse()
	dest, _ := destOf(hr, common)
	tp2, ok := headerOf(common, "traceparent")
	if !ok || !strings.HasPrefix(tp2, "00-"+parentTrace+"-") || strings.Contains(tp2, "00f067aa0ba902b7") {
		t.Errorf("upstream traceparent = %q, %v: want the same trace with this request's span", tp2, ok)
	}
	s.CloseSend()
	waitIdle(t, f.srv, f.pool)

	// A refused request (400).
	s = f.open(t)
	if err := s.Send(reqHeadersMsg(postHeaders("/v1/completions", 9), false, duplex, nil)); err != nil {
		t.Fatal(err)
	}
	if err := sendBody(s, []byte(`not json!`), 0); err != nil {
		t.Fatal(err)
	}
	expectImmediate(t, s, 400)
	waitIdle(t, f.srv, f.pool)

	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans ended, want 2", len(spans))
	}
	ok0 := spans[0]
	if ok0.Name() != SpanName || ok0.SpanKind() != trace.SpanKindServer {
		t.Errorf("span %q kind %v, want %q server", ok0.Name(), ok0.SpanKind(), SpanName)
	}
	if got := ok0.Parent().TraceID().String(); got != parentTrace || !ok0.Parent().IsRemote() {
		t.Errorf("parent trace %s (remote %v), want %s from the request's traceparent", got, ok0.Parent().IsRemote(), parentTrace)
	}
	want := map[attribute.Key]string{"model": "m", "target_model": "m", "destination_endpoint": dest}
	for _, kv := range ok0.Attributes() {
		if w, ok := want[kv.Key]; ok {
			if kv.Value.AsString() != w {
				t.Errorf("attribute %s = %q, want %q", kv.Key, kv.Value.AsString(), w)
			}
			delete(want, kv.Key)
		}
	}
	if len(want) > 0 {
		t.Errorf("span lacks attributes %v", want)
	}
	status := int64(0)
	for _, kv := range spans[1].Attributes() {
		if kv.Key == "http.response.status_code" {
			status = kv.Value.AsInt64()
		}
	}
	if status != 400 {
		t.Errorf("refused request's span: status code attribute %d, want 400", status)
	}
}
