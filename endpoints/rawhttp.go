package endpoints

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// rawGet is a scraper's plain-http fast path: one keep-alive connection to
// one endpoint, used by the scraper's own goroutine. net/http's Transport
// hands every request to two more goroutines per connection (write loop,
// read loop) and sets up a timer and a context per request: about a third of
// the CPU of a scrape (BenchmarkScrape, BenchmarkPool1024x20Hz).
//
// What is written here is connection management only: dial, the GET written
// in one write, the deadline covering dial and exchange, cancellation
// through a past deadline, one redial when a reused connection turns out
// dead before any reply byte (as net/http does), a redial after
// rawIdleTimeout idle, and dropping the connection when the response says
// close or its body was not read to the end. The response itself is parsed
// by net/http (http.ReadResponse on the scraper's bufio.Reader, the body
// read to EOF into the scraper's page buffer): status line, headers,
// Content-Length, chunked bodies and trailers, bodies ended by the server
// closing. Interim (1xx) responses are skipped, as net/http's Transport does.
// A redirect hands the scraper to net/http for good (errUseNetHTTP).
//
// The pool uses it only with its own client (no proxy, no compression, as
// NewHTTPClient) and for http:// URLs without user info.
type rawGet struct {
	addr    string // host:port to dial
	req     []byte // the whole GET request
	timeout time.Duration
	dialer  net.Dialer
	br      *bufio.Reader // reads lr; reset on each new connection
	lr      limitedConn

	mu   sync.Mutex // c and done, against the cancel callback
	c    net.Conn
	done bool // the scraper's context ended

	used time.Time // end of the last exchange on c
}

// rawIdleTimeout is shorter than common server keep-alive timeouts (uvicorn's
// is 5 s), so a connection the server is about to close is not reused.
const rawIdleTimeout = 4 * time.Second

// maxHeadBytes bounds what is read from the connection for one response's
// status line and headers (interim responses included); the body's raw bytes
// (chunk framing and trailers included) are bounded by maxRawBodyBytes, the
// page itself by maxPageBytes.
const (
	maxHeadBytes    = 1 << 20
	maxRawBodyBytes = 2 * maxPageBytes
)

// maxInterim bounds the interim (1xx) responses skipped before the final
// one, as net/http's Transport does.
const maxInterim = 5

// errUseNetHTTP: the response is one the fast path does not follow (a
// redirect); the scraper asks net/http again, from now on.
var errUseNetHTTP = errors.New("response needs net/http")

var errHeadTooLarge = fmt.Errorf("expected response headers under %d bytes, found more", maxHeadBytes)

// newRawGet returns the fast path for u, or nil when u needs net/http.
func newRawGet(ctx context.Context, u *url.URL, accept string, timeout time.Duration) *rawGet {
	if u.Scheme != "http" || u.User != nil || u.Host == "" {
		return nil
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	g := &rawGet{
		addr: addr,
		req: []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
			"\r\nUser-Agent: Go-http-client/1.1\r\nAccept: " + accept + "\r\n\r\n"),
		timeout: timeout,
		dialer:  net.Dialer{Timeout: min(timeout, 2*time.Second), KeepAlive: 30 * time.Second},
	}
	g.br = bufio.NewReader(&g.lr)
	// Cancellation unblocks a scrape in progress through a past deadline.
	context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.done = true
		if g.c != nil {
			_ = g.c.SetDeadline(time.Unix(1, 0))
		}
		g.mu.Unlock()
	})
	return g
}

// get sends the GET and reads the whole response into buf (reusing its
// capacity), returning the buffer (for a 200, the page) and the response's
// status other than 200 ("503 Service Unavailable"; "" for a 200). The
// timeout bounds the whole exchange, dial and retry included. A redirect
// fails with errUseNetHTTP; a page over maxPageBytes with errPageTooLarge.
func (g *rawGet) get(ctx context.Context, buf []byte) ([]byte, string, error) {
	deadline := time.Now().Add(g.timeout)
	for attempt := 0; ; attempt++ {
		reused, err := g.conn(ctx, deadline)
		if err != nil {
			return buf, "", err
		}
		if err = g.arm(deadline); err == nil {
			_, err = g.c.Write(g.req)
		}
		got := false // a reply byte arrived
		if err == nil {
			g.lr.limit(maxHeadBytes, errHeadTooLarge)
			_, err = g.br.Peek(1)
			got = err == nil
		}
		status, keep := "", false
		if err == nil {
			buf, status, keep, err = g.read(buf)
		}
		if keep && err == nil {
			g.used = time.Now()
		} else {
			g.close()
		}
		if err == nil || err == errUseNetHTTP || errors.Is(err, errPageTooLarge) {
			return buf, status, err
		}
		if ctx.Err() != nil {
			return buf, "", ctx.Err()
		}
		// A reused connection the server closed while idle fails before any
		// response byte: worth one retry on a new one (as net/http does).
		if reused && !got && attempt == 0 && staleConn(err) {
			continue
		}
		return buf, "", err
	}
}

