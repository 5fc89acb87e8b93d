package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// transports are the --extproc-transport values. The tests below run each
// check on both: the direct transport must behave as the grpc-go one does.
var transports = []string{transportGRPC, transportDirect}

// TestExtprocTransportFlag: grpc (the default) and direct are accepted;
// anything else stops epp with exit 2 and a message naming the flag, what
// was expected and what was found; --help explains the flag.
func TestExtprocTransportFlag(t *testing.T) {
	o, err := parseFlags([]string{"--check-config"}, io.Discard)
	if err != nil || o.extprocTransport != transportGRPC {
		t.Fatalf("default --extproc-transport = %q, %v; want %q", o.extprocTransport, err, transportGRPC)
	}
	for _, v := range transports {
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"--check-config", "--extproc-transport", v}, &out, &errb, nil); code != 0 {
			t.Errorf("--extproc-transport %s: exit %d: %s", v, code, errb.String())
		}
	}
	for _, v := range []string{"http2", "", "Direct", "grpc-go"} {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"--endpoints", "10.0.0.1:8000", "--extproc-transport=" + v}, &out, &errb, nil)
		want := fmt.Sprintf("--extproc-transport: expected grpc or direct, found %q", v)
		if code != 2 || !strings.Contains(errb.String(), want) {
			t.Errorf("--extproc-transport=%s: exit %d, stderr %q; want exit 2 and %q", v, code, errb.String(), want)
		}
	}
	var out bytes.Buffer
	run(context.Background(), []string{"--help"}, &out, io.Discard, nil)
	for _, s := range []string{"  -extproc-transport ", "fastepp's own HTTP/2 transport", `(default "grpc")`} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help lacks %q", s)
		}
	}
}

// startPair runs epp with the transport and extra flags against two
// metrics servers, the second busy (10 waiting), and waits until both are
// scraped; it returns epp's addresses, cancel, exit and the endpoints.
func startPair(t *testing.T, transport string, extra ...string) (addrs, context.CancelFunc, *exit, []string, *syncWriter) {
	t.Helper()
	var eps []string
	for i := 0; i < 2; i++ {
		waiting := i * 10
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, metricsPage, waiting)
		}))
		t.Cleanup(srv.Close)
		eps = append(eps, strings.TrimPrefix(srv.URL, "http://"))
	}
	args := append([]string{
		"--endpoints", strings.Join(eps, ","), "--bind-address", "127.0.0.1",
		"--grpc-port", "0", "--grpc-health-port", "0", "--metrics-port", "0",
		"--refresh-metrics-interval", "20ms", "--extproc-transport", transport,
	}, extra...)
	a, cancel, done, logs := launch(t, args)
	pollMetrics(t, a.metrics, eq("inference_pool_ready_pods", 2), eq("inference_pool_average_queue_size", 5))
	return a, cancel, done, eps, logs
}

// dialExtproc is a grpc-go client of epp's ext_proc port, over TLS (not
// verified, as gateways configured for the EPP do) or plaintext.
func dialExtproc(t *testing.T, addr string, useTLS bool) *grpc.ClientConn {
	t.Helper()
	creds := insecureCreds()
	if useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// destHeader is the x-gateway-destination-endpoint header of a request
// headers answer ("" without one).
func destHeader(r *extprocv3.ProcessingResponse) string {
	for _, o := range r.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if o.GetHeader().GetKey() == "x-gateway-destination-endpoint" {
			return string(o.GetHeader().GetRawValue())
		}
	}
	return ""
}

// openStream opens an ext_proc stream on conn (15 s at most) and sends its
// first message, the request headers: the body is still to come.
func openStream(t *testing.T, conn *grpc.ClientConn, headers *extprocv3.ProcessingRequest) extprocv3.ExternalProcessor_ProcessClient {
	t.Helper()
	ctx, stop := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(stop)
	st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(headers); err != nil {
		t.Fatal(err)
	}
	return st
}

// route is routeOnce without the testing.T (for other goroutines): a full
// request in FULL_DUPLEX_STREAMED mode, returning the chosen endpoint.
func route(conn *grpc.ClientConn, body string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		return "", err
	}
	hdrs := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":path", RawValue: []byte("/v1/completions")},
		{Key: ":method", RawValue: []byte("POST")},
		{Key: "content-type", RawValue: []byte("application/json")},
	}}
	if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hdrs}}}); err != nil {
		return "", err
	}
	if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}}); err != nil {
		return "", err
	}
	r, err := st.Recv()
	if err != nil {
		return "", err
	}
	dest := destHeader(r)
	if dest == "" {
		return "", fmt.Errorf("first answer %v, want request headers with a destination", r)
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return "", fmt.Errorf("body echo: %w", err)
		}
		if r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetEndOfStream() {
			break
		}
	}
	if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{}, EndOfStream: true}}}); err != nil {
		return "", err
	}
	if _, err := st.Recv(); err != nil {
		return "", fmt.Errorf("response headers: %w", err)
	}
	if err := st.CloseSend(); err != nil {
		return "", err
	}
	if _, err := st.Recv(); err != io.EOF {
		return "", fmt.Errorf("after CloseSend: %v, want io.EOF (the call ends OK)", err)
	}
	return dest, nil
}

