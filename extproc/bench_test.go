package extproc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"
)

// floorServer answers every request with a fixed endpoint and echoes the
// body without parsing or picking: the floor of the ext_proc path.
type floorServer struct {
	extprocv3.UnimplementedExternalProcessorServer
	headers *extprocv3.ProcessingResponse // shared, never modified
}

func newFloorServer() *floorServer {
	return &floorServer{headers: &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{
				HeaderMutation:  &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader(HeaderDestination, []byte("10.0.0.1:8000"))}},
				ClearRouteCache: true,
			},
		}},
		DynamicMetadata: destMetadata("10.0.0.1:8000"),
	}}
}

func (f *floorServer) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	var chunks [][]byte
	for {
		msg, err := ps.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch r := msg.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			if r.RequestHeaders.EndOfStream {
				if err := ps.Send(f.headers); err != nil {
					return err
				}
			}
		case *extprocv3.ProcessingRequest_RequestBody:
			chunks = append(chunks, r.RequestBody.Body)
			if !r.RequestBody.EndOfStream {
				continue
			}
			if err := ps.Send(f.headers); err != nil {
				return err
			}
			for i, c := range chunks {
				for {
					n := min(len(c), MaxChunk)
					last := i == len(chunks)-1 && n == len(c)
					if err := ps.Send(floorEcho(c[:n], last, true)); err != nil {
						return err
					}
					if c = c[n:]; len(c) == 0 {
						break
					}
				}
			}
			chunks = chunks[:0]
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			ps.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}})
		case *extprocv3.ProcessingRequest_ResponseBody:
			ps.Send(floorEcho(r.ResponseBody.Body, r.ResponseBody.EndOfStream, false))
		}
	}
}

// destMetadata is the envoy.lb dynamic metadata carrying dest.
func destMetadata(dest string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		MetadataNamespaceLB: {Kind: &structpb.Value_StructValue{StructValue: &structpb.Struct{Fields: map[string]*structpb.Value{
			HeaderDestination: {Kind: &structpb.Value_StringValue{StringValue: dest}},
		}}}},
	}}
}

func floorEcho(b []byte, eos, request bool) *extprocv3.ProcessingResponse {
	br := &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
		Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: &extprocv3.StreamedBodyResponse{Body: b, EndOfStream: eos}},
	}}}
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}}
}

// benchBodies returns n chat bodies of about size bytes: a shared system
// prompt (half the size, one of 8) and a unique user message.
func benchBodies(n, size int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly vexing zebras")
	text := func(k int) string {
		var sb strings.Builder
		for sb.Len() < k {
			sb.WriteString(words[rng.IntN(len(words))])
			sb.WriteByte(' ')
		}
		return sb.String()[:k]
	}
	systems := make([]string, 8)
	for i := range systems {
		systems[i] = text(size / 2)
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(`{"model":"meta-llama/Llama-3.1-8B-Instruct","stream":true,"stream_options":{"include_usage":true},"max_tokens":128,"messages":[{"role":"system","content":"` +
			systems[i%len(systems)] + `"},{"role":"user","content":"` + text(size-size/2-200) + `"}]}`)
	}
	return out
}

