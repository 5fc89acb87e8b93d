package extproc

import (
	"sync"
	"sync/atomic"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The ext_proc wire path without protobuf reflection (see GRPCServerOptions
// and Register): a gRPC codec that decodes each ProcessingRequest into the
// stream's own pooled message tree (wireReq) and encodes the replies the
// server sends by hand, into pooled buffers. Anything it does not handle
// exactly (fields the server never reads or writes, malformed input) goes to
// proto.Unmarshal / proto.Marshal, so the result is always what protobuf
// would give (TestWireDecodeMatchesProto, FuzzWireDecode, TestWireEncode*).

// codec is the server's grpc encoding.CodecV2: wireReq and
// ProcessingResponse take the fast paths, every other message (gRPC health
// on the same listener) the stock proto codec.
type codec struct{}

var stockCodec = encoding.GetCodecV2(grpcproto.Name)

// Name is "proto": the codec speaks protobuf, it only skips reflection.
func (codec) Name() string { return grpcproto.Name }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*extprocv3.ProcessingResponse); ok {
		if n := sizeResponse(m); n >= 0 {
			return marshalPooled(m, n), nil
		}
	}
	return stockCodec.Marshal(v)
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	if w, ok := v.(*wireReq); ok {
		return w.decode(data)
	}
	return stockCodec.Unmarshal(data, v)
}

// outMsg carries one marshalled reply: a pooled buffer and the one-element
// BufferSlice that hands it to grpc, so that a send allocates nothing of
// ours. It is the buffer's BufferPool: when grpc's transport and SendMsg
// have both released the buffer, Put returns the bytes to outBufs and the
// carrier to outMsgs.
type outMsg struct {
	slice [1]mem.Buffer
}

var outMsgs = sync.Pool{New: func() any { return new(outMsg) }}

// Get is never called (mem.NewBuffer only calls Put); it is here to satisfy
// mem.BufferPool.
func (o *outMsg) Get(n int) *[]byte { return getOutBuf(n) }

func (o *outMsg) Put(b *[]byte) {
	putOutBuf(b)
	o.slice[0] = nil
	outMsgs.Put(o)
}

// outBufs pools reply buffers by power-of-two capacity, 2 KiB to 4 MiB.
// Unlike grpc's default pool it does not zero a buffer it hands out: the
// encoder writes every byte of the length it asks for (zeroing a 32 KiB
// echo buffer was 6% of the server's CPU with 220 KB bodies).
var outBufs [outTiers]sync.Pool

const (
	outMinShift = 11 // 2 KiB: above grpc's pooling threshold (1 KiB), so mem.NewBuffer reference-counts it
	outTiers    = 12 // up to 4 MiB
)

func outTier(n int) int {
	t := 0
	for n > 1<<(outMinShift+t) {
		t++
	}
	return t
}

func getOutBuf(n int) *[]byte {
	t := outTier(n)
	if t >= outTiers {
		b := make([]byte, n)
		return &b
	}
	if p, ok := outBufs[t].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(outMinShift+t))
	return &b
}

func putOutBuf(b *[]byte) {
	if t := outTier(cap(*b)); t < outTiers && cap(*b) == 1<<(outMinShift+t) {
		outBufs[t].Put(b)
	}
}

func marshalPooled(m *extprocv3.ProcessingResponse, n int) mem.BufferSlice {
	buf := getOutBuf(n)
	if putResponse(*buf, m) != 0 {
		panic("extproc: reply encoding: size mismatch") // a bug in sizeResponse
	}
	o := outMsgs.Get().(*outMsg)
	o.slice[0] = mem.NewBuffer(buf, o)
	return o.slice[:]
}

// Service registration: the same service and method as the generated
// extprocv3.ExternalProcessor_ServiceDesc, with a handler that receives into
// the stream's pooled wireReq instead of a new ProcessingRequest per message.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: extprocv3.ExternalProcessor_ServiceDesc.ServiceName,
	HandlerType: (*extprocv3.ExternalProcessorServer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Process",
		Handler:       processHandler,
		ServerStreams: true,
		ClientStreams: true,
	}},
	Metadata: extprocv3.ExternalProcessor_ServiceDesc.Metadata,
}

func processHandler(srv any, ss grpc.ServerStream) error {
	s := srv.(*Server)
	st := s.getStream()
	st.fps.ServerStream, st.fps.in = ss, &st.in
	return s.serve(st, &st.fps)
}

// fastStream is the stream's ExternalProcessor_ProcessServer on the fast
// path. Recv returns the same message each time: the server reads a message
// before it asks for the next one. (As with the reused replies, a gRPC stats
// handler or grpc.EnableTracing that keeps payloads after RecvMsg/SendMsg
// return would see them change; cmd/epp installs neither.)
type fastStream struct {
	grpc.ServerStream
	in *wireReq
}

