package extproc

// Tests of the direct transport (direct.go) at the HTTP/2 and gRPC level,
// on loopback: a raw HTTP/2 client (x/net/http2's Framer and hpack) for what
// grpc-go cannot produce, and grpc-go clients for health and TLS.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// directEnv is a Server served by a Direct on a loopback listener.
type directEnv struct {
	pool *pool
	srv  *Server
	d    *Direct
	addr string

	served   chan struct{} // closed when Serve returns
	serveErr error
}

func startDirect(tb testing.TB, opts Options, do DirectOptions) *directEnv {
	tb.Helper()
	e := &directEnv{pool: newPool(tb, nil, 2), served: make(chan struct{})}
	var err error
	if e.srv, err = New(e.pool.sched, opts); err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	e.addr = ln.Addr().String()
	e.d = e.srv.NewDirect(do)
	go func() {
		e.serveErr = e.d.Serve(ln)
		close(e.served)
	}()
	tb.Cleanup(func() {
		e.d.Stop()
		if err, ok := e.waitServe(5 * time.Second); !ok {
			tb.Error("Serve did not return after Stop")
		} else if err != nil {
			tb.Errorf("Serve returned %v, want nil", err)
		}
	})
	return e
}

// waitServe waits up to d for Serve to return.
func (e *directEnv) waitServe(d time.Duration) (error, bool) {
	select {
	case <-e.served:
		return e.serveErr, true
	case <-time.After(d):
		return nil, false
	}
}

func (e *directEnv) grpcConn(tb testing.TB, creds credentials.TransportCredentials) *grpc.ClientConn {
	tb.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// h2w writes HTTP/2 frames (the client's side): to a connection, or to a
// buffer for the fuzz seeds.
type h2w struct {
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func newH2W(w io.Writer) *h2w {
	h := &h2w{fr: http2.NewFramer(w, nil)}
	h.fr.AllowIllegalWrites = true // the tests write broken frames on purpose
	h.henc = hpack.NewEncoder(&h.hbuf)
	return h
}

// headers writes a header block (name, value pairs) as HEADERS and
// CONTINUATION frames of at most 16 KiB.
func (h *h2w) headers(id uint32, end bool, kv ...string) error {
	h.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		h.henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	block := h.hbuf.Bytes()
	n := min(len(block), minFrame)
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:n], EndStream: end, EndHeaders: n == len(block)}); err != nil {
		return err
	}
	for block = block[n:]; len(block) > 0; block = block[n:] {
		n = min(len(block), minFrame)
		if err := h.fr.WriteContinuation(id, n == len(block), block[:n]); err != nil {
			return err
		}
	}
	return nil
}

// call opens a gRPC call to path; extra replaces or adds headers.
func (h *h2w) call(id uint32, path string, extra ...string) error {
	kv := []string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "epp", "content-type", "application/grpc", "te", "trailers"}
	for i := 0; i+1 < len(extra); i += 2 {
		found := false
		for k := 0; k < len(kv); k += 2 {
			if kv[k] == extra[i] {
				kv[k+1], found = extra[i+1], true
			}
		}
		if !found {
			kv = append(kv, extra[i], extra[i+1])
		}
	}
	return h.headers(id, false, kv...)
}

// data writes p as DATA frames of at most 16 KiB (one empty frame for an
// empty p), the last with END_STREAM when end.
func (h *h2w) data(id uint32, end bool, p []byte) error {
	for {
		n := min(len(p), minFrame)
		if err := h.fr.WriteData(id, end && n == len(p), p[:n]); err != nil {
			return err
		}
		if p = p[n:]; len(p) == 0 {
			return nil
		}
	}
}

func grpcMsg(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return appendMessage(nil, b)
}

// rframe is a copy of a frame the raw client received; err ends the stream
// of frames.
type rframe struct {
	typ      http2.FrameType
	flags    http2.Flags
	stream   uint32
	length   uint32
	data     []byte // DATA payload, PING data, GOAWAY debug data
	fields   []hpack.HeaderField
	code     http2.ErrCode // RST_STREAM, GOAWAY
	last     uint32        // GOAWAY
	inc      uint32        // WINDOW_UPDATE
	settings []http2.Setting
	err      error
}

func (f rframe) end() bool {
	return (f.typ == http2.FrameData || f.typ == http2.FrameHeaders) && f.flags.Has(http2.FlagDataEndStream)
}

func copyFrame(f http2.Frame) rframe {
	h := f.Header()
	r := rframe{typ: h.Type, flags: h.Flags, stream: h.StreamID, length: h.Length}
	switch f := f.(type) {
	case *http2.DataFrame:
		r.data = bytes.Clone(f.Data())
	case *http2.MetaHeadersFrame:
		r.fields = append([]hpack.HeaderField(nil), f.Fields...)
	case *http2.RSTStreamFrame:
		r.code = f.ErrCode
	case *http2.GoAwayFrame:
		r.code, r.last, r.data = f.ErrCode, f.LastStreamID, bytes.Clone(f.DebugData())
	case *http2.WindowUpdateFrame:
		r.inc = f.Increment
	case *http2.PingFrame:
		r.data = bytes.Clone(f.Data[:])
	case *http2.SettingsFrame:
		f.ForeachSetting(func(s http2.Setting) error { r.settings = append(r.settings, s); return nil })
	}
	return r
}

// rawConn is a raw HTTP/2 client connection. A goroutine reads frames into
// frames; the test goroutine writes and consumes them.
type rawConn struct {
	tb testing.TB
	nc net.Conn
	*h2w
	frames  chan rframe
	pending []rframe
	quit    chan struct{}

	srvSettings map[http2.SettingID]uint32
	srvConnInc  uint32 // the server's WINDOW_UPDATE on stream 0 at the handshake
	// Send windows the server gave: maintained from WINDOW_UPDATE frames
	// that next returns.
	sendConn   int64
	sendStream map[uint32]int64
	autoWindow bool // collect returns received DATA bytes to the server at once
	goaways    []rframe
}

// dialRaw connects to addr and does the HTTP/2 handshake with settings.
func dialRaw(tb testing.TB, addr string, settings ...http2.Setting) *rawConn {
	tb.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	table := uint32(4096)
	for _, s := range settings {
		if s.ID == http2.SettingHeaderTableSize {
			table = s.Val
		}
	}
	rc := newRawTable(tb, nc, table)
	rc.handshake(settings...)
	return rc
}

// newRaw starts reading nc; nothing is written yet.
func newRaw(tb testing.TB, nc net.Conn) *rawConn { return newRawTable(tb, nc, 4096) }

