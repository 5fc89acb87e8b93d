package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fastepp/fastepp/scheduler"
	"github.com/fastepp/fastepp/scorers"
)

type fixture struct {
	pool *pool
	srv  *Server
	reg  *prometheus.Registry
	c    extprocv3.ExternalProcessorClient
}

func newFixture(tb testing.TB, n int, plan *scheduler.Plan, opts Options) *fixture {
	tb.Helper()
	f := &fixture{pool: newPool(tb, plan, n), reg: prometheus.NewRegistry()}
	opts.Registerer = f.reg
	var err error
	if f.srv, err = New(f.pool.sched, opts); err != nil {
		tb.Fatal(err)
	}
	f.c = extprocv3.NewExternalProcessorClient(serve(tb, f.srv))
	return f
}

func (f *fixture) open(tb testing.TB) extprocv3.ExternalProcessor_ProcessClient {
	tb.Helper()
	s, err := f.c.Process(testCtx(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// metric returns the sum of a counter's values or a histogram's sample count
// over all label sets.
func (f *fixture) metric(tb testing.TB, name string) float64 {
	tb.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				v += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				v += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return v
}

func chatBody(model, prompt string) []byte {
	b, _ := json.Marshal(map[string]any{"model": model, "stream": true,
		"messages": []map[string]any{{"role": "user", "content": prompt}}})
	return b
}

// roundTrip runs a whole FULL_DUPLEX_STREAMED request through s and returns
// the headers answer and the echoed body.
func roundTrip(tb testing.TB, s extprocv3.ExternalProcessor_ProcessClient, path string, body []byte, chunk int, extra ...string) (*extprocv3.ProcessingResponse, []byte) {
	tb.Helper()
	if err := s.Send(reqHeadersMsg(postHeaders(path, len(body), extra...), false, duplex, nil)); err != nil {
		tb.Fatal(err)
	}
	if err := sendBody(s, body, chunk); err != nil {
		tb.Fatal(err)
	}
	hr, err := s.Recv()
	if err != nil {
		tb.Fatal(err)
	}
	if hr.GetRequestHeaders() == nil {
		tb.Fatalf("expected a RequestHeaders answer, found %v", hr)
	}
	echo, maxChunk, err := readEcho(s, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if maxChunk > MaxChunk {
		tb.Fatalf("echoed a chunk of %d bytes, expected at most %d", maxChunk, MaxChunk)
	}
	return hr, echo
}

func TestStreamedRoundTrip(t *testing.T) {
	f := newFixture(t, 4, nil, Options{})
	for _, tc := range []struct {
		name  string
		size  int
		chunk int
	}{
		{"one message", 2 << 10, 0},
		{"chunked", 20 << 10, 1000},
		{"300KB in 16KB chunks", 300 << 10, 16 << 10},
		{"300KB in one message", 300 << 10, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := chatBody("m1", strings.Repeat("x", tc.size))
			s := f.open(t)
			hr, echo := roundTrip(t, s, "/v1/chat/completions", body, tc.chunk)
			common := hr.GetRequestHeaders().GetResponse()
			if !common.GetClearRouteCache() {
				t.Error("expected ClearRouteCache on the headers answer")
			}
			h, md := destOf(hr, common)
			if h == "" || h != md {
				t.Errorf("destination header %q and envoy.lb metadata %q: expected the same non-empty value", h, md)
			}
			if id, ok := headerOf(common, HeaderRequestID); !ok || len(id) != 36 {
				t.Errorf("x-request-id = %q, %v: expected a generated uuid", id, ok)
			}
			if _, ok := headerOf(common, "content-length"); ok {
				t.Error("content-length set although the body did not change")
			}
			if !bytes.Equal(echo, body) {
				t.Errorf("echoed body differs: %d bytes, want %d", len(echo), len(body))
			}
			if f.pool.inflight() != 1 {
				t.Errorf("in-flight = %d during the response, want 1", f.pool.inflight())
			}
			s.CloseSend()
			if _, err := s.Recv(); err != io.EOF {
				t.Errorf("expected the stream to end, found %v", err)
			}
			waitIdle(t, f.srv, f.pool)
		})
	}
}

func TestRequestIDForwardedNotRegenerated(t *testing.T) {
	f := newFixture(t, 2, nil, Options{})
	s := f.open(t)
	hr, _ := roundTrip(t, s, "/v1/completions", []byte(`{"model":"m","prompt":"p"}`), 0, HeaderRequestID, "abc")
	if _, ok := headerOf(hr.GetRequestHeaders().GetResponse(), HeaderRequestID); ok {
		t.Error("x-request-id present in the request must not be replaced")
	}
	for _, h := range hr.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		switch h.GetHeader().GetKey() {
		case HeaderModelRewrite, HeaderObjective, HeaderFairnessID, SubsetKey:
			t.Errorf("control header %q echoed", h.GetHeader().GetKey())
		}
	}
	s.CloseSend()
	waitIdle(t, f.srv, f.pool)
	// The proxy closed the stream without response messages: that is the
	// response end, and the request duration is recorded.
	if n := f.metric(t, "inference_objective_request_duration_seconds"); n != 1 {
		t.Errorf("request duration observations = %v, want 1", n)
	}
	if n := f.metric(t, "inference_objective_running_requests"); n != 0 {
		t.Errorf("running requests = %v after the stream ended, want 0", n)
	}
}

func TestBufferedMode(t *testing.T) {
	buffered := protocol(filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_BUFFERED)
	for _, tc := range []struct {
		name    string
		pc      *extprocv3.ProtocolConfiguration
		opts    Options
		rewrite bool
	}{
		{name: "protocol_config", pc: buffered},
		{name: "flag default", opts: Options{BodyMode: ModeBuffered}},
		{name: "rewrite", pc: buffered, rewrite: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 3, nil, tc.opts)
			s := f.open(t)
			body := []byte(`{"model":"orig","prompt":"hello"}`)
			extra := []string{}
			if tc.rewrite {
				extra = append(extra, HeaderModelRewrite, "new-model-name")
			}
			if err := s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body), extra...), false, tc.pc, nil)); err != nil {
				t.Fatal(err)
			}
			r, err := s.Recv()
			if err != nil || r.GetRequestHeaders() == nil || r.GetRequestHeaders().GetResponse() != nil {
				t.Fatalf("expected an empty RequestHeaders answer at once, found %v, %v", r, err)
			}
			if err := s.Send(reqBodyMsg(body, true)); err != nil {
				t.Fatal(err)
			}
			r, err = s.Recv()
			if err != nil || r.GetRequestBody() == nil {
				t.Fatalf("expected a RequestBody answer, found %v, %v", r, err)
			}
			common := r.GetRequestBody().GetResponse()
			h, md := destOf(r, common)
			if h == "" || h != md || !common.GetClearRouteCache() {
				t.Errorf("header %q, metadata %q, ClearRouteCache %v", h, md, common.GetClearRouteCache())
			}
			bm := common.GetBodyMutation()
			if !tc.rewrite {
				if bm != nil {
					t.Errorf("unchanged body must not be mutated, found %v", bm)
				}
			} else {
				want := `{"model":"new-model-name","prompt":"hello"}`
				if string(bm.GetBody()) != want {
					t.Errorf("rewritten body %q, want %q", bm.GetBody(), want)
				}
				if cl, _ := headerOf(common, "content-length"); cl != fmt.Sprint(len(want)) {
					t.Errorf("content-length %q, want %d", cl, len(want))
				}
			}
			s.CloseSend()
			waitIdle(t, f.srv, f.pool)
		})
	}
}

