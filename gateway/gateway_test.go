package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/fastepp/fastepp/config"
	"github.com/fastepp/fastepp/extproc"
	"github.com/fastepp/fastepp/scheduler"
)

// upstream is a fake model server recording what it receives.
type upstream struct {
	srv  *httptest.Server
	addr string
	hits atomic.Int64

	mu       sync.Mutex
	lastBody string
	lastHdr  http.Header
	lastPath string
	lastLen  int64

	// handle, when set, answers instead of the default JSON completion.
	handle func(w http.ResponseWriter, r *http.Request)
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.lastBody, u.lastHdr, u.lastPath, u.lastLen = string(b), r.Header.Clone(), r.URL.RequestURI(), r.ContentLength
		h := u.handle
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"x","served_by":%q,"choices":[{"text":"ok"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`, u.addr)
	}))
	u.addr = strings.TrimPrefix(u.srv.URL, "http://")
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) setHandler(h func(w http.ResponseWriter, r *http.Request)) {
	u.mu.Lock()
	u.handle = h
	u.mu.Unlock()
}

func (u *upstream) last() (body string, hdr http.Header, path string, n int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lastBody, u.lastHdr, u.lastPath, u.lastLen
}

// stack is epp's ext_proc server on loopback, a scheduler whose snapshot
// the test publishes, and a gateway in front.
type stack struct {
	sched   *scheduler.Scheduler
	handles []*scheduler.Handle
	ep      *extproc.Server
	eppAddr string
	gw      *Gateway
	url     string
}

func newStack(t *testing.T, plan *scheduler.Plan, addrs ...string) *stack {
	t.Helper()
	if plan == nil {
		var err error
		if plan, err = config.DefaultPlan(); err != nil {
			t.Fatal(err)
		}
	}
	s := &stack{sched: scheduler.New(plan)}
	for _, a := range addrs {
		ap := netip.MustParseAddrPort(a)
		ep := scheduler.Endpoint{Addr: ap.Addr(), Port: ap.Port()}
		ep.Name = ep.HostPort()
		s.handles = append(s.handles, scheduler.NewHandle(ep))
	}
	waiting := make([]int, len(addrs))
	s.publish(waiting...)
	var err error
	if s.ep, err = extproc.New(s.sched, extproc.Options{}); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(extproc.GRPCServerOptions(0)...)
	s.ep.Register(g)
	go g.Serve(lis)
	s.eppAddr = lis.Addr().String()
	s.gw = s.newGateway(t, Config{EPP: s.eppAddr})
	s.url = serveGateway(t, s.gw)
	t.Cleanup(g.Stop)
	return s
}

func (s *stack) newGateway(t *testing.T, cfg Config) *Gateway {
	t.Helper()
	gw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return gw
}

func serveGateway(t *testing.T, gw *Gateway) string {
	t.Helper()
	hs := httptest.NewServer(gw)
	t.Cleanup(hs.Close)
	return hs.URL
}

// publish sets each endpoint's queue length (a busy endpoint has a long
// queue and a full KV cache) in a fresh snapshot.
func (s *stack) publish(waiting ...int) {
	now := time.Now()
	states := make([]scheduler.EndpointState, len(s.handles))
	for i, h := range s.handles {
		kv := 0.0
		if waiting[i] > 0 {
			kv = 0.9
		}
		states[i] = scheduler.EndpointState{H: h, Healthy: true, M: scheduler.Metrics{UpdatedAt: now, Waiting: waiting[i], KVUsage: kv, InflightAtScrape: h.Inflight()}}
	}
	s.sched.Publish(scheduler.NewSnapshot(states, now, time.Hour))
}

func (s *stack) inflight() int64 {
	var n int64
	for _, h := range s.handles {
		n += h.Inflight()
	}
	return n
}

// waitIdle waits until epp has no open stream and no in-flight request.
func (s *stack) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.ep.Open() != 0 || s.inflight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("leak: %d open ext_proc streams, %d in-flight requests", s.ep.Open(), s.inflight())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func post(t *testing.T, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestRoutingFollowsEPP(t *testing.T) {
	a, b := newUpstream(t), newUpstream(t)
	s := newStack(t, nil, a.addr, b.addr)
	for round, busy := range []int{1, 0, 1} {
		w := []int{0, 0}
		w[busy] = 50
		s.publish(w...)
		idle := []*upstream{a, b}[1-busy]
		before := idle.hits.Load()
		// A long prompt (several prefix blocks), distinct per round so
		// prefix affinity does not pull it back.
		body := fmt.Sprintf(`{"model":"m","prompt":"round %d %s"}`, round, strings.Repeat("lorem ipsum ", 200))
		resp, got := post(t, s.url+"/v1/completions?x=1", body)
		if resp.StatusCode != 200 {
			t.Fatalf("round %d: status %d: %s", round, resp.StatusCode, got)
		}
		if idle.hits.Load() != before+1 {
			t.Fatalf("round %d: expected the idle endpoint %s to serve, found hits a=%d b=%d", round, idle.addr, a.hits.Load(), b.hits.Load())
		}
		if !strings.Contains(got, idle.addr) {
			t.Errorf("round %d: response %q does not come from %s", round, got, idle.addr)
		}
		ubody, hdr, path, n := idle.last()
		if ubody != body || n != int64(len(body)) {
			t.Errorf("round %d: upstream got %d bytes (content-length %d), want the client's %d", round, len(ubody), n, len(body))
		}
		if path != "/v1/completions?x=1" {
			t.Errorf("round %d: upstream path %q", round, path)
		}
		if id := hdr.Get("X-Request-Id"); len(id) != 36 {
			t.Errorf("round %d: upstream x-request-id %q: expected a generated uuid", round, id)
		}
		if hdr.Get(HeaderDestination) != idle.addr {
			t.Errorf("round %d: upstream %s = %q, want %q (Envoy forwards the mutated header)", round, HeaderDestination, hdr.Get(HeaderDestination), idle.addr)
		}
		if hdr.Get("Content-Type") != "application/json" {
			t.Errorf("round %d: client header not forwarded: %v", round, hdr)
		}
		s.waitIdle(t)
	}

	// The client's request id is kept.
	s.publish(0, 50)
	post(t, s.url+"/v1/completions", `{"model":"m","prompt":"id"}`, "X-Request-Id", "client-id-1")
	if _, hdr, _, _ := a.last(); hdr.Get("X-Request-Id") != "client-id-1" {
		t.Errorf("x-request-id %q, want client-id-1", hdr.Get("X-Request-Id"))
	}
	s.waitIdle(t)
}

func TestHeadersOnlyRequest(t *testing.T) {
	a := newUpstream(t)
	a.setHandler(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"object":"list","method":%q}`, r.Method)
	})
	s := newStack(t, nil, a.addr)
	resp, err := http.Get(s.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"method":"GET"`) {
		t.Fatalf("GET /v1/models: %d %s", resp.StatusCode, b)
	}
	s.waitIdle(t)
}

func TestImmediateResponse(t *testing.T) {
	a := newUpstream(t)
	s := newStack(t, nil, a.addr)
	for _, tc := range []struct {
		body string
		code int
	}{
		{`{"prompt":"no model"}`, 400},
		{`not json`, 400},
		{`{"model":17,"prompt":"x"}`, 400},
	} {
		resp, got := post(t, s.url+"/v1/completions", tc.body)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: status %d, want %d (%s)", tc.body, resp.StatusCode, tc.code, got)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: content-type %q", tc.body, ct)
		}
		var e struct {
			Error struct {
				Message string `json:"message"`
				Code    int    `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(got), &e); err != nil || e.Error.Code != tc.code || e.Error.Message == "" {
			t.Errorf("%s: expected an OpenAI error envelope with code %d, found %q (%v)", tc.body, tc.code, got, err)
		}
	}
	if a.hits.Load() != 0 {
		t.Errorf("upstream hit %d times by rejected requests", a.hits.Load())
	}
	// No endpoint at all: 503 from epp.
	s.sched.Publish(scheduler.NewSnapshot(nil, time.Now(), 0))
	if resp, got := post(t, s.url+"/v1/completions", `{"model":"m","prompt":"x"}`); resp.StatusCode != 503 {
		t.Errorf("empty pool: status %d, want 503 (%s)", resp.StatusCode, got)
	}
	s.waitIdle(t)
}

