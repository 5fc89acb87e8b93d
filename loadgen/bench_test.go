package loadgen

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"
)

// trivialSSE is a complete streamed completion: one token, usage, [DONE].
var trivialSSE = []byte("data: {\"choices\":[{\"index\":0,\"text\":\"hi\",\"finish_reason\":\"length\"}]}\n\n" +
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n")

func startTrivialServer(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = r.Body.Read(make([]byte, 0))
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(trivialSSE)
	})}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

// BenchmarkOpenLoop runs the real open-loop path (schedule, goroutine per
// request, streaming client, HDR recording) at a planned 12,000 requests/s
// against a trivial local server in the same process, one op per request.
// It reports the achieved rate, schedule-delay p99 and heap in use after the
// run (flat across run lengths: histograms, not slices).
func BenchmarkOpenLoop(b *testing.B) {
	const rate = 12000.0
	url := startTrivialServer(b)
	cfg := testConfig(url, "")
	cfg.Data.InputDistribution = &Distribution{Mean: ptr(16.0), StdDev: ptr(0.0), Min: ptr(16), Max: ptr(16)}
	cfg.Data.OutputDistribution = &Distribution{Mean: ptr(1.0), StdDev: ptr(0.0), Min: ptr(1), Max: ptr(1)}
	cfg.Load.Stages = []Stage{{Rate: rate, Duration: Duration(time.Duration(float64(b.N) / rate * float64(time.Second)))}}
	b.ReportAllocs()
	b.ResetTimer()
	sum, err := Run(context.Background(), cfg, Options{})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if sum.Requests.Failed > 0 {
		b.Fatalf("%d failed requests: %v", sum.Requests.Failed, sum.Errors)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(sum.Rate.Achieved, "req/s")
	b.ReportMetric(sum.RequestsPerSecond, "completed/s")
	b.ReportMetric(sum.ScheduleDelay.P99*1000, "sched-p99-ms")
	b.ReportMetric(sum.ScheduleDelay.P50*1000, "sched-p50-ms")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
}
