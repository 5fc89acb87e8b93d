package extproc

// The direct transport: fastepp's own HTTP/2 + gRPC server for the ext_proc
// service (and gRPC health's Check on the same port), an opt-in alternative
// to serving Register'ed on a grpc.Server. It exists because at 2 KB
// request bodies grpc-go's per-stream machinery (a goroutine per stream,
// hand-offs between the reader, the handler and the writer goroutine) is
// ~80% of the server's CPU per request; with the same work done inline the
// server needs 0.4-0.5x the CPU per request of the stock grpc-go floor
// (README, BenchmarkExtProc picker=direct).
//
// One goroutine per connection reads frames (x/net/http2's Framer and
// hpack) and does everything inline: it reassembles each gRPC message,
// decodes it into the ext_proc stream's pooled message (wire.go) and runs
// the stream's handler step (Server.begin, stream.next, Server.end, the
// same code the grpc-go path runs between its Recv calls). Replies are
// encoded into the HTTP/2 stream's queue and written, within the peer's
// flow-control windows, once per read batch: right before a read that
// would block.
//
// Locking. dconn.mu guards the transport state and the writer. The
// connection goroutine holds it while it works on frames, and releases it
// while it reads and while it calls into the ext_proc stream. The only
// other writer is the request idle timer (idle.go), whose callback holds
// the stream's st.mu and sends a 408 through dstream.Send, which takes
// dconn.mu: so the order is st.mu before dconn.mu, and the connection
// goroutine never calls stream code while it holds dconn.mu. A Send while
// the connection goroutine reads writes the reply itself.
//
// What it does not do, against grpc-go: compression (a compressed message
// or a grpc-encoding other than identity is refused), grpc-timeout
// deadlines (ignored: Envoy times ext_proc messages itself), server
// keepalive pings, channelz and stats handlers, health's Watch (answered
// Unimplemented) and any other service.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const (
	processMethod = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
	healthCheck   = "/grpc.health.v1.Health/Check"
	healthWatch   = "/grpc.health.v1.Health/Watch"

	// directMaxStreams is the concurrent streams a connection may have
	// (advertised in SETTINGS). Envoy opens one stream per proxied request
	// and a new connection when one is full.
	directMaxStreams    = 1 << 14
	directStreamWindow  = 1 << 20  // receive window per stream (advertised)
	directConnWindow    = 16 << 20 // receive window per connection
	directMaxHeaderList = 64 << 10 // largest header list accepted (advertised)
	directMaxQueued     = 4 << 20  // queued output above which a stream's receive window is withheld
	directReadBuf       = 64 << 10
	directWriteBuf      = 64 << 10
	directHandshake     = 10 * time.Second // TLS handshake and client preface
	directPhase2        = time.Second      // graceful stop: the wait for the ping before the final GOAWAY
	defaultWindow       = 65535            // HTTP/2's initial window
	maxWindow           = 1<<31 - 1
	minFrame            = 16384
	maxHealthMsg        = 1 << 10
)

// gracefulPing is the PING payload of a graceful stop's first phase.
var gracefulPing = [8]byte{'f', 'a', 's', 't', 'e', 'p', 'p', 'g'}

// DirectOptions configure NewDirect.
type DirectOptions struct {
	// TLS, when set, serves TLS with ALPN "h2" (a client without ALPN is
	// served too). Nil serves cleartext HTTP/2 with prior knowledge (h2c),
	// what a gRPC client speaks without TLS.
	TLS *tls.Config
	// Health, when set, answers grpc.health.v1.Health/Check on the same
	// port (cmd/epp's --health-checking). Watch is answered Unimplemented.
	// Nil (or a nil *health.Server) serves no health: Check is then
	// answered Unimplemented.
	Health healthpb.HealthServer
	// MaxRecvMsgSize bounds one received gRPC message; 0 means what
	// GRPCServerOptions allows (the server's MaxBodyBytes plus 1 MiB).
	MaxRecvMsgSize int
}

// Direct serves a Server on its own HTTP/2 transport (see the top of
// direct.go). Create it with NewDirect; Serve, Stop and GracefulStop follow
// grpc.Server's.
type Direct struct {
	srv    *Server
	tls    *tls.Config
	health healthpb.HealthServer
	maxMsg int

	mu       sync.Mutex
	lis      map[net.Listener]struct{}
	conns    map[*dconn]struct{}
	stopping bool           // Stop or GracefulStop called: no new connections
	done     sync.WaitGroup // connection goroutines
}