func TestHeadersOnly(t *testing.T) {
	for _, pc := range []*extprocv3.ProtocolConfiguration{duplex, nil, protocol(filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_NONE)} {
		f := newFixture(t, 2, nil, Options{})
		s := f.open(t)
		if err := s.Send(reqHeadersMsg(hdrs(":method", "GET", ":path", "/v1/models"), true, pc, nil)); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		h, md := destOf(r, r.GetRequestHeaders().GetResponse())
		if h == "" || h != md {
			t.Fatalf("headers-only: header %q metadata %q", h, md)
		}
		if err := s.Send(respHeadersMsg(hdrs(":status", "200"), true)); err != nil {
			t.Fatal(err)
		}
		if r, err := s.Recv(); err != nil || r.GetResponseHeaders() == nil {
			t.Fatalf("expected a ResponseHeaders answer, found %v %v", r, err)
		}
		if f.pool.inflight() != 0 {
			t.Errorf("in-flight %d after the response ended", f.pool.inflight())
		}
		s.CloseSend()
		waitIdle(t, f.srv, f.pool)
	}
}

func TestSubsetHint(t *testing.T) {
	f := newFixture(t, 6, nil, Options{})
	allowed := map[string]bool{f.pool.handles[2].HostPort(): true, f.pool.handles[4].HostPort(): true}
	for i := range 20 {
		s := f.open(t)
		body := chatBody("m", fmt.Sprint("prompt ", i))
		if err := s.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, duplex,
			subsetMD(f.pool.handles[2].HostPort(), "10.0.0.5:9999", "bogus"))); err != nil {
			t.Fatal(err)
		}
		sendBody(s, body, 0)
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		h, _ := destOf(r, r.GetRequestHeaders().GetResponse())
		if !allowed[h] {
			t.Fatalf("picked %q outside the subset hint (match by IP: %v)", h, allowed)
		}
		s.CloseSend()
	}
	waitIdle(t, f.srv, f.pool)
}