// read reads one response from g.br with net/http (skipping interim ones)
// and its body into buf; status is the response's, "" for a 200. keep says
// whether the connection may carry the next request: the response did not
// ask to close it, its body was read to the end, and nothing followed it. A
// body is never Closed: net/http's Close would drain it, and a connection not
// read to the end is dropped instead.
func (g *rawGet) read(buf []byte) (_ []byte, status string, keep bool, err error) {
	var resp *http.Response
	for interim := 0; ; interim++ {
		if interim > 0 { // the first one's limit is get's
			g.lr.limit(maxHeadBytes, errHeadTooLarge)
		}
		if resp, err = http.ReadResponse(g.br, nil); err != nil {
			if g.lr.left <= 0 {
				err = errHeadTooLarge
			}
			return buf, "", false, err
		}
		// Interim responses have no body (net/http gives them none); 101
		// Switching Protocols is final.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if interim == maxInterim {
			return buf, "", false, fmt.Errorf("expected a final response after %d interim ones, found another (%s)", maxInterim, resp.Status)
		}
	}
	g.lr.limit(maxRawBodyBytes, errPageTooLarge)
	switch code := resp.StatusCode; {
	case code >= 300 && code <= 399:
		return buf, "", false, errUseNetHTTP
	case code != http.StatusOK:
		// The status is the error. A short body is drained for the
		// connection's sake; a long one, or one ended by the server
		// closing, costs the connection.
		if resp.Close || code < 200 {
			return buf, resp.Status, false, nil
		}
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return buf, resp.Status, err == nil && atEOF(resp.Body) && g.br.Buffered() == 0, nil
	case resp.ContentLength > maxPageBytes:
		return buf, "", false, errPageTooLarge
	}
	if n := int(resp.ContentLength); n >= 0 && cap(buf) < n {
		buf = make([]byte, 0, n)
	}
	if buf, err = readPage(resp.Body, buf[:0]); err != nil {
		return buf, "", false, err
	}
	return buf, "", !resp.Close && g.br.Buffered() == 0, nil
}

// atEOF reports whether body, already drained, is at its end.
func atEOF(body io.Reader) bool {
	var b [1]byte
	n, err := body.Read(b[:])
	return n == 0 && err == io.EOF
}

// conn makes sure g.c is open, reporting whether it was already.
func (g *rawGet) conn(ctx context.Context, deadline time.Time) (reused bool, err error) {
	if g.c != nil && time.Since(g.used) < rawIdleTimeout {
		return true, nil
	}
	g.close()
	d := g.dialer
	d.Deadline = deadline
	c, err := d.DialContext(ctx, "tcp", g.addr)
	if err != nil {
		return false, err
	}
	g.mu.Lock()
	if g.done {
		g.mu.Unlock()
		c.Close()
		return false, context.Canceled
	}
	g.c = c
	g.mu.Unlock()
	g.lr.c = c
	g.br.Reset(&g.lr)
	return false, nil
}

// arm bounds the exchange on g.c by deadline, unless the scraper's context
// ended (whose past deadline must stay).
func (g *rawGet) arm(deadline time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return context.Canceled
	}
	return g.c.SetDeadline(deadline)
}

// close closes the connection, if any.
func (g *rawGet) close() {
	g.mu.Lock()
	c := g.c
	g.c = nil
	g.mu.Unlock()
	if c != nil {
		c.Close()
	}
	g.lr.c = nil
}

// staleConn reports an error that a reused connection the server had
// already closed produces before any response byte.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// limitedConn reads c, at most left more bytes, then fails with err
// (net/http's Transport bounds a response's headers the same way).
type limitedConn struct {
	c    net.Conn
	left int64
	err  error
}

func (l *limitedConn) limit(n int64, err error) { l.left, l.err = n, err }

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, l.err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.c.Read(p)
	l.left -= int64(n)
	return n, err
}