// NewDirect returns the direct transport for s.
func (s *Server) NewDirect(o DirectOptions) *Direct {
	d := &Direct{srv: s, health: o.Health, maxMsg: o.MaxRecvMsgSize,
		lis: map[net.Listener]struct{}{}, conns: map[*dconn]struct{}{}}
	if v := reflect.ValueOf(o.Health); v.Kind() == reflect.Pointer && v.IsNil() {
		d.health = nil // a nil *health.Server: no health served, not a nil dereference per Check
	}
	if d.maxMsg <= 0 {
		d.maxMsg = s.maxBody + 1<<20
		if d.maxMsg < 0 || d.maxMsg > math.MaxInt32 {
			d.maxMsg = math.MaxInt32
		}
	}
	if o.TLS != nil {
		d.tls = o.TLS.Clone()
		d.tls.NextProtos = []string{"h2"}
	}
	return d
}

// Serve accepts connections on ln until Stop or GracefulStop (then it
// returns nil) or until Accept fails (that error). ln is closed on return.
func (d *Direct) Serve(ln net.Listener) error {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		ln.Close()
		return nil
	}
	d.lis[ln] = struct{}{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.lis, ln)
		d.mu.Unlock()
		ln.Close()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			d.mu.Lock()
			stopping := d.stopping
			d.mu.Unlock()
			if stopping {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() { // as grpc-go and net/http: back off on transient errors (EMFILE)
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := d.newConn(nc)
		d.mu.Lock()
		if d.stopping {
			d.mu.Unlock()
			nc.Close()
			continue
		}
		d.conns[c] = struct{}{}
		d.done.Add(1)
		d.mu.Unlock()
		go c.serve()
	}
}

// Stop closes the listeners and every connection at once; streams end as
// if the proxy had cancelled them. It returns when every connection is done.
func (d *Direct) Stop() {
	d.mu.Lock()
	d.stopping = true
	for ln := range d.lis {
		ln.Close()
	}
	for c := range d.conns {
		c.raw.Close()
	}
	d.mu.Unlock()
	d.done.Wait()
}

// GracefulStop closes the listeners, tells each connection's peer to open
// no new streams (GOAWAY, in two phases as grpc-go does) and returns when
// every open stream has ended and every connection is closed.
func (d *Direct) GracefulStop() {
	d.mu.Lock()
	d.stopping = true
	for ln := range d.lis {
		ln.Close()
	}
	conns := make([]*dconn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	for _, c := range conns {
		// Concurrently: a connection whose peer stopped reading holds c.mu
		// in a blocked write, and must not keep the others from draining.
		go c.drain()
	}
	d.done.Wait()
}

// dconn is one HTTP/2 connection.
type dconn struct {
	d      *Direct
	raw    net.Conn        // the accepted connection: deadlines and Close
	nc     net.Conn        // raw, or its TLS session; set by the handshake
	ctx    context.Context // the streams' Context; cancelled when the connection ends
	cancel context.CancelFunc
	br     *bufio.Reader
	bw     *bufio.Writer
	fr     *http2.Framer

	mu       sync.Mutex // see the top of the file
	reading  bool       // the connection goroutine is in (or at) a read: Send writes itself
	werr     error      // the first write error: the connection is broken
	hbuf     bytes.Buffer
	henc     *hpack.Encoder
	frameHdr [9]byte // a DATA frame's header, being written

	streams  map[uint32]*dstream
	active   []*dstream // streams with output or trailers to write
	lastID   uint32     // highest client stream ID seen
	phase    int        // graceful stop: 0 serving, 1 first GOAWAY sent, 2 final GOAWAY sent
	peerGone bool       // the peer sent GOAWAY: it opens no more streams; close when the last one ends
	goneBy   *time.Timer

	sendWindow   int64 // the peer's connection window
	peerInitWin  int64
	peerMaxFrame int
	recvWindow   int64 // bytes the peer may still send on the connection
	recvUnacked  int64 // consumed, not yet returned with WINDOW_UPDATE

	free []*dstream // ended streams, for reuse (with their buffers)
}

type streamKind uint8

const (
	kindProcess streamKind = iota
	kindHealth
)

// dstream is one HTTP/2 stream (one gRPC call). For the ext_proc method it
// is the stream's ExternalProcessor_ProcessServer: Send queues a reply.
type dstream struct {
	c           *dconn
	id          uint32
	kind        streamKind
	st          *stream // the ext_proc stream, until it ends
	sendWindow  int64
	recvWindow  int64
	recvUnacked int64

	in     []byte // a partial incoming message, its 5-byte prefix included
	out    []byte // queued outgoing messages, prefixes included
	outOff int    // bytes of out already written

	sentHeaders bool
	halfClosed  bool // END_STREAM received
	done        bool // the call is over: trailers follow the queued output
	isActive    bool // in dconn.active
	closed      bool // trailers written or reset: forgotten
	code        codes.Code
	msg         string
}

var (
	errStreamEnded = errors.New("extproc: the stream has ended")
	errStreamReset = status.Error(codes.Canceled, "extproc: the proxy reset the stream")
	errConnClosed  = status.Error(codes.Canceled, "extproc: the connection closed")
)

func (d *Direct) newConn(nc net.Conn) *dconn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &dconn{
		d: d, raw: nc, nc: nc, ctx: ctx, cancel: cancel,
		streams:      map[uint32]*dstream{},
		sendWindow:   defaultWindow,
		peerInitWin:  defaultWindow,
		peerMaxFrame: minFrame,
		recvWindow:   directConnWindow,
	}
	return c
}

