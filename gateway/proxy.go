package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/fastepp/fastepp/extproc"
)

// hopHeaders are connection-scoped (RFC 9110 §7.6.1) and never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func isHop(canonicalKey string) bool {
	for _, h := range hopHeaders {
		if h == canonicalKey {
			return true
		}
	}
	return false
}

// forwardHeader copies src without hop-by-hop headers (and those named in
// Connection) into dst.
func forwardHeader(dst, src http.Header) {
	var named []string
	for _, v := range src["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				named = append(named, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
outer:
	for k, vs := range src {
		if isHop(k) {
			continue
		}
		for _, n := range named {
			if n == k {
				continue outer
			}
		}
		dst[k] = append(dst[k][:0:0], vs...)
	}
}

// upstreamRequest is what is sent to an endpoint: the client request after
// ext_proc's mutations.
type upstreamRequest struct {
	method string
	host   string // Host header (the client's :authority)
	uri    *url.URL
	header http.Header
	body   []byte
}

// errAllFailed says every endpoint of the destination list refused the
// connection.
type connectError struct {
	dests []string
	last  error
}

func (e *connectError) Error() string {
	return "upstream connect error: expected one of " + strings.Join(e.dests, ",") + " to accept a connection, found: " + e.last.Error()
}

func (e *connectError) Unwrap() error { return e.last }

// isConnectErr reports whether err happened before anything was sent: a
// dial failure (refused, unreachable, dial timeout).
func isConnectErr(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// roundTrip sends u to the first endpoint of dests that accepts a
// connection and returns its response and address. The request context is
// ctx (cancelled when the client goes away).
func (g *Gateway) roundTrip(ctx context.Context, u *upstreamRequest, dests []string) (*http.Response, string, error) {
	var last error
	for _, d := range dests {
		target := *u.uri
		target.Scheme, target.Host = "http", d
		req, err := http.NewRequestWithContext(ctx, u.method, target.String(), bytes.NewReader(u.body))
		if err != nil {
			return nil, d, err
		}
		if len(u.body) == 0 {
			req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
		}
		req.Host = u.host
		req.Header = u.header
		resp, err := g.transport.RoundTrip(req)
		if err == nil {
			return resp, d, nil
		}
		if !isConnectErr(err) || ctx.Err() != nil {
			return nil, d, err
		}
		g.log.Debug("gateway: endpoint refused the connection; trying the next", "endpoint", d, "error", err)
		last = err
	}
	return nil, "", &connectError{dests: dests, last: last}
}

// upstreamFailure answers the client for a failed round trip: 503 when no
// endpoint accepted a connection (as Envoy's "upstream connect error"),
// 504 on a response header timeout, 502 otherwise.
func upstreamFailure(w http.ResponseWriter, dest string, err error) {
	var ce *connectError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.As(err, &ne) && ne.Timeout():
		writeError(w, http.StatusGatewayTimeout, "upstream "+dest+": expected response headers in time, found a timeout: "+err.Error())
	default:
		writeError(w, http.StatusBadGateway, "upstream "+dest+": "+err.Error())
	}
}

// pickDirect returns the index of the direct endpoint to try first.
//
// round-robin: the next in turn. random: uniform. least-request: two
// distinct endpoints drawn at random, the one with fewer requests in flight
// through this gateway (the first drawn on a tie), which is Envoy's
// LEAST_REQUEST with its default choice_count of 2 and equal weights.
func (g *Gateway) pickDirect() int {
	n := len(g.direct)
	switch g.balance {
	case BalanceRandom:
		return rand.IntN(n)
	case BalanceLeastRequest:
		if n == 1 {
			return 0
		}
		a := rand.IntN(n)
		b := rand.IntN(n - 1)
		if b >= a {
			b++
		}
		if g.inflight[b].Load() < g.inflight[a].Load() {
			return b
		}
		return a
	default:
		return int((g.rr.Add(1) - 1) % uint64(n))
	}
}

// DirectInflight returns the requests in flight through this gateway per
// direct endpoint, in Config.Direct order (nil with epp).
func (g *Gateway) DirectInflight() []int64 {
	if g.client != nil {
		return nil
	}
	out := make([]int64, len(g.inflight))
	for i := range g.inflight {
		out[i] = g.inflight[i].Load()
	}
	return out
}

// serveDirect is the no-epp mode: the balancing of Config.Balance with
// fallback on connection failure, the body buffered like the ext_proc path
// so both compare fairly.
func (g *Gateway) serveDirect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	body := g.getBody(r.ContentLength)
	defer g.putBody(body)
	if r.Body != nil && r.Body != http.NoBody {
		b, err := readAll(r.Body, *body)
		*body = b
		if err != nil {
			if ctx.Err() == nil {
				writeError(w, http.StatusBadRequest, "reading the request body: "+err.Error())
			}
			return
		}
	}
	u := &upstreamRequest{method: r.Method, host: r.Host, uri: r.URL, body: *body, header: make(http.Header, len(r.Header)+1)}
	forwardHeader(u.header, r.Header)
	u.header.Del("Content-Length")
	if u.header.Get(HeaderRequestID) == "" {
		u.header.Set(HeaderRequestID, uuid.NewString())
	}
	n := len(g.direct)
	start := g.pickDirect()
	dests := make([]string, 0, n)
	for i := range n {
		dests = append(dests, g.direct[(start+i)%n])
	}
	// The chosen endpoint carries the request in the in-flight counts until
	// the response is relayed (a fallback on a refused connection is rare
	// and not worth a recount).
	g.inflight[start].Add(1)
	defer g.inflight[start].Add(-1)
	resp, dest, err := g.roundTrip(ctx, u, dests)
	if err != nil {
		if ctx.Err() == nil {
			g.log.Debug("gateway: upstream failed", "endpoint", dest, "error", err)
			upstreamFailure(w, dest, err)
		}
		return
	}
	defer resp.Body.Close()
	forwardHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	flush(w)
	buf := g.getChunk()
	defer g.putChunk(buf)
	for {
		n, rerr := resp.Body.Read(*buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				return // client gone; the deferred Close stops the upstream
			}
			flush(w)
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			g.log.Debug("gateway: upstream body failed", "endpoint", dest, "error", rerr)
			// Truncated upstream response: abort the client's so it is not
			// mistaken for a complete one (net/http recovers this sentinel).
			panic(http.ErrAbortHandler)
		}
	}
}

// readAll appends r to buf until EOF.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// writeError answers with the OpenAI/vLLM error envelope, like epp does.
func writeError(w http.ResponseWriter, code int, msg string) {
	b := extproc.ErrorBody(code, msg)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