// TestStreamingChunkByChunk checks that each SSE event reaches the client
// before the upstream sends the next one: nothing is buffered on the way.
func TestStreamingChunkByChunk(t *testing.T) {
	a := newUpstream(t)
	next := make(chan struct{})
	const events = 4
	a.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range events {
			fmt.Fprintf(w, "data: {\"i\":%d}\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Second):
				return
			}
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	})
	s := newStack(t, nil, a.addr)
	req, _ := http.NewRequest("POST", s.url+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content-type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for i := range events {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := fmt.Sprintf("data: {\"i\":%d}\n", i); line != want {
			t.Fatalf("event %d: %q, want %q", i, line, want)
		}
		br.ReadString('\n')
		if s.inflight() != 1 {
			t.Errorf("event %d: in-flight %d during the response, want 1", i, s.inflight())
		}
		next <- struct{}{} // only now may the upstream send the next event
	}
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "data: [DONE]\n\n" {
		t.Fatalf("tail %q, %v", rest, err)
	}
	s.waitIdle(t)
}

// TestClientCancelReleases disconnects mid-stream and expects epp's
// in-flight count back at zero and the stream closed.
func TestClientCancelReleases(t *testing.T) {
	a := newUpstream(t)
	upstreamDone := make(chan struct{}, 1)
	a.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		upstreamDone <- struct{}{}
	})
	s := newStack(t, nil, a.addr)
	for _, stage := range []string{"mid-response", "before-response"} {
		t.Run(stage, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var body io.Reader = strings.NewReader(`{"model":"m","stream":true,"prompt":"p"}`)
			pr, pw := io.Pipe()
			if stage == "before-response" {
				// The body never ends: epp holds the stream open waiting for it.
				body = pr
				go pw.Write([]byte(`{"model":"m","prompt":"`))
			}
			req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/v1/completions", body)
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return
				}
				defer resp.Body.Close()
				br := bufio.NewReader(resp.Body)
				if line, _ := br.ReadString('\n'); line != "data: first\n" {
					t.Errorf("first line %q", line)
				}
				cancel()
				io.Copy(io.Discard, br)
			}()
			if stage == "before-response" {
				deadline := time.Now().Add(5 * time.Second)
				for s.ep.Open() == 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if s.ep.Open() == 0 {
					t.Fatal("no ext_proc stream opened")
				}
				cancel()
			} else {
				select {
				case <-upstreamDone:
				case <-time.After(5 * time.Second):
					t.Fatal("upstream request not cancelled after the client left")
				}
			}
			s.waitIdle(t) // released although the client's body never ended
			pw.CloseWithError(io.ErrClosedPipe)
			<-done
		})
	}
}