// newRawTable is newRaw with an HPACK decoder that allows a dynamic table
// of at most table bytes (the client's SETTINGS_HEADER_TABLE_SIZE).
func newRawTable(tb testing.TB, nc net.Conn, table uint32) *rawConn {
	rc := &rawConn{tb: tb, nc: nc, h2w: newH2W(nc), frames: make(chan rframe, 256), quit: make(chan struct{}),
		sendConn: defaultWindow, sendStream: map[uint32]int64{}, autoWindow: true, srvSettings: map[http2.SettingID]uint32{}}
	fr := http2.NewFramer(nil, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(table, nil)
	fr.MaxHeaderListSize = 1 << 20
	go func() {
		defer close(rc.frames)
		for {
			f, err := fr.ReadFrame()
			var r rframe
			if err != nil {
				r = rframe{err: err}
			} else {
				r = copyFrame(f)
			}
			select {
			case rc.frames <- r:
			case <-rc.quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	tb.Cleanup(rc.close)
	return rc
}

func (rc *rawConn) close() {
	select {
	case <-rc.quit:
	default:
		close(rc.quit)
		rc.nc.Close()
	}
}

// handshake writes the preface and SETTINGS, and reads the server's
// SETTINGS (acknowledged), its connection WINDOW_UPDATE and its ack of ours.
func (rc *rawConn) handshake(settings ...http2.Setting) {
	rc.tb.Helper()
	if _, err := io.WriteString(rc.nc, http2.ClientPreface); err != nil {
		rc.tb.Fatal(err)
	}
	if err := rc.fr.WriteSettings(settings...); err != nil {
		rc.tb.Fatal(err)
	}
	gotSettings, gotAck := false, false
	for !gotSettings || !gotAck || rc.srvConnInc == 0 {
		f := rc.must(5 * time.Second)
		switch {
		case f.typ == http2.FrameSettings && f.flags.Has(http2.FlagSettingsAck):
			gotAck = true
		case f.typ == http2.FrameSettings:
			if gotSettings {
				rc.tb.Fatal("handshake: a second SETTINGS frame")
			}
			gotSettings = true
			for _, s := range f.settings {
				rc.srvSettings[s.ID] = s.Val
			}
			if err := rc.fr.WriteSettingsAck(); err != nil {
				rc.tb.Fatal(err)
			}
		case f.typ == http2.FrameWindowUpdate && f.stream == 0:
			rc.srvConnInc = f.inc
		default:
			rc.tb.Fatalf("handshake: unexpected frame %+v", f)
		}
	}
}

// next returns the next frame, or false after d without one. A read error
// is returned as a frame with err. WINDOW_UPDATE frames update the send
// windows.
func (rc *rawConn) next(d time.Duration) (rframe, bool) {
	if len(rc.pending) > 0 {
		f := rc.pending[0]
		rc.pending = rc.pending[1:]
		return f, true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case f, ok := <-rc.frames:
		if !ok {
			return rframe{err: net.ErrClosed}, true
		}
		if f.typ == http2.FrameWindowUpdate {
			if f.stream == 0 {
				rc.sendConn += int64(f.inc)
			} else {
				rc.sendStream[f.stream] += int64(f.inc)
			}
		}
		return f, true
	case <-t.C:
		return rframe{}, false
	}
}

// must is next within d, failing the test on a timeout or a read error.
func (rc *rawConn) must(d time.Duration) rframe {
	rc.tb.Helper()
	f, ok := rc.next(d)
	if !ok {
		rc.tb.Fatalf("no frame from the server within %v", d)
	}
	if f.err != nil {
		rc.tb.Fatalf("reading a frame: %v", f.err)
	}
	return f
}

// open starts a stream: its send window is the server's initial window.
func (rc *rawConn) open(id uint32, path string, extra ...string) {
	rc.tb.Helper()
	rc.sendStream[id] += int64(rc.srvSettings[http2.SettingInitialWindowSize])
	if err := rc.call(id, path, extra...); err != nil {
		rc.tb.Fatal(err)
	}
}

// send writes p on stream id within the server's windows, waiting for
// WINDOW_UPDATEs when they are used up (other frames read meanwhile are
// kept for next).
func (rc *rawConn) send(id uint32, end bool, p []byte) {
	rc.tb.Helper()
	for {
		n := min(len(p), minFrame)
		for int64(n) > rc.sendConn || int64(n) > rc.sendStream[id] {
			f := rc.must(5 * time.Second)
			if f.typ != http2.FrameWindowUpdate {
				rc.pending = append(rc.pending, f)
			}
		}
		rc.sendConn -= int64(n)
		rc.sendStream[id] -= int64(n)
		if err := rc.fr.WriteData(id, end && n == len(p), p[:n]); err != nil {
			rc.tb.Fatal(err)
		}
		if p = p[n:]; len(p) == 0 {
			return
		}
	}
}

func (rc *rawConn) sendMsg(id uint32, end bool, m proto.Message) {
	rc.tb.Helper()
	rc.send(id, end, grpcMsg(rc.tb, m))
}

// rawResult is what a stream received.
type rawResult struct {
	hdr, trl map[string]string // the first and (if any) the second header block
	data     []byte
	reset    bool
	rst      http2.ErrCode
	ended    bool // END_STREAM or RST_STREAM
}

func fieldMap(fs []hpack.HeaderField) map[string]string {
	m := map[string]string{}
	for _, f := range fs {
		m[f.Name] = f.Value
	}
	return m
}

// grpcStatus is the call's grpc-status (from the trailers, or the
// trailers-only header block); "" when there is none.
func (r *rawResult) grpcStatus() string {
	if r.trl != nil {
		return r.trl["grpc-status"]
	}
	return r.hdr["grpc-status"]
}

// responses decodes the gRPC messages received.
func (r *rawResult) responses(tb testing.TB) []*extprocv3.ProcessingResponse {
	tb.Helper()
	var out []*extprocv3.ProcessingResponse
	p := r.data
	for len(p) >= 5 {
		n := int(binary.BigEndian.Uint32(p[1:]))
		if p[0] != 0 || len(p) < 5+n {
			break
		}
		m := new(extprocv3.ProcessingResponse)
		if err := proto.Unmarshal(p[5:5+n], m); err != nil {
			tb.Fatalf("decoding a response: %v", err)
		}
		out = append(out, m)
		p = p[5+n:]
	}
	return out
}

// collect reads stream id's frames until it ends, or until stop (when not
// nil) holds. It acknowledges SETTINGS and PING, records GOAWAY and, with
// autoWindow, gives back received DATA bytes at once.
func (rc *rawConn) collect(id uint32, stop func(*rawResult) bool) *rawResult {
	rc.tb.Helper()
	r := &rawResult{}
	for !r.ended && (stop == nil || !stop(r)) {
		f := rc.must(5 * time.Second)
		switch f.typ {
		case http2.FrameSettings:
			if !f.flags.Has(http2.FlagSettingsAck) {
				rc.fr.WriteSettingsAck()
			}
		case http2.FramePing:
			if !f.flags.Has(http2.FlagPingAck) {
				rc.fr.WritePing(true, [8]byte(f.data))
			}
		case http2.FrameGoAway:
			rc.goaways = append(rc.goaways, f)
		case http2.FrameData:
			if rc.autoWindow && f.length > 0 {
				rc.fr.WriteWindowUpdate(0, f.length)
				if !f.end() {
					rc.fr.WriteWindowUpdate(f.stream, f.length)
				}
			}
			if f.stream == id {
				r.data = append(r.data, f.data...)
			}
		case http2.FrameHeaders:
			if f.stream == id {
				if r.hdr == nil {
					r.hdr = fieldMap(f.fields)
				} else if r.trl == nil {
					r.trl = fieldMap(f.fields)
				} else {
					rc.tb.Fatalf("stream %d: a third header block %v", id, f.fields)
				}
			}
		case http2.FrameRSTStream:
			if f.stream == id {
				r.reset, r.rst, r.ended = true, f.code, true
			}
		}
		if f.stream == id && f.end() {
			r.ended = true
		}
	}
	return r
}

// directBody is a small request body the pool can pick for.
var directBody = []byte(`{"model":"m","prompt":"hello"}`)

// roundTrip runs a whole FULL_DUPLEX_STREAMED request on stream id and
// checks its answers: the headers answer, the echoed body, grpc-status 0.
func (rc *rawConn) roundTrip(id uint32) {
	rc.tb.Helper()
	rc.open(id, processMethod)
	rc.sendMsg(id, false, reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil))
	rc.sendMsg(id, true, reqBodyMsg(directBody, true))
	r := rc.collect(id, nil)
	if r.reset || r.hdr[":status"] != "200" || r.grpcStatus() != "0" {
		rc.tb.Fatalf("stream %d: headers %v, trailers %v, reset %v (%v): expected :status 200 and grpc-status 0", id, r.hdr, r.trl, r.reset, r.rst)
	}
	rs := r.responses(rc.tb)
	if len(rs) < 2 || rs[0].GetRequestHeaders() == nil {
		rc.tb.Fatalf("stream %d: answers %v: expected the headers answer and the echoed body", id, rs)
	}
	var echo []byte
	for _, m := range rs[1:] {
		echo = append(echo, m.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetBody()...)
	}
	if !bytes.Equal(echo, directBody) {
		rc.tb.Fatalf("stream %d: echoed %q, want %q", id, echo, directBody)
	}
}

// expectClosed waits up to d for the server to close the connection; the
// frames read meanwhile are returned.
func (rc *rawConn) expectClosed(d time.Duration) []rframe {
	rc.tb.Helper()
	var got []rframe
	deadline := time.Now().Add(d)
	for {
		f, ok := rc.next(time.Until(deadline))
		if !ok {
			rc.tb.Fatalf("the server did not close the connection within %v (frames %+v)", d, got)
		}
		if f.err != nil {
			return got
		}
		got = append(got, f)
	}
}

// waitIdle polls until the server has no open stream and the pool no
// in-flight request.
func (e *directEnv) waitIdle(tb testing.TB) {
	tb.Helper()
	waitIdle(tb, e.srv, e.pool)
}

func TestDirectHandshake(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{})
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"settings", func(t *testing.T) {
			rc := dialRaw(t, e.addr) // checks the SETTINGS, its ack and the window update
			want := map[http2.SettingID]uint32{
				http2.SettingMaxConcurrentStreams: directMaxStreams,
				http2.SettingInitialWindowSize:    directStreamWindow,
				http2.SettingMaxHeaderListSize:    directMaxHeaderList,
			}
			for id, v := range want {
				if rc.srvSettings[id] != v {
					t.Errorf("setting %v = %d, want %d", id, rc.srvSettings[id], v)
				}
			}
			if rc.srvConnInc != directConnWindow-defaultWindow {
				t.Errorf("connection window update %d, want %d", rc.srvConnInc, directConnWindow-defaultWindow)
			}
			rc.roundTrip(1)
		}},
		{"ping", func(t *testing.T) {
			rc := dialRaw(t, e.addr)
			for _, p := range [][8]byte{{1, 2, 3, 4, 5, 6, 7, 8}, {'p', 'i', 'n', 'g'}} {
				rc.fr.WritePing(false, p)
				f := rc.must(5 * time.Second)
				if f.typ != http2.FramePing || !f.flags.Has(http2.FlagPingAck) || !bytes.Equal(f.data, p[:]) {
					t.Fatalf("PING %v answered with %+v: expected a PING ack with the same payload", p, f)
				}
			}
		}},
		{"bad preface", func(t *testing.T) {
			nc, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			io.WriteString(nc, "GET / HTTP/1.1\r\nHost: epp\r\n\r\n")
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := nc.Read(make([]byte, 100))
			if n != 0 || err != io.EOF {
				t.Fatalf("after a bad preface: read %d bytes, %v: expected the server to close the connection", n, err)
			}
		}},
		{"first frame not SETTINGS", func(t *testing.T) {
			nc, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			rc := newRaw(t, nc)
			io.WriteString(nc, http2.ClientPreface)
			rc.fr.WritePing(false, [8]byte{})
			var goAway *rframe
			for _, f := range rc.expectClosed(5 * time.Second) {
				if f.typ == http2.FrameGoAway {
					goAway = &f
				}
			}
			if goAway == nil || goAway.code != http2.ErrCodeProtocol {
				t.Fatalf("GOAWAY %+v: expected PROTOCOL_ERROR", goAway)
			}
		}},
	} {
		t.Run(tc.name, tc.run)
	}
	e.waitIdle(t)
}