// serve runs the connection until it fails, the peer leaves or the server
// stops, then ends every stream still open.
func (c *dconn) serve() {
	defer func() {
		c.d.mu.Lock()
		delete(c.d.conns, c)
		c.d.mu.Unlock()
		c.d.done.Done()
	}()
	defer c.cancel()
	defer c.raw.Close()
	if !c.handshake() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.loop()
	c.goAway(err)
	c.werr = errConnClosed // no more writes, from anyone
	if c.goneBy != nil {
		c.goneBy.Stop()
	}
	var open []*dstream
	for _, s := range c.streams {
		if s.st != nil {
			open = append(open, s)
		}
	}
	for _, s := range open {
		c.step(s, nil, errConnClosed) // Send fails from now on: nothing is written
	}
}

// handshake does TLS (when configured) and reads the client preface, with a
// deadline; it sets up the framer.
func (c *dconn) handshake() bool {
	c.raw.SetDeadline(time.Now().Add(directHandshake))
	nc := c.raw
	if c.d.tls != nil {
		tc := tls.Server(c.raw, c.d.tls)
		if err := tc.HandshakeContext(c.ctx); err != nil {
			return false
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "h2" {
			return false
		}
		nc = tc
	}
	br := bufio.NewReaderSize(nc, directReadBuf)
	var pre [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil || string(pre[:]) != http2.ClientPreface {
		return false
	}
	c.raw.SetDeadline(time.Time{})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nc, c.br = nc, br
	c.bw = bufio.NewWriterSize(nc, directWriteBuf)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = directMaxHeaderList
	c.fr.SetMaxReadFrameSize(minFrame) // the default, which we keep advertising
	c.fr.SetReuseFrames()
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: directMaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: directStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: directMaxHeaderList},
	)
	c.fr.WriteWindowUpdate(0, directConnWindow-defaultWindow)
	c.flush()
	return c.werr == nil
}

var errPeerGoAway = errors.New("extproc: the peer sent GOAWAY")

// loop reads and handles frames; c.mu is held on entry and on return.
func (c *dconn) loop() error {
	first := true
	for {
		if !c.frameBuffered() {
			c.drainAll()
			c.flush()
		}
		if c.werr != nil {
			return c.werr
		}
		if len(c.streams) == 0 {
			if c.peerGone {
				return errPeerGoAway // the peer is leaving and its last stream is done
			}
			if c.phase == 2 {
				return nil // graceful stop: the last stream is done
			}
		}
		c.reading = true
		c.mu.Unlock()
		f, err := c.fr.ReadFrame()
		c.mu.Lock()
		c.reading = false
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if s := c.streams[se.StreamID]; s != nil {
					c.reset(s)
				} else if se.StreamID > c.lastID && se.StreamID%2 == 1 {
					// A new stream's malformed HEADERS: the stream is
					// closed now, and what the peer still sends on it
					// is ignored, not an error on an idle stream.
					c.lastID = se.StreamID
				}
				c.fr.WriteRSTStream(se.StreamID, se.Code)
				continue
			}
			return err
		}
		if first {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				return http2.ConnectionError(http2.ErrCodeProtocol)
			}
			first = false
		}
		if err := c.frame(f); err != nil {
			return err
		}
	}
}

// goAway tells the peer why the connection ends, best effort.
func (c *dconn) goAway(err error) {
	code := http2.ErrCodeNo
	var ce http2.ConnectionError
	switch {
	case err == nil:
	case errors.As(err, &ce):
		code = http2.ErrCode(ce)
	case errors.Is(err, errPeerGoAway), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), c.werr != nil:
		return
	default:
		if _, ok := err.(net.Error); ok {
			return
		}
		code = http2.ErrCodeProtocol
	}
	c.raw.SetWriteDeadline(time.Now().Add(time.Second))
	c.fr.WriteGoAway(c.lastID, code, nil)
	c.bw.Flush()
}

