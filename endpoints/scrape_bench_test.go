//go:build unix

package endpoints

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cannedServer answers every keep-alive request on 127.0.0.1 with the same
// pre-rendered HTTP response, so its own CPU is a read and a write per scrape
// and the process CPU measured is (almost) the scraping side's.
func cannedServer(tb testing.TB, page []byte) (addr string, stop func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: " +
		strconv.Itoa(len(page)) + "\r\n\r\n")
	resp = append(resp, page...)
	done := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(done)
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReaderSize(c, 4096)
				for readRequestHead(r) {
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); <-done }
}

// benchScrape runs a scraper of addr as the pool makes it (raw: the
// plain-http fast path) or on net/http alone.
func benchScrape(b *testing.B, addr string, raw bool) {
	ap := netip.MustParseAddrPort(addr)
	t := Target{Endpoint: scheduler.Endpoint{Name: addr, Addr: ap.Addr(), Port: ap.Port()}}
	client := NewHTTPClient(time.Second, false)
	defer client.CloseIdleConnections()
	s := newScraper(context.Background(), scheduler.NewHandle(t.Endpoint), t, ScrapeConfig{}, builtinTable, nil, client)
	if raw {
		s.useRaw(time.Second)
		defer s.close()
	}
	if _, err := s.scrape(); err != nil { // warm the connection
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		m, err := s.scrape()
		if err != nil || m.Running != 8 {
			b.Fatalf("scrape: %v, running %d", err, m.Running)
		}
	}
	cpu := cpuTime() - cpu0
	perOp := float64(cpu.Nanoseconds()) / float64(b.N)
	b.ReportMetric(perOp/1e3, "cpu-µs/op")
	// 64 endpoints at 20 Hz = 1280 scrapes/s; share of one core in percent.
	b.ReportMetric(perOp*1280/1e9*100, "%core@64x20Hz")
}

// BenchmarkScrape is one full scrape (HTTP GET over loopback keep-alive +
// parse) of the vLLM v1 page against a canned-response server: the process
// CPU per scrape is the scraper's cost (plus a read/write for the server).
// client=raw is what the pool runs (rawGet), client=net-http the same
// scrape through net/http's Transport.
func BenchmarkScrape(b *testing.B) {
	addr, stop := cannedServer(b, readTestdata(b, "vllm-v1-metrics.txt"))
	defer stop()
	b.Run("client=raw", func(b *testing.B) { benchScrape(b, addr, true) })
	b.Run("client=net-http", func(b *testing.B) { benchScrape(b, addr, false) })
}

// BenchmarkScrapeNetHTTPServer is the same against a net/http server in the
// same process: the CPU figure includes the serving side, an upper bound.
func BenchmarkScrapeNetHTTPServer(b *testing.B) {
	page := readTestdata(b, "vllm-v1-metrics.txt")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(page)))
		w.Write(page)
	}))
	defer srv.Close()
	benchScrape(b, srv.Listener.Addr().String(), true)
}

// BenchmarkPool64x20Hz runs a Pool of 64 endpoints (canned servers on
// loopback) at the default 50 ms refresh interval; one op is one interval.
// cpu-%core is the whole process's CPU (scrapers, timers, publisher, and the
// canned servers' reads and writes) over wall time: the cost of the pool as
// deployed. The target is under 10.
func BenchmarkPool64x20Hz(b *testing.B) {
	page := readTestdata(b, "vllm-v1-metrics.txt")
	var targets Static
	for range 64 {
		addr, stop := cannedServer(b, page)
		defer stop()
		ap := netip.MustParseAddrPort(addr)
		targets = append(targets, Target{Endpoint: scheduler.Endpoint{Name: addr, Addr: ap.Addr(), Port: ap.Port()}})
	}
	sched := scheduler.New(nil)
	p := NewPool(sched, targets, Options{Logger: discardLogger()})
	defer p.Close()
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Ready < 64 {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of 64 endpoints ready", p.Stats().Ready)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var scrapes0 uint64
	for _, s := range p.EndpointStats() {
		scrapes0 += s.Scrapes
	}
	cpu0, wall0 := cpuTime(), time.Now()
	for b.Loop() {
		time.Sleep(DefaultRefreshInterval)
	}
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	var scrapes, errs uint64
	for _, s := range p.EndpointStats() {
		scrapes += s.Scrapes
		errs += s.ScrapeErrors
	}
	scrapes -= scrapes0
	if errs > 0 {
		b.Fatalf("%d scrape errors", errs)
	}
	b.ReportMetric(float64(cpu)/float64(wall)*100, "cpu-%core")
	b.ReportMetric(float64(scrapes)/wall.Seconds(), "scrapes/s")
	if scrapes > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(scrapes)/1e3, "cpu-µs/scrape")
	}
}