// TestDirectRefusals: calls the transport refuses end with the right status,
// and the connection goes on serving.
func TestDirectRefusals(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{MaxRecvMsgSize: 1024})
	big := grpcMsg(t, reqBodyMsg(bytes.Repeat([]byte("x"), 2000), true))
	compressed := grpcMsg(t, reqHeadersMsg(postHeaders("/v1/completions", 10), false, duplex, nil))
	compressed[0] = 1
	for _, tc := range []struct {
		name   string
		extra  []string // headers
		path   string
		data   []byte // a DATA frame after the headers
		status string
		code   codes.Code
	}{
		{name: "unknown method", path: "/envoy.service.ext_proc.v3.ExternalProcessor/Nope", status: "200", code: codes.Unimplemented},
		{name: "unknown service", path: "/x.Y/Z", status: "200", code: codes.Unimplemented},
		{name: "GET", extra: []string{":method", "GET"}, status: "405", code: codes.Internal},
		{name: "content-type", extra: []string{"content-type", "application/json"}, status: "415", code: codes.Internal},
		{name: "no content-type", extra: []string{"content-type", ""}, status: "415", code: codes.Internal},
		{name: "grpc-encoding gzip", extra: []string{"grpc-encoding", "gzip"}, status: "200", code: codes.Unimplemented},
		{name: "compressed message", data: compressed, status: "200", code: codes.Internal},
		{name: "message over MaxRecvMsgSize", data: big, status: "200", code: codes.ResourceExhausted},
		{name: "health without a health server", path: healthCheck, status: "200", code: codes.Unimplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, e.addr)
			path := tc.path
			if path == "" {
				path = processMethod
			}
			rc.open(1, path, tc.extra...)
			if tc.data != nil {
				rc.send(1, false, tc.data)
			} else {
				// What a client sends before it sees the refusal: ignored.
				rc.send(1, false, grpcMsg(t, reqHeadersMsg(postHeaders("/v1/completions", 10), false, duplex, nil)))
			}
			r := rc.collect(1, nil)
			if r.reset {
				t.Fatalf("stream reset (%v) before its status", r.rst)
			}
			if r.hdr[":status"] != tc.status || r.grpcStatus() != strconv.Itoa(int(tc.code)) || r.hdr["content-type"] != "application/grpc" {
				t.Fatalf("headers %v, trailers %v: expected :status %s and grpc-status %d (%v)", r.hdr, r.trl, tc.status, tc.code, tc.code)
			}
			if len(r.responses(t)) != 0 {
				t.Errorf("answers on a refused call: %v", r.responses(t))
			}
			rc.roundTrip(3)
			rc.roundTrip(5)
			e.waitIdle(t)
		})
	}
}

// TestDirectNilHealthServer: a nil *health.Server in DirectOptions.Health
// (an interface holding a nil pointer) serves no health, as a nil Health
// does: Check is answered Unimplemented, and the connection goes on.
func TestDirectNilHealthServer(t *testing.T) {
	var hs *health.Server
	e := startDirect(t, Options{}, DirectOptions{Health: hs})
	_, err := healthpb.NewHealthClient(e.grpcConn(t, nil)).Check(testCtx(t), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Check with a nil *health.Server: %v, want Unimplemented", err)
	}
	rc := dialRaw(t, e.addr)
	rc.roundTrip(1)
	e.waitIdle(t)
}

// TestDirectHealthRefusals: a health Check the transport refuses (a second
// message, a message over the limit, a stream ending inside a message) gets
// its status and no data: the request bytes kept for the Check are never
// sent back.
func TestDirectHealthRefusals(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{Health: health.NewServer()})
	req := grpcMsg(t, &healthpb.HealthCheckRequest{Service: "svc"})
	big := grpcMsg(t, &healthpb.HealthCheckRequest{Service: strings.Repeat("s", 2000)})
	for _, tc := range []struct {
		name string
		data []byte
		code codes.Code
	}{
		{"two messages", append(append([]byte{}, req...), req...), codes.Internal},
		{"message over the limit", big, codes.ResourceExhausted},
		{"ends inside a message", req[:len(req)-2], codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, e.addr)
			rc.open(1, healthCheck)
			rc.send(1, true, tc.data)
			r := rc.collect(1, nil)
			if r.reset || r.grpcStatus() != strconv.Itoa(int(tc.code)) {
				t.Fatalf("trailers %v, reset %v: expected grpc-status %d (%v)", r.trl, r.reset, tc.code, tc.code)
			}
			if len(r.data) != 0 {
				t.Fatalf("%d bytes of data on a refused Check: %q", len(r.data), r.data)
			}
			rc.roundTrip(3)
		})
	}
}