// TestTransportRoutes: with either transport, plaintext or TLS (the
// self-signed default), full ext_proc requests over a real gRPC stream are
// routed to the idle endpoint (header and envoy.lb metadata alike), 32
// concurrent streams on one connection all end OK, and /metrics counts
// every request.
func TestTransportRoutes(t *testing.T) {
	for _, transport := range transports {
		for _, useTLS := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tls=%v", transport, useTLS), func(t *testing.T) {
				a, cancel, done, eps, logs := startPair(t, transport, fmt.Sprintf("--secure-serving=%v", useTLS))
				conn := dialExtproc(t, a.grpc, useTLS)
				for i := 0; i < 3; i++ {
					if dest := routeOnce(t, conn, `{"model":"m","prompt":"hello world"}`); dest != eps[0] {
						t.Errorf("request %d routed to %s, want the idle endpoint %s", i, dest, eps[0])
					}
				}
				const n = 32
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for i := 0; i < n; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						dest, err := route(conn, fmt.Sprintf(`{"model":"m","prompt":"concurrent %d"}`, i))
						if err == nil && dest != eps[0] && dest != eps[1] {
							err = fmt.Errorf("routed to %q, want one of %v", dest, eps)
						}
						errs <- err
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Errorf("concurrent stream: %v", err)
					}
				}
				pollMetrics(t, a.metrics, atLeast("inference_objective_request_total", 3+n))
				cancel()
				<-done.c
				if done.code != 0 {
					t.Errorf("exit %d", done.code)
				}
				logs.mu.Lock()
				text := logs.w.(*bytes.Buffer).String()
				logs.mu.Unlock()
				if !strings.Contains(text, `"transport":"`+transport+`"`) {
					t.Errorf("the start-up line does not name the transport %s:\n%s", transport, text)
				}
			})
		}
	}
}

// TestDirectCertReload: --extproc-transport=direct serves the pair from
// --cert-path and, with --enable-cert-reload, a rewritten pair without a
// restart (the *tls.Config serverTLS builds is the one Direct serves); a
// gRPC client routes over both certificates, with ALPN h2.
func TestDirectCertReload(t *testing.T) {
	defer func(d time.Duration) { certReloadInterval = d }(certReloadInterval)
	certReloadInterval = 50 * time.Millisecond
	dir := t.TempDir()
	first := writePair(t, dir)
	a, _, _, eps, _ := startPair(t, transportDirect, "--cert-path", dir, "--enable-cert-reload")
	if !bytes.Equal(servedCert(t, a.grpc), first) {
		t.Fatal("direct: epp did not serve the certificate from --cert-path")
	}
	alpn := func() string {
		c, err := tls.Dial("tcp", a.grpc, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().NegotiatedProtocol
	}
	if p := alpn(); p != "h2" {
		t.Errorf("direct over TLS: ALPN %q, want h2", p)
	}
	if dest := routeOnce(t, dialExtproc(t, a.grpc, true), `{"model":"m","prompt":"first"}`); dest != eps[0] {
		t.Errorf("routed to %s over the first certificate, want %s", dest, eps[0])
	}
	second := writePair(t, dir)
	eventually(t, 10*time.Second, "the rewritten certificate served", func() (bool, string) {
		return bytes.Equal(servedCert(t, a.grpc), second), "the first certificate"
	})
	if dest := routeOnce(t, dialExtproc(t, a.grpc, true), `{"model":"m","prompt":"second"}`); dest != eps[0] {
		t.Errorf("routed to %s over the reloaded certificate, want %s", dest, eps[0])
	}
}

// TestTransportHealthChecking: with --health-checking, gRPC health's Check
// on the ext_proc port answers SERVING for "" and the ext_proc service and
// NotFound for an unknown one, on either transport; without it, Check is
// Unimplemented. The direct transport answers Watch Unimplemented (it
// serves Check only).
func TestTransportHealthChecking(t *testing.T) {
	for _, transport := range transports {
		for _, on := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/health-checking=%v", transport, on), func(t *testing.T) {
				a, _, _, _, _ := startEPP(t, 1, "--extproc-transport", transport, fmt.Sprintf("--health-checking=%v", on))
				hc := healthpb.NewHealthClient(dialExtproc(t, a.grpc, true))
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				for _, svc := range []string{extprocHealthService, ""} {
					r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
					switch {
					case on && (err != nil || r.Status != healthpb.HealthCheckResponse_SERVING):
						t.Errorf("Check(%q) = %v, %v; want SERVING", svc, r, err)
					case !on && status.Code(err) != codes.Unimplemented:
						t.Errorf("Check(%q) without --health-checking = %v, %v; want Unimplemented", svc, r, err)
					}
				}
				if !on {
					return
				}
				if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "no-such-service"}); status.Code(err) != codes.NotFound {
					t.Errorf("Check(no-such-service) = %v, %v; want NotFound", r, err)
				}
				if transport == transportDirect {
					w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: extprocHealthService})
					if err == nil {
						_, err = w.Recv()
					}
					if status.Code(err) != codes.Unimplemented {
						t.Errorf("direct: Watch = %v; want Unimplemented", err)
					}
				}
			})
		}
	}
}