// frameBuffered reports whether the read buffer holds a complete frame (one
// that ReadFrame returns without reading the connection). A HEADERS frame
// waiting for CONTINUATION counts as incomplete.
func (c *dconn) frameBuffered() bool {
	n := c.br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := c.br.Peek(9)
	if http2.FrameType(h[3]) == http2.FrameHeaders && h[4]&byte(http2.FlagHeadersEndHeaders) == 0 {
		return false
	}
	return n >= 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// flush writes what is buffered; a failure breaks the connection.
func (c *dconn) flush() {
	if c.werr != nil {
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.werr = err
		c.raw.Close() // wakes the connection goroutine's read
	}
}

func (c *dconn) frame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.dataFrame(f)
	case *http2.MetaHeadersFrame:
		return c.headersFrame(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := f.ForeachSetting(c.setting); err != nil {
			return err
		}
		return c.fr.WriteSettingsAck()
	case *http2.PingFrame:
		if !f.IsAck() {
			return c.fr.WritePing(true, f.Data)
		}
		if f.Data == gracefulPing && c.phase == 1 {
			c.finalGoAway()
		}
	case *http2.WindowUpdateFrame:
		inc := int64(f.Increment)
		if f.StreamID == 0 {
			if c.sendWindow += inc; c.sendWindow > maxWindow {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			return nil // drainAll before the next blocking read resumes the streams
		}
		if s := c.streams[f.StreamID]; s != nil {
			if s.sendWindow += inc; s.sendWindow > maxWindow {
				c.fr.WriteRSTStream(s.id, http2.ErrCodeFlowControl)
				c.reset(s)
			}
		} else if f.StreamID > c.lastID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
	case *http2.RSTStreamFrame:
		if s := c.streams[f.StreamID]; s != nil {
			c.reset(s)
		} else if f.StreamID > c.lastID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		// The peer opens no more streams; the ones it has opened go on
		// (RFC 9113 6.8: Envoy drains a connection this way).
		if f.ErrCode != http2.ErrCodeNo {
			return errPeerGoAway
		}
		c.peerGone = true
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // PRIORITY, unknown frame types: ignored
}

func (c *dconn) setting(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		return err
	}
	switch s.ID {
	case http2.SettingInitialWindowSize:
		delta := int64(s.Val) - c.peerInitWin
		c.peerInitWin = int64(s.Val)
		for _, st := range c.streams {
			if st.sendWindow += delta; st.sendWindow > maxWindow {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
		}
	case http2.SettingMaxFrameSize:
		c.peerMaxFrame = int(s.Val)
	case http2.SettingHeaderTableSize:
		c.henc.SetMaxDynamicTableSizeLimit(s.Val)
	}
	return nil
}

// headersFrame opens a stream, or is a stream's trailers.
func (c *dconn) headersFrame(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if s := c.streams[id]; s != nil { // trailers from the client
		if !f.StreamEnded() || s.halfClosed {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if f.Truncated {
			c.fail(s, codes.Internal, "trailer list larger than "+strconv.Itoa(directMaxHeaderList)+" bytes")
			return nil
		}
		if len(f.PseudoFields()) != 0 || !validRequestFields(f.RegularFields()) {
			c.fr.WriteRSTStream(s.id, http2.ErrCodeProtocol) // malformed trailers (RFC 9113 8.1.1)
			c.reset(s)
			return nil
		}
		c.endOfInput(s)
		return nil
	}
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if id <= c.lastID {
		return nil // a stream we have closed (trailers in flight): ignored
	}
	c.lastID = id
	if f.Truncated {
		c.refuse(id, f.StreamEnded(), "431", codes.Internal, "header list larger than "+strconv.Itoa(directMaxHeaderList)+" bytes")
		return nil
	}
	if c.phase == 2 {
		return c.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) // after the final GOAWAY: the peer retries elsewhere
	}
	if len(c.streams) >= directMaxStreams {
		return c.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
	}
	method, path := f.PseudoValue("method"), f.PseudoValue("path")
	if method == "" || path == "" || f.PseudoValue("scheme") == "" || !validRequestFields(f.RegularFields()) {
		return c.fr.WriteRSTStream(id, http2.ErrCodeProtocol) // malformed (RFC 9113 8.1.1)
	}
	if method != "POST" {
		c.refuse(id, f.StreamEnded(), "405", codes.Internal, "unexpected HTTP method "+strconv.Quote(method)+" (gRPC is POST)")
		return nil
	}
	ct, encoding := "", ""
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "content-type":
			ct = hf.Value
		case "grpc-encoding":
			encoding = hf.Value
		}
	}
	if ct != "application/grpc" && !strings.HasPrefix(ct, "application/grpc+") && !strings.HasPrefix(ct, "application/grpc;") {
		c.refuse(id, f.StreamEnded(), "415", codes.Internal, "invalid gRPC request content-type "+strconv.Quote(ct))
		return nil
	}
	if encoding != "" && encoding != "identity" {
		c.refuse(id, f.StreamEnded(), "200", codes.Unimplemented, "grpc: Decompressor is not installed for grpc-encoding "+strconv.Quote(encoding))
		return nil
	}
	var kind streamKind
	switch {
	case path == processMethod:
		kind = kindProcess
	case path == healthCheck && c.d.health != nil:
		kind = kindHealth
	case (path == healthCheck || path == healthWatch) && c.d.health != nil:
		c.refuse(id, f.StreamEnded(), "200", codes.Unimplemented, "method Watch is not served by this transport")
		return nil
	default:
		c.refuse(id, f.StreamEnded(), "200", codes.Unimplemented, "unknown method "+path)
		return nil
	}
	s := c.newStream(id, kind)
	c.streams[id] = s
	if kind == kindProcess {
		st := c.d.srv.getStream()
		s.st = st
		c.mu.Unlock()
		c.d.srv.begin(st, s)
		st.waitUnlock()
		c.mu.Lock()
	}
	if f.StreamEnded() {
		c.endOfInput(s)
	}
	return nil
}

