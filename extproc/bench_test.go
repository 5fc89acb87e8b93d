package extproc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
		if rb := msg.GetRequestBody(); rb != nil {
			chunks = append(chunks, rb.Body) // here, not in step: it stays on the stack
		}
		echoed, err := f.step(msg, chunks, ps)
		if err != nil {
			return err
		}
		if echoed {
			chunks = chunks[:0]
		}
	}
}

// floorSender is where the floor's replies go: grpc's stream.
type floorSender interface {
	Send(*extprocv3.ProcessingResponse) error
}

// step answers one message as the floor does: the destination header when
// the request headers end the request or its body ends, the request body
// (chunks, this message's included) echoed in echoChunk pieces when it
// ends (echoed), the response passed through.
func (f *floorServer) step(msg *extprocv3.ProcessingRequest, chunks [][]byte, out floorSender) (echoed bool, err error) {
	switch r := msg.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		if r.RequestHeaders.EndOfStream {
			return false, out.Send(f.headers)
		}
	case *extprocv3.ProcessingRequest_RequestBody:
		if !r.RequestBody.EndOfStream {
			return false, nil
		}
		if err := out.Send(f.headers); err != nil {
			return false, err
		}
		for i, c := range chunks {
			for {
				n := min(len(c), echoChunk) // the server's echo chunk size
				last := i == len(chunks)-1 && n == len(c)
				if err := out.Send(floorEcho(c[:n], last, true)); err != nil {
					return false, err
				}
				if c = c[n:]; len(c) == 0 {
					break
				}
			}
		}
		return true, nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return false, out.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}})
	case *extprocv3.ProcessingRequest_ResponseBody:
		return false, out.Send(floorEcho(r.ResponseBody.Body, r.ResponseBody.EndOfStream, false))
	}
	return false, nil
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

// runEnvoy drives b.N requests over 16 concurrent streams to the server
// behind conn and reports requests/s, latency percentiles, and CPU per
// request: the server's own (serverCPU, nil when the server shares this
// process) and this process's.
// With serverMallocs it also reports the server's heap allocations per
// request (all of the server process, gRPC's transport included).
func runEnvoy(b *testing.B, conn *grpc.ClientConn, serverCPU func() time.Duration, serverMallocs func() uint64, bodies [][]byte) {
	c := extprocv3.NewExternalProcessorClient(conn)
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
	var mallocs0 uint64
	if serverMallocs != nil {
		mallocs0 = serverMallocs() // before the CPU readings: it stops the child's world
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	var srv0 time.Duration
	if serverCPU != nil {
		srv0 = serverCPU()
	}
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
	var srvCPU time.Duration
	if serverCPU != nil {
		srvCPU = serverCPU() - srv0
	}
	b.StopTimer()
	if serverMallocs != nil {
		b.ReportMetric(float64(serverMallocs()-mallocs0)/float64(b.N), "server-allocs/req")
	}
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
	if serverCPU != nil {
		// The server process alone (the figure to compare: Envoy's CPU is
		// not the picker's), steadier than req/s on a shared machine.
		b.ReportMetric(float64(srvCPU.Microseconds())/float64(b.N), "server-cpu-µs/req")
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "client-cpu-µs/req")
	} else {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/req")
	}
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
	{256, 2 << 10, "2KB"},
	{1024, 2 << 10, "2KB"},
}

// BenchmarkExtProc runs each case's server in a child process (this test
// binary, re-executed into TestExtProcBenchChild) so that the server's CPU
// per request is measured apart from the client's. picker=none is the
// floor: stock grpc-go and protobuf (grpc.NewServer() with no options), no
// parsing, no pick, the body echoed in the server's chunk size.
// picker=direct is the ext_proc server as picker=default, served on the
// direct transport (direct.go) instead of grpc-go.
func BenchmarkExtProc(b *testing.B) {
	for _, tc := range benchCases {
		bodies := benchBodies(64, tc.size)
		name := fmt.Sprintf("endpoints=%d/body=%s", tc.endpoints, tc.label)
		pickers := []string{"default", "direct", "none"}
		for _, v := range strings.Split(os.Getenv(benchVariantsEnv), ",") {
			switch v {
			case "":
			default:
				pickers = append(pickers, "default/opts="+v)
			}
		}
		for _, picker := range pickers {
			b.Run(name+"/picker="+picker, func(b *testing.B) {
				conn, cpu, mallocs := benchChild(b, picker, tc.endpoints)
				runEnvoy(b, conn, cpu, mallocs, bodies)
			})
		}
	}
}