// TestDirectCancel: a stream the proxy resets, or whose connection drops,
// ends: nothing stays open or in flight.
func TestDirectCancel(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{})
	for _, tc := range []struct {
		name   string
		picked bool // the request was picked before the cancel
		drop   bool // the connection drops instead of RST_STREAM
	}{
		{"reset after the pick", true, false},
		{"reset mid body", false, false},
		{"connection dropped after the pick", true, true},
		{"connection dropped mid body", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, e.addr)
			body := chatBody("m", strings.Repeat("x", 3000))
			rc.open(1, processMethod)
			rc.sendMsg(1, false, reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, duplex, nil))
			if tc.picked {
				rc.sendMsg(1, false, reqBodyMsg(body, true))
				r := rc.collect(1, func(r *rawResult) bool { return len(r.responses(t)) > 0 })
				if r.ended || r.responses(t)[0].GetRequestHeaders() == nil {
					t.Fatalf("expected the headers answer, found %v (ended %v)", r.responses(t), r.ended)
				}
				if n := e.pool.inflight(); n != 1 {
					t.Fatalf("in flight %d after the pick, want 1", n)
				}
			} else {
				rc.sendMsg(1, false, reqBodyMsg(body[:1000], false))
				waitFor(t, "the stream is open", func() bool { return e.srv.Open() == 1 })
			}
			if tc.drop {
				rc.close()
			} else {
				rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			}
			e.waitIdle(t)
			if !tc.drop {
				rc.roundTrip(3)
				e.waitIdle(t)
			}
		})
	}
}

// TestDirectIdleTimeout: the idle timer's 408 is written while the
// connection goroutine waits in its read: the client sends nothing after
// its last message and still gets it.
func TestDirectIdleTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	e := startDirect(t, Options{RequestIdleTimeout: idle}, DirectOptions{})
	body := chatBody("m", strings.Repeat("p", 3000))
	for _, tc := range []struct {
		name string
		msgs []*extprocv3.ProcessingRequest
	}{
		{"BUFFERED: headers, then nothing", []*extprocv3.ProcessingRequest{
			reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, protocol(filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_NONE), nil)}},
		{"FULL_DUPLEX: part of the body, then nothing", []*extprocv3.ProcessingRequest{
			reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, duplex, nil), reqBodyMsg(body[:1000], false)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, e.addr)
			rc.autoWindow = false // nothing at all is sent after the request
			rc.open(1, processMethod)
			for _, m := range tc.msgs {
				rc.sendMsg(1, false, m)
			}
			sent := time.Now()
			r := rc.collect(1, func(r *rawResult) bool {
				rs := r.responses(t)
				return len(rs) > 0 && rs[len(rs)-1].GetImmediateResponse() != nil
			})
			waited := time.Since(sent)
			rs := r.responses(t)
			if r.ended || len(rs) == 0 {
				t.Fatalf("stream ended (reset %v %v, trailers %v) before the 408", r.reset, r.rst, r.trl)
			}
			ir := rs[len(rs)-1].GetImmediateResponse()
			if ir.GetStatus().GetCode() != 408 {
				t.Fatalf("answered %v, want 408", ir)
			}
			if waited < idle {
				t.Errorf("408 after %v, before the idle timeout %v", waited, idle)
			}
			// The proxy closes its side after an ImmediateResponse.
			rc.send(1, true, nil)
			r = rc.collect(1, nil)
			if r.reset || r.grpcStatus() != "0" {
				t.Fatalf("after END_STREAM: trailers %v, reset %v: expected grpc-status 0", r.trl, r.reset)
			}
			e.waitIdle(t)
		})
	}
}

// TestDirectFlowControl: the server sends within the client's (small)
// windows and completes a large echo as the client grants window bit by bit.
func TestDirectFlowControl(t *testing.T) {
	const streamWin, connGrant = 1024, 4096
	e := startDirect(t, Options{}, DirectOptions{})
	rc := dialRaw(t, e.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWin})
	body := chatBody("m", strings.Repeat("y", 220<<10))
	rc.open(1, processMethod)
	rc.sendMsg(1, false, reqHeadersMsg(postHeaders("/v1/chat/completions", len(body)), false, duplex, nil))
	for off := 0; off < len(body); off += 16 << 10 {
		end := min(off+16<<10, len(body))
		rc.sendMsg(1, end == len(body), reqBodyMsg(body[off:end], end == len(body)))
	}
	var (
		connGranted, streamGranted int64 = defaultWindow, streamWin
		connGot, streamGot         int64
		res                        rawResult
		grants                     int
	)
	for !res.ended {
		f := rc.must(5 * time.Second)
		switch f.typ {
		case http2.FrameData:
			if f.stream != 1 {
				t.Fatalf("DATA on stream %d", f.stream)
			}
			if f.length > minFrame {
				t.Fatalf("DATA frame of %d bytes, over the default max frame size", f.length)
			}
			connGot += int64(f.length)
			streamGot += int64(f.length)
			if connGot > connGranted || streamGot > streamGranted {
				t.Fatalf("the server sent %d bytes on the connection (window %d) and %d on the stream (window %d)", connGot, connGranted, streamGot, streamGranted)
			}
			res.data = append(res.data, f.data...)
			if connGot == connGranted {
				rc.fr.WriteWindowUpdate(0, connGrant)
				connGranted += connGrant
				grants++
			}
			if streamGot == streamGranted {
				rc.fr.WriteWindowUpdate(1, streamWin)
				streamGranted += streamWin
				grants++
			}
		case http2.FrameHeaders:
			if res.hdr == nil {
				res.hdr = fieldMap(f.fields)
			} else {
				res.trl = fieldMap(f.fields)
			}
		case http2.FrameRSTStream:
			t.Fatalf("stream reset: %v", f.code)
		}
		res.ended = f.end()
	}
	if res.grpcStatus() != "0" {
		t.Fatalf("trailers %v: want grpc-status 0", res.trl)
	}
	var echo []byte
	rs := res.responses(t)
	for _, m := range rs[1:] {
		echo = append(echo, m.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetBody()...)
	}
	if rs[0].GetRequestHeaders() == nil || !bytes.Equal(echo, body) {
		t.Fatalf("headers answer %v, echo of %d bytes: want the headers answer and the %d-byte body", rs[0], len(echo), len(body))
	}
	if grants < 100 {
		t.Errorf("only %d window grants: the windows did not limit the server", grants)
	}
	e.waitIdle(t)
}

// TestDirectReceiveWindow: the server withholds its stream receive window
// while the stream's queued output is large, and DATA beyond the window it
// gave is a flow-control error.
func TestDirectReceiveWindow(t *testing.T) {
	e := startDirect(t, Options{MaxBodyBytes: 16 << 20}, DirectOptions{})
	// A zero initial window: the server can queue its echo but not send it.
	rc := dialRaw(t, e.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	if rc.srvConnInc+defaultWindow != directConnWindow {
		t.Fatalf("connection window %d", rc.srvConnInc+defaultWindow)
	}
	body := []byte(`{"model":"m","prompt":"` + strings.Repeat("z", 5<<20) + `"}`)
	rc.open(1, processMethod)
	rc.sendMsg(1, false, reqHeadersMsg(postHeaders("/v1/completions", len(body)), false, duplex, nil))
	for off := 0; off < len(body); off += 64 << 10 {
		end := min(off+64<<10, len(body))
		rc.sendMsg(1, false, reqBodyMsg(body[off:end], end == len(body)))
	}
	// The response headers come once the echo is queued; every
	// WINDOW_UPDATE the server wrote before them is counted.
	for {
		f := rc.must(5 * time.Second)
		if f.typ == http2.FrameHeaders && f.stream == 1 {
			break
		}
		if f.typ == http2.FrameData || f.typ == http2.FrameRSTStream {
			t.Fatalf("unexpected frame %+v", f)
		}
	}
	left := rc.sendStream[1]
	if left <= 5 || left > directStreamWindow {
		t.Fatalf("stream window left %d", left)
	}
	// A message larger than what is left: the window is used up exactly.
	partial := make([]byte, left)
	binary.BigEndian.PutUint32(partial[1:], 4<<20)
	rc.send(1, false, partial)
	if f, ok := rc.next(300 * time.Millisecond); ok {
		t.Fatalf("expected nothing (the window withheld), found %+v", f)
	}
	// One byte beyond the window.
	rc.fr.WriteData(1, false, []byte{'z'})
	r := rc.collect(1, nil)
	if !r.reset || r.rst != http2.ErrCodeFlowControl {
		t.Fatalf("after DATA beyond the window: reset %v %v, want RST_STREAM FLOW_CONTROL_ERROR", r.reset, r.rst)
	}
	e.waitIdle(t)
	// The connection still serves, once the client opens its window.
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: defaultWindow})
	rc.roundTrip(3)
	e.waitIdle(t)
}