// validRequestFields reports whether a request's (or its trailers')
// regular fields are free of connection-specific fields (RFC 9113 8.2.2).
func validRequestFields(fs []hpack.HeaderField) bool {
	for _, f := range fs {
		switch f.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return false
		case "te":
			if f.Value != "trailers" {
				return false
			}
		}
	}
	return true
}

// refuse answers a stream with trailers only, and stops its input.
func (c *dconn) refuse(id uint32, ended bool, httpStatus string, code codes.Code, msg string) {
	c.writeHeaders(id, true, ":status", httpStatus, "content-type", "application/grpc",
		"grpc-status", strconv.Itoa(int(code)), "grpc-message", encodeGRPCMessage(msg))
	if !ended {
		c.fr.WriteRSTStream(id, http2.ErrCodeNo)
	}
}

func (c *dconn) newStream(id uint32, kind streamKind) *dstream {
	var s *dstream
	if n := len(c.free); n > 0 {
		s = c.free[n-1]
		c.free[n-1] = nil
		c.free = c.free[:n-1]
		in, out := s.in[:0], s.out[:0]
		*s = dstream{in: in, out: out}
	} else {
		s = new(dstream)
	}
	s.c, s.id, s.kind = c, id, kind
	s.sendWindow, s.recvWindow = c.peerInitWin, directStreamWindow
	return s
}