// immediate runs one stream expected to end with an ImmediateResponse.
func expectImmediate(t *testing.T, s extprocv3.ExternalProcessor_ProcessClient, code int) {
	t.Helper()
	var r *extprocv3.ProcessingResponse
	var err error
	for {
		r, err = s.Recv()
		if err != nil {
			t.Fatalf("expected an ImmediateResponse %d, found error %v", code, err)
		}
		if r.GetImmediateResponse() != nil {
			break
		}
		if r.GetRequestHeaders() == nil || r.GetRequestHeaders().GetResponse() != nil {
			t.Fatalf("expected an ImmediateResponse %d, found %v", code, r)
		}
	}
	ir := r.GetImmediateResponse()
	if int(ir.GetStatus().GetCode()) != code {
		t.Fatalf("status %d (%s), want %d", ir.GetStatus().GetCode(), ir.GetBody(), code)
	}
	var env struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    int    `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(ir.GetBody(), &env); err != nil || env.Error.Code != code || env.Error.Message == "" || env.Error.Type == "" {
		t.Fatalf("error body %q: expected the OpenAI envelope with code %d (%v)", ir.GetBody(), code, err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("expected the stream to end after the ImmediateResponse, found %v", err)
	}
}

// alwaysSaturated sheds every sheddable request.
type alwaysSaturated struct{}

func (alwaysSaturated) Type() string { return "test-saturated" }
func (alwaysSaturated) Name() string { return "test-saturated" }
func (alwaysSaturated) Saturation(*scheduler.Snapshot, time.Time) float64 {
	return 2
}

// dropAll filters every candidate away.
type dropAll struct{}

func (dropAll) Type() string                                         { return "test-drop-all" }
func (dropAll) Name() string                                         { return "test-drop-all" }
func (dropAll) Filter(c *scheduler.Cycle, cands []int32) []int32     { return cands[:0] }
func (dropAll) Score(c *scheduler.Cycle, cands []int32, o []float64) {}

func planWith(tb testing.TB, sat scheduler.SaturationDetector, filters ...scheduler.Filter) *scheduler.Plan {
	tb.Helper()
	pk := scorers.NewMaxScorePicker(1)
	h := scorers.NewSingleProfileHandler()
	plan, err := scheduler.NewPlan(h, []*scheduler.Profile{{Name: "p", Filters: filters, Picker: pk}}, sat, []scheduler.Plugin{pk, h})
	if err != nil {
		tb.Fatal(err)
	}
	return plan
}

func TestErrors(t *testing.T) {
	good := []byte(`{"model":"m","prompt":"x"}`)
	type step func(s extprocv3.ExternalProcessor_ProcessClient) error
	headersBody := func(path string, body []byte, md bool, extra ...string) step {
		return func(s extprocv3.ExternalProcessor_ProcessClient) error {
			var m = subsetMD()
			if !md {
				m = nil
			}
			if err := s.Send(reqHeadersMsg(postHeaders(path, len(body), extra...), false, duplex, m)); err != nil {
				return err
			}
			return sendBody(s, body, 7)
		}
	}
	for _, tc := range []struct {
		name  string
		code  int
		n     int // endpoints
		plan  func(testing.TB) *scheduler.Plan
		opts  Options
		steps step
	}{
		{name: "not JSON", code: 400, n: 2, steps: headersBody("/v1/completions", []byte(`model: m`), false)},
		{name: "not an object", code: 400, n: 2, steps: headersBody("/v1/completions", []byte(`["m"]`), false)},
		{name: "model missing", code: 400, n: 2, steps: headersBody("/v1/completions", []byte(`{"prompt":"x"}`), false)},
		{name: "model not a string", code: 400, n: 2, steps: headersBody("/v1/completions", []byte(`{"model":1}`), false)},
		{name: "prompt wrong type", code: 400, n: 2, steps: headersBody("/v1/completions", []byte(`{"model":"m","prompt":true}`), false)},
		{name: "messages wrong type", code: 400, n: 2, steps: headersBody("/v1/chat/completions", []byte(`{"model":"m","messages":{}}`), false)},
		{name: "model not served", code: 404, n: 2, opts: Options{Models: []string{"other"}}, steps: headersBody("/v1/completions", good, false)},
		{name: "rewritten model not served", code: 404, n: 2, opts: Options{Models: []string{"m"}}, steps: headersBody("/v1/completions", good, false, HeaderModelRewrite, "x")},
		{name: "content-length over limit", code: 413, n: 2, opts: Options{MaxBodyBytes: 10}, steps: func(s extprocv3.ExternalProcessor_ProcessClient) error {
			return s.Send(reqHeadersMsg(postHeaders("/v1/completions", 11), false, duplex, nil))
		}},
		{name: "body over limit", code: 413, n: 2, opts: Options{MaxBodyBytes: 20}, steps: func(s extprocv3.ExternalProcessor_ProcessClient) error {
			if err := s.Send(reqHeadersMsg(hdrs(":path", "/v1/completions"), false, duplex, nil)); err != nil {
				return err
			}
			return sendBody(s, good, 5)
		}},
		{name: "sheddable while saturated", code: 429, n: 2,
			plan:  func(tb testing.TB) *scheduler.Plan { return planWith(tb, alwaysSaturated{}) },
			opts:  Options{Priority: func(o string) (int, bool) { return -1, o == "batch" }},
			steps: headersBody("/v1/completions", good, false, HeaderObjective, "batch")},
		{name: "filters leave nothing", code: 429, n: 2,
			plan:  func(tb testing.TB) *scheduler.Plan { return planWith(tb, nil, dropAll{}) },
			steps: headersBody("/v1/completions", good, false)},
		{name: "empty pool", code: 503, n: 0, steps: headersBody("/v1/completions", good, false)},
		{name: "empty subset hint", code: 503, n: 2, steps: headersBody("/v1/completions", good, true)},
		{name: "body before headers", code: 500, n: 2, steps: func(s extprocv3.ExternalProcessor_ProcessClient) error {
			return s.Send(reqBodyMsg(good, true))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var plan *scheduler.Plan
			if tc.plan != nil {
				plan = tc.plan(t)
			}
			f := newFixture(t, tc.n, plan, tc.opts)
			s := f.open(t)
			// io.EOF from Send means the server already answered and ended
			// the stream (a body over the limit is refused mid-body): the
			// answer is read below, as a gRPC client would.
			if err := tc.steps(s); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			expectImmediate(t, s, tc.code)
			waitIdle(t, f.srv, f.pool)
			if got := f.metric(t, "inference_objective_request_error_total"); got != 1 {
				t.Errorf("inference_objective_request_error_total = %v, want 1", got)
			}
			if got := f.metric(t, "fastepp_extproc_requests_total"); got != 1 {
				t.Errorf("fastepp_extproc_requests_total = %v, want 1", got)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	f := newFixture(t, 3, nil, Options{})
	for _, stage := range []string{"mid-body", "after pick", "mid-response"} {
		t.Run(stage, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := f.c.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			body := chatBody("m", strings.Repeat("y", 100<<10))
			if err := s.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, duplex, nil)); err != nil {
				t.Fatal(err)
			}
			if stage == "mid-body" {
				s.Send(reqBodyMsg(body[:50<<10], false))
			} else {
				sendBody(s, body, 16<<10)
				if _, err := s.Recv(); err != nil {
					t.Fatal(err)
				}
				if _, _, err := readEcho(s, nil); err != nil {
					t.Fatal(err)
				}
				if f.pool.inflight() != 1 {
					t.Fatalf("in-flight %d after the pick, want 1", f.pool.inflight())
				}
				if stage == "mid-response" {
					s.Send(respHeadersMsg(hdrs(":status", "200"), false))
					s.Recv()
					s.Send(respBodyMsg([]byte("data: {}\n\n"), false))
					s.Recv()
				}
			}
			time.Sleep(5 * time.Millisecond)
			cancel()
			waitIdle(t, f.srv, f.pool)
		})
	}
}

func TestResponsePassThroughAndUsage(t *testing.T) {
	for _, mode := range []string{"duplex", "buffered"} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, 2, nil, Options{})
			s := f.open(t)
			body := []byte(`{"model":"client-model","prompt":"hi","stream":true,"stream_options":{"include_usage":true}}`)
			pc := duplex
			if mode == "buffered" {
				pc = protocol(filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, filterv3.ProcessingMode_BUFFERED)
			}
			s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body), HeaderModelRewrite, "served-model-x"), false, pc, nil))
			sendBody(s, body, 10)
			hr, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			wantBody := `{"model":"served-model-x","prompt":"hi","stream":true,"stream_options":{"include_usage":true}}`
			if cl, _ := headerOf(hr.GetRequestHeaders().GetResponse(), "content-length"); cl != fmt.Sprint(len(wantBody)) {
				t.Errorf("content-length %q, want %d", cl, len(wantBody))
			}
			echo, _, err := readEcho(s, nil)
			if err != nil || string(echo) != wantBody {
				t.Fatalf("echo %q (%v), want %q", echo, err, wantBody)
			}
			s.Send(respHeadersMsg(hdrs(":status", "200", "content-type", "text/event-stream"), false))
			r, err := s.Recv()
			if err != nil || r.GetResponseHeaders() == nil {
				t.Fatalf("expected a ResponseHeaders answer, found %v %v", r, err)
			}
			if rm := r.GetResponseHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders(); len(rm) != 1 || rm[0] != "content-length" {
				t.Errorf("response content-length must be removed when restoring the model changes the length, found %v", rm)
			}
			sse := `data: {"id":"1","model":"served-model-x","choices":[{"text":"a"}],"usage":null}` + "\n\n" +
				`data: {"id":"1","model":"served-model-x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}` + "\n\n" +
				"data: [DONE]\n\n"
			want := strings.ReplaceAll(sse, "served-model-x", "client-model")
			var got []byte
			// Chunks of 13 bytes split the model name and the usage object.
			for off := 0; off < len(sse); off += 13 {
				end := min(off+13, len(sse))
				s.Send(respBodyMsg([]byte(sse[off:end]), end == len(sse)))
				r, err := s.Recv()
				if err != nil {
					t.Fatal(err)
				}
				rb := r.GetResponseBody()
				if rb == nil {
					t.Fatalf("expected a ResponseBody answer, found %v", r)
				}
				if mode == "duplex" {
					sr := rb.GetResponse().GetBodyMutation().GetStreamedResponse()
					if sr == nil || sr.EndOfStream != (end == len(sse)) {
						t.Fatalf("expected a streamed chunk (EoS %v), found %v", end == len(sse), rb)
					}
					got = append(got, sr.Body...)
				} else if bm := rb.GetResponse().GetBodyMutation(); bm != nil {
					got = append(got, bm.GetBody()...)
				} else {
					got = append(got, sse[off:end]...)
				}
			}
			if string(got) != want {
				t.Errorf("response body\n%q\nwant\n%q", got, want)
			}
			if f.pool.inflight() != 0 {
				t.Errorf("in-flight %d after the response ended", f.pool.inflight())
			}
			if n := f.metric(t, "inference_objective_output_tokens"); n != 1 {
				t.Errorf("output token observations = %v, want 1", n)
			}
			s.CloseSend()
			waitIdle(t, f.srv, f.pool)
		})
	}
}

