package loadgen

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// A server that answers one request per connection and then closes it
// without saying so: reused connections are stale, and the client must
// retry once on a fresh one instead of counting an error.
func TestStaleKeepAliveIsRetried(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	body := string(trivialSSE)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				req.Body.Close()
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body))
				time.Sleep(5 * time.Millisecond)
			}(c)
		}
	}()
	cfg := testConfig("http://"+l.Addr().String(), "")
	cfg.Load.Stages = []Stage{{Rate: 40, Duration: Duration(250 * time.Millisecond)}}
	sum, err := Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Requests.Completed != 10 || sum.Requests.Failed != 0 {
		t.Errorf("completed %d failed %d (%v), want 10/0", sum.Requests.Completed, sum.Requests.Failed, sum.Errors)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestHTTPSGoesThroughNetHTTP(t *testing.T) {
	tls := newTLSScripted(t)
	cfg := testConfig(tls.URL, "")
	cfg.Load.Stages = []Stage{{Rate: 50, Duration: Duration(100 * time.Millisecond)}}
	c := NewClient(cfg)
	if c.raw != nil {
		t.Fatal("https must not use the plain-http fast path")
	}
	c.HTTP = tls.Client()
	sum, err := Run(context.Background(), cfg, Options{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Requests.Completed != 5 || sum.Tokens.Output != 30 {
		t.Errorf("completed %d output tokens %d (%v), want 5 and 30", sum.Requests.Completed, sum.Tokens.Output, sum.Errors)
	}
}

func TestKeepAliveReusesConnections(t *testing.T) {
	var conns atomic.Int64
	srv, _ := newScriptedServer(t, script{ttft: time.Millisecond, itl: time.Millisecond, connState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}})
	cfg := testConfig(srv.URL, "")
	sum, err := Run(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Requests.Completed != 20 || conns.Load() > 10 {
		t.Errorf("completed %d over %d connections; want 20 over a few kept-alive ones", sum.Requests.Completed, conns.Load())
	}
}
