package extproc

// The lean floor: a benchmark-only prototype of a purpose-built HTTP/2 +
// gRPC transport for the one ext_proc method, serving exactly what the
// picker=none floor (floorServer on stock grpc-go) serves, with the same
// stock protobuf encoding, so that BenchmarkExtProc's picker=lean measures
// what the transport alone costs. It is not the product's server: no TLS,
// no health service, no graceful shutdown, no keepalive, no deadlines.
//
// One goroutine per connection reads frames and does everything inline:
// no goroutine per stream, no hand-offs. Replies are queued per stream and
// written (within the peer's flow-control windows) through one
// bufio.Writer, flushed only when no complete frame is left in the read
// buffer, i.e. right before a read would block.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const (
	leanMethod        = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
	leanMaxMsg        = 64 << 20 // largest gRPC message accepted (as the bench client's)
	leanMaxBuffered   = 64 << 20 // largest body a stream may accumulate before its echo
	leanMaxQueued     = 4 << 20  // queued output above which a stream's receive window is withheld
	leanMaxStreams    = 256      // concurrent streams per connection (advertised)
	leanStreamWindow  = 1 << 20  // receive window per stream (advertised)
	leanConnWindow    = 16 << 20 // receive window per connection
	leanMaxHeaderList = 64 << 10
	leanReadBuf       = 64 << 10
	leanWriteBuf      = 64 << 10
	leanDefaultWindow = 65535 // HTTP/2's initial window
	leanMaxWindow     = 1<<31 - 1
	leanMinFrame      = 16384
)

// serveLean serves the lean floor on ln until Accept fails (ln closed),
// then closes every connection and returns once they are all done.
func serveLean(ln net.Listener) error {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		mu.Lock()
		conns[nc] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			newLeanConn(nc).serve()
			nc.Close()
			mu.Lock()
			delete(conns, nc)
			mu.Unlock()
		}()
	}
}

type leanConn struct {
	nc    net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	fr    *http2.Framer
	hbuf  bytes.Buffer
	henc  *hpack.Encoder
	floor *floorServer

	streams map[uint32]*leanStream
	active  []*leanStream // streams with output or trailers to write
	lastID  uint32        // highest client stream ID seen

	// Sending (the peer's windows and settings).
	sendWindow   int64
	peerInitWin  int64
	peerMaxFrame int

	// Receiving (our windows).
	recvWindow  int64 // bytes the peer may still send on the connection
	recvUnacked int64 // consumed, not yet returned with WINDOW_UPDATE

	bufs [][]byte // free byte buffers for streams
}

type leanStream struct {
	conn        *leanConn
	id          uint32
	sendWindow  int64
	recvWindow  int64
	recvUnacked int64

	in     []byte   // partial incoming message (prefix included)
	out    []byte   // queued outgoing messages (prefixes included)
	outOff int      // bytes of out already written
	chunks [][]byte // the floor's request body chunks
	nbody  int

	sentHeaders bool
	halfClosed  bool // END_STREAM received from the client
	done        bool // the handler has returned: trailers follow the queued output
	isActive    bool // in leanConn.active
	closed      bool // trailers written or reset: forgotten
	code        codes.Code
	msg         string
}

func newLeanConn(nc net.Conn) *leanConn {
	c := &leanConn{
		nc:           nc,
		br:           bufio.NewReaderSize(nc, leanReadBuf),
		bw:           bufio.NewWriterSize(nc, leanWriteBuf),
		floor:        newFloorServer(),
		streams:      map[uint32]*leanStream{},
		sendWindow:   leanDefaultWindow,
		peerInitWin:  leanDefaultWindow,
		peerMaxFrame: leanMinFrame,
		recvWindow:   leanConnWindow,
	}
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = leanMaxHeaderList
	c.fr.SetMaxReadFrameSize(leanMinFrame) // the default we keep advertising
	c.fr.SetReuseFrames()
	return c
}

var errLeanGoAway = errors.New("lean: peer sent GOAWAY")

