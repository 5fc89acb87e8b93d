package extproc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/fastepp/fastepp/scheduler"
)

// immediateOf reads answers until an ImmediateResponse (skipping the empty
// headers answer of BUFFERED mode) and returns its status and error message.
func immediateOf(tb testing.TB, s extprocv3.ExternalProcessor_ProcessClient) (int, string) {
	tb.Helper()
	for {
		r, err := s.Recv()
		if err != nil {
			tb.Fatalf("expected an ImmediateResponse, found error %v", err)
		}
		ir := r.GetImmediateResponse()
		if ir == nil {
			if r.GetRequestHeaders() != nil && r.GetRequestHeaders().GetResponse() == nil {
				continue
			}
			tb.Fatalf("expected an ImmediateResponse, found %v", r)
		}
		var env struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
				Code    int    `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(ir.GetBody(), &env); err != nil || env.Error.Code != int(ir.GetStatus().GetCode()) || env.Error.Type == "" {
			tb.Fatalf("error body %q: expected the OpenAI envelope (%v)", ir.GetBody(), err)
		}
		return int(ir.GetStatus().GetCode()), env.Error.Message
	}
}

// expectEnd closes the sending side (as Envoy does after an ImmediateResponse)
// and expects the stream to end.
func expectEnd(tb testing.TB, s extprocv3.ExternalProcessor_ProcessClient) {
	tb.Helper()
	s.CloseSend()
	if r, err := s.Recv(); err != io.EOF {
		tb.Fatalf("expected the stream to end, found %v, %v", r, err)
	}
}

// labelled returns the value of a counter (or a histogram's count) with the
// given label values, and whether that series exists.
func (f *fixture) labelled(tb testing.TB, name string, labels map[string]string) (float64, bool) {
	tb.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// lockedBuffer is a log sink shared by the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBadModelAndEmptyBodies: invalid UTF-8 in the body's model or in the
// rewrite header, an empty model, an empty POST and an empty body are client
// errors: 400 with a message that says what was expected and found, logged at
// debug level only (no ERROR line, no panic), counted as BadRequest.
func TestBadModelAndEmptyBodies(t *testing.T) {
	type send func(s extprocv3.ExternalProcessor_ProcessClient) error
	post := func(body []byte, extra ...string) send {
		return func(s extprocv3.ExternalProcessor_ProcessClient) error {
			if err := s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body), extra...), false, duplex, nil)); err != nil {
				return err
			}
			return sendBody(s, body, 5)
		}
	}
	for _, tc := range []struct {
		name  string
		send  send
		wants []string // in the error message
	}{
		{"invalid UTF-8 model", post([]byte("{\"model\":\"m\xff\xfe\",\"prompt\":\"x\"}")),
			[]string{`expected "model" to be a valid UTF-8 string`, "found invalid byte 0xff at offset 1"}},
		{"invalid UTF-8 model with escapes", post([]byte("{\"model\":\"\\n\xc3\",\"prompt\":\"x\"}")),
			[]string{"valid UTF-8", "found invalid byte 0xc3 at offset 2"}},
		{"invalid UTF-8 rewrite header", post([]byte(`{"model":"m","prompt":"x"}`), HeaderModelRewrite, "ok\x80"),
			[]string{"header x-gateway-model-name-rewrite: expected a model name in valid UTF-8", "found invalid byte 0x80 at offset 2"}},
		{"empty model", post([]byte(`{"model":"","prompt":"x"}`)),
			[]string{`expected "model" to name a model, found an empty string`}},
		{"whitespace body", post([]byte(" \n ")), []string{"expected a JSON object, found an empty body"}},
		{"empty body message", func(s extprocv3.ExternalProcessor_ProcessClient) error {
			if err := s.Send(reqHeadersMsg(postHeaders("/v1/completions", 0), false, duplex, nil)); err != nil {
				return err
			}
			return s.Send(reqBodyMsg(nil, true))
		}, []string{"expected a JSON object, found an empty body"}},
		{"POST without a body", func(s extprocv3.ExternalProcessor_ProcessClient) error {
			return s.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", 0), true, duplex, nil))
		}, []string{"expected a JSON object, found an empty body"}},
		{"empty body, BUFFERED", func(s extprocv3.ExternalProcessor_ProcessClient) error {
			pc := protocol(filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_NONE)
			if err := s.Send(reqHeadersMsg(postHeaders("/v1/completions", 0), false, pc, nil)); err != nil {
				return err
			}
			return s.Send(reqBodyMsg(nil, true))
		}, []string{"expected a JSON object, found an empty body"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &lockedBuffer{}
			f := newFixture(t, 2, nil, Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			const n = 3
			for range n {
				s := f.open(t)
				if err := tc.send(s); err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
				code, msg := immediateOf(t, s)
				if code != 400 {
					t.Fatalf("status %d (%s), want 400", code, msg)
				}
				for _, w := range tc.wants {
					if !strings.Contains(msg, w) {
						t.Errorf("error message %q lacks %q", msg, w)
					}
				}
				expectEnd(t, s)
			}
			waitIdle(t, f.srv, f.pool)
			text := logs.String()
			if strings.Contains(text, "level=ERROR") || strings.Contains(text, "panic") {
				t.Errorf("a client error was logged as a server fault:\n%s", text)
			}
			if got := strings.Count(text, "level=DEBUG msg=\"extproc: request refused\""); got != n {
				t.Errorf("%d debug lines for %d refused requests:\n%s", got, n, text)
			}
			if v, _ := f.labelled(t, "inference_objective_request_error_total", map[string]string{"error_code": "BadRequest"}); v != n {
				t.Errorf("BadRequest errors counted %v, want %d", v, n)
			}
		})
	}
}

// TestClientErrorsQuietBelowDebug: at info level a stream of bad requests
// logs nothing, and the rate limiter lets one line per second through.
func TestClientErrorsQuietBelowDebug(t *testing.T) {
	logs := &lockedBuffer{}
	f := newFixture(t, 2, nil, Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	body := []byte("{\"model\":\"\xff\",\"prompt\":\"x\"}")
	for range 20 {
		s := f.open(t)
		roundTripErr(t, s, body)
	}
	waitIdle(t, f.srv, f.pool)
	if logs.String() != "" {
		t.Errorf("client errors logged at info level:\n%s", logs.String())
	}

	var l logLimiter
	allowed := 0
	for range 1000 {
		if ok, _ := l.allow(); ok {
			allowed++
		}
	}
	if allowed != 1 {
		t.Errorf("logLimiter let %d of 1000 lines through at once, want 1", allowed)
	}
	l.next.Store(0) // as if a second had passed
	if ok, skipped := l.allow(); !ok || skipped != 999 {
		t.Errorf("after the interval: allow = %v, skipped %d, want true, 999", ok, skipped)
	}
}

func roundTripErr(tb testing.TB, s extprocv3.ExternalProcessor_ProcessClient, body []byte) (int, string) {
	tb.Helper()
	if err := s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body)), false, duplex, nil)); err != nil {
		tb.Fatal(err)
	}
	if err := sendBody(s, body, 0); err != nil && !errors.Is(err, io.EOF) {
		tb.Fatal(err)
	}
	code, msg := immediateOf(tb, s)
	expectEnd(tb, s)
	return code, msg
}

// waitFor polls cond for up to 5 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after 5s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRequestIdleTimeout: a stream that stalls in its request phase gets 408
// (OpenAI envelope) no sooner than the idle timeout, its buffered bytes are
// released, and it ends when the proxy closes it.
func TestRequestIdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	body := chatBody("m", strings.Repeat("p", 3000))
	for _, tc := range []struct {
		name string
		pc   *extprocv3.ProtocolConfiguration
		send func(s extprocv3.ExternalProcessor_ProcessClient) error
		held int64 // bytes buffered while stalled
	}{
		{"no message at all", duplex, func(extprocv3.ExternalProcessor_ProcessClient) error { return nil }, 0},
		{"headers then nothing", duplex, func(s extprocv3.ExternalProcessor_ProcessClient) error {
			return s.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, duplex, nil))
		}, 0},
		{"part of the body then nothing", duplex, func(s extprocv3.ExternalProcessor_ProcessClient) error {
			if err := s.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, duplex, nil)); err != nil {
				return err
			}
			if err := s.Send(reqBodyMsg(body[:1000], false)); err != nil {
				return err
			}
			return s.Send(reqBodyMsg(body[1000:2500], false))
		}, 2500},
		{"BUFFERED: headers answered, no body", nil, func(s extprocv3.ExternalProcessor_ProcessClient) error {
			pc := protocol(filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_NONE)
			return s.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, pc, nil))
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 2, nil, Options{RequestIdleTimeout: idle})
			s := f.open(t)
			if err := tc.send(s); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			if tc.held > 0 {
				waitFor(t, "the partial body is counted as buffered", func() bool { return f.srv.buffered.Load() == tc.held })
			}
			code, msg := immediateOf(t, s)
			if waited := time.Since(sent); waited < idle {
				t.Errorf("answered after %v, before the idle timeout of %v", waited, idle)
			}
			if code != 408 || !strings.Contains(msg, "expected the next part of the request") || !strings.Contains(msg, "within 100ms") {
				t.Errorf("answer %d %q: expected 408 saying what it waited for", code, msg)
			}
			if got := f.srv.buffered.Load(); got != 0 {
				t.Errorf("%d bytes still counted as buffered after the timeout", got)
			}
			expectEnd(t, s)
			waitIdle(t, f.srv, f.pool)
			if v, _ := f.labelled(t, "fastepp_extproc_requests_total", map[string]string{"code": "408"}); v != 1 {
				t.Errorf("fastepp_extproc_requests_total{code=408} = %v, want 1", v)
			}
			if v, _ := f.labelled(t, "inference_objective_request_error_total", map[string]string{"error_code": "BadRequest"}); v != 1 {
				t.Errorf("BadRequest errors = %v, want 1", v)
			}
		})
	}
}

// TestRequestIdleTimeoutSparesAnsweredStreams: a picked request whose
// response takes several idle timeouts is never timed; a request picked at its
// headers (STREAMED) whose body stalls keeps its stream but gives back its
// in-flight count, exactly once; with the timeout disabled a stall is held.
func TestRequestIdleTimeoutSparesAnsweredStreams(t *testing.T) {
	const idle = 50 * time.Millisecond
	t.Run("slow response", func(t *testing.T) {
		f := newFixture(t, 2, nil, Options{RequestIdleTimeout: idle})
		s := f.open(t)
		roundTrip(t, s, "/v1/completions", []byte(`{"model":"m","prompt":"p"}`), 0)
		time.Sleep(6 * idle) // a long time to first token
		if f.pool.inflight() != 1 {
			t.Fatalf("in-flight %d while the response is pending, want 1", f.pool.inflight())
		}
		s.Send(respHeadersMsg(hdrs(":status", "200"), false))
		if r, err := s.Recv(); err != nil || r.GetResponseHeaders() == nil {
			t.Fatalf("expected a ResponseHeaders answer, found %v %v", r, err)
		}
		time.Sleep(6 * idle) // a long pause between tokens
		s.Send(respBodyMsg([]byte(`{"usage":{"prompt_tokens":1,"completion_tokens":2}}`), true))
		if r, err := s.Recv(); err != nil || r.GetResponseBody() == nil {
			t.Fatalf("expected a ResponseBody answer, found %v %v", r, err)
		}
		expectEnd(t, s)
		waitIdle(t, f.srv, f.pool)
		if v, _ := f.labelled(t, "fastepp_extproc_requests_total", map[string]string{"code": "408"}); v != 0 {
			t.Errorf("a routed request was timed out")
		}
	})
	t.Run("STREAMED body stalls after the pick", func(t *testing.T) {
		f := newFixture(t, 2, nil, Options{RequestIdleTimeout: idle})
		s := f.open(t)
		pc := protocol(filterv3.ProcessingMode_STREAMED, filterv3.ProcessingMode_NONE)
		body := []byte(`{"model":"m","prompt":"a prompt"}`)
		s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body)), false, pc, nil))
		if r, err := s.Recv(); err != nil || r.GetRequestHeaders().GetResponse() == nil {
			t.Fatalf("expected the decision on the headers answer, found %v %v", r, err)
		}
		s.Send(reqBodyMsg(body[:5], false))
		if r, err := s.Recv(); err != nil || r.GetRequestBody() == nil {
			t.Fatalf("expected a pass-through body answer, found %v %v", r, err)
		}
		if f.pool.inflight() != 1 {
			t.Fatalf("in-flight %d after the pick, want 1", f.pool.inflight())
		}
		waitFor(t, "the stalled body gives back its in-flight count", func() bool { return f.pool.inflight() == 0 })
		if v := f.metric(t, "inference_objective_running_requests"); v != 0 {
			t.Errorf("running requests %v after the release, want 0", v)
		}
		// The request goes on: no ImmediateResponse, the stream still answers.
		s.Send(reqBodyMsg(body[5:], true))
		if r, err := s.Recv(); err != nil || r.GetRequestBody() == nil {
			t.Fatalf("expected a pass-through body answer, found %v %v", r, err)
		}
		s.Send(respHeadersMsg(hdrs(":status", "200"), true))
		if r, err := s.Recv(); err != nil || r.GetResponseHeaders() == nil {
			t.Fatalf("expected a ResponseHeaders answer, found %v %v", r, err)
		}
		expectEnd(t, s)
		waitIdle(t, f.srv, f.pool)
		for _, h := range f.pool.handles {
			if h.Inflight() != 0 {
				t.Errorf("endpoint %s in-flight %d, want 0 (released twice or never)", h.HostPort(), h.Inflight())
			}
		}
		if v := f.metric(t, "inference_objective_running_requests"); v != 0 {
			t.Errorf("running requests %v at the end, want 0", v)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		f := newFixture(t, 2, nil, Options{RequestIdleTimeout: -1})
		s := f.open(t)
		s.Send(reqHeadersMsg(postHeaders("/v1/completions", 10), false, duplex, nil))
		got := make(chan error, 1)
		go func() {
			r, err := s.Recv()
			if err == nil {
				err = fmt.Errorf("answered %v", r)
			}
			got <- err
		}()
		select {
		case err := <-got:
			t.Fatalf("a stalled stream was ended with the timeout disabled: %v", err)
		case <-time.After(6 * idle):
		}
		s.CloseSend()
		if err := <-got; err != io.EOF {
			t.Fatalf("expected the stream to end when the proxy closed it, found %v", err)
		}
		waitIdle(t, f.srv, f.pool)
	})
}

// TestMaxBufferedBytes: request bodies buffered by all streams together are
// bounded. A chunk that would cross the bound ends its stream with 503 and
// releases its bytes; a body over the bound by itself gets 413.
func TestMaxBufferedBytes(t *testing.T) {
	f := newFixture(t, 2, nil, Options{MaxBufferedBytes: 1000})
	big := chatBody("m", strings.Repeat("a", 1100))
	// A holds 600 bytes and stalls.
	a := f.open(t)
	a.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", len(big)), false, duplex, nil))
	a.Send(reqBodyMsg(big[:600], false))
	waitFor(t, "A's 600 bytes are counted", func() bool { return f.srv.buffered.Load() == 600 })

	// B needs 300 + 300: the second chunk would cross 1000.
	b := f.open(t)
	b.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", 700), false, duplex, nil))
	b.Send(reqBodyMsg(big[:300], false))
	b.Send(reqBodyMsg(big[300:600], false))
	code, msg := immediateOf(t, b)
	if code != 503 || !strings.Contains(msg, "over its limit of 1000 bytes") {
		t.Errorf("B: %d %q, want 503 naming the limit", code, msg)
	}
	expectEnd(t, b)
	waitFor(t, "B's bytes are released", func() bool { return f.srv.buffered.Load() == 600 })

	// A's body turns out to be over the bound by itself: 413, and its bytes
	// are released.
	for off := 600; off < len(big); off += 600 {
		end := min(off+600, len(big))
		if err := a.Send(reqBodyMsg(big[off:end], end == len(big))); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
	}
	code, msg = immediateOf(t, a)
	if code != 413 || !strings.Contains(msg, "over the limit of 1000 request body bytes this picker buffers at once") {
		t.Errorf("A (%d bytes): %d %q, want 413: the body alone is over the bound", len(big), code, msg)
	}
	expectEnd(t, a)
	if got := f.srv.buffered.Load(); got != 0 {
		t.Errorf("%d bytes counted after every stream ended, want 0", got)
	}

	// A body under the bound is routed, whole or in chunks, and released.
	small := chatBody("m", strings.Repeat("b", 300))
	for _, chunk := range []int{0, 100} {
		s := f.open(t)
		roundTrip(t, s, "/v1/chat/completions", small, chunk)
		if got := f.srv.buffered.Load(); got != 0 {
			t.Errorf("chunk %d: %d bytes still counted after the pick", chunk, got)
		}
		expectEnd(t, s)
	}
	waitIdle(t, f.srv, f.pool)
	if v, _ := f.labelled(t, "inference_objective_request_error_total", map[string]string{"error_code": "ServiceUnavailable"}); v != 1 {
		t.Errorf("ServiceUnavailable errors = %v, want 1", v)
	}
}

// publishModels publishes a snapshot of the fixture's endpoints where endpoint
// 0 reports models, running and waiting adapters.
func publishModels(p *pool, models, active, waiting []string) {
	states := make([]scheduler.EndpointState, len(p.handles))
	for i, h := range p.handles {
		states[i] = scheduler.EndpointState{H: h, M: scheduler.Metrics{UpdatedAt: time.Now()}, Healthy: true}
	}
	states[0].M.Models, states[0].M.ActiveAdapters, states[0].M.WaitingAdapters = models, active, waiting
	p.sched.Publish(scheduler.NewSnapshot(states, time.Now(), 0))
}

// TestMetricLabelsOnlyForKnownModels: model_name and target_model_name carry
// the allow-list's names and what the pool's servers report in the current
// snapshot; anything else is "other".
func TestMetricLabelsOnlyForKnownModels(t *testing.T) {
	f := newFixture(t, 2, nil, Options{Models: []string{"allowed"}})
	publishModels(f.pool, []string{"served-a"}, []string{"lora-run"}, []string{"lora-wait"})
	send := func(model string, extra ...string) {
		t.Helper()
		s := f.open(t)
		body := []byte(`{"model":"` + model + `","prompt":"x"}`)
		s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body), extra...), false, duplex, nil))
		sendBody(s, body, 0)
		for {
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if r.GetImmediateResponse() != nil || r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetEndOfStream() {
				break
			}
		}
		expectEnd(t, s)
	}
	for _, tc := range []struct {
		name          string
		model         string
		rewrite       string
		label, target string
	}{
		{"allow-list", "allowed", "", "allowed", "allowed"},
		{"model reported by a server", "served-a", "", "served-a", "served-a"},
		{"running adapter", "lora-run", "", "lora-run", "lora-run"},
		{"waiting adapter", "lora-wait", "", "lora-wait", "lora-wait"},
		{"unknown", "client-junk-1", "", OtherModel, OtherModel},
		{"unknown rewritten to known", "alias", "allowed", OtherModel, "allowed"},
		{"known rewritten to unknown", "allowed", "junk-target", "allowed", OtherModel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var extra []string
			if tc.rewrite != "" {
				extra = []string{HeaderModelRewrite, tc.rewrite}
			}
			want := map[string]string{"model_name": tc.label, "target_model_name": tc.target}
			before, _ := f.labelled(t, "inference_objective_request_total", want)
			send(tc.model, extra...)
			if after, ok := f.labelled(t, "inference_objective_request_total", want); !ok || after != before+1 {
				t.Errorf("request_total%v = %v (series exists: %v), want %v", want, after, ok, before+1)
			}
		})
	}
	// A new snapshot: its models become known, the ones it no longer
	// reports are not.
	publishModels(f.pool, []string{"served-b"}, nil, nil)
	send("served-b")
	send("served-a")
	for model, label := range map[string]string{"served-b": "served-b"} {
		if v, _ := f.labelled(t, "inference_objective_request_total", map[string]string{"model_name": label, "target_model_name": label}); v != 1 {
			t.Errorf("%s: request_total = %v, want 1", model, v)
		}
	}
	if v, _ := f.labelled(t, "inference_objective_request_total", map[string]string{"model_name": "served-a"}); v != 1 {
		t.Errorf("served-a counted %v times under its own name, want 1 (before the pool stopped reporting it)", v)
	}
	waitIdle(t, f.srv, f.pool)
}

// metricsLines returns the number of lines of the text /metrics page.
func metricsLines(tb testing.TB, f *fixture) int {
	tb.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(f.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != 200 {
		tb.Fatalf("/metrics: %d %s", rec.Code, rec.Body.String())
	}
	return strings.Count(rec.Body.String(), "\n")
}

// TestUnknownModelsDoNotGrowMetrics: 3,000 requests, each with a model name
// never seen before (routed, refused, with invalid UTF-8), leave the /metrics
// page exactly as long as after the first.
func TestUnknownModelsDoNotGrowMetrics(t *testing.T) {
	f := newFixture(t, 2, nil, Options{})
	run := func(i int) {
		s, err := f.c.Process(testCtx(t))
		if err != nil {
			t.Error(err)
			return
		}
		var body []byte
		switch i % 3 {
		case 0:
			body = []byte(fmt.Sprintf(`{"model":"unknown-%d","prompt":"x"}`, i))
		case 1:
			body = []byte(fmt.Sprintf(`{"model":"unknown-%d","prompt":true}`, i)) // 400 after the scan
		case 2:
			body = []byte(fmt.Sprintf("{\"model\":\"bad-%d-\xff\",\"prompt\":\"x\"}", i))
		}
		s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body), HeaderModelRewrite, fmt.Sprint("target-", i)), false, duplex, nil))
		sendBody(s, body, 0)
		for {
			r, err := s.Recv()
			if err != nil {
				t.Error(err)
				return
			}
			if r.GetImmediateResponse() != nil || r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetEndOfStream() {
				break
			}
		}
		s.CloseSend()
		s.Recv()
	}
	for i := range 3 {
		run(i) // one of each kind
	}
	waitIdle(t, f.srv, f.pool)
	first := metricsLines(t, f)
	const total = 3000
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 3 + g; i < total; i += 4 {
				run(i)
			}
		}()
	}
	wg.Wait()
	waitIdle(t, f.srv, f.pool)
	if got := metricsLines(t, f); got != first {
		t.Errorf("/metrics grew from %d to %d lines over %d distinct unknown models", first, got, total)
	}
	if v := f.metric(t, "fastepp_extproc_requests_total"); v != total {
		t.Errorf("fastepp_extproc_requests_total = %v, want %d", v, total)
	}
	// Requests refused before their model is known (bad JSON, bad UTF-8)
	// count errors only.
	if v := f.metric(t, "inference_objective_request_total"); v != total/3 {
		t.Errorf("request_total = %v, want %d", v, total/3)
	}
}

// TestKnownModelsRefreshAllocatesNothing: checking the known set against a
// new snapshot that reports the same names allocates nothing.
func TestKnownModelsRefreshAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	p := newPool(t, nil, 4)
	publishModels(p, []string{"a", "b"}, []string{"lora"}, nil)
	k := newKnownModels([]string{"allowed"}, p.sched.Snapshot())
	publishModels(p, []string{"a", "b"}, []string{"lora"}, nil)
	snap := p.sched.Snapshot()
	if n := testing.AllocsPerRun(100, func() {
		if !k.matches(snap) {
			t.Fatal("same names: expected a match")
		}
	}); n != 0 {
		t.Errorf("matches allocates %v times, want 0", n)
	}
	for _, c := range []struct {
		models, active []string
	}{{[]string{"a"}, []string{"lora"}}, {[]string{"a", "b", "c"}, []string{"lora"}}, {[]string{"a", "b"}, nil}} {
		publishModels(p, c.models, c.active, nil)
		if k.matches(p.sched.Snapshot()) {
			t.Errorf("models %v adapters %v: expected a change to be seen", c.models, c.active)
		}
	}
}

// TestLLMDHeaders: the llm-d router's header names are read beside the
// gateway's; when a request carries both, the x-llm-d-* value wins.
func TestLLMDHeaders(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		headers               []string
		objective, fairnessID string
	}{
		{"gateway names", []string{HeaderObjective, "gw-obj", HeaderFairnessID, "gw-fair"}, "gw-obj", "gw-fair"},
		{"llm-d names", []string{HeaderLLMDObjective, "llmd-obj", HeaderLLMDFairnessID, "llmd-fair"}, "llmd-obj", "llmd-fair"},
		{"both, gateway first", []string{HeaderObjective, "gw-obj", HeaderLLMDObjective, "llmd-obj",
			HeaderFairnessID, "gw-fair", HeaderLLMDFairnessID, "llmd-fair"}, "llmd-obj", "llmd-fair"},
		{"both, llm-d first", []string{HeaderLLMDObjective, "llmd-obj", HeaderObjective, "gw-obj",
			HeaderLLMDFairnessID, "llmd-fair", HeaderFairnessID, "gw-fair"}, "llmd-obj", "llmd-fair"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &lockedBuffer{}
			var mu sync.Mutex
			var asked []string
			f := newFixture(t, 2, nil, Options{
				Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				Priority: func(o string) (int, bool) {
					mu.Lock()
					asked = append(asked, o)
					mu.Unlock()
					return 0, true
				},
			})
			s := f.open(t)
			roundTrip(t, s, "/v1/completions", []byte(`{"model":"m","prompt":"p"}`), 0, tc.headers...)
			expectEnd(t, s)
			waitIdle(t, f.srv, f.pool)
			mu.Lock()
			if len(asked) != 1 || asked[0] != tc.objective {
				t.Errorf("priority asked for %q, want [%s]", asked, tc.objective)
			}
			mu.Unlock()
			var rec struct {
				Objective  string `json:"objective"`
				FairnessID string `json:"fairness_id"`
			}
			line, _, _ := strings.Cut(logs.String(), "\n")
			if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Objective != tc.objective || rec.FairnessID != tc.fairnessID {
				t.Errorf("decision log %s: objective %q fairness_id %q, want %q %q (%v)", line, rec.Objective, rec.FairnessID, tc.objective, tc.fairnessID, err)
			}
		})
	}
}

// TestRequestAndResponseSizes: GIE's size histograms observe the request body
// and the response body bytes, labelled like the other request metrics.
func TestRequestAndResponseSizes(t *testing.T) {
	f := newFixture(t, 2, nil, Options{Models: []string{"m"}})
	s := f.open(t)
	body := []byte(`{"model":"m","prompt":"hello"}`)
	roundTrip(t, s, "/v1/completions", body, 7)
	resp := []string{`{"id":"1",`, `"usage":{"prompt_tokens":3,"completion_tokens":4}}`}
	s.Send(respHeadersMsg(hdrs(":status", "200"), false))
	s.Recv()
	for i, c := range resp {
		s.Send(respBodyMsg([]byte(c), i == len(resp)-1))
		s.Recv()
	}
	expectEnd(t, s)
	waitIdle(t, f.srv, f.pool)
	labels := map[string]string{"model_name": "m", "target_model_name": "m"}
	for name, want := range map[string]float64{
		"inference_objective_request_sizes":  float64(len(body)),
		"inference_objective_response_sizes": float64(len(resp[0]) + len(resp[1])),
	} {
		mfs, _ := f.reg.Gather()
		found := false
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				if h.GetSampleCount() == 1 && h.GetSampleSum() == want {
					found = true
				}
			}
		}
		if n, ok := f.labelled(t, name, labels); !ok || n != 1 || !found {
			t.Errorf("%s%v: %v observations (exists %v, sum %v found %v), want 1 of %v", name, labels, n, ok, want, found, want)
		}
	}
}

// TestNewRejectsBadLimits: option values New refuses, with what it expected.
func TestNewRejectsBadLimits(t *testing.T) {
	p := newPool(t, nil, 1)
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{MaxBufferedBytes: -1}, "expected MaxBufferedBytes >= 0, found -1"},
		{Options{Models: []string{"ok", "bad\xff"}}, "expected Models to hold non-empty UTF-8 model names"},
		{Options{Models: []string{""}}, `found ""`},
	} {
		if _, err := New(p.sched, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): error %v, want one containing %q", tc.opts, err, tc.want)
		}
	}
	srv, err := New(p.sched, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if srv.idleTimeout != DefaultRequestIdleTimeout || srv.maxBuffered != DefaultMaxBufferedBytes {
		t.Errorf("defaults: idle %v buffered %d, want %v %d", srv.idleTimeout, srv.maxBuffered, DefaultRequestIdleTimeout, DefaultMaxBufferedBytes)
	}
}