// envoyRequest runs one request like Envoy in FULL_DUPLEX_STREAMED mode:
// headers, the body in 16 KiB messages, read the headers answer and the
// echoed body, then end the stream.
func envoyRequest(ctx context.Context, c extprocv3.ExternalProcessorClient, hdr *corev3.HeaderMap, body []byte) error {
	s, err := c.Process(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(reqHeadersMsg(hdr, false, duplex, nil)); err != nil {
		return err
	}
	if err := sendBody(s, body, 16<<10); err != nil {
		return err
	}
	r, err := s.Recv()
	if err != nil {
		return err
	}
	if r.GetRequestHeaders() == nil {
		return errUnexpected(r)
	}
	for {
		r, err := s.Recv()
		if err != nil {
			return err
		}
		sr := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil {
			return errUnexpected(r)
		}
		if sr.EndOfStream {
			break
		}
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	if _, err := s.Recv(); err != io.EOF {
		return fmt.Errorf("expected the stream to end, found %v", err)
	}
	return nil
}

// runEnvoy drives b.N requests over 16 concurrent streams and reports
// requests/s and latency percentiles.
func runEnvoy(b *testing.B, srv extprocv3.ExternalProcessorServer, bodies [][]byte) {
	c := extprocv3.NewExternalProcessorClient(serve(b, srv))
	streams := 16
	if v, err := strconv.Atoi(os.Getenv("EXTPROC_BENCH_STREAMS")); err == nil && v > 0 {
		streams = v // e.g. 1 to see per-request latency without queueing
	}
	hdrs := make([]*corev3.HeaderMap, len(bodies))
	for i, body := range bodies {
		hdrs[i] = postHeaders("/v1/chat/completions", len(body), "x-request-id", "req-"+strconv.Itoa(i), "user-agent", "bench")
	}
	ctx := context.Background()
	// Warm up connections and pools outside the timed region.
	for i := range streams {
		if err := envoyRequest(ctx, c, hdrs[i%len(bodies)], bodies[i%len(bodies)]); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	lat := make([][]time.Duration, streams)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for g := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if err := envoyRequest(ctx, c, hdrs[i%len(bodies)], bodies[i%len(bodies)]); err != nil {
					failed.Store(&err)
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	// Process CPU (client + server + gRPC) per request: steadier than
	// req/s when other work shares the machine.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/req")
}

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchCases are the fixed cases: endpoints × body size.
var benchCases = []struct {
	endpoints int
	size      int
	label     string
}{
	{8, 2 << 10, "2KB"},
	{64, 2 << 10, "2KB"},
	{8, 220 << 10, "220KB"},
}

func BenchmarkExtProc(b *testing.B) {
	for _, tc := range benchCases {
		bodies := benchBodies(64, tc.size)
		name := fmt.Sprintf("endpoints=%d/body=%s", tc.endpoints, tc.label)
		b.Run(name+"/picker=default", func(b *testing.B) {
			p := newPool(b, nil, tc.endpoints)
			// As deployed: metrics registered, logger at info level.
			srv, err := New(p.sched, Options{Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			runEnvoy(b, srv, bodies)
		})
		b.Run(name+"/picker=none", func(b *testing.B) {
			runEnvoy(b, newFloorServer(), bodies)
		})
	}
}

// fakeStream replays one request's messages to a server without gRPC.
type fakeStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	ctx  context.Context
	in   []*extprocv3.ProcessingRequest
	next int
	sent int
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if f.next >= len(f.in) {
		return nil, io.EOF
	}
	f.next++
	return f.in[f.next-1], nil
}

func (f *fakeStream) Send(*extprocv3.ProcessingResponse) error {
	f.sent++
	return nil
}

// BenchmarkStreamNoGRPC is the server's own cost per request (no transport,
// no marshalling): headers + body messages in, answers discarded.
func BenchmarkStreamNoGRPC(b *testing.B) {
	for _, tc := range benchCases {
		bodies := benchBodies(64, tc.size)
		msgs := make([][]*extprocv3.ProcessingRequest, len(bodies))
		for i, body := range bodies {
			msgs[i] = append(msgs[i], reqHeadersMsg(postHeaders("/v1/chat/completions", len(body), "x-request-id", "r"), false, duplex, nil))
			for off := 0; off < len(body); off += 16 << 10 {
				end := min(off+16<<10, len(body))
				msgs[i] = append(msgs[i], reqBodyMsg(body[off:end], end == len(body)))
			}
		}
		name := fmt.Sprintf("endpoints=%d/body=%s", tc.endpoints, tc.label)
		for _, picker := range []string{"default", "none"} {
			b.Run(name+"/picker="+picker, func(b *testing.B) {
				var srv extprocv3.ExternalProcessorServer = newFloorServer()
				if picker == "default" {
					p := newPool(b, nil, tc.endpoints)
					s, err := New(p.sched, Options{Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
					if err != nil {
						b.Fatal(err)
					}
					srv = s
				}
				fs := &fakeStream{ctx: context.Background()}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					fs.in, fs.next = msgs[i%len(msgs)], 0
					if err := srv.Process(fs); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