// TestTransportShutdown: on SIGTERM (context cancel), with either
// transport: an idle client connection does not hold epp for the grace
// period; a stream that is mid-request finishes (routed) and the call ends
// OK, while a new stream is refused; a stream that stalls past
// --shutdown-grace-period is cut and epp still exits 0 soon after. Every
// case exits 0.
func TestTransportShutdown(t *testing.T) {
	headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/v1/completions")}, {Key: ":method", RawValue: []byte("POST")}}}}}}
	for _, transport := range transports {
		t.Run(transport+"/idle connection", func(t *testing.T) {
			a, cancel, done, _, _ := startPair(t, transport, "--secure-serving=false", "--shutdown-grace-period", "20s")
			conn := dialExtproc(t, a.grpc, false)
			if _, err := route(conn, `{"model":"m","prompt":"x"}`); err != nil { // the connection is up
				t.Fatal(err)
			}
			start := time.Now()
			cancel()
			select {
			case <-done.c:
				if done.code != 0 {
					t.Errorf("exit %d", done.code)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("shutdown with an idle connection took %v", d)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("epp did not exit with an idle client connection open")
			}
		})
		t.Run(transport+"/open stream finishes", func(t *testing.T) {
			a, cancel, done, eps, _ := startPair(t, transport, "--secure-serving=false", "--shutdown-grace-period", "10s")
			conn := dialExtproc(t, a.grpc, false)
			st := openStream(t, conn, headers)
			time.Sleep(50 * time.Millisecond) // the stream is open on the server
			cancel()                          // SIGTERM while the body is still to come
			time.Sleep(200 * time.Millisecond)
			select {
			case <-done.c:
				t.Fatalf("epp exited (%d) with a stream open", done.code)
			default:
			}
			// A new stream is not served: the listener is closed and the
			// connection is going away.
			if dest, err := route(conn, `{"model":"m","prompt":"new"}`); err == nil {
				t.Errorf("a new stream after SIGTERM was routed to %s", dest)
			}
			if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(`{"model":"m","prompt":"late"}`), EndOfStream: true}}}); err != nil {
				t.Fatalf("open stream cut during shutdown: %v", err)
			}
			r, err := st.Recv()
			if err != nil {
				t.Fatalf("open stream got no answer during shutdown: %v", err)
			}
			dest := destHeader(r)
			if dest != eps[0] {
				t.Fatalf("routed to %q during shutdown, want the idle endpoint %s", dest, eps[0])
			}
			finishStream(t, st)
			if _, err := st.Recv(); err != io.EOF {
				t.Errorf("the open stream ended with %v, want io.EOF (status OK)", err)
			}
			select {
			case <-done.c:
				if done.code != 0 {
					t.Fatalf("exit %d", done.code)
				}
			case <-time.After(8 * time.Second):
				t.Fatal("epp did not exit after the last stream finished")
			}
		})
		t.Run(transport+"/stalled stream past the grace period", func(t *testing.T) {
			a, cancel, done, _, logs := startPair(t, transport, "--secure-serving=false", "--shutdown-grace-period", "300ms")
			conn := dialExtproc(t, a.grpc, false)
			st := openStream(t, conn, headers)
			time.Sleep(50 * time.Millisecond)
			start := time.Now()
			cancel()
			recvErr := make(chan error, 1)
			go func() {
				_, err := st.Recv()
				recvErr <- err
			}()
			select {
			case <-done.c:
				if done.code != 0 {
					t.Errorf("exit %d", done.code)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("shutdown took %v with a 300ms grace period", d)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("epp did not exit after the grace period")
			}
			select {
			case err := <-recvErr:
				if err == nil || err == io.EOF {
					t.Errorf("the stalled stream ended with %v; want an error (cut at the end of the grace period)", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("the stalled stream was not cut")
			}
			logs.mu.Lock()
			text := logs.w.(*bytes.Buffer).String()
			logs.mu.Unlock()
			if !strings.Contains(text, "grace period over; closing open streams") {
				t.Errorf("no grace-period line in the log:\n%s", text)
			}
		})
	}
}

// TestTransportRecvLimit: both transports take one gRPC message of up to
// --max-request-body-bytes + 1 MiB (GRPCServerOptions' limit; Direct's by
// default): a body message of exactly that size is received (and answered
// 413, the body being over --max-request-body-bytes), one byte more is
// refused with ResourceExhausted.
func TestTransportRecvLimit(t *testing.T) {
	const maxBody = 1024
	limit := maxBody + 1<<20
	bodyMsg := func(n int) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: bytes.Repeat([]byte("x"), n), EndOfStream: true}}}
	}
	sizes := map[int]int{} // message size -> body length
	for n := limit - 64; len(sizes) < 2; n++ {
		s := proto.Size(bodyMsg(n))
		if s > limit+1 {
			t.Fatalf("no body length gives a message of %d or %d bytes", limit, limit+1)
		}
		if s == limit || s == limit+1 {
			sizes[s] = n
		}
	}
	headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/v1/completions")}, {Key: ":method", RawValue: []byte("POST")}}}}}}
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			a, _, _, _, _ := startEPP(t, 1, "--secure-serving=false", "--extproc-transport", transport, "--max-request-body-bytes", fmt.Sprint(maxBody))
			conn := dialExtproc(t, a.grpc, false)
			for _, size := range []int{limit, limit + 1} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.Send(headers); err != nil {
					t.Fatal(err)
				}
				if err := st.Send(bodyMsg(sizes[size])); err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
				r, err := st.Recv()
				cancel()
				switch {
				case size == limit && (err != nil || r.GetImmediateResponse().GetStatus().GetCode() != 413):
					t.Errorf("a %d-byte message (the limit): %v, %v; want an ImmediateResponse 413", size, r, err)
				case size > limit && (status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than max")):
					t.Errorf("a %d-byte message (the limit + 1): %v, %v; want ResourceExhausted", size, r, err)
				}
			}
		})
	}
}