// TestDirectGracefulStop: GracefulStop's two GOAWAYs (the second after the
// PING's answer, or after directPhase2 without one), an open stream that
// still completes, and a stream opened after the final GOAWAY refused.
func TestDirectGracefulStop(t *testing.T) {
	for _, ack := range []bool{true, false} {
		t.Run("ping answered "+strconv.FormatBool(ack), func(t *testing.T) { testGracefulStop(t, ack) })
	}
}

func testGracefulStop(t *testing.T, ackPing bool) {
	e := startDirect(t, Options{}, DirectOptions{})
	rc := dialRaw(t, e.addr)
	rc.open(1, processMethod)
	rc.sendMsg(1, false, reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil))
	rc.sendMsg(1, false, reqBodyMsg(directBody, true))
	r := rc.collect(1, func(r *rawResult) bool { return len(r.responses(t)) >= 2 })
	if r.ended {
		t.Fatalf("stream ended early: %v %v", r.trl, r.rst)
	}
	stopped := make(chan struct{})
	go func() {
		e.d.GracefulStop()
		close(stopped)
	}()
	f := rc.must(5 * time.Second)
	if f.typ != http2.FrameGoAway || f.last != maxWindow || f.code != http2.ErrCodeNo {
		t.Fatalf("first frame after GracefulStop %+v: expected GOAWAY with stream ID 2^31-1", f)
	}
	f = rc.must(5 * time.Second)
	if f.typ != http2.FramePing || f.flags.Has(http2.FlagPingAck) {
		t.Fatalf("expected a PING after the first GOAWAY, found %+v", f)
	}
	pinged := time.Now()
	if ackPing {
		rc.fr.WritePing(true, [8]byte(f.data))
	}
	f = rc.must(5 * time.Second)
	if waited := time.Since(pinged); !ackPing && waited < directPhase2/2 {
		t.Errorf("final GOAWAY %v after the unanswered PING, expected about %v", waited, directPhase2)
	}
	if f.typ != http2.FrameGoAway || f.last != 1 || f.code != http2.ErrCodeNo {
		t.Fatalf("expected the final GOAWAY with last stream 1, found %+v", f)
	}
	// A stream opened after the final GOAWAY is refused.
	rc.open(3, processMethod)
	r3 := rc.collect(3, nil)
	if !r3.reset || r3.rst != http2.ErrCodeRefusedStream {
		t.Fatalf("stream 3: reset %v %v, headers %v: want REFUSED_STREAM", r3.reset, r3.rst, r3.hdr)
	}
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with a stream open")
	case <-time.After(50 * time.Millisecond):
	}
	// The open stream completes.
	rc.send(1, true, nil)
	r = rc.collect(1, nil)
	if r.reset || r.grpcStatus() != "0" {
		t.Fatalf("stream 1: trailers %v, reset %v %v: want grpc-status 0", r.trl, r.reset, r.rst)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop did not return after the last stream")
	}
	if err, ok := e.waitServe(5 * time.Second); !ok || err != nil {
		t.Fatalf("Serve: %v, returned %v: want nil", err, ok)
	}
	rc.expectClosed(5 * time.Second)
	e.waitIdle(t)
	if _, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		t.Error("the listener still accepts after GracefulStop")
	}
}

// TestDirectStop: Stop ends open streams at once.
func TestDirectStop(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{})
	rc := dialRaw(t, e.addr)
	rc.open(1, processMethod)
	rc.sendMsg(1, false, reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil))
	rc.sendMsg(1, false, reqBodyMsg(directBody, true))
	rc.collect(1, func(r *rawResult) bool { return len(r.responses(t)) >= 1 })
	idle := dialRaw(t, e.addr) // a connection without a stream
	if e.pool.inflight() != 1 || e.srv.Open() != 1 {
		t.Fatalf("in flight %d, open %d: want 1, 1", e.pool.inflight(), e.srv.Open())
	}
	stopped := make(chan struct{})
	go func() {
		e.d.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return")
	}
	if e.srv.Open() != 0 || e.pool.inflight() != 0 {
		t.Errorf("after Stop: open %d, in flight %d: want 0", e.srv.Open(), e.pool.inflight())
	}
	if err, ok := e.waitServe(5 * time.Second); !ok || err != nil {
		t.Fatalf("Serve: %v, returned %v: want nil", err, ok)
	}
	rc.expectClosed(5 * time.Second)
	idle.expectClosed(5 * time.Second)
}

// TestDirectHealth: grpc.health.v1 Check through a grpc-go client.
func TestDirectHealth(t *testing.T) {
	hs := health.NewServer()
	hs.SetServingStatus("epp", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		health  healthpb.HealthServer
		service string
		watch   bool
	}{
		{name: "serving", health: hs, service: "epp"},
		{name: "not serving", health: hs, service: "down"},
		{name: "overall", health: hs, service: ""},
		{name: "unknown service", health: hs, service: "nope"},
		{name: "watch", health: hs, service: "epp", watch: true},
		{name: "no health server", service: "epp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startDirect(t, Options{}, DirectOptions{Health: tc.health})
			conn := e.grpcConn(t, nil)
			hc := healthpb.NewHealthClient(conn)
			req := &healthpb.HealthCheckRequest{Service: tc.service}
			if tc.watch {
				w, err := hc.Watch(ctx, req)
				if err == nil {
					_, err = w.Recv()
				}
				if status.Code(err) != codes.Unimplemented {
					t.Fatalf("Watch: %v, want Unimplemented", err)
				}
			} else {
				got, err := hc.Check(ctx, req)
				var want *healthpb.HealthCheckResponse
				var wantErr error
				if tc.health != nil {
					want, wantErr = tc.health.Check(ctx, req)
				} else {
					wantErr = status.Error(codes.Unimplemented, "")
				}
				if status.Code(err) != status.Code(wantErr) || (wantErr != nil && status.Convert(wantErr).Message() != "" && status.Convert(err).Message() != status.Convert(wantErr).Message()) {
					t.Fatalf("Check(%q): %v, want %v", tc.service, err, wantErr)
				}
				if want != nil && got.GetStatus() != want.GetStatus() {
					t.Fatalf("Check(%q) = %v, want %v", tc.service, got.GetStatus(), want.GetStatus())
				}
			}
			// The ext_proc service on the same connection.
			if _, err := echoTranscript(ctx, extprocv3.NewExternalProcessorClient(conn), 0, chatBody("m", "hi"), false); err != nil {
				t.Fatal(err)
			}
			e.waitIdle(t)
		})
	}
}

// selfSignedCert makes a certificate for localhost and 127.0.0.1, and a
// pool that trusts it.
func selfSignedCert(tb testing.TB) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "epp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}