func (c *dconn) dataFrame(f *http2.DataFrame) error {
	n := int64(f.Length) // padding included, as flow control counts it
	if c.recvWindow -= n; c.recvWindow < 0 {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	if c.recvUnacked += n; c.recvUnacked >= directConnWindow/2 {
		if err := c.fr.WriteWindowUpdate(0, uint32(c.recvUnacked)); err != nil {
			return err
		}
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.lastID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // a stream we have closed: ignored
	}
	if s.halfClosed {
		c.fr.WriteRSTStream(s.id, http2.ErrCodeStreamClosed)
		c.reset(s)
		return nil
	}
	if s.recvWindow -= n; s.recvWindow < 0 {
		c.fr.WriteRSTStream(s.id, http2.ErrCodeFlowControl)
		c.reset(s)
		return nil
	}
	if !s.done {
		c.data(s, f.Data())
	}
	if s.closed {
		return nil
	}
	if f.StreamEnded() {
		c.endOfInput(s)
		return nil
	}
	s.recvUnacked += n
	c.ackStream(s)
	return nil
}

// ackStream returns consumed bytes to the stream's window once half of it
// is consumed, unless the stream's queued output is too large (the
// backpressure a blocking Send gives on grpc-go).
func (c *dconn) ackStream(s *dstream) {
	if s.halfClosed || s.done || s.recvUnacked < directStreamWindow/2 || len(s.out)-s.outOff > directMaxQueued {
		return
	}
	c.fr.WriteWindowUpdate(s.id, uint32(s.recvUnacked))
	s.recvWindow += s.recvUnacked
	s.recvUnacked = 0
}

// data reassembles gRPC messages from p (a DATA frame's payload, valid
// until the next read) and handles each complete one.
func (c *dconn) data(s *dstream, p []byte) {
	if len(s.in) > 0 {
		s.in = append(s.in, p...)
		p = s.in
	}
	off := 0
	for len(p)-off >= 5 {
		if p[off] != 0 {
			c.fail(s, codes.Internal, "grpc: compressed flag set with identity or empty encoding")
			return
		}
		n := int(binary.BigEndian.Uint32(p[off+1:]))
		limit := c.d.maxMsg
		if s.kind == kindHealth {
			limit = maxHealthMsg
		}
		if n > limit {
			c.fail(s, codes.ResourceExhausted, fmt.Sprintf("grpc: received message larger than max (%d vs. %d)", n, limit))
			return
		}
		if len(p)-off-5 < n {
			if len(s.in) == 0 && cap(s.in) < 5+n && n <= 1<<20 {
				s.in = make([]byte, 0, 5+n) // one copy of a message split over frames
			}
			break
		}
		if !c.message(s, p[off+5:off+5+n]) {
			return
		}
		off += 5 + n
	}
	if len(s.in) > 0 {
		s.in = s.in[:copy(s.in, p[off:])]
	} else {
		s.in = append(s.in, p[off:]...)
	}
}

// message handles one complete message b (valid until the next read); it
// returns false when the stream has ended.
func (c *dconn) message(s *dstream, b []byte) bool {
	if s.kind == kindHealth {
		if s.outOff != 0 || len(s.out) != 0 {
			c.fail(s, codes.Internal, "grpc: a unary call received a second message")
			return false
		}
		s.out = append(s.out, b...) // kept until END_STREAM (a health request is tiny)
		return true
	}
	st := s.st
	if st == nil {
		return false
	}
	if err := st.in.decodeBytes(b); err != nil {
		err = status.Error(codes.Internal, "grpc: error unmarshalling request: "+err.Error())
		return c.step(s, nil, err)
	}
	return c.step(s, &st.in.ProcessingRequest, nil)
}

// step runs the ext_proc stream's handler on one message, or on what
// ended its input (rerr: io.EOF, a reset, a decoding error), with c.mu
// released; when the handler is done it ends the stream and the call.
// It returns false when the stream has ended.
func (c *dconn) step(s *dstream, msg *extprocv3.ProcessingRequest, rerr error) bool {
	st := s.st
	if st == nil {
		return false
	}
	c.mu.Unlock()
	done, err := runStep(c.d.srv, st, msg, rerr)
	c.mu.Lock()
	if !done {
		return true
	}
	s.st = nil
	if s.closed { // reset meanwhile (connection teardown)
		return false
	}
	if err == nil {
		c.finish(s, codes.OK, "")
	} else if se, ok := status.FromError(err); ok {
		c.finish(s, se.Code(), se.Message())
	} else {
		c.finish(s, codes.Unknown, err.Error())
	}
	return false
}

// runStep is Server.serve's loop body for one Recv result, ending the
// stream (Server.end) when it is done or panics.
func runStep(srv *Server, st *stream, msg *extprocv3.ProcessingRequest, rerr error) (done bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			srv.end(st, r)
			done, err = true, nil
		}
	}()
	done, err = st.next(msg, rerr)
	if done {
		srv.end(st, nil)
	} else {
		st.waitUnlock()
	}
	return done, err
}

// endOfInput is the client's END_STREAM.
func (c *dconn) endOfInput(s *dstream) {
	s.halfClosed = true
	if s.done {
		return
	}
	if len(s.in) > 0 {
		c.fail(s, codes.Internal, "grpc: the stream ended inside a message")
		return
	}
	switch s.kind {
	case kindProcess:
		c.step(s, nil, io.EOF)
	case kindHealth:
		c.healthCheck(s)
	}
}

// healthCheck answers a health Check whose request is in s.out.
func (c *dconn) healthCheck(s *dstream) {
	req := new(healthpb.HealthCheckRequest)
	if err := proto.Unmarshal(s.out, req); err != nil {
		s.out = s.out[:0]
		c.finish(s, codes.Internal, "grpc: error unmarshalling request: "+err.Error())
		return
	}
	s.out = s.out[:0]
	c.mu.Unlock()
	resp, err := c.d.health.Check(c.ctx, req)
	c.mu.Lock()
	if s.closed {
		return
	}
	if err != nil {
		st := status.Convert(err)
		c.finish(s, st.Code(), st.Message())
		return
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		c.finish(s, codes.Internal, "grpc: error while marshaling: "+err.Error())
		return
	}
	s.out = appendMessage(s.out, b)
	c.finish(s, codes.OK, "")
}