func TestFallbackList(t *testing.T) {
	pk := scorers.NewMaxScorePicker(3)
	h := scorers.NewSingleProfileHandler()
	plan, err := scheduler.NewPlan(h, []*scheduler.Profile{{Name: "p", Picker: pk}}, nil, []scheduler.Plugin{pk, h})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, 5, plan, Options{})
	s := f.open(t)
	hr, _ := roundTrip(t, s, "/v1/completions", []byte(`{"model":"m","prompt":"p"}`), 0)
	hv, md := destOf(hr, hr.GetRequestHeaders().GetResponse())
	if parts := strings.Split(hv, ","); len(parts) != 3 || hv != md {
		t.Fatalf("destination %q metadata %q: expected 3 comma-separated endpoints in both", hv, md)
	}
	s.CloseSend()
	waitIdle(t, f.srv, f.pool)
}

func TestConcurrentStreams(t *testing.T) {
	f := newFixture(t, 8, nil, Options{})
	const streams, each = 64, 8
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for g := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				s, err := f.c.Process(testCtx(t))
				if err != nil {
					errs <- err
					return
				}
				body := chatBody("m", fmt.Sprintf("stream %d request %d %s", g, i, strings.Repeat("z", 512)))
				s.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, duplex, nil))
				sendBody(s, body, 100)
				if _, err := s.Recv(); err != nil {
					errs <- err
					return
				}
				echo, _, err := readEcho(s, nil)
				if err != nil || !bytes.Equal(echo, body) {
					errs <- fmt.Errorf("echo mismatch: %v", err)
					return
				}
				s.Send(respHeadersMsg(hdrs(":status", "200"), true))
				s.Recv()
				s.CloseSend()
				if _, err := s.Recv(); err != io.EOF {
					errs <- fmt.Errorf("expected the stream to end, found %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitIdle(t, f.srv, f.pool)
	var total uint64
	for _, h := range f.pool.handles {
		total += h.Dispatched()
	}
	if total != streams*each {
		t.Errorf("dispatched %d, want %d", total, streams*each)
	}
	if got := f.metric(t, "inference_objective_request_total"); got != streams*each {
		t.Errorf("inference_objective_request_total = %v, want %d", got, streams*each)
	}
}

func TestUsageScannerSplits(t *testing.T) {
	for _, doc := range []string{
		`{"id":"x","choices":[{"text":"usage"}],"usage":{"prompt_tokens":12,"completion_tokens":34,"details":{"a":"}"}}}`,
		"data: {\"usage\":null}\n\ndata: {\"usage\" : {\"completion_tokens\": 34, \"prompt_tokens\":12}}\n\ndata: [DONE]\n\n",
	} {
		for split := 0; split <= len(doc); split++ {
			var u usageScanner
			u.feed([]byte(doc[:split]))
			u.feed([]byte(doc[split:]))
			if !u.found || u.prompt != 12 || u.completion != 34 {
				t.Fatalf("split at %d of %q: found %v prompt %d completion %d", split, doc, u.found, u.prompt, u.completion)
			}
		}
	}
}

func TestModelRestorerSplits(t *testing.T) {
	doc := `{"model":"tgt","x":"\"model\":\"tgt\"","y":{"model": "tgt"}}`
	want := `{"model":"orig-name","x":"\"model\":\"tgt\"","y":{"model": "orig-name"}}`
	for split := 0; split <= len(doc); split++ {
		var r modelRestorer
		r.set([]byte(`"tgt"`), []byte(`"orig-name"`))
		var got []byte
		got = append(got, r.process([]byte(doc[:split]), false)...)
		got = append(got, r.process([]byte(doc[split:]), true)...)
		if string(got) != want {
			t.Fatalf("split at %d: %q, want %q", split, got, want)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	p := newPool(t, nil, 1)
	for _, o := range []Options{{MaxBodyBytes: -1}, {BodyMode: 9}} {
		if _, err := New(p.sched, o); err == nil {
			t.Errorf("New(%+v): expected an error", o)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil scheduler): expected an error")
	}
	for in, want := range map[string]BodyMode{"auto": ModeAuto, "streamed": ModeStreamed, "buffered": ModeBuffered} {
		if got, err := ParseBodyMode(in); err != nil || got != want {
			t.Errorf("ParseBodyMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseBodyMode("duplex"); err == nil || !strings.Contains(err.Error(), "found \"duplex\"") {
		t.Errorf("ParseBodyMode(duplex) error %v", err)
	}
}

func TestDebugLogOneLinePerDecision(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		var buf bytes.Buffer
		log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))
		f := newFixture(t, 3, nil, Options{Logger: log})
		for range 2 {
			s := f.open(t)
			roundTrip(t, s, "/v1/completions", []byte(`{"model":"m","prompt":"hello"}`), 0)
			s.CloseSend()
		}
		waitIdle(t, f.srv, f.pool)
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if level == slog.LevelInfo {
			if buf.Len() != 0 {
				t.Errorf("logged below debug at info level: %s", buf.String())
			}
			continue
		}
		if len(lines) != 2 {
			t.Fatalf("expected one debug line per decision (2), found %d: %s", len(lines), buf.String())
		}
		var rec struct {
			Destination string   `json:"destination"`
			Candidates  []string `json:"candidates"`
		}
		if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.Destination == "" || len(rec.Candidates) != 3 ||
			!strings.Contains(rec.Candidates[0], "prefix-cache-scorer=") {
			t.Errorf("debug line %s: expected the destination and 3 candidates with per-scorer scores (%v)", lines[0], err)
		}
	}
}

func TestPickAtHeadersModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode filterv3.ProcessingMode_BodySendMode
	}{
		{"STREAMED", filterv3.ProcessingMode_STREAMED},
		{"NONE", filterv3.ProcessingMode_NONE},
		{"BUFFERED_PARTIAL truncated", filterv3.ProcessingMode_BUFFERED_PARTIAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 2, nil, Options{})
			s := f.open(t)
			body := []byte(`{"model":"m","prompt":"a long prompt"}`)
			s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body)), false, protocol(tc.mode, filterv3.ProcessingMode_NONE), nil))
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if tc.mode == filterv3.ProcessingMode_BUFFERED_PARTIAL {
				if r.GetRequestHeaders().GetResponse() != nil {
					t.Fatalf("expected an empty headers answer, found %v", r)
				}
				s.Send(reqBodyMsg(body[:10], false))
				if r, err = s.Recv(); err != nil {
					t.Fatal(err)
				}
				h, md := destOf(r, r.GetRequestBody().GetResponse())
				if h == "" || h != md {
					t.Fatalf("expected the decision on the body answer, found %v", r)
				}
			} else {
				h, md := destOf(r, r.GetRequestHeaders().GetResponse())
				if h == "" || h != md {
					t.Fatalf("expected the decision on the headers answer, found %v", r)
				}
				if tc.mode == filterv3.ProcessingMode_STREAMED {
					s.Send(reqBodyMsg(body, true))
					if r, err := s.Recv(); err != nil || r.GetRequestBody() == nil || r.GetRequestBody().GetResponse() != nil {
						t.Fatalf("expected a pass-through body answer, found %v %v", r, err)
					}
				}
			}
			s.CloseSend()
			waitIdle(t, f.srv, f.pool)
		})
	}
}