// TestDirectTLS: ext_proc over TLS with a grpc-go client; ALPN negotiates
// h2, a client without ALPN is served, one offering only a protocol the
// server does not speak fails the handshake.
func TestDirectTLS(t *testing.T) {
	cert, roots := selfSignedCert(t)
	e := startDirect(t, Options{}, DirectOptions{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t.Run("grpc-go", func(t *testing.T) {
		conn := e.grpcConn(t, credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost"}))
		got, err := echoTranscript(ctx, extprocv3.NewExternalProcessorClient(conn), 0, chatBody("m", "hello"), true)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) < 2 || got[0].GetRequestHeaders() == nil {
			t.Fatalf("answers %v", got)
		}
	})
	for _, tc := range []struct {
		name  string
		alpn  []string
		proto string // negotiated; "-" for a failed handshake
		h1    bool   // speak HTTP/1.1: the server closes at the preface
	}{
		{"h2", []string{"h2", "http/1.1"}, "h2", false},
		{"no ALPN", nil, "", false},
		// crypto/tls lets an http/1.1-only client in as if it had no
		// ALPN (go.dev/issue/46310); its request is not a preface.
		{"http/1.1 only", []string{"http/1.1"}, "", true},
		{"unknown protocol only", []string{"spdy/3"}, "-", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &net.Dialer{Timeout: 5 * time.Second}
			tc2, err := tls.DialWithDialer(d, "tcp", e.addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: tc.alpn})
			if tc.proto == "-" {
				if err == nil {
					tc2.Close()
					t.Fatal("a client offering only an unknown protocol passed the handshake")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tc2.Close()
			if p := tc2.ConnectionState().NegotiatedProtocol; p != tc.proto {
				t.Fatalf("negotiated %q, want %q", p, tc.proto)
			}
			if tc.h1 {
				io.WriteString(tc2, "GET / HTTP/1.1\r\nHost: epp\r\n\r\n")
				tc2.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := tc2.Read(make([]byte, 100)); n != 0 || err != io.EOF {
					t.Fatalf("HTTP/1.1 request: read %d bytes, %v: expected the server to close the connection", n, err)
				}
				return
			}
			rc := newRaw(t, tc2)
			rc.handshake()
			rc.roundTrip(1)
		})
	}
	e.waitIdle(t)
}

// TestDirectHeaderListTooLarge: a header list over 64 KiB is refused with
// 431, and the connection goes on serving (the HPACK state stays in sync).
// That holds when the list goes over the limit in its last frame; a list
// that is still going on in CONTINUATION frames after the limit closes the
// connection (x/net/http2's Framer: the CONTINUATION flood defence), as a
// single field over the limit does (hpack's string length limit).
func TestDirectHeaderListTooLarge(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{})
	big := func(n, size int) []string {
		var kv []string
		for i := range n {
			kv = append(kv, "x-big-"+strconv.Itoa(i), strings.Repeat("v", size))
		}
		return kv
	}
	for _, tc := range []struct {
		name   string
		extra  []string
		closed bool
	}{
		{"just over the limit", big(16, 4<<10), false}, // 16 fields of 4 KiB + 40 B: ~66 KB, over in the last frame
		{"far over the limit", big(40, 4<<10), true},
		{"one field over the limit", big(1, 70<<10), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, e.addr)
			rc.roundTrip(1)
			rc.open(3, processMethod, tc.extra...)
			if tc.closed {
				var goAway *rframe
				for _, f := range rc.expectClosed(5 * time.Second) {
					if f.typ == http2.FrameGoAway {
						goAway = &f
					}
				}
				if goAway == nil || goAway.code == http2.ErrCodeNo || goAway.last != 1 {
					t.Fatalf("GOAWAY %+v: expected an error code and last stream 1", goAway)
				}
				e.waitIdle(t)
				return
			}
			r := rc.collect(3, nil)
			if r.hdr[":status"] != "431" || r.grpcStatus() != strconv.Itoa(int(codes.Internal)) {
				t.Fatalf("headers %v, reset %v %v: want :status 431 and grpc-status Internal", r.hdr, r.reset, r.rst)
			}
			rc.roundTrip(5)
			e.waitIdle(t)
		})
	}
}

// directSeeds are client transcripts (the frames after the preface and
// SETTINGS) for FuzzDirectFrames: a whole request, a BUFFERED one, a
// refused call, a reset, a health check and control frames.
func directSeeds(tb testing.TB) [][]byte {
	msg := func(m proto.Message) []byte { return grpcMsg(tb, m) }
	buffered := protocol(filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_BUFFERED)
	var seeds [][]byte
	for _, script := range []func(h *h2w){
		func(h *h2w) { // a whole FULL_DUPLEX_STREAMED request
			h.call(1, processMethod)
			h.data(1, false, msg(reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil)))
			h.data(1, true, msg(reqBodyMsg(directBody, true)))
		},
		func(h *h2w) { // BUFFERED, the response too, in one DATA frame
			h.call(1, processMethod)
			b := msg(reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, buffered, nil))
			b = append(b, msg(reqBodyMsg(directBody, true))...)
			b = append(b, msg(respHeadersMsg(hdrs(":status", "200"), false))...)
			b = append(b, msg(respBodyMsg([]byte("{}"), true))...)
			h.data(1, true, b)
		},
		func(h *h2w) { // picked, then reset; a second stream refused
			h.call(1, processMethod)
			h.data(1, false, msg(reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil)))
			h.data(1, false, msg(reqBodyMsg(directBody, true)))
			h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			h.call(3, "/x.Y/Z")
			h.data(3, true, nil)
		},
		func(h *h2w) { // headers split over CONTINUATION, a health check
			h.call(1, processMethod, "x-pad", strings.Repeat("p", 20000))
			h.data(1, false, msg(reqHeadersMsg(postHeaders("/v1/completions", 5), false, duplex, nil)))
			h.call(3, healthCheck)
			h.data(3, true, msg(&healthpb.HealthCheckRequest{Service: "epp"}))
		},
		func(h *h2w) { // a message split over DATA frames, then trailers
			h.call(1, processMethod)
			b := append(msg(reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil)), msg(reqBodyMsg(directBody, true))...)
			for len(b) > 0 {
				n := min(len(b), 7)
				h.data(1, false, b[:n])
				b = b[n:]
			}
			h.headers(1, true, "x-trailer", "t")
		},
		func(h *h2w) { // control frames
			h.fr.WritePing(false, [8]byte{1})
			h.fr.WriteWindowUpdate(0, 1000)
			h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 20000})
			h.fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 10})
			h.call(1, processMethod)
			h.fr.WriteWindowUpdate(1, 100)
			h.data(1, true, msg(reqHeadersMsg(postHeaders("/v1/completions", 0), true, nil, nil)))
			h.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
		},
	} {
		var b bytes.Buffer
		script(newH2W(&b))
		seeds = append(seeds, b.Bytes())
	}
	return seeds
}

// reframe makes b a sequence of whole frames: each 9-byte header's length
// is cut to the bytes that follow it (a trailing partial header is dropped).
func reframe(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for len(b) >= 9 {
		n := min(int(b[0])<<16|int(b[1])<<8|int(b[2]), len(b)-9)
		h := [9]byte{byte(n >> 16), byte(n >> 8), byte(n)}
		copy(h[3:], b[3:9])
		out = append(append(out, h[:]...), b[9:9+n]...)
		b = b[9+n:]
	}
	return out
}

