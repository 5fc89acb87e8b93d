package extproc

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// wireRequests are ProcessingRequests the decoder must handle: what Envoy
// sends, and shapes it takes the protobuf path for.
func wireRequests() []*extprocv3.ProcessingRequest {
	body := bytes.Repeat([]byte(`{"model":"m"}`), 100)
	h := postHeaders("/v1/chat/completions", len(body), "x-request-id", "r1", "x-gateway-inference-objective", "o")
	h.Headers = append(h.Headers, &corev3.HeaderValue{Key: "x-value-only", Value: "v"}, &corev3.HeaderValue{Key: "x-empty"},
		&corev3.HeaderValue{Key: "x-both", Value: "a", RawValue: []byte("b")})
	attrs := map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{"request.path": structpb.NewStringValue("/v1")}}}
	return []*extprocv3.ProcessingRequest{
		{},
		reqHeadersMsg(h, false, duplex, nil),
		reqHeadersMsg(h, true, protocol(filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_STREAMED), subsetMD("10.0.0.1:8000", "10.0.0.2")),
		reqHeadersMsg(&corev3.HeaderMap{}, false, &extprocv3.ProtocolConfiguration{SendBodyWithoutWaitingForHeaderResponse: true, RequestBodyMode: -3}, nil),
		reqHeadersMsg(nil, true, nil, nil),
		reqBodyMsg(body, true),
		reqBodyMsg(body[:10], false),
		reqBodyMsg(nil, true),
		reqBodyMsg([]byte{}, false),
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: body, EndOfStreamWithoutMessage: true, GrpcMessageCompressed: true, DrainComplete: true}}},
		respHeadersMsg(hdrs(":status", "200", "content-type", "text/event-stream"), false),
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: hdrs(":status", "200")}},
			MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataNamespaceLB: {Fields: map[string]*structpb.Value{ServedKey: structpb.NewStringValue("10.0.0.2:8000")}}}}},
		respBodyMsg([]byte("data: {}\n\n"), false),
		respBodyMsg(nil, true),
		{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{Trailers: hdrs("x-t", "1")}}},
		{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
		{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: nil}},
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: nil}, ObservabilityMode: true},
		// The protobuf path: attributes, flow control, header attributes.
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: h}}, Attributes: attrs},
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: h, Attributes: attrs}}},
		{FlowControlInit: &extprocv3.ProcessingRequest_FlowControlInit{InitialWindowDownstreamToSidestream: 5}},
	}
}

// wireMutations are byte strings near valid messages: unknown fields, wrong
// wire types, repeated message fields (protobuf merges them), truncations,
// invalid UTF-8, multi-byte booleans.
func wireMutations(t testing.TB) [][]byte {
	var out [][]byte
	for _, m := range wireRequests() {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
		for i := range len(b) {
			out = append(out, b[:i]) // truncated
		}
		out = append(out, append(slicesClone(b), b...))                                                             // every field twice
		out = append(out, protowire.AppendVarint(protowire.AppendTag(slicesClone(b), 99, protowire.VarintType), 1)) // unknown field
		out = append(out, protowire.AppendVarint(protowire.AppendTag(slicesClone(b), 10, protowire.VarintType), 300))
		out = append(out, protowire.AppendVarint(protowire.AppendTag(slicesClone(b), 4, protowire.VarintType), 1)) // wrong wire type
	}
	bad := func(key, raw string) []byte {
		hv := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), key)
		hv = protowire.AppendString(protowire.AppendTag(hv, 3, protowire.BytesType), raw)
		hm := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), hv)
		hh := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), hm)
		return protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), hh)
	}
	out = append(out, bad("x-ok", "\xff"), bad("\xff\xfe", "v"), bad("", ""))
	// A body with end_of_stream as a 10-byte varint.
	hb := protowire.AppendTag(nil, 2, protowire.VarintType)
	hb = protowire.AppendVarint(hb, 1<<63)
	out = append(out, protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), hb))
	return out
}

func slicesClone(b []byte) []byte { return append([]byte(nil), b...) }

// decodeBoth decodes b with the wire decoder (as one buffer, and split in
// two buffers) and with proto.Unmarshal, and fails unless they agree.
func decodeBoth(t *testing.T, w *wireReq, b []byte) {
	t.Helper()
	want := new(extprocv3.ProcessingRequest)
	werr := proto.Unmarshal(b, want)
	for split := range 2 {
		data := mem.BufferSlice{mem.SliceBuffer(b)}
		if split == 1 && len(b) > 1 {
			data = mem.BufferSlice{mem.SliceBuffer(b[:len(b)/2]), mem.SliceBuffer(b[len(b)/2:])}
		}
		err := w.decode(data)
		if (err != nil) != (werr != nil) {
			t.Fatalf("% x: wire decoder error %v, protobuf error %v", b, err, werr)
		}
		if err == nil && !proto.Equal(&w.ProcessingRequest, want) {
			t.Fatalf("% x:\nwire decoder: %v\nprotobuf:     %v", b, &w.ProcessingRequest, want)
		}
	}
}