// TestTransportIdleTimeout: --request-idle-timeout and
// --max-buffered-request-bytes reach the ext_proc server on either
// transport: a request that stalls after its headers gets 408 (sent by the
// idle timer, not in answer to a message: on the direct transport while the
// connection goroutine waits in a read), 16 stalled streams at once on one
// connection each get theirs, and a body chunk over the buffer bound 413.
func TestTransportIdleTimeout(t *testing.T) {
	headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/v1/completions")}, {Key: ":method", RawValue: []byte("POST")}}}}}}
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			a, _, _, _, _ := startEPP(t, 1, "--secure-serving=false", "--extproc-transport", transport,
				"--request-idle-timeout", "200ms", "--max-buffered-request-bytes", "64")
			conn := dialExtproc(t, a.grpc, false)
			// one answer to a stream: its headers, then body (or none)
			answer := func(body string) (int32, time.Duration, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				st, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
				if err != nil {
					return 0, 0, err
				}
				if err := st.Send(headers); err != nil {
					return 0, 0, err
				}
				if body != "" {
					if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(body)}}}); err != nil {
						return 0, 0, err
					}
				}
				start := time.Now()
				r, err := st.Recv()
				if err != nil {
					return 0, 0, err
				}
				_ = st.CloseSend()
				return int32(r.GetImmediateResponse().GetStatus().GetCode()), time.Since(start), nil
			}
			if code, _, err := answer(`{"model":"m","prompt":"` + strings.Repeat("x", 100) + `"}`); err != nil || code != 413 {
				t.Errorf("body over the buffer bound: status %d, %v; want 413", code, err)
			}
			const n = 16
			type result struct {
				code int32
				took time.Duration
				err  error
			}
			results := make(chan result, n)
			for i := 0; i < n; i++ {
				go func() {
					code, took, err := answer("")
					results <- result{code, took, err}
				}()
			}
			for i := 0; i < n; i++ {
				r := <-results
				if r.err != nil || r.code != 408 || r.took > 5*time.Second {
					t.Errorf("stalled request: status %d after %v, %v; want 408 after about 200ms", r.code, r.took, r.err)
				}
			}
		})
	}
}