// FuzzDirectFrames writes arbitrary frames to a Direct server after a
// valid preface and SETTINGS. The server must not panic, must answer a
// final PING or close the connection within a bounded time, and must leave
// no stream open and nothing in flight once the client is gone.
func FuzzDirectFrames(f *testing.F) {
	for _, s := range directSeeds(f) {
		f.Add(s)
	}
	e := startDirect(f, Options{RequestIdleTimeout: time.Second}, DirectOptions{Health: health.NewServer(), MaxRecvMsgSize: 64 << 10})
	done := [8]byte{'f', 'u', 'z', 'z', 'd', 'o', 'n', 'e'}
	f.Fuzz(func(t *testing.T, in []byte) {
		nc, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rc := newRaw(t, nc)
		var b bytes.Buffer
		b.WriteString(http2.ClientPreface)
		w := newH2W(&b)
		w.fr.WriteSettings()
		b.Write(reframe(in))
		w.fr.WritePing(false, done)
		nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		go nc.Write(b.Bytes()) // the server may stop reading: the write must not block the test
		deadline := time.Now().Add(5 * time.Second)
	read:
		for {
			fr, ok := rc.next(time.Until(deadline))
			switch {
			case !ok:
				t.Fatal("the server neither answered the PING nor closed the connection within 5s")
			case fr.err != nil:
				break read // closed
			case fr.typ == http2.FramePing && fr.flags.Has(http2.FlagPingAck) && bytes.Equal(fr.data, done[:]):
				break read // everything before the PING was handled
			}
		}
		rc.close()
		waitIdle(t, e.srv, e.pool)
	})
}

// TestDirectGracefulStopStuckPeer: a peer that stops reading while the
// server writes to it must not keep GracefulStop from telling the other
// connections to go away.
func TestDirectGracefulStopStuckPeer(t *testing.T) {
	e := startDirect(t, Options{MaxBodyBytes: 32 << 20}, DirectOptions{})
	// The stuck connection first: it opens its windows, asks for a large
	// echo and stops reading. (Accepted first, it is likely not the last
	// connection GracefulStop goes through.)
	stuck := dialRaw(t, e.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow})
	// Healthy connections, each with a picked stream open.
	var healthy []*rawConn
	for range 3 {
		rc := dialRaw(t, e.addr)
		rc.open(1, processMethod)
		rc.sendMsg(1, false, reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil))
		rc.sendMsg(1, false, reqBodyMsg(directBody, true))
		rc.collect(1, func(r *rawResult) bool { return len(r.responses(t)) >= 2 })
		healthy = append(healthy, rc)
	}
	stuck.fr.WriteWindowUpdate(0, maxWindow-defaultWindow)
	body := []byte(`{"model":"m","prompt":"` + strings.Repeat("s", 24<<20) + `"}`)
	stuck.open(1, processMethod)
	stuck.sendMsg(1, false, reqHeadersMsg(postHeaders("/v1/completions", len(body)), false, duplex, nil))
	for off := 0; off < len(body); off += 1 << 20 {
		end := min(off+1<<20, len(body))
		stuck.sendMsg(1, false, reqBodyMsg(body[off:end], end == len(body)))
	}
	// Wait until the server is stuck in a write: a connection's lock held
	// for 300ms straight.
	held := map[*dconn]int{}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server never blocked writing to the stuck peer")
		}
		e.d.mu.Lock()
		stuckFor := 0
		for c := range e.d.conns {
			if c.mu.TryLock() {
				c.mu.Unlock()
				held[c] = 0
			} else {
				held[c]++
			}
			stuckFor = max(stuckFor, held[c])
		}
		e.d.mu.Unlock()
		if stuckFor >= 60 {
			break
		}
	}
	stopped := make(chan struct{})
	go func() {
		e.d.GracefulStop()
		close(stopped)
	}()
	for i, rc := range healthy {
		f := rc.must(5 * time.Second)
		if f.typ != http2.FrameGoAway {
			t.Fatalf("connection %d: expected GOAWAY, found %+v", i, f)
		}
	}
	e.d.Stop()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop did not return after Stop")
	}
}

// TestDirectStreamEnds: the ways a client ends its side of a call.
func TestDirectStreamEnds(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{})
	hm := func(t *testing.T) []byte {
		return grpcMsg(t, reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil))
	}
	for _, tc := range []struct {
		name   string
		script func(t *testing.T, rc *rawConn)
		code   codes.Code
		rst    http2.ErrCode // a reset expected instead of a status
	}{
		{"END_STREAM on the HEADERS", func(t *testing.T, rc *rawConn) {
			rc.headers(1, true, ":method", "POST", ":scheme", "http", ":path", processMethod, ":authority", "epp", "content-type", "application/grpc")
		}, codes.OK, 0},
		{"an empty DATA with END_STREAM", func(t *testing.T, rc *rawConn) {
			rc.open(1, processMethod)
			rc.send(1, false, hm(t))
			rc.send(1, true, nil)
		}, codes.OK, 0},
		{"trailers", func(t *testing.T, rc *rawConn) {
			rc.open(1, processMethod)
			rc.send(1, false, hm(t))
			rc.headers(1, true, "x-trailer", "t")
		}, codes.OK, 0},
		{"END_STREAM inside a message", func(t *testing.T, rc *rawConn) {
			rc.open(1, processMethod)
			m := hm(t)
			rc.send(1, true, m[:len(m)-3])
		}, codes.Internal, 0},
		{"message split over frames", func(t *testing.T, rc *rawConn) {
			rc.open(1, processMethod)
			b := append(hm(t), grpcMsg(t, reqBodyMsg(directBody, true))...)
			for i := range b { // one byte per frame
				rc.send(1, i == len(b)-1, b[i:i+1])
			}
		}, codes.OK, 0},
		{"DATA after END_STREAM", func(t *testing.T, rc *rawConn) {
			// A zero window keeps the ended call's answers queued, so the
			// stream is still open (half closed) when the DATA comes.
			rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			rc.open(1, processMethod)
			rc.send(1, false, hm(t))
			rc.sendMsg(1, true, reqBodyMsg(directBody, true))
			rc.fr.WriteData(1, false, hm(t))
			rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: defaultWindow})
		}, 0, http2.ErrCodeStreamClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, e.addr)
			tc.script(t, rc)
			r := rc.collect(1, nil)
			if tc.rst != 0 {
				if !r.reset || r.rst != tc.rst {
					t.Fatalf("reset %v %v, trailers %v: want RST_STREAM %v", r.reset, r.rst, r.trl, tc.rst)
				}
			} else if r.reset || r.grpcStatus() != strconv.Itoa(int(tc.code)) {
				t.Fatalf("headers %v, trailers %v, reset %v %v: want grpc-status %d", r.hdr, r.trl, r.reset, r.rst, tc.code)
			}
			e.waitIdle(t)
			rc.roundTrip(3)
			e.waitIdle(t)
		})
	}
}