func appendMessage(out, b []byte) []byte {
	out = append(out, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(out[len(out)-4:], uint32(len(b)))
	return append(out, b...)
}

// fail ends a call from the transport's side (bad framing, a limit): the
// ext_proc stream, if any, ends as if the proxy had cancelled it.
func (c *dconn) fail(s *dstream, code codes.Code, msg string) {
	if s.kind == kindHealth {
		s.out = s.out[:0] // the request kept so far, not an answer
	}
	if s.st != nil {
		c.step(s, nil, status.Error(code, msg))
		s.st = nil
	}
	if !s.closed && !s.done {
		c.finish(s, code, msg)
	}
}

// finish is the handler's return: trailers follow the queued output.
func (c *dconn) finish(s *dstream, code codes.Code, msg string) {
	s.done, s.code, s.msg = true, code, msg
	c.activate(s)
}

func (c *dconn) activate(s *dstream) {
	if !s.isActive {
		s.isActive = true
		c.active = append(c.active, s)
	}
}

// reset ends a stream at once (the peer reset it, or it broke a rule):
// nothing more is written on it.
func (c *dconn) reset(s *dstream) {
	if s.st != nil {
		c.step(s, nil, errStreamReset)
	}
	c.release(s)
}

// release forgets the stream and keeps it for reuse.
func (c *dconn) release(s *dstream) {
	if s.closed {
		return
	}
	s.closed = true
	delete(c.streams, s.id)
	if !s.isActive { // else drainAll recycles it when it leaves c.active
		c.recycle(s)
	}
}

// recycle keeps an ended stream (with its buffers) for newStream.
func (c *dconn) recycle(s *dstream) {
	if len(c.free) < 64 && cap(s.in) <= 1<<20 && cap(s.out) <= 1<<20 {
		c.free = append(c.free, s)
	}
}

// Send queues one reply on the stream (the ext_proc handler's Send). It is
// called by the connection goroutine, with c.mu released, or by the idle
// timer, which then writes the reply itself if the connection goroutine is
// reading.
func (s *dstream) Send(m *extprocv3.ProcessingResponse) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.closed || s.done || c.werr != nil {
		return errStreamEnded
	}
	start := len(s.out)
	if n := sizeResponse(m); n >= 0 {
		s.out = growTo(s.out, start+5+n)
		if putResponse(s.out[start+5:], m) != 0 {
			panic("extproc: reply encoding: size mismatch") // a bug in sizeResponse
		}
	} else {
		out, err := proto.MarshalOptions{}.MarshalAppend(append(s.out, 0, 0, 0, 0, 0), m)
		if err != nil {
			return status.Error(codes.Internal, "grpc: error while marshaling: "+err.Error())
		}
		s.out = out
	}
	s.out[start] = 0
	binary.BigEndian.PutUint32(s.out[start+1:], uint32(len(s.out)-start-5))
	c.activate(s)
	if c.reading {
		c.drainAll()
		c.flush()
	}
	return nil
}

