package endpoints

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

const rawTestPage = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 3\n" +
	"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 2\n" +
	"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n"

// scriptServer answers the n-th request on 127.0.0.1 with respond(n) and
// closes the connection after it when respond says so; it counts accepted
// connections.
func scriptServer(t *testing.T, respond func(n int) (resp string, closeAfter bool)) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int64)
	var reqs atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for readRequestHead(r) {
					resp, closeAfter := respond(int(reqs.Add(1)))
					if resp == "" { // hang until the client gives up
						_, _ = r.ReadByte()
						return
					}
					if _, err := c.Write([]byte(resp)); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

// readRequestHead reads one request head from r (a GET has no body),
// reporting false when the connection ends first.
func readRequestHead(r *bufio.Reader) bool {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return false
		}
		if len(bytes.TrimSpace(line)) == 0 {
			return true
		}
	}
}

func ok200(extra string) string {
	return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + extra + "Content-Length: " +
		strconv.Itoa(len(rawTestPage)) + "\r\n\r\n" + rawTestPage
}

// rawScraper is a scraper of addr on the fast path, as the pool makes it.
func rawScraper(t *testing.T, ctx context.Context, addr string, timeout time.Duration) *scraper {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	tg := Target{Endpoint: scheduler.Endpoint{Name: addr, Addr: ap.Addr(), Port: ap.Port()}}
	client := NewHTTPClient(timeout, false)
	t.Cleanup(client.CloseIdleConnections)
	s := newScraper(ctx, scheduler.NewHandle(tg.Endpoint), tg, ScrapeConfig{}, builtinTable, nil, client)
	s.useRaw(timeout)
	if s.raw == nil {
		t.Fatal("no fast path for a plain-http target")
	}
	t.Cleanup(s.close)
	return s
}

func wantScrape(t *testing.T, s *scraper) {
	t.Helper()
	m, err := s.scrape()
	if err != nil {
		t.Fatal(err)
	}
	if m.Waiting != 3 || m.Running != 2 || m.KVUsage != 0.5 {
		t.Fatalf("metrics = %+v; want waiting 3, running 2, KV 0.5", m)
	}
}

