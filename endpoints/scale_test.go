//go:build unix

package endpoints

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// poolBenchEnv makes the test binary a fleet of metrics servers for
// BenchmarkPool1024x20Hz (TestPoolBenchServers), so that the benchmark's CPU
// time is the scraping process's alone.
const poolBenchEnv = "FASTEPP_POOL_BENCH_SERVERS"

// raiseNoFile lifts the soft RLIMIT_NOFILE towards need (at most to the hard
// limit) and returns the soft limit in force.
func raiseNoFile(need uint64) uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < need && rl.Cur < rl.Max {
		rl.Cur = min(need, rl.Max)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}

// varyingPage serves the vLLM v1 sample page with endpoint- and
// request-dependent values of the three gauges scheduling reads (running,
// waiting, KV usage): the lines up to the last of them are rendered per
// response, the rest of the page is shared.
type varyingPage struct {
	head []string // lines up to and including the last varied one
	vary []int    // per head line: 0 keep, 1 running, 2 waiting, 3 KV usage
	tail []byte
	// chunked frames the page as uvicorn does a body without a length
	// (vLLM's /metrics is prometheus_client's ASGI app): one chunk, then the
	// last; otherwise a Content-Length.
	chunked bool
}

// lastChunk follows the page's one chunk.
var lastChunk = []byte("\r\n0\r\n\r\n")

func newVaryingPage(tb testing.TB, page []byte) *varyingPage {
	tb.Helper()
	p := &varyingPage{}
	lines := bytes.SplitAfter(page, []byte("\n"))
	last := -1
	for i, l := range lines {
		k := 0
		switch {
		case bytes.HasPrefix(l, []byte("vllm:num_requests_running{")):
			k = 1
		case bytes.HasPrefix(l, []byte("vllm:num_requests_waiting{")):
			k = 2
		case bytes.HasPrefix(l, []byte("vllm:kv_cache_usage_perc{")):
			k = 3
		}
		if k != 0 {
			last = i
		}
		p.head = append(p.head, string(l))
		p.vary = append(p.vary, k)
	}
	if last < 0 {
		tb.Fatal("sample page: no vllm:num_requests_running line")
	}
	p.head, p.vary = p.head[:last+1], p.vary[:last+1]
	p.tail = bytes.Join(lines[last+1:], nil)
	return p
}

// values are endpoint i's gauges at its n-th response.
func (p *varyingPage) values(i, n int) (running, waiting int, kv float64) {
	return (i + n) % 17, (3*i + n) % 5, float64((37*i+n)%1000) / 1000
}

// response appends the HTTP response head and the page's varied head to dst;
// p.tail (and lastChunk when chunked) follows it on the wire.
func (p *varyingPage) response(dst []byte, i, n int) []byte {
	running, waiting, kv := p.values(i, n)
	var body []byte
	for j, l := range p.head {
		if p.vary[j] == 0 {
			body = append(body, l...)
			continue
		}
		body = append(body, l[:strings.LastIndexByte(l, ' ')+1]...)
		switch p.vary[j] {
		case 1:
			body = strconv.AppendInt(body, int64(running), 10)
		case 2:
			body = strconv.AppendInt(body, int64(waiting), 10)
		case 3:
			body = strconv.AppendFloat(body, kv, 'g', -1, 64)
		}
		body = append(body, '\n')
	}
	dst = append(dst, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"...)
	if p.chunked {
		dst = append(dst, "Transfer-Encoding: chunked\r\n\r\n"...)
		dst = strconv.AppendInt(dst, int64(len(body)+len(p.tail)), 16)
		dst = append(dst, "\r\n"...)
	} else {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(body)+len(p.tail)), 10)
		dst = append(dst, "\r\n\r\n"...)
	}
	return append(dst, body...)
}

// serveVarying answers keep-alive GETs on ln with endpoint i's page until ln
// closes; accepted counts the connections it accepted.
func serveVarying(ln net.Listener, p *varyingPage, i int, accepted *atomic.Int64) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if accepted != nil {
			accepted.Add(1)
		}
		go func() {
			defer c.Close()
			r := bufio.NewReaderSize(c, 4096)
			var head []byte
			for n := 0; readRequestHead(r); n++ {
				head = p.response(head[:0], i, n)
				bufs := net.Buffers{head, p.tail}
				if p.chunked {
					bufs = append(bufs, lastChunk)
				}
				if _, err := bufs.WriteTo(c); err != nil {
					return
				}
			}
		}()
	}
}

