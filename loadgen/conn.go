package loadgen

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// rawHTTP is the plain-http fast path of Client: one keep-alive connection
// per in-flight request, the request written by the sending goroutine in one
// write and the response read by the same goroutine. net/http's Transport
// hands every request to two more goroutines (write loop, read loop), which
// costs CPU and adds scheduling noise to what the generator measures; https
// base URLs still go through net/http.
type rawHTTP struct {
	addr   string
	head   []byte // request line and fixed headers, up to "Content-Length: "
	dialer net.Dialer

	mu   sync.Mutex
	idle []*pconn
}

type pconn struct {
	c    net.Conn
	br   *bufio.Reader
	used time.Time
}

// idleTimeout is shorter than common server keep-alive timeouts (uvicorn's
// is 5 s) so a connection the server is about to close is not reused.
const (
	idleTimeout = 4 * time.Second
	maxIdle     = 4096
)

func newRawHTTP(addr, host, path string, hdr http.Header) *rawHTTP {
	b := []byte("POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: fastepp-loadgen\r\n")
	for k, vs := range hdr {
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "Content-Length: "...)
	return &rawHTTP{addr: addr, head: b, dialer: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}}
}

func (h *rawHTTP) get(ctx context.Context) (*pconn, bool, error) {
	now := time.Now()
	h.mu.Lock()
	for len(h.idle) > 0 {
		pc := h.idle[len(h.idle)-1]
		h.idle = h.idle[:len(h.idle)-1]
		if now.Sub(pc.used) < idleTimeout {
			h.mu.Unlock()
			return pc, true, nil
		}
		pc.c.Close()
	}
	h.mu.Unlock()
	c, err := h.dialer.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return nil, false, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &pconn{c: c, br: bufio.NewReaderSize(c, 32<<10)}, false, nil
}

func (h *rawHTTP) put(pc *pconn) {
	pc.used = time.Now()
	h.mu.Lock()
	if len(h.idle) < maxIdle {
		h.idle = append(h.idle, pc)
		pc = nil
	}
	h.mu.Unlock()
	if pc != nil {
		pc.c.Close()
	}
}

func (h *rawHTTP) closeIdle() {
	h.mu.Lock()
	idle := h.idle
	h.idle = nil
	h.mu.Unlock()
	for _, pc := range idle {
		pc.c.Close()
	}
}

var reqBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// staleConn reports an error that a reused connection the server had
// already closed produces before any response byte: worth one retry.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// roundTrip sends payload and returns the response, whose body must be
// passed to finish.
func (h *rawHTTP) roundTrip(ctx context.Context, payload []byte) (*http.Response, *pconn, func() bool, error) {
	bp := reqBufPool.Get().(*[]byte)
	b := append((*bp)[:0], h.head...)
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, payload...)
	defer func() {
		if cap(b) <= 1<<20 {
			*bp = b[:0]
			reqBufPool.Put(bp)
		}
	}()
	for attempt := 0; ; attempt++ {
		pc, reused, err := h.get(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		// Cancellation unblocks reads and writes through a past deadline.
		stop := context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(time.Unix(1, 0)) })
		_, err = pc.c.Write(b)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(pc.br, nil)
		}
		if err != nil {
			stop()
			pc.c.Close()
			if reused && attempt == 0 && ctx.Err() == nil && staleConn(err) {
				continue
			}
			return nil, nil, nil, err
		}
		return resp, pc, stop, nil
	}
}

// finish drains what is left of the body and keeps the connection when the
// exchange ended cleanly.
func (h *rawHTTP) finish(resp *http.Response, pc *pconn, stop func() bool, clean bool) {
	stopped := stop()
	if clean && stopped && !resp.Close {
		n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if err == nil && n < 64<<10 && resp.Body.Close() == nil {
			h.put(pc)
			return
		}
	}
	resp.Body.Close()
	pc.c.Close()
}