func (f *fastStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if err := f.ServerStream.RecvMsg(f.in); err != nil {
		return nil, err
	}
	return &f.in.ProcessingRequest, nil
}

func (f *fastStream) Send(m *extprocv3.ProcessingResponse) error {
	return f.ServerStream.SendMsg(m)
}

// wireReq is a stream's decode target. It embeds the ProcessingRequest (so
// that the stock codec, on a grpc.Server without GRPCServerOptions, decodes
// into it with proto.Unmarshal) and owns every sub-message the fast decoder
// fills. Lifetimes: header and trailer values are copied into keep, which
// lasts for the stream (the server keeps :path, x-request-id, ... until it
// picks); a body aliases the received buffer (held until the next message)
// or scratch (a message split over several buffers), so it is valid until
// the next Recv.
type wireReq struct {
	extprocv3.ProcessingRequest

	reqHdrs   extprocv3.ProcessingRequest_RequestHeaders
	respHdrs  extprocv3.ProcessingRequest_ResponseHeaders
	reqBody   extprocv3.ProcessingRequest_RequestBody
	respBody  extprocv3.ProcessingRequest_ResponseBody
	reqTrail  extprocv3.ProcessingRequest_RequestTrailers
	respTrail extprocv3.ProcessingRequest_ResponseTrailers
	hh        extprocv3.HttpHeaders
	hb        extprocv3.HttpBody
	ht        extprocv3.HttpTrailers
	hm        corev3.HeaderMap
	hvs       []*corev3.HeaderValue // the values, reused
	hvp       []*corev3.HeaderValue // hm.Headers
	pc        extprocv3.ProtocolConfiguration

	held    mem.Buffer // the received buffer the body aliases, or nil
	scratch []byte
	keep    []byte
}

// maxKeptWire bounds the keep and scratch buffers a pooled stream retains.
const maxKeptWire = 64 << 10

// release gives back the held buffer (at each message and at stream end).
func (w *wireReq) release() {
	if w.held != nil {
		w.held.Free()
		w.held = nil
	}
}

// reset prepares the message for a new stream.
func (w *wireReq) reset() {
	w.release()
	if cap(w.keep) > maxKeptWire {
		w.keep = nil
	}
	if cap(w.scratch) > maxKeptWire {
		w.scratch = nil
	}
	w.keep = w.keep[:0]
	w.ProcessingRequest.Reset()
}

func (w *wireReq) decode(data mem.BufferSlice) error {
	w.release()
	var b []byte
	if len(data) == 1 {
		data[0].Ref()
		w.held = data[0]
		b = data[0].ReadOnlyData()
	} else {
		n := data.Len()
		if cap(w.scratch) < n {
			w.scratch = make([]byte, n)
		}
		w.scratch = w.scratch[:n]
		data.CopyTo(w.scratch)
		b = w.scratch
	}
	return w.decodeBytes(b)
}

// decodeBytes decodes one message from b, which the caller keeps unchanged
// until the next message (bodies alias it).
func (w *wireReq) decodeBytes(b []byte) error {
	if w.fast(b) {
		return nil
	}
	return proto.Unmarshal(b, &w.ProcessingRequest)
}

// fast decodes b into the pooled tree; false means "not a message this
// decoder handles exactly": the caller falls back to proto.Unmarshal.
func (w *wireReq) fast(b []byte) bool {
	m := &w.ProcessingRequest
	m.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 10 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			m.ObservabilityMode = v != 0
			continue
		case typ != protowire.BytesType:
			return false
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 2, 3, 4, 5, 6, 7: // the request oneof: headers, body or trailers of either phase
			if m.Request != nil || !w.member(num, v) {
				return false
			}
		case 8: // metadata_context: rare (subset hint, served endpoint); protobuf decodes it
			if m.MetadataContext != nil {
				return false
			}
			md := new(corev3.Metadata)
			if proto.Unmarshal(v, md) != nil {
				return false
			}
			m.MetadataContext = md
		case 11: // protocol_config
			if m.ProtocolConfig != nil || !w.protocol(v) {
				return false
			}
			m.ProtocolConfig = &w.pc
		default: // attributes, flow control, unknown fields
			return false
		}
	}
	return true
}