// TestPoolBenchServers is not a test: run by BenchmarkPool1024x20Hz in a
// child process (poolBenchEnv=N, or N,chunked), it serves N vLLM metrics
// pages on 127.0.0.1 (one listener each), prints their addresses and
// "ready", and exits when its stdin closes. Skipped otherwise.
func TestPoolBenchServers(t *testing.T) {
	arg, framing, _ := strings.Cut(os.Getenv(poolBenchEnv), ",")
	n, err := strconv.Atoi(arg)
	if err != nil {
		t.Skip("helper process of BenchmarkPool1024x20Hz")
	}
	if lim := raiseNoFile(uint64(2*n + 64)); lim < uint64(2*n+64) {
		fmt.Printf("open-file limit %d: expected at least %d for %d servers\n", lim, 2*n+64, n)
	}
	page := newVaryingPage(t, readTestdata(t, "vllm-v1-metrics.txt"))
	page.chunked = framing == "chunked"
	out := bufio.NewWriter(os.Stdout)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintf(out, "listener %d: %v\n", i, err)
			break
		}
		defer ln.Close()
		go serveVarying(ln, page, i, nil)
		fmt.Fprintln(out, ln.Addr().String())
	}
	fmt.Fprintln(out, "ready")
	out.Flush()
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startPoolBenchServers starts the child fleet of n servers and returns their
// targets and a reader of the child's CPU time (user+system).
func startPoolBenchServers(b *testing.B, n int, framing string) (Static, func() time.Duration) {
	b.Helper()
	addrs, other, pid := startChild(b, "TestPoolBenchServers", poolBenchEnv+"="+strconv.Itoa(n)+","+framing)
	var targets Static
	for _, ap := range addrs {
		targets = append(targets, Target{Endpoint: scheduler.Endpoint{Name: ap.String(), Addr: ap.Addr(), Port: ap.Port()}})
	}
	if len(targets) != n {
		b.Fatalf("server process: %d listeners, want %d; it said:\n%s", len(targets), n, strings.Join(other, "\n"))
	}
	return targets, func() time.Duration {
		d, _ := childCPU(pid)
		return d
	}
}

// childCPU reads a process's user + system time from /proc/PID/stat (fields
// 14 and 15, in USER_HZ ticks of 1/100 s); 0 and an error off Linux.
func childCPU(pid int) (time.Duration, error) {
	s, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(s[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * (time.Second / 100), nil
}

// liveHeap is the heap marked live by a full GC (runtime/metrics
// /gc/heap/live:bytes: what was reachable, not what was allocated while the
// collection ran).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC() // and sync.Pool's victims
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// BenchmarkPool1024x20Hz runs the real Pool (default client, targeted
// parser, publisher) over 1,024 endpoints at the default 50 ms refresh
// interval. The metrics servers (one listener each on 127.0.0.1, the vLLM v1
// sample page with per-endpoint, per-response gauge values) run in a child
// process, so the CPU measured (getrusage of this process) is the scraping
// process's alone. One op is one refresh interval (50 ms) after a warm-up,
// as in BenchmarkPool64x20Hz: -benchtime 100x (make bench-smoke) scrapes for
// 5 s per sub-benchmark; measure with -benchtime 200x (10 s) or more, e.g.
//
//	go test -run '^$' -bench BenchmarkPool1024x20Hz -benchtime 200x -count 3 ./endpoints/
//
// Figures: cores (user+sys ÷ wall; target ≤ 0.5), scrapes/s (expected
// 20,480), %expected, cpu-µs/scrape and cores@expected (that cost at
// 20,480/s: the figure to read when a crowded machine keeps the pool below
// the expected rate), failed scrapes, publishes/s (snapshots), allocs and
// bytes per scrape (whole process, publisher included), heap growth (live
// heap after a GC, end minus start of the run) and the live heap, and the
// server process's cores for context.
//
// framing=length serves the page with a Content-Length, framing=chunked as
// uvicorn serves vLLM's (prometheus_client's ASGI app sets no length).
func BenchmarkPool1024x20Hz(b *testing.B) {
	for _, framing := range []string{"length", "chunked"} {
		b.Run("framing="+framing, func(b *testing.B) { benchPoolChild(b, 1024, framing) })
	}
}

func benchPoolChild(b *testing.B, n int, framing string) {
	if lim := raiseNoFile(uint64(n + 256)); lim < uint64(n+256) {
		b.Fatalf("open-file limit %d: expected at least %d for %d endpoints", lim, n+256, n)
	}
	targets, serverCPU := startPoolBenchServers(b, n, framing)
	sched := scheduler.New(nil)
	p := NewPool(sched, targets, Options{Logger: discardLogger()})
	defer p.Close()
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().Ready < n {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d endpoints ready", p.Stats().Ready, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // every connection open, every buffer grown

	totals := func() (scrapes, errs uint64) {
		for _, s := range p.EndpointStats() {
			scrapes += s.Scrapes
			errs += s.ScrapeErrors
		}
		return scrapes, errs
	}
	var ms0, ms1 runtime.MemStats
	live0 := liveHeap()
	runtime.ReadMemStats(&ms0)
	scrapes0, errs0 := totals()
	seq0 := sched.Snapshot().Seq
	srv0 := serverCPU()
	cpu0, wall0 := cpuTime(), time.Now()
	for b.Loop() {
		time.Sleep(DefaultRefreshInterval)
	}
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	srv := serverCPU() - srv0
	scrapes1, errs1 := totals()
	seq1 := sched.Snapshot().Seq
	runtime.ReadMemStats(&ms1)
	mallocs, bytes := ms1.Mallocs-ms0.Mallocs, ms1.TotalAlloc-ms0.TotalAlloc
	live1 := liveHeap()

	scrapes, errs := scrapes1-scrapes0, errs1-errs0
	sec := wall.Seconds()
	b.ReportMetric(cpu.Seconds()/sec, "cores")
	b.ReportMetric(float64(scrapes)/sec, "scrapes/s")
	b.ReportMetric(float64(scrapes)/sec/float64(n*int(time.Second/DefaultRefreshInterval))*100, "%expected")
	b.ReportMetric(float64(errs), "failed")
	b.ReportMetric(float64(seq1-seq0)/sec, "publishes/s")
	if scrapes > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(scrapes)/1e3, "cpu-µs/scrape")
		// What the run would cost at the expected rate, for a machine too
		// busy to reach it (cores scales with the scrapes achieved).
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(scrapes)*float64(n)*float64(time.Second/DefaultRefreshInterval)/1e9, "cores@expected")
		b.ReportMetric(float64(mallocs)/float64(scrapes), "allocs/scrape")
		b.ReportMetric(float64(bytes)/float64(scrapes), "B/scrape")
	}
	b.ReportMetric((float64(live1)-float64(live0))/1024, "heap-growth-KB")
	b.ReportMetric(float64(live1)/(1<<20), "heap-live-MB")
	b.ReportMetric(srv.Seconds()/sec, "server-cores")
	if errs > 0 { // timeouts on a crowded machine: reported, not fatal
		for _, s := range p.EndpointStats() {
			if s.LastError != "" {
				b.Logf("%d of %d scrapes failed; %s: %s", errs, scrapes, s.Handle, s.LastError)
				break
			}
		}
	}
}