// TestDirectProtocolErrors: frames that break HTTP/2's rules end the
// connection (GOAWAY with the error) or the stream (RST_STREAM), and leave
// nothing open.
func TestDirectProtocolErrors(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{})
	open := func(t *testing.T, rc *rawConn) { // a stream with its request headers, not picked yet
		rc.open(1, processMethod)
		rc.sendMsg(1, false, reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil))
		waitFor(t, "the stream is open", func() bool { return e.srv.Open() == 1 })
	}
	for _, tc := range []struct {
		name   string
		script func(t *testing.T, rc *rawConn)
		goAway http2.ErrCode // connection error expected, or
		rst    http2.ErrCode // stream 1 reset expected (0 with goAway 0: the connection goes on)
		silent bool          // the server closes without GOAWAY
	}{
		{name: "connection window overflow", script: func(t *testing.T, rc *rawConn) {
			rc.fr.WriteWindowUpdate(0, maxWindow)
		}, goAway: http2.ErrCodeFlowControl},
		{name: "stream window overflow", script: func(t *testing.T, rc *rawConn) {
			open(t, rc)
			rc.fr.WriteWindowUpdate(1, maxWindow)
		}, rst: http2.ErrCodeFlowControl},
		{name: "initial window too large", script: func(t *testing.T, rc *rawConn) {
			rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, goAway: http2.ErrCodeFlowControl},
		{name: "initial window overflows a stream", script: func(t *testing.T, rc *rawConn) {
			open(t, rc)
			rc.fr.WriteWindowUpdate(1, maxWindow-defaultWindow)
			rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow})
		}, goAway: http2.ErrCodeFlowControl},
		{name: "stream window update of 0", script: func(t *testing.T, rc *rawConn) {
			open(t, rc)
			rc.fr.WriteWindowUpdate(1, 0)
		}, rst: http2.ErrCodeProtocol},
		{name: "even stream ID", script: func(t *testing.T, rc *rawConn) {
			rc.call(2, processMethod)
		}, goAway: http2.ErrCodeProtocol},
		{name: "DATA on an idle stream", script: func(t *testing.T, rc *rawConn) {
			rc.fr.WriteData(7, false, []byte{0, 0, 0, 0, 0})
		}, goAway: http2.ErrCodeProtocol},
		{name: "RST_STREAM on an idle stream", script: func(t *testing.T, rc *rawConn) {
			rc.fr.WriteRSTStream(7, http2.ErrCodeCancel)
		}, goAway: http2.ErrCodeProtocol},
		{name: "WINDOW_UPDATE on an idle stream", script: func(t *testing.T, rc *rawConn) {
			rc.fr.WriteWindowUpdate(7, 10)
		}, goAway: http2.ErrCodeProtocol},
		{name: "PUSH_PROMISE", script: func(t *testing.T, rc *rawConn) {
			open(t, rc)
			rc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, goAway: http2.ErrCodeProtocol},
		{name: "HEADERS without their CONTINUATION", script: func(t *testing.T, rc *rawConn) {
			rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x83}})
			rc.fr.WritePing(false, [8]byte{})
		}, goAway: http2.ErrCodeProtocol},
		{name: "client GOAWAY with an error", script: func(t *testing.T, rc *rawConn) {
			open(t, rc)
			rc.fr.WriteGoAway(0, http2.ErrCodeInternal, nil)
		}, silent: true},
		{name: "request without :scheme", script: func(t *testing.T, rc *rawConn) {
			rc.headers(1, false, ":method", "POST", ":path", processMethod, ":authority", "epp", "content-type", "application/grpc")
		}, rst: http2.ErrCodeProtocol},
		{name: "connection-specific header", script: func(t *testing.T, rc *rawConn) {
			rc.call(1, processMethod, "connection", "keep-alive")
		}, rst: http2.ErrCodeProtocol},
		{name: "te other than trailers", script: func(t *testing.T, rc *rawConn) {
			rc.call(1, processMethod, "te", "gzip")
		}, rst: http2.ErrCodeProtocol},
		{name: "invalid header name, then DATA on that stream", script: func(t *testing.T, rc *rawConn) {
			rc.call(1, processMethod, "X-Upper", "1") // HTTP/2 field names are lowercase
			rc.fr.WriteData(1, false, grpcMsg(t, reqHeadersMsg(postHeaders("/v1/completions", 10), false, duplex, nil)))
		}, rst: http2.ErrCodeProtocol},
		{name: "pseudo-header in trailers", script: func(t *testing.T, rc *rawConn) {
			open(t, rc)
			rc.headers(1, true, ":path", "/x")
		}, rst: http2.ErrCodeProtocol},
		{name: "frames on a reset stream are ignored", script: func(t *testing.T, rc *rawConn) {
			open(t, rc)
			rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			rc.fr.WriteData(1, false, []byte{0, 0, 0, 0, 0})
			rc.fr.WriteWindowUpdate(1, 10)
			rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			rc.fr.WritePriority(1, http2.PriorityParam{Weight: 1})
			rc.fr.WriteRawFrame(0x20, 0, 1, []byte("an unknown frame type"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, e.addr)
			tc.script(t, rc)
			switch {
			case tc.goAway != 0 || tc.silent:
				var goAway *rframe
				for _, f := range rc.expectClosed(5 * time.Second) {
					if f.typ == http2.FrameGoAway {
						goAway = &f
					}
				}
				if tc.silent && goAway != nil {
					t.Errorf("GOAWAY %+v in answer to the client's GOAWAY", goAway)
				}
				if !tc.silent && (goAway == nil || goAway.code != tc.goAway) {
					t.Fatalf("GOAWAY %+v: want %v", goAway, tc.goAway)
				}
			case tc.rst != 0:
				r := rc.collect(1, nil)
				if !r.reset || r.rst != tc.rst {
					t.Fatalf("stream 1: reset %v %v, trailers %v: want RST_STREAM %v", r.reset, r.rst, r.trl, tc.rst)
				}
				rc.roundTrip(3)
			default:
				rc.roundTrip(3)
			}
			e.waitIdle(t)
		})
	}
}

// TestDirectClientGoAway: a client's GOAWAY without an error means it
// opens no more streams (Envoy drains a connection this way): the stream it
// has open is still served to its end, then the server closes the
// connection without a GOAWAY of its own.
func TestDirectClientGoAway(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{})
	rc := dialRaw(t, e.addr)
	rc.open(1, processMethod)
	rc.sendMsg(1, false, reqHeadersMsg(postHeaders("/v1/completions", len(directBody)), false, duplex, nil))
	waitFor(t, "the stream is open", func() bool { return e.srv.Open() == 1 })
	if err := rc.fr.WriteGoAway(0, http2.ErrCodeNo, nil); err != nil {
		t.Fatal(err)
	}
	rc.sendMsg(1, true, reqBodyMsg(directBody, true))
	r := rc.collect(1, nil)
	if r.reset || r.grpcStatus() != "0" || len(r.responses(t)) < 2 {
		t.Fatalf("stream 1 after the client's GOAWAY: trailers %v, reset %v: expected the request served and grpc-status 0", r.trl, r.reset)
	}
	for _, f := range rc.expectClosed(5 * time.Second) {
		if f.typ == http2.FrameGoAway {
			t.Errorf("GOAWAY %+v in answer to the client's GOAWAY", f)
		}
	}
	e.waitIdle(t)
}

// TestDirectHeaderTable: the server's HPACK encoder keeps to the client's
// SETTINGS_HEADER_TABLE_SIZE (0: no dynamic table), over several calls.
func TestDirectHeaderTable(t *testing.T) {
	e := startDirect(t, Options{}, DirectOptions{})
	for _, size := range []uint32{0, 64, 4096} {
		t.Run(strconv.Itoa(int(size)), func(t *testing.T) {
			rc := dialRaw(t, e.addr, http2.Setting{ID: http2.SettingHeaderTableSize, Val: size})
			for id := uint32(1); id < 8; id += 2 {
				rc.roundTrip(id)
			}
			e.waitIdle(t)
		})
	}
}

// TestDirectMaxStreams: a stream over the advertised
// SETTINGS_MAX_CONCURRENT_STREAMS is refused (REFUSED_STREAM, for the
// proxy to retry), and the connection goes on serving.
func TestDirectMaxStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 16K streams")
	}
	e := startDirect(t, Options{}, DirectOptions{})
	rc := dialRaw(t, e.addr)
	id := uint32(1)
	for range directMaxStreams {
		rc.call(id, processMethod)
		id += 2
	}
	rc.call(id, processMethod)
	r := rc.collect(id, nil)
	if !r.reset || r.rst != http2.ErrCodeRefusedStream {
		t.Fatalf("stream %d: reset %v %v, headers %v: want REFUSED_STREAM", id, r.reset, r.rst, r.hdr)
	}
	if n := e.srv.Open(); n != directMaxStreams {
		t.Fatalf("%d streams open, want %d", n, directMaxStreams)
	}
	for s := uint32(1); s < id; s += 2 {
		rc.fr.WriteRSTStream(s, http2.ErrCodeCancel)
	}
	e.waitIdle(t)
	rc.roundTrip(id + 2)
}

// echoTranscript runs one Envoy-like FULL_DUPLEX_STREAMED request (as
// envoyRequest, plus the response path when respBody is set) through a
// grpc-go client and returns every answer received.
func echoTranscript(ctx context.Context, c extprocv3.ExternalProcessorClient, i int, body []byte, respBody bool) ([]*extprocv3.ProcessingResponse, error) {
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
