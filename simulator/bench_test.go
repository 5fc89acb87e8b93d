package simulator

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// lateness records how late tokens leave the servers relative to their
// modelled emission times.
type lateness struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func (l *lateness) record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0 // never early: the runner sleeps until the modelled time
	}
	l.mu.Lock()
	_ = l.h.RecordValue(us)
	l.mu.Unlock()
}

// BenchmarkFleet32 is the scale check: one process hosts 32 servers (Llama-3.1-8B
// on MI300X) on 127.0.0.1 and an open-loop client offers short streaming
// requests (≈30-token prompt, 4 output tokens) at SIM_BENCH_RATE req/s
// (default 5000), spread round-robin over the servers. b.N is the number of
// requests. It reports the achieved request rate and how late emitted tokens
// left the server relative to the model (p50, p99, max), plus token rate and
// the time servers had to re-anchor their timeline because they ran late.
func BenchmarkFleet32(b *testing.B) {
	const servers = 32
	rate := 5000.0
	if v := os.Getenv("SIM_BENCH_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 {
			b.Fatalf("SIM_BENCH_RATE: expected a positive number, found %q", v)
		}
		rate = r
	}
	late := &lateness{h: hdrhistogram.New(1, 60_000_000, 3)}
	var cfgs []Config
	for i := range servers {
		cfgs = append(cfgs, Config{Name: fmt.Sprintf("sim-%d", i), Engine: testEngineConfig(b, "mi300x"), Seed: uint64(i), TokenTiming: late.record})
	}
	fleet, err := StartFleet(cfgs, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer fleet.Close()
	urls := make([]string, servers)
	for i, s := range fleet.Servers {
		urls[i] = "http://" + s.Addr() + "/v1/completions"
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 128, DisableCompression: true}}
	defer client.CloseIdleConnections()
	body := `{"model":"` + testModel + `","prompt":"Summarise the routing benchmark in one short sentence, please, with the numbers that matter most to the reader.","max_tokens":4,"stream":true}`

	const workers = 512
	tickets := make(chan int, workers)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tickets {
				resp, err := client.Post(urls[i%servers], "application/json", strings.NewReader(body))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	b.ResetTimer()
	start := time.Now()
	// Open loop: release tickets at the offered rate, whatever the servers do.
	for sent := 0; sent < b.N; {
		due := min(b.N, int(time.Since(start).Seconds()*rate)+1)
		for ; sent < due; sent++ {
			tickets <- sent
		}
		time.Sleep(500 * time.Microsecond)
	}
	close(tickets)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed, first: %v", n, b.N, firstErr.Load())
	}
	var tokens uint64
	var lag time.Duration
	for _, s := range fleet.Servers {
		st := s.Engine().Stats()
		tokens += st.GenerationTokens
		lag += st.Lag
	}
	ms := func(q float64) float64 { return float64(late.h.ValueAtQuantile(q)) / 1000 }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(tokens)/elapsed.Seconds(), "tokens/s")
	b.ReportMetric(ms(50), "late-p50-ms")
	b.ReportMetric(ms(99), "late-p99-ms")
	b.ReportMetric(float64(late.h.Max())/1000, "late-max-ms")
	// Time servers fell > engine.MaxLag behind the model and re-anchored, per
	// server-second: 0 means every step ran on the modelled timeline.
	b.ReportMetric(lag.Seconds()*1e3/(elapsed.Seconds()*servers), "lag-ms/server-s")
}

// BenchmarkMetricsScrape is one /metrics answer (vLLM families + GPU
// telemetry) rendered into a discarding writer: what a picker scraping every
// 50 ms costs a server.
func BenchmarkMetricsScrape(b *testing.B) {
	s, err := New(Config{Name: "sim-0", Engine: testEngineConfig(b, "mi300x"), LoRAAdapters: []string{"a"}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	req, _ := http.NewRequest(http.MethodGet, "/metrics", nil)
	w := discardResponse{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		s.Handler().ServeHTTP(w, req)
	}
}

type discardResponse struct{ h http.Header }

func (d discardResponse) Header() http.Header         { return d.h }
func (d discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d discardResponse) WriteHeader(int)             {}
