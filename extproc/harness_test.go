package extproc

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fastepp/fastepp/config"
	"github.com/fastepp/fastepp/scheduler"
)

// pool is a fake endpoint pool published to a scheduler.
type pool struct {
	sched   *scheduler.Scheduler
	handles []*scheduler.Handle
}

// newPool builds n healthy endpoints 10.0.0.1:8000 .. and publishes them.
func newPool(tb testing.TB, plan *scheduler.Plan, n int) *pool {
	tb.Helper()
	if plan == nil {
		var err error
		if plan, err = config.DefaultPlan(); err != nil {
			tb.Fatal(err)
		}
	}
	p := &pool{sched: scheduler.New(plan)}
	states := make([]scheduler.EndpointState, n)
	for i := range n {
		ep := scheduler.Endpoint{Addr: netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)}), Port: 8000}
		ep.Name = ep.HostPort()
		h := scheduler.NewHandle(ep)
		p.handles = append(p.handles, h)
		states[i] = scheduler.EndpointState{H: h, M: scheduler.Metrics{UpdatedAt: time.Now(), KVUsage: 0.1 * float64(i%5)}, Healthy: true}
	}
	p.sched.Publish(scheduler.NewSnapshot(states, time.Now(), 0))
	return p
}

func (p *pool) inflight() int64 {
	var n int64
	for _, h := range p.handles {
		n += h.Inflight()
	}
	return n
}

// serve starts srv on a loopback listener and returns a client connection.
func serve(tb testing.TB, srv extprocv3.ExternalProcessorServer) *grpc.ClientConn {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var stop func()
	if s, ok := srv.(*Server); ok && directTransport {
		d := s.NewDirect(DirectOptions{})
		go d.Serve(lis)
		stop = d.Stop
	} else {
		g := grpc.NewServer(GRPCServerOptions(0)...)
		if ok {
			s.Register(g) // the fast path, as cmd/epp serves it
		} else {
			extprocv3.RegisterExternalProcessorServer(g, srv)
		}
		go g.Serve(lis)
		stop = g.Stop
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn.Close()
		stop()
	})
	return conn
}

// directTransport makes serve use the direct transport (direct.go) for a
// *Server instead of grpc-go: FASTEPP_EXTPROC_TRANSPORT=direct, which
// make test sets for a second run of this package's tests.
var directTransport = os.Getenv("FASTEPP_EXTPROC_TRANSPORT") == "direct"

// hdrs builds a header map from key, value pairs (RawValue, like Envoy).
func hdrs(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return m
}

func postHeaders(path string, bodyLen int, extra ...string) *corev3.HeaderMap {
	kv := append([]string{":method", "POST", ":path", path, ":authority", "gw", "content-type", "application/json",
		"content-length", strconv.Itoa(bodyLen)}, extra...)
	return hdrs(kv...)
}

func protocol(req, resp filterv3.ProcessingMode_BodySendMode) *extprocv3.ProtocolConfiguration {
	return &extprocv3.ProtocolConfiguration{RequestBodyMode: req, ResponseBodyMode: resp}
}

var duplex = protocol(filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, filterv3.ProcessingMode_FULL_DUPLEX_STREAMED)

func subsetMD(eps ...string) *corev3.Metadata {
	vals := make([]*structpb.Value, len(eps))
	for i, e := range eps {
		vals[i] = structpb.NewStringValue(e)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		SubsetNamespace: {Fields: map[string]*structpb.Value{SubsetKey: structpb.NewListValue(&structpb.ListValue{Values: vals})}},
	}}
}

func reqHeadersMsg(h *corev3.HeaderMap, eos bool, pc *extprocv3.ProtocolConfiguration, md *corev3.Metadata) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{
		Request:         &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: h, EndOfStream: eos}},
		ProtocolConfig:  pc,
		MetadataContext: md,
	}
}

func reqBodyMsg(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

func respHeadersMsg(h *corev3.HeaderMap, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: h, EndOfStream: eos}}}
}

func respBodyMsg(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

// sendBody sends body in chunks of chunk bytes (one message when chunk <= 0).
func sendBody(s extprocv3.ExternalProcessor_ProcessClient, body []byte, chunk int) error {
	if chunk <= 0 || len(body) <= chunk {
		return s.Send(reqBodyMsg(body, true))
	}
	for off := 0; off < len(body); off += chunk {
		end := min(off+chunk, len(body))
		if err := s.Send(reqBodyMsg(body[off:end], end == len(body))); err != nil {
			return err
		}
	}
	return nil
}

// readEcho reads the streamed body answers until EndOfStream.
func readEcho(s extprocv3.ExternalProcessor_ProcessClient, buf []byte) ([]byte, int, error) {
	buf = buf[:0]
	max := 0
	for {
		r, err := s.Recv()
		if err != nil {
			return buf, max, err
		}
		sr := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil {
			return buf, max, errUnexpected(r)
		}
		buf = append(buf, sr.Body...)
		max = maxInt(max, len(sr.Body))
		if sr.EndOfStream {
			return buf, max, nil
		}
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

type unexpectedErr struct{ r *extprocv3.ProcessingResponse }

func (e unexpectedErr) Error() string { return "unexpected response: " + e.r.String() }

func errUnexpected(r *extprocv3.ProcessingResponse) error { return unexpectedErr{r} }

// destOf returns the destination header and metadata value of a response.
func destOf(r *extprocv3.ProcessingResponse, common *extprocv3.CommonResponse) (header, md string) {
	for _, h := range common.GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == HeaderDestination {
			header = string(h.GetHeader().GetRawValue())
		}
	}
	md = r.GetDynamicMetadata().GetFields()[MetadataNamespaceLB].GetStructValue().GetFields()[HeaderDestination].GetStringValue()
	return header, md
}

func headerOf(common *extprocv3.CommonResponse, key string) (string, bool) {
	for _, h := range common.GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == key {
			return string(h.GetHeader().GetRawValue()), true
		}
	}
	return "", false
}

// waitIdle waits until the server has no open stream and the pool no
// in-flight request.
func waitIdle(tb testing.TB, s *Server, p *pool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Open() != 0 || p.inflight() != 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("leak: %d open streams, %d in-flight requests", s.Open(), p.inflight())
		}
		time.Sleep(time.Millisecond)
	}
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