// serve runs the connection until an error or the peer's GOAWAY.
func (c *leanConn) serve() {
	var pre [len(http2.ClientPreface)]byte
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c.br, pre[:]); err != nil || string(pre[:]) != http2.ClientPreface {
		return
	}
	c.nc.SetReadDeadline(time.Time{})
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: leanMaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: leanStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: leanMaxHeaderList},
	)
	c.fr.WriteWindowUpdate(0, leanConnWindow-leanDefaultWindow)
	first := true
	for {
		if !c.frameBuffered() {
			c.drainAll()
			if c.bw.Flush() != nil {
				return
			}
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if s := c.streams[se.StreamID]; s != nil {
					c.release(s)
				}
				c.fr.WriteRSTStream(se.StreamID, se.Code)
				continue
			}
			c.goAway(err)
			return
		}
		if first {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.goAway(http2.ConnectionError(http2.ErrCodeProtocol))
				return
			}
			first = false
		}
		if err := c.frame(f); err != nil {
			if err != errLeanGoAway {
				c.goAway(err)
			}
			return
		}
	}
}

// goAway tells the peer why the connection ends, best effort.
func (c *leanConn) goAway(err error) {
	code := http2.ErrCodeProtocol
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		code = http2.ErrCode(ce)
	} else if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.fr.WriteGoAway(c.lastID, code, nil)
	c.bw.Flush()
}