// growTo returns b resliced to length n, reallocated (contents kept) if its
// capacity is short. Unlike appending zeroes it does not clear the bytes
// the caller is about to overwrite (5% of the CPU of a 220 KB echo).
func growTo(b []byte, n int) []byte {
	if n <= cap(b) {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}

// drainAll writes what the active streams' windows allow.
func (c *dconn) drainAll() {
	keep := c.active[:0]
	for _, s := range c.active {
		if !s.closed && !c.drainStream(s) {
			keep = append(keep, s)
			continue
		}
		s.isActive = false
		if s.closed {
			c.recycle(s)
		}
	}
	clear(c.active[len(keep):])
	c.active = keep
}

// drainStream writes the stream's queued output, then its trailers once the
// call is done. It returns true when nothing is left to write.
func (c *dconn) drainStream(s *dstream) bool {
	if s.outOff < len(s.out) && !s.sentHeaders {
		c.writeHeaders(s.id, false, ":status", "200", "content-type", "application/grpc")
		s.sentHeaders = true
	}
	for s.outOff < len(s.out) {
		n := int(min(int64(len(s.out)-s.outOff), int64(c.peerMaxFrame), c.sendWindow, s.sendWindow))
		if n <= 0 {
			return false
		}
		h := c.frameHdr[:] // a field: a local array would escape through bufio's Write
		h[0], h[1], h[2], h[3], h[4] = byte(n>>16), byte(n>>8), byte(n), byte(http2.FrameData), 0
		binary.BigEndian.PutUint32(h[5:], s.id)
		c.bw.Write(h)
		c.bw.Write(s.out[s.outOff : s.outOff+n])
		s.outOff += n
		c.sendWindow -= int64(n)
		s.sendWindow -= int64(n)
	}
	s.out, s.outOff = s.out[:0], 0
	if !s.done {
		c.ackStream(s)
		return true
	}
	code := strconv.Itoa(int(s.code))
	switch {
	case !s.sentHeaders && s.msg != "": // trailers-only
		c.writeHeaders(s.id, true, ":status", "200", "content-type", "application/grpc", "grpc-status", code, "grpc-message", encodeGRPCMessage(s.msg))
	case !s.sentHeaders:
		c.writeHeaders(s.id, true, ":status", "200", "content-type", "application/grpc", "grpc-status", code)
	case s.msg != "":
		c.writeHeaders(s.id, true, "grpc-status", code, "grpc-message", encodeGRPCMessage(s.msg))
	default:
		c.writeHeaders(s.id, true, "grpc-status", code)
	}
	if !s.halfClosed {
		c.fr.WriteRSTStream(s.id, http2.ErrCodeNo) // the call is over: the peer may stop sending
	}
	c.release(s)
	return true
}

// writeHeaders writes a header block (name, value pairs) as HEADERS and,
// if it exceeds the peer's frame size, CONTINUATION frames.
func (c *dconn) writeHeaders(id uint32, endStream bool, kv ...string) {
	c.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		c.henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	block := c.hbuf.Bytes()
	n := min(len(block), c.peerMaxFrame)
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:n], EndStream: endStream, EndHeaders: n == len(block)})
	for block = block[n:]; len(block) > 0; block = block[n:] {
		n = min(len(block), c.peerMaxFrame)
		c.fr.WriteContinuation(id, n == len(block), block[:n])
	}
}

// drain starts a graceful stop of the connection: a GOAWAY that admits
// every stream and a PING; the final GOAWAY (with the last stream ID seen)
// follows the PING's answer, or directPhase2 without one, so that streams
// the peer opened meanwhile are still served.
func (c *dconn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase != 0 || c.werr != nil || c.fr == nil {
		if c.fr == nil { // still in the handshake
			c.raw.Close()
		}
		return
	}
	c.phase = 1
	c.fr.WriteGoAway(maxWindow, http2.ErrCodeNo, nil)
	c.fr.WritePing(false, gracefulPing)
	c.flush()
	c.goneBy = time.AfterFunc(directPhase2, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.phase == 1 {
			c.finalGoAway()
		}
	})
}

// finalGoAway is a graceful stop's second phase; c.mu is held. The
// connection closes when its last stream is done.
func (c *dconn) finalGoAway() {
	c.phase = 2
	c.fr.WriteGoAway(c.lastID, http2.ErrCodeNo, nil)
	c.flush()
	if len(c.streams) == 0 {
		// Wake the connection goroutine from its read; it closes the
		// connection when it sees no stream left.
		c.raw.SetReadDeadline(time.Now())
	}
}

// encodeGRPCMessage percent-encodes a grpc-message value as gRPC requires.
func encodeGRPCMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg) && i < 1024; i++ {
		ch := msg[i]
		if ch >= ' ' && ch <= '~' && ch != '%' {
			b.WriteByte(ch)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[ch>>4])
			b.WriteByte(hex[ch&15])
		}
	}
	return b.String()
}

// The ExternalProcessor_ProcessServer methods besides Send. The handler
// never calls Recv on this transport (messages are pushed to it).

func (s *dstream) Recv() (*extprocv3.ProcessingRequest, error) {
	return nil, errors.New("extproc: Recv on the direct transport")
}
func (s *dstream) Context() context.Context     { return s.c.ctx }
func (s *dstream) SetHeader(metadata.MD) error  { return nil }
func (s *dstream) SendHeader(metadata.MD) error { return nil }
func (s *dstream) SetTrailer(metadata.MD)       {}
func (s *dstream) SendMsg(m any) error {
	r, ok := m.(*extprocv3.ProcessingResponse)
	if !ok {
		return fmt.Errorf("extproc: SendMsg of %T on the direct transport", m)
	}
	return s.Send(r)
}
func (s *dstream) RecvMsg(any) error { return errors.New("extproc: RecvMsg on the direct transport") }