func TestPathFallbacks(t *testing.T) {
	bad := []byte(`{"model":"m","messages":{}}`) // wrong type only for chat
	for _, tc := range []struct {
		name    string
		headers []string
		code    int // 0 = routed
	}{
		{"x-original-path", []string{"x-original-path", "/v1/chat/completions"}, 400},
		{"x-forwarded-path", []string{"x-forwarded-path", "/v1/chat/completions"}, 400},
		{":path wins", []string{":path", "/v1/completions", "x-original-path", "/v1/chat/completions"}, 0},
		{"default /v1/completions", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 2, nil, Options{})
			s := f.open(t)
			s.Send(reqHeadersMsg(hdrs(append([]string{":method", "POST"}, tc.headers...)...), false, duplex, nil))
			sendBody(s, bad, 0)
			if tc.code != 0 {
				expectImmediate(t, s, tc.code)
			} else if r, err := s.Recv(); err != nil || r.GetRequestHeaders() == nil {
				t.Fatalf("expected the request to be routed, found %v %v", r, err)
			}
			s.CloseSend()
			waitIdle(t, f.srv, f.pool)
		})
	}
}

func TestServedEndpointAccounting(t *testing.T) {
	pk := scorers.NewMaxScorePicker(2)
	h := scorers.NewSingleProfileHandler()
	plan, err := scheduler.NewPlan(h, []*scheduler.Profile{{Name: "p", Picker: pk}}, nil, []scheduler.Plugin{pk, h})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, 3, plan, Options{})
	s := f.open(t)
	hr, _ := roundTrip(t, s, "/v1/completions", []byte(`{"model":"m","prompt":"p"}`), 0)
	dest, _ := destOf(hr, hr.GetRequestHeaders().GetResponse())
	eps := strings.Split(dest, ",")
	if len(eps) != 2 {
		t.Fatalf("destination %q: expected a primary and a fallback", dest)
	}
	byHP := map[string]*scheduler.Handle{}
	for _, h := range f.pool.handles {
		byHP[h.HostPort()] = h
	}
	msg := respHeadersMsg(hdrs(":status", "200"), false)
	msg.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		MetadataNamespaceLB: {Fields: map[string]*structpb.Value{ServedKey: structpb.NewStringValue(eps[1])}},
	}}
	s.Send(msg)
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if byHP[eps[0]].Inflight() != 0 || byHP[eps[1]].Inflight() != 1 {
		t.Errorf("in-flight primary %d fallback %d: expected the request charged to the endpoint that served it",
			byHP[eps[0]].Inflight(), byHP[eps[1]].Inflight())
	}
	s.CloseSend()
	waitIdle(t, f.srv, f.pool)
}