// member decodes v, the request oneof's field num (2 to 7), into the pooled
// tree and points the oneof at it.
func (w *wireReq) member(num protowire.Number, v []byte) bool {
	m := &w.ProcessingRequest
	switch num {
	case 2:
		w.reqHdrs.RequestHeaders, m.Request = &w.hh, &w.reqHdrs
		return w.headers(v)
	case 3:
		w.respHdrs.ResponseHeaders, m.Request = &w.hh, &w.respHdrs
		return w.headers(v)
	case 4:
		w.reqBody.RequestBody, m.Request = &w.hb, &w.reqBody
		return w.body(v)
	case 5:
		w.respBody.ResponseBody, m.Request = &w.hb, &w.respBody
		return w.body(v)
	case 6:
		w.reqTrail.RequestTrailers, m.Request = &w.ht, &w.reqTrail
		return w.trailers(v)
	default:
		w.respTrail.ResponseTrailers, m.Request = &w.ht, &w.respTrail
		return w.trailers(v)
	}
}

func (w *wireReq) protocol(b []byte) bool {
	w.pc.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.VarintType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 1:
			w.pc.RequestBodyMode = protoEnum[filterv3.ProcessingMode_BodySendMode](v)
		case 2:
			w.pc.ResponseBodyMode = protoEnum[filterv3.ProcessingMode_BodySendMode](v)
		case 3:
			w.pc.SendBodyWithoutWaitingForHeaderResponse = v != 0
		default:
			return false
		}
	}
	return true
}

// protoEnum converts a varint to an enum type the way protobuf does (int32
// truncation).
func protoEnum[E ~int32](v uint64) E { return E(int32(v)) }

func (w *wireReq) body(b []byte) bool {
	w.hb.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			w.hb.Body = v[:len(v):len(v)]
			continue
		}
		if typ != protowire.VarintType {
			return false
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 2:
			w.hb.EndOfStream = v != 0
		case 3:
			w.hb.EndOfStreamWithoutMessage = v != 0
		case 4:
			w.hb.GrpcMessageCompressed = v != 0
		case 5:
			w.hb.DrainComplete = v != 0
		default:
			return false
		}
	}
	return true
}

func (w *wireReq) headers(b []byte) bool {
	w.hh.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || w.hh.Headers != nil || !w.headerMap(v) {
				return false
			}
			b = b[n:]
			w.hh.Headers = &w.hm
		case num == 3 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			w.hh.EndOfStream = v != 0
		default: // attributes (deprecated), unknown
			return false
		}
	}
	return true
}

func (w *wireReq) trailers(b []byte) bool {
	w.ht.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 || w.ht.Trailers != nil || !w.headerMap(v) {
			return false
		}
		b = b[n:]
		w.ht.Trailers = &w.hm
	}
	return true
}

func (w *wireReq) headerMap(b []byte) bool {
	w.hm.Reset()
	w.hvp = w.hvp[:0]
	if cap(w.keep)-len(w.keep) < len(b) {
		w.keep = append(make([]byte, 0, 2*cap(w.keep)+len(b)), w.keep...) // once: values never move mid-message
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		i := len(w.hvp)
		if i == len(w.hvs) {
			w.hvs = append(w.hvs, new(corev3.HeaderValue))
		}
		hv := w.hvs[i]
		if !w.headerValue(hv, v) {
			return false
		}
		w.hvp = append(w.hvp, hv)
	}
	if len(w.hvp) > 0 {
		w.hm.Headers = w.hvp
	}
	return true
}

func (w *wireReq) headerValue(hv *corev3.HeaderValue, b []byte) bool {
	hv.Reset()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 1:
			k, ok := headerKey(v)
			if !ok {
				return false
			}
			hv.Key = k
		case 2:
			if !utf8.Valid(v) {
				return false
			}
			hv.Value = string(v) // Envoy sends raw_value; a value is rare
		case 3:
			start := len(w.keep)
			w.keep = append(w.keep, v...)
			hv.RawValue = w.keep[start:len(w.keep):len(w.keep)]
		default:
			return false
		}
	}
	return true
}

// Header names, interned: a copy-on-write map read with one atomic load, so
// that a name seen before costs no allocation. It stops growing at
// maxHeaderKeys names (later new names are allocated each time).
var (
	headerKeys   atomic.Pointer[map[string]string]
	headerKeysMu sync.Mutex
)

const maxHeaderKeys = 1024

// headerKey returns b as a string; ok is false when b is not valid UTF-8
// (protobuf refuses such a string field).
func headerKey(b []byte) (string, bool) {
	if m := headerKeys.Load(); m != nil {
		if k, ok := (*m)[string(b)]; ok {
			return k, true
		}
	}
	if !utf8.Valid(b) {
		return "", false
	}
	k := string(b)
	headerKeysMu.Lock()
	defer headerKeysMu.Unlock()
	var old map[string]string
	if m := headerKeys.Load(); m != nil {
		old = *m
	}
	if _, ok := old[k]; !ok && len(old) < maxHeaderKeys {
		next := make(map[string]string, len(old)+1)
		for a, b := range old {
			next[a] = b
		}
		next[k] = k
		headerKeys.Store(&next)
	}
	return k, true
}