func TestRawGetResponses(t *testing.T) {
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
		strconv.FormatInt(int64(len(rawTestPage)), 16) + "\r\n" + rawTestPage + "\r\n0\r\n\r\n"
	for _, tt := range []struct {
		name     string
		respond  func(n int) (string, bool)
		accepted int64 // connections over three scrapes
		netHTTP  bool  // handed to net/http
		errHas   string
	}{
		{name: "keep-alive", respond: func(int) (string, bool) { return ok200(""), false }, accepted: 1},
		{name: "connection close", respond: func(int) (string, bool) { return ok200("Connection: close\r\n"), true }, accepted: 3},
		{name: "closed silently", respond: func(int) (string, bool) { return ok200(""), true }, accepted: 3},
		{name: "HTTP/1.0", respond: func(int) (string, bool) {
			return strings.Replace(ok200(""), "HTTP/1.1", "HTTP/1.0", 1), true
		}, accepted: 3},
		{name: "HTTP/1.0 keep-alive", respond: func(int) (string, bool) {
			return strings.Replace(ok200("Connection: keep-alive\r\n"), "HTTP/1.1", "HTTP/1.0", 1), false
		}, accepted: 1},
		{name: "chunked", respond: func(int) (string, bool) { return chunked, false }, accepted: 1},
		{name: "chunks, extensions, trailers", respond: func(int) (string, bool) {
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"a;x=1\r\n" + rawTestPage[:10] + "\r\n" +
				strconv.FormatInt(int64(len(rawTestPage)-10), 16) + "\r\n" + rawTestPage[10:] + "\r\n" +
				"0\r\nX-Trailer: y\r\n\r\n", false
		}, accepted: 1},
		{name: "no length", respond: func(int) (string, bool) {
			return "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + rawTestPage, true
		}, accepted: 3},
		{name: "bad chunk", respond: func(int) (string, bool) {
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false
		}, accepted: 3, errHas: "invalid byte in chunk length"}, // net/http's chunked reader
		{name: "interim response", respond: func(int) (string, bool) {
			return "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + ok200(""), false
		}, accepted: 1}, // skipped, as net/http's Transport does
		{name: "bytes after the response", respond: func(int) (string, bool) { return ok200("") + "HTTP/1.1 200 OK\r\n", false },
			accepted: 3},
		{name: "redirect", respond: func(n int) (string, bool) {
			if n == 1 {
				return "HTTP/1.1 307 Temporary Redirect\r\nLocation: /metrics/\r\nContent-Length: 0\r\n\r\n", false
			}
			return ok200(""), false
		}, netHTTP: true},
		{name: "503", respond: func(int) (string, bool) {
			return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown", false
		}, accepted: 1, errHas: "expected HTTP 200, found 503 Service Unavailable"},
		{name: "garbage", respond: func(int) (string, bool) { return "SSH-2.0-OpenSSH\r\n\r\n", false },
			accepted: 3, errHas: "malformed HTTP response"},
		{name: "503 with a long body", respond: func(int) (string, bool) {
			return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 100000), false
		}, accepted: 3, errHas: "expected HTTP 200, found 503 Service Unavailable"}, // not drained: the connection goes
		{name: "huge head", respond: func(int) (string, bool) {
			return "HTTP/1.1 200 OK\r\nX-Junk: " + strings.Repeat("x", maxHeadBytes) + "\r\n\r\n", false
		}, accepted: 3, errHas: "expected response headers under"},
		{name: "short body", respond: func(int) (string, bool) { return ok200("")[:len(ok200(""))-5], true },
			accepted: 3, errHas: "unexpected EOF"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, accepted := scriptServer(t, tt.respond)
			s := rawScraper(t, context.Background(), addr, 2*time.Second)
			for range 3 {
				if tt.errHas == "" {
					wantScrape(t, s)
					continue
				}
				if _, err := s.scrape(); err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("scrape error %v; want one with %q", err, tt.errHas)
				}
			}
			if tt.netHTTP != (s.raw == nil) {
				t.Fatalf("handed to net/http: %v; want %v", s.raw == nil, tt.netHTTP)
			}
			if got := accepted.Load(); !tt.netHTTP && got != tt.accepted {
				t.Fatalf("%d connections accepted; want %d", got, tt.accepted)
			}
		})
	}
}

func TestRawGetLargePage(t *testing.T) {
	// Pages larger than the initial buffer, written in pieces, with a
	// Content-Length and chunked (net/http's framing without one).
	page := rawTestPage + strings.Repeat("# HELP padding "+strings.Repeat("x", 100)+"\n", 2000)
	for _, withLength := range []bool{true, false} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if withLength {
				w.Header().Set("Content-Length", strconv.Itoa(len(page)))
			}
			for i := 0; i < len(page); i += 7000 {
				_, _ = w.Write([]byte(page[i:min(i+7000, len(page))]))
				w.(http.Flusher).Flush()
			}
		}))
		defer srv.Close()
		s := rawScraper(t, context.Background(), srv.Listener.Addr().String(), 2*time.Second)
		for range 3 {
			wantScrape(t, s)
		}
		if s.raw == nil {
			t.Fatalf("Content-Length %v: the page went to net/http", withLength)
		}
	}
}

func TestRawGetTimeoutAndCancel(t *testing.T) {
	addr, _ := scriptServer(t, func(int) (string, bool) { return "", false })
	s := rawScraper(t, context.Background(), addr, 200*time.Millisecond)
	start := time.Now()
	if _, err := s.scrape(); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("scrape of a silent server: %v; want a timeout", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("timeout took %v; want about 200ms", took)
	}

	ctx, cancel := context.WithCancel(context.Background())
	s = rawScraper(t, ctx, addr, time.Minute)
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	if _, err := s.scrape(); err == nil {
		t.Fatal("scrape survived cancellation")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("cancellation took %v", took)
	}
	if _, err := s.scrape(); err == nil {
		t.Fatal("scrape after cancellation succeeded")
	}
}