// TestZeroAllocsPerRequest: after warm-up a routed FULL_DUPLEX_STREAMED
// request allocates nothing in the server (transport aside).
func TestZeroAllocsPerRequest(t *testing.T) {
	srv, p, msgs := zeroAllocsSetup(t)
	fs := &fakeStream{ctx: context.Background(), in: msgs}
	checkZeroAllocs(t, p, func() int {
		fs.next, fs.sent = 0, 0
		if err := srv.Process(fs); err != nil {
			t.Fatal(err)
		}
		return fs.sent
	})
}

// zeroAllocsSetup is the zero-allocation tests' server (8 endpoints) and
// request: a routed FULL_DUPLEX_STREAMED chat request with a 2 KB body in two
// chunks and its streamed response. It skips under the race detector, which
// makes sync.Pool drop items.
func zeroAllocsSetup(t *testing.T) (*Server, *pool, []*extprocv3.ProcessingRequest) {
	t.Helper()
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	p := newPool(t, nil, 8)
	srv, err := New(p.sched, Options{Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	body := benchBodies(1, 2<<10)[0]
	return srv, p, []*extprocv3.ProcessingRequest{
		reqHeadersMsg(postHeaders("/v1/chat/completions", len(body), "x-request-id", "0123456789abcdef0123456789abcdef"), false, duplex, nil),
		reqBodyMsg(body[:1000], false),
		reqBodyMsg(body[1000:], true),
		respHeadersMsg(hdrs(":status", "200"), false),
		respBodyMsg([]byte(`data: {"usage":{"prompt_tokens":5,"completion_tokens":1}}`+"\n\n"), true),
	}
}

// checkZeroAllocs runs one request (run returns the answers sent) to warm
// up, checks it was answered in full and released, then asserts that a
// request allocates nothing.
func checkZeroAllocs(t *testing.T, p *pool, run func() int) {
	t.Helper()
	if sent := run(); sent != 4 || p.inflight() != 0 {
		t.Fatalf("sent %d answers (want 4), in-flight %d", sent, p.inflight())
	}
	if n := testing.AllocsPerRun(200, func() { run() }); n > 0 {
		t.Errorf("%v allocations per request, want 0", n)
	}
}

// TestMalformedMessagesDoNotPanic feeds nil sub-messages and odd metadata; the
// server must answer (or end the stream) without reaching its panic guard.
func TestMalformedMessagesDoNotPanic(t *testing.T) {
	var logs bytes.Buffer
	f := newFixture(t, 2, nil, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError}))})
	nilValue := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{SubsetNamespace: {Fields: map[string]*structpb.Value{SubsetKey: nil}}}}
	for _, msgs := range [][]*extprocv3.ProcessingRequest{
		{{Request: &extprocv3.ProcessingRequest_RequestHeaders{}}},
		{{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}}, {Request: &extprocv3.ProcessingRequest_RequestBody{}}},
		{reqHeadersMsg(nil, false, duplex, nilValue), reqBodyMsg(nil, true)},
		{reqHeadersMsg(hdrs(":path", "/v1/completions"), true, nil, nil), {Request: &extprocv3.ProcessingRequest_ResponseHeaders{}}, {Request: &extprocv3.ProcessingRequest_ResponseBody{}}},
		{{}, {Request: &extprocv3.ProcessingRequest_RequestTrailers{}}},
	} {
		s := f.open(t)
		for _, m := range msgs {
			s.Send(m)
		}
		s.CloseSend()
		for {
			if _, err := s.Recv(); err != nil {
				break
			}
		}
	}
	waitIdle(t, f.srv, f.pool)
	if logs.Len() != 0 {
		t.Errorf("the panic guard fired: %s", logs.String())
	}
}