// frameBuffered reports whether the read buffer holds a complete frame (one
// that ReadFrame returns without reading the connection). A HEADERS frame
// waiting for CONTINUATION counts as incomplete.
func (c *leanConn) frameBuffered() bool {
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

func (c *leanConn) frame(f http2.Frame) error {
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
	case *http2.WindowUpdateFrame:
		inc := int64(f.Increment)
		if f.StreamID == 0 {
			if c.sendWindow += inc; c.sendWindow > leanMaxWindow {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			return nil // drainAll before the next blocking read resumes the streams
		}
		if s := c.streams[f.StreamID]; s != nil {
			if s.sendWindow += inc; s.sendWindow > leanMaxWindow {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
		} else if f.StreamID > c.lastID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
	case *http2.RSTStreamFrame:
		if s := c.streams[f.StreamID]; s != nil {
			c.release(s)
		} else if f.StreamID > c.lastID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		return errLeanGoAway
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // PRIORITY, unknown frame types: ignored
}

func (c *leanConn) setting(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		return err
	}
	switch s.ID {
	case http2.SettingInitialWindowSize:
		delta := int64(s.Val) - c.peerInitWin
		c.peerInitWin = int64(s.Val)
		for _, st := range c.streams {
			if st.sendWindow += delta; st.sendWindow > leanMaxWindow {
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

func (c *leanConn) headersFrame(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if s := c.streams[id]; s != nil { // trailers from the client
		if !f.StreamEnded() || s.halfClosed {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.endOfInput(s)
		return nil
	}
	if id <= c.lastID {
		return nil // a stream we have closed: ignored
	}
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.lastID = id
	if len(c.streams) >= leanMaxStreams {
		return c.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
	}
	if f.PseudoValue("method") != "POST" || f.PseudoValue("path") != leanMethod {
		msg := "unknown method " + f.PseudoValue("path")
		if f.PseudoValue("method") != "POST" {
			msg = "unexpected HTTP method " + f.PseudoValue("method")
		}
		c.writeHeaders(id, true, ":status", "200", "content-type", "application/grpc",
			"grpc-status", strconv.Itoa(int(codes.Unimplemented)), "grpc-message", leanEncodeMsg(msg))
		if !f.StreamEnded() {
			c.fr.WriteRSTStream(id, http2.ErrCodeNo)
		}
		return nil
	}
	s := &leanStream{conn: c, id: id, sendWindow: c.peerInitWin, recvWindow: leanStreamWindow}
	s.in, s.out = c.getBuf(), c.getBuf()
	c.streams[id] = s
	if f.StreamEnded() {
		c.endOfInput(s)
	}
	return nil
}

func (c *leanConn) dataFrame(f *http2.DataFrame) error {
	n := int64(f.Length) // padding included, as flow control counts it
	if c.recvWindow -= n; c.recvWindow < 0 {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	if c.recvUnacked += n; c.recvUnacked >= leanConnWindow/2 {
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
		return http2.ConnectionError(http2.ErrCodeStreamClosed)
	}
	if s.recvWindow -= n; s.recvWindow < 0 {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
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
	return c.ackStream(s)
}

// ackStream returns consumed bytes to the stream's window once half of it
// is consumed, unless the stream's queued output is too large (the
// backpressure a blocking Send gives the stock server).
func (c *leanConn) ackStream(s *leanStream) error {
	if s.halfClosed || s.done || s.recvUnacked < leanStreamWindow/2 || len(s.out)-s.outOff > leanMaxQueued {
		return nil
	}
	if err := c.fr.WriteWindowUpdate(s.id, uint32(s.recvUnacked)); err != nil {
		return err
	}
	s.recvWindow += s.recvUnacked
	s.recvUnacked = 0
	return nil
}

// data reassembles gRPC messages from p (a DATA frame's payload, valid
// until the next read) and handles each complete one.
func (c *leanConn) data(s *leanStream, p []byte) {
	if len(s.in) > 0 {
		s.in = append(s.in, p...)
		p = s.in
	}
	off := 0
	for len(p)-off >= 5 {
		if p[off] != 0 {
			c.finish(s, codes.Internal, "grpc: compressed messages are not supported")
			return
		}
		n := int(binary.BigEndian.Uint32(p[off+1:]))
		if n > leanMaxMsg {
			c.finish(s, codes.ResourceExhausted, fmt.Sprintf("grpc: received message larger than max (%d vs. %d)", n, leanMaxMsg))
			return
		}
		if len(p)-off-5 < n {
			break
		}
		if !c.handle(s, p[off+5:off+5+n]) {
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

// handle is floorServer.Process for one message (floorServer.step, with
// the lean floor's limit on a buffered body): it returns false when the
// stream has ended.
func (c *leanConn) handle(s *leanStream, b []byte) bool {
	msg := new(extprocv3.ProcessingRequest) // as grpc-go's generated Recv
	if err := proto.Unmarshal(b, msg); err != nil {
		c.finish(s, codes.Internal, "grpc: failed to unmarshal the received message: "+err.Error())
		return false
	}
	if rb := msg.GetRequestBody(); rb != nil {
		if s.nbody += len(rb.Body); s.nbody > leanMaxBuffered {
			c.finish(s, codes.ResourceExhausted, "lean: request body too large")
			return false
		}
		s.chunks = append(s.chunks, rb.Body)
	}
	echoed, err := c.floor.step(msg, s.chunks, s)
	if echoed {
		clear(s.chunks)
		s.chunks, s.nbody = s.chunks[:0], 0
	}
	return err == nil
}

// errLeanEnded: the stream ended while the floor's step was sending.
var errLeanEnded = errors.New("lean: stream ended")

// Send makes a lean stream the floor's floorSender.
func (s *leanStream) Send(m *extprocv3.ProcessingResponse) error {
	if !s.conn.send(s, m) {
		return errLeanEnded
	}
	return nil
}

// send queues one message on the stream; drainAll writes it.
func (c *leanConn) send(s *leanStream, m *extprocv3.ProcessingResponse) bool {
	start := len(s.out)
	out, err := proto.MarshalOptions{}.MarshalAppend(append(s.out, 0, 0, 0, 0, 0), m)
	if err != nil {
		c.finish(s, codes.Internal, "grpc: error while marshaling: "+err.Error())
		return false
	}
	binary.BigEndian.PutUint32(out[start+1:], uint32(len(out)-start-5))
	s.out = out
	c.activate(s)
	return true
}

// endOfInput is the client's END_STREAM: the floor's Recv returns io.EOF
// and its handler returns nil.
func (c *leanConn) endOfInput(s *leanStream) {
	s.halfClosed = true
	if s.done {
		return
	}
	if len(s.in) > 0 {
		c.finish(s, codes.Internal, "grpc: the stream ended inside a message")
		return
	}
	c.finish(s, codes.OK, "")
}

// finish is the handler's return: trailers follow the queued output.
func (c *leanConn) finish(s *leanStream, code codes.Code, msg string) {
	s.done, s.code, s.msg = true, code, msg
	clear(s.chunks)
	s.chunks = nil
	c.activate(s)
}

func (c *leanConn) activate(s *leanStream) {
	if !s.isActive {
		s.isActive = true
		c.active = append(c.active, s)
	}
}

// drainAll writes what the active streams' windows allow.
func (c *leanConn) drainAll() {
	keep := c.active[:0]
	for _, s := range c.active {
		if !s.closed && !c.drain(s) {
			keep = append(keep, s)
			continue
		}
		s.isActive = false
	}
	clear(c.active[len(keep):])
	c.active = keep
}

// drain writes the stream's queued output, then its trailers once the
// handler is done. It returns true when nothing is left to write.
func (c *leanConn) drain(s *leanStream) bool {
	if s.outOff < len(s.out) && !s.sentHeaders {
		c.writeHeaders(s.id, false, ":status", "200", "content-type", "application/grpc")
		s.sentHeaders = true
	}
	for s.outOff < len(s.out) {
		n := int(min(int64(len(s.out)-s.outOff), int64(c.peerMaxFrame), c.sendWindow, s.sendWindow))
		if n <= 0 {
			return false
		}
		h := [9]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(http2.FrameData), 0}
		binary.BigEndian.PutUint32(h[5:], s.id)
		c.bw.Write(h[:])
		c.bw.Write(s.out[s.outOff : s.outOff+n])
		s.outOff += n
		c.sendWindow -= int64(n)
		s.sendWindow -= int64(n)
	}
	s.out, s.outOff = s.out[:0], 0
	c.ackStream(s)
	if !s.done {
		return true
	}
	code := strconv.Itoa(int(s.code))
	if !s.sentHeaders { // trailers-only
		if s.msg != "" {
			c.writeHeaders(s.id, true, ":status", "200", "content-type", "application/grpc", "grpc-status", code, "grpc-message", leanEncodeMsg(s.msg))
		} else {
			c.writeHeaders(s.id, true, ":status", "200", "content-type", "application/grpc", "grpc-status", code)
		}
	} else if s.msg != "" {
		c.writeHeaders(s.id, true, "grpc-status", code, "grpc-message", leanEncodeMsg(s.msg))
	} else {
		c.writeHeaders(s.id, true, "grpc-status", code)
	}
	if !s.halfClosed {
		c.fr.WriteRSTStream(s.id, http2.ErrCodeNo) // stop sending: the response is complete
	}
	c.release(s)
	return true
}

// release forgets the stream and keeps its buffers.
func (c *leanConn) release(s *leanStream) {
	if s.closed {
		return
	}
	s.closed = true
	delete(c.streams, s.id)
	c.putBuf(s.in)
	c.putBuf(s.out)
	s.in, s.out, s.chunks = nil, nil, nil
}

func (c *leanConn) getBuf() []byte {
	if n := len(c.bufs); n > 0 {
		b := c.bufs[n-1]
		c.bufs = c.bufs[:n-1]
		return b
	}
	return make([]byte, 0, 4096)
}

func (c *leanConn) putBuf(b []byte) {
	if cap(b) <= 1<<20 && len(c.bufs) < 64 {
		c.bufs = append(c.bufs, b[:0])
	}
}

// writeHeaders writes a header block (name, value pairs) as HEADERS and,
// if it exceeds the peer's frame size, CONTINUATION frames.
func (c *leanConn) writeHeaders(id uint32, endStream bool, kv ...string) {
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

// leanEncodeMsg percent-encodes a grpc-message value as gRPC requires.
func leanEncodeMsg(msg string) string {
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(msg) && i < 1024; i++ {
		ch := msg[i]
		if ch >= ' ' && ch <= '~' && ch != '%' {
			b = append(b, ch)
		} else {
			b = append(b, '%', hex[ch>>4], hex[ch&15])
		}
	}
	return string(b)
}

// leanTranscript runs one Envoy-like request (as envoyRequest, plus the
// response path when respBody is set) and returns every answer received.
func leanTranscript(ctx context.Context, c extprocv3.ExternalProcessorClient, i int, body []byte, respBody bool) ([]*extprocv3.ProcessingResponse, error) {
	s, err := c.Process(ctx)
	if err != nil {
		return nil, err
	}
	var got []*extprocv3.ProcessingResponse
	recv := func() error {
		r, err := s.Recv()
		if err == nil {
			got = append(got, r)
		}
		return err
	}
	if err := s.Send(reqHeadersMsg(postHeaders("/v1/chat/completions", len(body), "x-request-id", "req-"+strconv.Itoa(i)), false, duplex, nil)); err != nil {
		return nil, err
	}
	if err := sendBody(s, body, 16<<10); err != nil {
		return nil, err
	}
	if err := recv(); err != nil {
		return nil, err
	}
	for {
		if err := recv(); err != nil {
			return nil, err
		}
		sr := got[len(got)-1].GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		if sr == nil {
			return nil, errUnexpected(got[len(got)-1])
		}
		if sr.EndOfStream {
			break
		}
	}
	if respBody {
		if err := s.Send(respHeadersMsg(hdrs(":status", "200"), false)); err != nil {
			return nil, err
		}
		if err := recv(); err != nil {
			return nil, err
		}
		for k, part := range [][]byte{body[:len(body)/2], body[len(body)/2:]} {
			if err := s.Send(respBodyMsg(part, k == 1)); err != nil {
				return nil, err
			}
			if err := recv(); err != nil {
				return nil, err
			}
		}
		// Headers with end of stream: answered by the floor with its headers.
		if err := s.Send(reqHeadersMsg(hdrs(":method", "GET"), true, nil, nil)); err != nil {
			return nil, err
		}
		if err := recv(); err != nil {
			return nil, err
		}
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	if _, err := s.Recv(); err != io.EOF {
		return nil, fmt.Errorf("expected the stream to end, found %v", err)
	}
	return got, nil
}

// TestLeanFloor checks that the lean floor answers as the none floor does
// (stock grpc-go serving floorServer) to a real grpc-go client.
func TestLeanFloor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	dial := func(addr string) extprocv3.ExternalProcessorClient {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return extprocv3.NewExternalProcessorClient(conn)
	}

	lln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serveLean(lln) }()
	t.Cleanup(func() {
		lln.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Error("serveLean did not return")
		}
	})
	fln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(g, newFloorServer())
	go g.Serve(fln)
	t.Cleanup(g.Stop)

	lean, floor := dial(lln.Addr().String()), dial(fln.Addr().String())

	for _, size := range []int{2 << 10, 220 << 10} {
		bodies := benchBodies(12, size)
		run := func(c extprocv3.ExternalProcessorClient) [][]*extprocv3.ProcessingResponse {
			out := make([][]*extprocv3.ProcessingResponse, len(bodies))
			errs := make([]error, len(bodies))
			var wg sync.WaitGroup
			for i, body := range bodies { // all concurrent: 12 streams on one connection
				wg.Add(1)
				go func() {
					defer wg.Done()
					out[i], errs[i] = leanTranscript(ctx, c, i, body, i%3 == 0)
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("body %d B: %v", size, err)
			}
			return out
		}
		want, got := run(floor), run(lean)
		for i := range want {
			if len(got[i]) != len(want[i]) {
				t.Fatalf("body %d B, request %d: %d answers, the floor gives %d", size, i, len(got[i]), len(want[i]))
			}
			for k := range want[i] {
				if !proto.Equal(got[i][k], want[i][k]) {
					t.Fatalf("body %d B, request %d, answer %d:\n got %v\nwant %v", size, i, k, got[i][k], want[i][k])
				}
			}
		}
	}

	conn, err := grpc.NewClient(lln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.Invoke(ctx, "/envoy.service.ext_proc.v3.ExternalProcessor/Nope", &extprocv3.ProcessingRequest{}, &extprocv3.ProcessingResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: got %v, want code Unimplemented", err)
	}
	// The connection still serves after the rejected stream.
	if _, err := leanTranscript(ctx, extprocv3.NewExternalProcessorClient(conn), 0, benchBodies(1, 2<<10)[0], true); err != nil {
		t.Fatal(err)
	}
}