// TestScraperKeepsConnections: a pool of 300 endpoints holds one keep-alive
// connection per endpoint over several scrape rounds, on the fast path (the
// pool's own client) and through net/http (NewHTTPClient passed in, as for
// https). A transport that keeps fewer idle connections than there are
// endpoints, as http.DefaultTransport's MaxIdleConns=100 does, would dial
// again and again.
func TestScraperKeepsConnections(t *testing.T) {
	const n = 300
	if lim := raiseNoFile(3*n + 256); lim < 3*n+256 {
		t.Skipf("open-file limit %d: expected at least %d", lim, 3*n+256)
	}
	page := newVaryingPage(t, readTestdata(t, "vllm-v1-metrics.txt"))
	for _, netHTTP := range []bool{false, true} {
		t.Run(fmt.Sprintf("net-http=%v", netHTTP), func(t *testing.T) {
			var accepted atomic.Int64
			var targets Static
			for i := range n {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				go serveVarying(ln, page, i, &accepted)
				t.Cleanup(func() { ln.Close() })
				ap := netip.MustParseAddrPort(ln.Addr().String())
				targets = append(targets, Target{Endpoint: scheduler.Endpoint{Name: ap.String(), Addr: ap.Addr(), Port: ap.Port()}})
			}
			opt := fastOptions(t)
			opt.RefreshInterval = 50 * time.Millisecond
			opt.ScrapeTimeout = 5 * time.Second // -race on a busy machine
			if netHTTP {
				opt.Client = NewHTTPClient(opt.ScrapeTimeout, false)
				defer opt.Client.CloseIdleConnections()
			}
			p := NewPool(scheduler.New(nil), targets, opt)
			defer p.Close()
			fewest := func() uint64 {
				st := p.EndpointStats()
				if len(st) < n {
					return 0
				}
				m := ^uint64(0)
				for _, s := range st {
					m = min(m, s.Scrapes)
				}
				return m
			}
			deadline := time.Now().Add(30 * time.Second)
			for fewest() < 5 {
				if time.Now().After(deadline) {
					t.Fatalf("some endpoint scraped only %d times in 30s", fewest())
				}
				time.Sleep(10 * time.Millisecond)
			}
			var errs uint64
			for _, s := range p.EndpointStats() {
				errs += s.ScrapeErrors
			}
			if errs > 0 {
				t.Fatalf("%d scrapes failed", errs)
			}
			if got := accepted.Load(); got != n {
				t.Fatalf("%d connections accepted for %d endpoints over ≥ 5 scrapes each; want one per endpoint (keep-alive)", got, n)
			}
		})
	}
}