// TestPooledStateDoesNotLeakBetweenStreams runs a rewritten request, then a
// plain one through the same (pooled) stream state: nothing of the first
// (rewrite, restore, subset, request id) may affect the second.
func TestPooledStateDoesNotLeakBetweenStreams(t *testing.T) {
	p := newPool(t, nil, 4)
	srv, err := New(p.sched, Options{})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"model":"client","prompt":"x"}`)
	resp := []byte(`{"model":"served","usage":{"prompt_tokens":1,"completion_tokens":2}}`)
	first := []*extprocv3.ProcessingRequest{
		reqHeadersMsg(postHeaders("/v1/completions", len(body), HeaderModelRewrite, "served"), false, duplex,
			subsetMD(p.handles[1].HostPort())),
		reqBodyMsg(body, true),
		respHeadersMsg(hdrs(":status", "200"), false),
		respBodyMsg(resp, true),
	}
	second := []*extprocv3.ProcessingRequest{
		reqHeadersMsg(postHeaders("/v1/completions", len(body), HeaderRequestID, "r2"), false, duplex, nil),
		reqBodyMsg(body, true),
		respHeadersMsg(hdrs(":status", "200"), false),
		respBodyMsg(resp, true),
	}
	for range 3 { // sync.Pool hands the same state back on the same P, most of the time
		rec := &recordStream{fakeStream: fakeStream{ctx: context.Background(), in: first}}
		if err := srv.Process(rec); err != nil {
			t.Fatal(err)
		}
		rec = &recordStream{fakeStream: fakeStream{ctx: context.Background(), in: second}}
		done := make(chan error, 1)
		go func() { done <- srv.Process(rec) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("second stream did not finish: state from the first one leaked")
		}
		if len(rec.out) != 4 {
			t.Fatalf("second stream: %d answers, want 4", len(rec.out))
		}
		common := rec.out[0].GetRequestHeaders().GetResponse()
		if _, ok := headerOf(common, HeaderRequestID); ok {
			t.Error("second stream: x-request-id generated although the request had one")
		}
		if _, ok := headerOf(common, "content-length"); ok {
			t.Error("second stream: content-length set although the body did not change")
		}
		if got := rec.out[1].GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetBody(); !bytes.Equal(got, body) {
			t.Errorf("second stream: echoed %q, want %q", got, body)
		}
		if got := rec.out[3].GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetBody(); !bytes.Equal(got, resp) {
			t.Errorf("second stream: response %q, want it unchanged %q", got, resp)
		}
	}
	if p.inflight() != 0 {
		t.Errorf("in-flight %d", p.inflight())
	}
}

// recordStream keeps clones of the answers (the server reuses its messages).
type recordStream struct {
	fakeStream
	out []*extprocv3.ProcessingResponse
}

func (r *recordStream) Send(m *extprocv3.ProcessingResponse) error {
	r.out = append(r.out, proto.Clone(m).(*extprocv3.ProcessingResponse))
	return nil
}

func TestObservabilityModeAnswersNothing(t *testing.T) {
	p := newPool(t, nil, 2)
	srv, err := New(p.sched, Options{})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"model":"m","prompt":"x"}`)
	msgs := []*extprocv3.ProcessingRequest{
		reqHeadersMsg(postHeaders("/v1/completions", len(body)), false, duplex, nil),
		reqBodyMsg(body, true),
		respHeadersMsg(hdrs(":status", "200"), true),
	}
	for _, m := range msgs {
		m.ObservabilityMode = true
	}
	fs := &fakeStream{ctx: context.Background(), in: msgs}
	if err := srv.Process(fs); err != nil {
		t.Fatal(err)
	}
	if fs.sent != 0 || p.inflight() != 0 {
		t.Errorf("observability mode: sent %d answers (want 0), in-flight %d", fs.sent, p.inflight())
	}
}

func TestProtocolConfigWinsOverFlag(t *testing.T) {
	f := newFixture(t, 2, nil, Options{BodyMode: ModeBuffered})
	s := f.open(t)
	body := []byte(`{"model":"m","prompt":"x"}`)
	hr, echo := roundTrip(t, s, "/v1/completions", body, 0) // protocol_config: FULL_DUPLEX_STREAMED
	if h, _ := destOf(hr, hr.GetRequestHeaders().GetResponse()); h == "" || !bytes.Equal(echo, body) {
		t.Fatalf("expected the streamed answer the proxy asked for, found %v / %q", hr, echo)
	}
	s.CloseSend()
	waitIdle(t, f.srv, f.pool)
}
