package main

// Two cases where extproc.Direct (--extproc-transport direct) first
// departed from grpc-go in a way that lost requests, kept as regression
// tests. Each test runs on both transports.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/fastepp/fastepp/config"
	"github.com/fastepp/fastepp/extproc"
	"github.com/fastepp/fastepp/scheduler"
)

// TestTransportClientGoAway: a client's GOAWAY (HTTP/2's "I will open no
// more streams", which Go's http2.ClientConn.Shutdown sends before waiting
// for its open streams) must not end the streams already open. grpc-go
// ignores it and serves them; Direct first closed the connection, and the
// open stream was lost.
func TestTransportClientGoAway(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			a, _, _, eps, _ := startPair(t, transport, "--secure-serving=false")
			c := dialH2C(t, a.grpc)
			c.headers(1, "/envoy.service.ext_proc.v3.ExternalProcessor/Process")
			c.message(1, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
				Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/v1/completions")}, {Key: ":method", RawValue: []byte("POST")}}}}}}, false)
			if err := c.fr.WriteGoAway(0, http2.ErrCodeNo, nil); err != nil { // no more streams from us; stream 1 goes on
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
			c.message(1, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{
				Body: []byte(`{"model":"m","prompt":"after goaway"}`), EndOfStream: true}}}, true)
			first, grpcStatus, err := c.answer(1)
			if err != nil {
				t.Fatalf("the stream open when the client sent GOAWAY got no answer: %v", err)
			}
			dest := destHeader(first)
			if dest != eps[0] || grpcStatus != "0" {
				t.Errorf("after the client's GOAWAY: routed to %q, grpc-status %q; want %s and 0", dest, grpcStatus, eps[0])
			}
		})
	}
}

// TestTransportAcceptEMFILE: an Accept that fails with EMFILE (the process
// is out of file descriptors, a transient state under a connection surge)
// must not stop the server. grpc-go's Serve backs off and accepts again
// (the error is Temporary), and so must Direct.Serve: wiring.go ends serve
// on the first Serve error, so an Accept error returned exits epp with 1.
func TestTransportAcceptEMFILE(t *testing.T) {
	plan, err := config.DefaultPlan()
	if err != nil {
		t.Fatal(err)
	}
	xp, err := extproc.New(scheduler.New(plan), extproc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fl := &flakyListener{Listener: ln, fail: 1}
			var srv extprocServer
			if transport == transportDirect {
				srv = xp.NewDirect(extproc.DirectOptions{})
			} else {
				g := grpc.NewServer(extproc.GRPCServerOptions(0)...)
				xp.Register(g)
				srv = g
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(fl) }()
			defer func() {
				srv.Stop()
				<-served
			}()
			// An answer (503: the pool is empty) means it still accepts.
			conn := dialExtproc(t, ln.Addr().String(), false)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st := sendRequest(t, ctx, conn, `{"model":"m","prompt":"x"}`)
			select {
			case err := <-served:
				t.Fatalf("Serve returned %v after one EMFILE from Accept", err)
			default:
			}
			if r, err := st.Recv(); err != nil {
				t.Fatalf("no answer after one EMFILE from Accept: %v", err)
			} else if r.GetImmediateResponse() == nil {
				t.Fatalf("answer %v, want an ImmediateResponse (no endpoints)", r)
			}
		})
	}
}

// flakyListener fails its first fail Accepts with EMFILE, as accept(2)
// does when the process has no file descriptor left.
type flakyListener struct {
	net.Listener
	fail int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fail > 0 {
		l.fail--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// h2c is a bare HTTP/2 client (prior knowledge, no TLS) that writes frames
// as the test says, for behaviour a grpc-go client never shows.
type h2c struct {
	t    *testing.T
	conn net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func dialH2C(t *testing.T, addr string) *h2c {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := &h2c{t: t, conn: conn, fr: http2.NewFramer(conn, conn)}
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// headers opens stream id as a gRPC call of path.
func (c *h2c) headers(id uint32, path string) {
	c.t.Helper()
	c.hbuf.Reset()
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "epp"},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		c.henc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// message sends m as one gRPC message on stream id.
func (c *h2c) message(id uint32, m proto.Message, end bool) {
	c.t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		c.t.Fatal(err)
	}
	p := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(p[1:], uint32(len(b)))
	if err := c.fr.WriteData(id, end, append(p, b...)); err != nil {
		c.t.Fatal(err)
	}
}

// answer reads until stream id's trailers and returns its first message and
// grpc-status; an error when the connection or the stream ends before.
func (c *h2c) answer(id uint32) (*extprocv3.ProcessingResponse, string, error) {
	var data []byte
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, "", err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.fr.WritePing(true, f.Data)
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				data = append(data, f.Data()...)
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return nil, "", errors.New("stream reset: " + f.ErrCode.String())
			}
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo {
				return nil, "", errors.New("GOAWAY " + f.ErrCode.String())
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != id || !f.StreamEnded() {
				continue
			}
			code := ""
			for _, hf := range f.RegularFields() {
				if hf.Name == "grpc-status" {
					code = hf.Value
				}
			}
			if len(data) < 5 {
				return nil, code, errors.New("trailers without a message, grpc-status " + code)
			}
			r := new(extprocv3.ProcessingResponse)
			if err := proto.Unmarshal(data[5:5+binary.BigEndian.Uint32(data[1:])], r); err != nil {
				return nil, code, err
			}
			return r, code, nil
		}
	}
}