// benchVariantsEnv adds server variants to BenchmarkExtProc, run beside the
// default and the floor in the same process (the only fair comparison on a
// shared machine): a comma-separated list of option sets, each a
// "+"-separated list of benchServerOptions names, e.g.
// FASTEPP_EXTPROC_BENCH_VARIANTS=workers64,static+workers64.
const benchVariantsEnv = "FASTEPP_EXTPROC_BENCH_VARIANTS"

// benchChildEnv selects TestExtProcBenchChild's server: "default:N" (the
// ext_proc server, default plan, N endpoints, as cmd/epp serves it),
// "direct:N" (the same on the direct transport),
// "default:N:OPTIONS" (a benchVariantsEnv variant) or "none" (the floor).
const benchChildEnv = "FASTEPP_EXTPROC_BENCH_CHILD"

// benchChildProfileEnv, when set to a path prefix, makes each bench child
// write a CPU profile of its whole life (warm-up included) to
// PREFIX.MODE (PREFIX.none, PREFIX.default-8, ...):
//
//	FASTEPP_EXTPROC_BENCH_CPUPROFILE=/tmp/xp go test -run '^$' -bench ExtProc ./extproc/
//	go tool pprof -top extproc.test /tmp/xp.default-8
const benchChildProfileEnv = "FASTEPP_EXTPROC_BENCH_CPUPROFILE"

// benchChildMemProfileEnv is the same for an allocation profile (every
// allocation sampled: slow; for attributing allocs/req, not for timing):
//
//	go tool pprof -sample_index=alloc_objects -top extproc.test /tmp/xp.default-8
const benchChildMemProfileEnv = "FASTEPP_EXTPROC_BENCH_MEMPROFILE"

// benchChild starts this test binary as a server process and returns a
// connection to it, a reader of its CPU time (user + system, all threads)
// and one of its heap allocation count (runtime.MemStats.Mallocs, asked
// over stdin). The child ends when the benchmark does.
func benchChild(b *testing.B, picker string, endpoints int) (*grpc.ClientConn, func() time.Duration, func() uint64) {
	b.Helper()
	mode := picker
	if p, opts, ok := strings.Cut(picker, "/opts="); ok && p == "default" {
		mode = "default:" + strconv.Itoa(endpoints) + ":" + opts
	} else if picker == "default" || picker == "direct" {
		mode = picker + ":" + strconv.Itoa(endpoints)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestExtProcBenchChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), benchChildEnv+"="+mode)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the child's signal to stop
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	out := bufio.NewReader(stdout)
	addr, err := out.ReadString('\n')
	if err != nil {
		b.Fatalf("bench child (%s): no address: %v", mode, err)
	}
	conn, err := grpc.NewClient(strings.TrimSpace(addr), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	pid := cmd.Process.Pid
	cpu := func() time.Duration {
		d, err := procCPU(pid)
		if err != nil {
			b.Fatalf("bench child CPU: %v", err)
		}
		return d
	}
	mallocs := func() uint64 {
		if _, err := io.WriteString(stdin, "mallocs\n"); err != nil {
			b.Fatalf("bench child: %v", err)
		}
		line, err := out.ReadString('\n')
		n, perr := strconv.ParseUint(strings.TrimSpace(line), 10, 64)
		if err != nil || perr != nil {
			b.Fatalf("bench child mallocs: %q, %v", line, err)
		}
		return n
	}
	return conn, cpu, mallocs
}

// procCPU reads a process's user + system time from /proc/PID/stat (fields
// 14 and 15, in clock ticks of 1/100 s: Linux's USER_HZ).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: expected \"(comm)\", found %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: expected at least 15 fields, found %d", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q: expected integers", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * (time.Second / 100), nil
}

