package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// trivialSSE is a complete streamed completion: one token, usage, [DONE].
var trivialSSE = []byte("data: {\"choices\":[{\"index\":0,\"text\":\"hi\",\"finish_reason\":\"length\"}]}\n\n" +
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n")

// startTrivialServer is a minimal HTTP/1.1 keep-alive server on 127.0.0.1
// that answers every request with trivialSSE, so the benchmark measures the
// generator rather than a server framework.
func startTrivialServer(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	resp := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s", len(trivialSSE), trivialSSE))
	var wg sync.WaitGroup
	serve := func(c net.Conn) {
		defer wg.Done()
		defer c.Close()
		br := bufio.NewReaderSize(c, 16<<10)
		for {
			n := 0
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
				if len(line) > 16 && (line[0] == 'C' || line[0] == 'c') && strings.EqualFold(string(line[:15]), "content-length:") {
					n, _ = strconv.Atoi(strings.TrimSpace(string(line[15:])))
				}
			}
			if _, err := br.Discard(n); err != nil {
				return
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go serve(c)
		}
	}()
	b.Cleanup(func() { l.Close() })
	return "http://" + l.Addr().String()
}

// BenchmarkOpenLoop runs the real open-loop path (schedule, goroutine per
// request, streaming client, HDR recording) at a planned 12,000 requests/s
// against a trivial local server in the same process, one op per request
// (and at 20,000/s to show the headroom).
// It reports the achieved rate, schedule-delay p99 and heap in use after the
// run (flat across run lengths: histograms, not slices).
func BenchmarkOpenLoop(b *testing.B) {
	for _, rate := range []float64{12000, 20000} {
		b.Run(fmt.Sprintf("rate=%.0f", rate), func(b *testing.B) { benchOpenLoop(b, rate) })
	}
}

func benchOpenLoop(b *testing.B, rate float64) {
	url := startTrivialServer(b)
	cfg := testConfig(url, "")
	cfg.Data.InputDistribution = &Distribution{Mean: ptr(16.0), StdDev: ptr(0.0), Min: ptr(16), Max: ptr(16)}
	cfg.Data.OutputDistribution = &Distribution{Mean: ptr(1.0), StdDev: ptr(0.0), Min: ptr(1), Max: ptr(1)}
	cfg.Load.Stages = []Stage{{Rate: rate, Duration: Duration(time.Duration(float64(b.N) / rate * float64(time.Second)))}}
	// A starved machine must not snowball into thousands of sockets.
	cfg.Load.MaxInFlight = 2000
	b.ReportAllocs()
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	sum, err := Run(context.Background(), cfg, Options{})
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	if err != nil {
		b.Fatal(err)
	}
	if sum.Requests.Failed > 0 {
		b.Logf("%d of %d requests failed: %v", sum.Requests.Failed, sum.Requests.Sent, sum.Errors)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(sum.Rate.Achieved, "req/s")
	b.ReportMetric(sum.RequestsPerSecond, "completed/s")
	b.ReportMetric(sum.ScheduleDelay.P99*1000, "sched-p99-ms")
	b.ReportMetric(sum.ScheduleDelay.P50*1000, "sched-p50-ms")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
	b.ReportMetric(float64(sum.Requests.Failed), "failed")
	// CPU of the whole process (generator and server) per request.
	b.ReportMetric(float64(cpu.Microseconds())/float64(max(sum.Requests.Sent, 1)), "cpu-µs/req")
}