func TestModelRewriteRoundTrip(t *testing.T) {
	a := newUpstream(t)
	a.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "40")
		fmt.Fprint(w, `{"model":"served-model-name","text":"x"}`)
	})
	s := newStack(t, nil, a.addr)
	resp, got := post(t, s.url+"/v1/completions", `{"model":"client","prompt":"p"}`, "x-gateway-model-name-rewrite", "served-model-name")
	if resp.StatusCode != 200 || got != `{"model":"client","text":"x"}` {
		t.Fatalf("status %d body %q: expected the client's model name restored", resp.StatusCode, got)
	}
	ubody, _, _, n := a.last()
	if ubody != `{"model":"served-model-name","prompt":"p"}` || n != int64(len(ubody)) {
		t.Errorf("upstream body %q (content-length %d): expected the rewritten model", ubody, n)
	}
	s.waitIdle(t)
}

func TestFallbackOnConnectFailure(t *testing.T) {
	live := newUpstream(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	l, err := config.Load([]byte("plugins:\n- type: queue-scorer\n- type: max-score-picker\n  parameters: {maxNumOfEndpoints: 2}\n"), config.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, l.Plan, deadAddr, live.addr)
	s.publish(0, 50) // the dead endpoint looks idle: epp lists it first
	for i := range 3 {
		resp, got := post(t, s.url+"/v1/completions", fmt.Sprintf(`{"model":"m","prompt":"%d"}`, i))
		if resp.StatusCode != 200 || !strings.Contains(got, live.addr) {
			t.Fatalf("request %d: %d %q: expected the fallback %s to serve", i, resp.StatusCode, got, live.addr)
		}
	}
	if live.hits.Load() != 3 {
		t.Errorf("live endpoint served %d, want 3", live.hits.Load())
	}
	s.waitIdle(t)

	// Only dead endpoints: 503 upstream connect error.
	s2 := newStack(t, nil, deadAddr)
	if resp, got := post(t, s2.url+"/v1/completions", `{"model":"m","prompt":"x"}`); resp.StatusCode != 503 || !strings.Contains(got, "upstream connect error") {
		t.Errorf("dead pool: %d %q, want 503 upstream connect error", resp.StatusCode, got)
	}
	s2.waitIdle(t)
}

func TestEPPUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	gw, err := New(Config{EPP: addr, EPPTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	url := serveGateway(t, gw)
	resp, got := post(t, url+"/v1/completions", `{"model":"m","prompt":"x"}`)
	if resp.StatusCode != 500 || !strings.Contains(got, "epp at "+addr) {
		t.Errorf("epp down: %d %q, want 500 naming epp's address", resp.StatusCode, got)
	}
}

// silentEPP accepts streams and never answers.
type silentEPP struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (silentEPP) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		if _, err := ps.Recv(); err != nil {
			return nil
		}
	}
}