// TestExtProcBenchChild is BenchmarkExtProc's server process: it runs only
// when benchChildEnv is set (the benchmark re-executes the test binary with
// it, as os/exec's own tests do with helper processes) and returns at once
// otherwise. It prints its address and serves until stdin closes; each line
// "mallocs" on stdin is answered with runtime.MemStats.Mallocs.
func TestExtProcBenchChild(t *testing.T) {
	mode := os.Getenv(benchChildEnv)
	if mode == "" {
		return
	}
	var (
		g      *grpc.Server
		direct *Direct
	)
	switch {
	case mode == "none":
		g = grpc.NewServer() // stock grpc-go: the floor
		extprocv3.RegisterExternalProcessorServer(g, newFloorServer())
	case strings.HasPrefix(mode, "default:"), strings.HasPrefix(mode, "direct:"):
		kind, rest, _ := strings.Cut(mode, ":")
		ns, opts, _ := strings.Cut(rest, ":")
		n, err := strconv.Atoi(ns)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: expected default:N[:OPTIONS] or direct:N with N > 0", benchChildEnv, mode)
		}
		p := newPool(t, nil, n)
		// As deployed: metrics registered, logger at info level.
		srv, err := New(p.sched, Options{Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if kind == "direct" {
			direct = srv.NewDirect(DirectOptions{})
			break
		}
		g = grpc.NewServer(append(GRPCServerOptions(0), benchServerOptions(t, opts)...)...)
		if strings.Contains("+"+opts+"+", "+stock+") {
			extprocv3.RegisterExternalProcessorServer(g, srv) // the generated handler: a new message per Recv
		} else {
			srv.Register(g)
		}
	default:
		t.Fatalf("%s=%q: expected none, default:N or direct:N", benchChildEnv, mode)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if path := os.Getenv(benchChildProfileEnv); path != "" {
		f, err := os.Create(path + "." + strings.ReplaceAll(mode, ":", "-"))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if path := os.Getenv(benchChildMemProfileEnv); path != "" {
		runtime.MemProfileRate = 1
		defer func() {
			f, err := os.Create(path + "." + strings.ReplaceAll(mode, ":", "-"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				t.Fatal(err)
			}
		}()
	}
	if direct != nil {
		go direct.Serve(lis)
	} else {
		go g.Serve(lis)
	}
	fmt.Println(lis.Addr().String())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() { // until the benchmark closes stdin
		if in.Text() == "mallocs" {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Println(ms.Mallocs)
		}
	}
	if direct != nil {
		direct.Stop()
	} else {
		g.Stop()
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

// benchServerOptions are the server options a variant adds after
// GRPCServerOptions (later options win): names joined by "+".
func benchServerOptions(t *testing.T, names string) []grpc.ServerOption {
	var o []grpc.ServerOption
	for _, f := range strings.Split(names, "+") {
		switch f {
		case "", "defaults": // "defaults": GRPCServerOptions alone, as picker=default (a control for order effects)
		case "stock":
			// The server before the wire codec: stock proto codec and the
			// generated handler (see TestExtProcBenchChild).
			o = append(o, grpc.ForceServerCodecV2(stockCodec))
		case "static":
			o = append(o, grpc.StaticStreamWindowSize(1<<20), grpc.StaticConnWindowSize(16<<20))
		case "static64":
			o = append(o, grpc.StaticStreamWindowSize(64<<10), grpc.StaticConnWindowSize(64<<10))
		case "buf64":
			o = append(o, grpc.WriteBufferSize(64<<10), grpc.ReadBufferSize(64<<10))
		case "wbuf256":
			o = append(o, grpc.WriteBufferSize(256<<10))
		case "buf16":
			o = append(o, grpc.WriteBufferSize(16<<10), grpc.ReadBufferSize(16<<10))
		case "workers64":
			o = append(o, grpc.NumStreamWorkers(64))
		case "workers256":
			o = append(o, grpc.NumStreamWorkers(256))
		case "noworkers":
			o = append(o, grpc.NumStreamWorkers(0))
		case "mcs":
			o = append(o, grpc.MaxConcurrentStreams(64))
		default:
			t.Fatalf("%s: unknown server option %q", benchVariantsEnv, f)
		}
	}
	return o
}