func TestWireDecodeMatchesProto(t *testing.T) {
	var w wireReq
	for _, b := range wireMutations(t) {
		decodeBoth(t, &w, b)
	}
	w.reset()
}

// TestWireDecodeFastPath: what Envoy sends takes the fast path (no
// protobuf), and header values stay valid for the stream while later
// messages are decoded.
func TestWireDecodeFastPath(t *testing.T) {
	var w wireReq
	w.reset()
	msgs := wireRequests()[1:18]
	var path []byte
	for i, m := range msgs {
		b, _ := proto.Marshal(m)
		w.ProcessingRequest.Reset()
		if !w.fast(b) {
			t.Fatalf("message %d (%v): expected the fast path", i, m)
		}
		if i == 0 {
			for _, h := range w.GetRequestHeaders().GetHeaders().GetHeaders() {
				if h.Key == ":path" {
					path = h.RawValue
				}
			}
		}
	}
	if string(path) != "/v1/chat/completions" {
		t.Fatalf(":path after later messages: expected /v1/chat/completions, found %q", path)
	}
}

// FuzzWireDecode: the seeds are the whole messages (their truncations and
// other mutations are TestWireDecodeMatchesProto's).
func FuzzWireDecode(f *testing.F) {
	for _, m := range wireRequests() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	var w wireReq
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeBoth(t, &w, b)
		w.reset()
	})
}

// wireResponses are the replies the server sends, and shapes the encoder
// leaves to protobuf.
func wireResponses() []*extprocv3.ProcessingResponse {
	var r replies
	body := bytes.Repeat([]byte("x"), 3000)
	hvo := setHeader("x-a", []byte("1"))
	out := []*extprocv3.ProcessingResponse{
		{},
		proto.Clone(r.decisionReply([]byte("10.0.0.1:8000"), "10.0.0.1:8000", []byte("id"), []byte("12"), []*corev3.HeaderValueOption{hvo}, false, nil)).(*extprocv3.ProcessingResponse),
		proto.Clone(r.decisionReply([]byte("10.0.0.1:8000,10.0.0.2:8000"), "10.0.0.1:8000,10.0.0.2:8000", nil, nil, nil, true, body)).(*extprocv3.ProcessingResponse),
		proto.Clone(r.decisionReply([]byte("[::1]:8000"), "[::1]:8000", nil, nil, nil, true, []byte{})).(*extprocv3.ProcessingResponse),
		proto.Clone(r.requestEcho(body, true)).(*extprocv3.ProcessingResponse),
		proto.Clone(r.requestEcho(nil, true)).(*extprocv3.ProcessingResponse),
		proto.Clone(r.responseEcho([]byte("data: x\n\n"), false)).(*extprocv3.ProcessingResponse),
		proto.Clone(r.responseHeaders(true, []*corev3.HeaderValueOption{hvo})).(*extprocv3.ProcessingResponse),
		proto.Clone(r.responseHeaders(false, nil)).(*extprocv3.ProcessingResponse),
		proto.Clone(r.responseBody([]byte("y"))).(*extprocv3.ProcessingResponse),
		proto.Clone(r.responseBody(nil)).(*extprocv3.ProcessingResponse),
		{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}},
		{Response: &extprocv3.ProcessingResponse_RequestHeaders{}},
		{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}},
		{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}},
		{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{"a", ""}}}}},
		{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
			Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE, BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: false}},
		}}}},
		{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}},
		}}}},
		{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{}},
		}}}},
		{DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"": {Kind: &structpb.Value_StringValue{}}, "n": structpb.NewNumberValue(-1.5), "b": structpb.NewBoolValue(false),
			"s": {Kind: &structpb.Value_StructValue{}}, "e": {}, "t": structpb.NewStructValue(&structpb.Struct{}),
		}}},
		// protobuf's: immediate response, a list value, a null value, an append BoolValue, trailers.
		{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{Status: &typev3.HttpStatus{Code: 400}, Body: []byte("x")}}},
		{DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"l": structpb.NewListValue(&structpb.ListValue{})}}},
		{DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"z": structpb.NewNullValue()}}},
		{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
			SetHeaders: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "k"}, Append: wrapperspb.Bool(true)}},
		}}}}},
		{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{Trailers: &corev3.HeaderMap{}}}}},
		{ModeOverride: &filterv3.ProcessingMode{}},
		{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}, DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"n": nil}}},
	}
	return out
}

// TestWireEncodeMatchesProto: each reply encodes to the bytes protobuf
// writes (Struct entries, whose order is the map's, compared decoded), and
// what the encoder leaves to protobuf goes there.
func TestWireEncodeMatchesProto(t *testing.T) {
	for i, m := range wireResponses() {
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		data, err := codec{}.Marshal(m)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		got := data.Materialize()
		data.Free()
		if len(m.GetDynamicMetadata().GetFields()) <= 1 && !bytes.Equal(got, want) {
			t.Errorf("response %d (%.300v):\nencoded  % .300x\nprotobuf % .300x", i, m, got, want)
		}
		back := new(extprocv3.ProcessingResponse)
		if err := proto.Unmarshal(got, back); err != nil || !proto.Equal(back, m) {
			t.Errorf("response %d: decodes to %.300v (%v), expected %.300v", i, back, err, m)
		}
	}
}