func TestEPPTimeout(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(g, silentEPP{})
	go g.Serve(lis)
	defer g.Stop()
	gw, err := New(Config{EPP: lis.Addr().String(), EPPTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	resp, got := post(t, serveGateway(t, gw)+"/v1/completions", `{"model":"m","prompt":"x"}`)
	if resp.StatusCode != 504 {
		t.Errorf("silent epp: %d %q, want 504", resp.StatusCode, got)
	}
}

func TestDirectRoundRobin(t *testing.T) {
	a, b := newUpstream(t), newUpstream(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	gw, err := New(Config{Direct: []string{a.addr, deadAddr, b.addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	url := serveGateway(t, gw)
	for i := range 6 {
		resp, got := post(t, url+"/v1/completions", fmt.Sprintf(`{"model":"m","prompt":"%d"}`, i))
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, got)
		}
	}
	// a, dead→b, b, a, dead→b, b.
	if a.hits.Load() != 2 || b.hits.Load() != 4 {
		t.Errorf("hits a=%d b=%d, want 2 and 4 (round-robin, the dead one falling through to the next)", a.hits.Load(), b.hits.Load())
	}
	if body, hdr, _, _ := b.last(); !strings.Contains(body, `"model":"m"`) || len(hdr.Get("X-Request-Id")) != 36 {
		t.Errorf("direct: upstream body %q, x-request-id %q", body, hdr.Get("X-Request-Id"))
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "found neither"},
		{Config{EPP: "127.0.0.1:1", Direct: []string{"127.0.0.1:2"}}, "found both"},
		{Config{Direct: []string{"nope"}}, `expected ip:port, found "nope"`},
		{Config{Direct: []string{"127.0.0.1:99999"}}, "1..65535"},
		{Config{EPP: "localhost"}, `expected host:port, found "localhost"`},
		{Config{EPP: "127.0.0.1:1", ChunkSize: -1}, "chunk size"},
		{Config{EPP: "127.0.0.1:1", EPPTimeout: -time.Second}, "negative"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if _, err := ParseEndpoints(" , "); err == nil {
		t.Error("ParseEndpoints accepted an empty list")
	}
}

// TestBodies sends bodies larger than a chunk (several ext_proc messages
// each way, echo chunks capped at 62,000 bytes) and a chunked client body
// of unknown length; the upstream must get them byte for byte.
func TestBodies(t *testing.T) {
	a := newUpstream(t)
	s := newStack(t, nil, a.addr)
	big := `{"model":"m","prompt":"` + strings.Repeat("long context ", 25000) + `"}` // ~325 KB
	for _, tc := range []struct {
		name    string
		body    string
		chunked bool
	}{
		{"300KB", big, false},
		{"300KB chunked", big, true},
		{"small chunked", `{"model":"m","prompt":"p"}`, true},
		{"exact chunk", `{"model":"m","prompt":"` + strings.Repeat("x", DefaultChunkSize-len(`{"model":"m","prompt":""}`)) + `"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				r = io.MultiReader(r) // hides the length: Transfer-Encoding: chunked
			}
			req, _ := http.NewRequest("POST", s.url+"/v1/completions", r)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, got)
			}
			ubody, _, _, n := a.last()
			if ubody != tc.body || n != int64(len(tc.body)) {
				t.Errorf("upstream got %d bytes (content-length %d), want %d", len(ubody), n, len(tc.body))
			}
			s.waitIdle(t)
		})
	}
}

// TestUpstreamStatusAndTruncation relays an upstream error status as it is,
// and aborts the client's response when the upstream's breaks mid-body so a
// truncated stream is not taken for a complete one.
func TestUpstreamStatusAndTruncation(t *testing.T) {
	a := newUpstream(t)
	s := newStack(t, nil, a.addr)
	a.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(429)
		io.WriteString(w, `{"error":"busy"}`)
	})
	if resp, got := post(t, s.url+"/v1/completions", `{"model":"m","prompt":"p"}`); resp.StatusCode != 429 || got != `{"error":"busy"}` {
		t.Errorf("upstream 429: relayed %d %q", resp.StatusCode, got)
	}
	s.waitIdle(t)

	a.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: partial\n\n")
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // no terminating chunk
		}
	})
	req, _ := http.NewRequest("POST", s.url+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"p","stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("truncated upstream: client read %q without an error", got)
	}
	s.waitIdle(t)
}

func BenchmarkGateway(b *testing.B) {
	for _, mode := range []string{"epp", "direct"} {
		b.Run(mode, func(b *testing.B) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				for range 4 {
					io.WriteString(w, "data: {\"choices\":[{\"text\":\"tok\"}]}\n\n")
					w.(http.Flusher).Flush()
				}
			}))
			defer up.Close()
			addr := strings.TrimPrefix(up.URL, "http://")
			var url string
			if mode == "epp" {
				url = newBenchStack(b, addr)
			} else {
				gw, err := New(Config{Direct: []string{addr}})
				if err != nil {
					b.Fatal(err)
				}
				defer gw.Close()
				hs := httptest.NewServer(gw)
				defer hs.Close()
				url = hs.URL
			}
			body := `{"model":"m","stream":true,"prompt":"` + strings.Repeat("benchmark prompt ", 200) + `"}`
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				resp, err := client.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// newBenchStack is newStack for benchmarks: epp's ext_proc server with one
// endpoint and a gateway in front; it returns the gateway's URL.
func newBenchStack(b *testing.B, addr string) string {
	plan, err := config.DefaultPlan()
	if err != nil {
		b.Fatal(err)
	}
	sched := scheduler.New(plan)
	ap := netip.MustParseAddrPort(addr)
	h := scheduler.NewHandle(scheduler.Endpoint{Name: addr, Addr: ap.Addr(), Port: ap.Port()})
	sched.Publish(scheduler.NewSnapshot([]scheduler.EndpointState{{H: h, Healthy: true, M: scheduler.Metrics{UpdatedAt: time.Now()}}}, time.Now(), time.Hour))
	ep, err := extproc.New(sched, extproc.Options{})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer(extproc.GRPCServerOptions(0)...)
	ep.Register(g)
	go g.Serve(lis)
	b.Cleanup(g.Stop)
	gw, err := New(Config{EPP: lis.Addr().String()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { gw.Close() })
	hs := httptest.NewServer(gw)
	b.Cleanup(hs.Close)
	return hs.URL
}

// TestConcurrentStreams runs many streamed requests at once (some cancelled
// by their clients) and expects every complete one intact and nothing left
// in flight.
func TestConcurrentStreams(t *testing.T) {
	a, b := newUpstream(t), newUpstream(t)
	sse := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(time.Millisecond)
		}
	}
	a.setHandler(sse)
	b.setHandler(sse)
	s := newStack(t, nil, a.addr, b.addr)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/v1/completions",
				strings.NewReader(fmt.Sprintf(`{"model":"m","stream":true,"prompt":"%d %s"}`, i, strings.Repeat("p", i*100))))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if i%5 == 0 { // leave after the first event
				line, _ := bufio.NewReader(resp.Body).ReadString('\n')
				if line != "data: 0\n" {
					errs <- fmt.Errorf("request %d: first line %q", i, line)
				}
				return
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil || string(got) != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
				errs <- fmt.Errorf("request %d: %q, %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if a.hits.Load()+b.hits.Load() != n {
		t.Errorf("upstreams served %d+%d, want %d", a.hits.Load(), b.hits.Load(), n)
	}
	s.waitIdle(t)
}

// TestShortBodyNotForwarded: a client announcing more bytes than it sends
// must not have its truncated body routed and proxied.
func TestShortBodyNotForwarded(t *testing.T) {
	a := newUpstream(t)
	s := newStack(t, nil, a.addr)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n{\"model\":\"m\",\"prompt\":\"p\"}")
	conn.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, conn)
	conn.Close()
	s.waitIdle(t)
	if a.hits.Load() != 0 {
		t.Errorf("a truncated body reached the upstream")
	}
}