// TestWireEncodeFastPath: the server's own replies skip protobuf.
func TestWireEncodeFastPath(t *testing.T) {
	for i, m := range wireResponses()[:20] {
		if sizeResponse(m) < 0 {
			t.Errorf("response %d (%v): expected the hand encoder", i, m)
		}
	}
	for i, m := range wireResponses()[20:] {
		if sizeResponse(m) >= 0 {
			t.Errorf("response %d (%v): expected protobuf", i+20, m)
		}
	}
}

// TestWireCodecAllocs: decoding what Envoy sends and encoding the server's
// replies allocate nothing in steady state (the codec's share of
// TestZeroAllocsPerRequest's "transport aside"; BenchmarkExtProc reports the
// whole server process's allocations per request, gRPC's included).
func TestWireCodecAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	var in []mem.BufferSlice // as grpc hands them over: a pooled buffer each
	for _, m := range wireRequests()[1:18] {
		if m.MetadataContext != nil {
			continue // protobuf decodes metadata (first message, response headers)
		}
		b, _ := proto.Marshal(m)
		in = append(in, mem.BufferSlice{mem.Copy(b, mem.DefaultBufferPool())})
	}
	var out []*extprocv3.ProcessingResponse
	for _, m := range wireResponses()[:20] {
		out = append(out, m)
	}
	var w wireReq
	run := func() {
		w.reset()
		for _, data := range in {
			if err := w.decode(data); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range out {
			data, err := codec{}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			data.Free()
		}
	}
	run()
	if n := testing.AllocsPerRun(100, run); n > 0 {
		t.Fatalf("expected 0 allocations per round of %d messages in and %d out, found %v", len(in), len(out), n)
	}
}

func BenchmarkWireCodec(b *testing.B) {
	var r replies
	body := []byte(strings.Repeat("x", 2048))
	h := postHeaders("/v1/chat/completions", 2048, "x-request-id", "req-1", "user-agent", "bench")
	var reqs []mem.BufferSlice // as grpc hands them over: a pooled buffer each
	for _, m := range []*extprocv3.ProcessingRequest{reqHeadersMsg(h, false, duplex, nil), reqBodyMsg(body, true)} {
		bb, _ := proto.Marshal(m)
		reqs = append(reqs, mem.BufferSlice{mem.Copy(bb, mem.DefaultBufferPool())})
	}
	dec := proto.Clone(r.decisionReply([]byte("10.0.0.1:8000"), "10.0.0.1:8000", nil, nil, nil, false, nil)).(*extprocv3.ProcessingResponse)
	echo := proto.Clone(r.requestEcho(body, true)).(*extprocv3.ProcessingResponse)
	for _, c := range []struct {
		name string
		c    interface {
			Marshal(any) (mem.BufferSlice, error)
			Unmarshal(mem.BufferSlice, any) error
		}
	}{{"wire", codec{}}, {"stock", stockCodec}} {
		b.Run("decode/"+c.name, func(b *testing.B) {
			var w wireReq
			b.ReportAllocs()
			for range b.N {
				w.reset()
				for _, data := range reqs {
					if err := c.c.Unmarshal(data, &w); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run("encode/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				for _, m := range []*extprocv3.ProcessingResponse{dec, echo} {
					d, err := c.c.Marshal(m)
					if err != nil {
						b.Fatal(err)
					}
					d.Free()
				}
			}
		})
	}
}

// codecStream is a grpc.ServerStream without a transport: RecvMsg decodes
// canned messages with the codec, SendMsg encodes and frees.
type codecStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   []mem.BufferSlice
	next int
	sent int
}

func (c *codecStream) Context() context.Context { return c.ctx }

func (c *codecStream) RecvMsg(m any) error {
	if c.next >= len(c.in) {
		return io.EOF
	}
	c.next++
	return codec{}.Unmarshal(c.in[c.next-1], m)
}

func (c *codecStream) SendMsg(m any) error {
	data, err := codec{}.Marshal(m)
	if err != nil {
		return err
	}
	c.sent++
	data.Free()
	return nil
}

// TestZeroAllocsPerRequestWire is TestZeroAllocsPerRequest through the
// registered handler and the codec (what cmd/epp serves): a routed
// FULL_DUPLEX_STREAMED request, decoded and answered, allocates nothing of
// fastepp's in steady state. gRPC's own transport allocations per request
// are what BenchmarkExtProc reports as server-allocs/req.
func TestZeroAllocsPerRequestWire(t *testing.T) {
	srv, p, msgs := zeroAllocsSetup(t)
	var in []mem.BufferSlice
	for _, m := range msgs {
		b, _ := proto.Marshal(m)
		in = append(in, mem.BufferSlice{mem.Copy(b, mem.DefaultBufferPool())})
	}
	cs := &codecStream{ctx: context.Background(), in: in}
	checkZeroAllocs(t, p, func() int {
		cs.next, cs.sent = 0, 0
		if err := processHandler(srv, cs); err != nil {
			t.Fatal(err)
		}
		return cs.sent
	})
}
