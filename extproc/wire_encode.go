package extproc

import (
	"math"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
)

// Hand encoding of the ProcessingResponse shapes the server sends: the
// decision (headers or body answer with a header mutation, clear_route_cache
// and envoy.lb metadata), body echoes, and the response-phase answers. Each
// size* function returns the encoded size of a message's fields, or -1 when
// the message holds something this encoder does not write (then the codec
// falls back to proto.Marshal); put* writes the fields backwards, ending at
// index i of a buffer of the exact size, and returns where they start (as
// vtprotobuf does: each message's length is known once its fields are
// written, so every message is sized once). Fields land in protobuf's order
// (field numbers, with a oneof after the other fields); map entries (Struct
// fields) in Go's map order, as protobuf does without Deterministic.
//
// Unknown fields are checked on the ProcessingResponse only: the server
// builds its replies in Go, where only ProtoReflect().SetUnknown could add
// them to a nested message.

// sizeField is the size of a length-delimited field holding n bytes.
func sizeField(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func sizeBool(num protowire.Number, v bool) int {
	if !v {
		return 0
	}
	return protowire.SizeTag(num) + 1
}

func sizeEnum(num protowire.Number, v int32) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(uint64(int64(v)))
}

// sizeStr is the size of a string or bytes field, omitted when empty.
func sizeStr[T ~string | ~[]byte](num protowire.Number, v T) int {
	if len(v) == 0 {
		return 0
	}
	return sizeField(num, len(v))
}

// sizeSub is the size of a message field whose content is s bytes (-1
// passes through).
func sizeSub(num protowire.Number, s int) int {
	if s < 0 {
		return -1
	}
	return sizeField(num, s)
}

func putVarint(b []byte, i int, v uint64) int {
	i -= protowire.SizeVarint(v)
	protowire.AppendVarint(b[i:i], v)
	return i
}

func putTag(b []byte, i int, num protowire.Number, typ protowire.Type) int {
	return putVarint(b, i, protowire.EncodeTag(num, typ))
}

// putLen closes a length-delimited field whose content spans b[i:end].
func putLen(b []byte, i, end int, num protowire.Number) int {
	return putTag(b, putVarint(b, i, uint64(end-i)), num, protowire.BytesType)
}

// putString writes a string or bytes field, even when empty.
func putString[T ~string | ~[]byte](b []byte, i int, num protowire.Number, v T) int {
	i -= len(v)
	copy(b[i:], v)
	return putLen(b, i, i+len(v), num)
}

// putBoolAlways writes a bool field even when false (a oneof member).
func putBoolAlways(b []byte, i int, num protowire.Number, v bool) int {
	i--
	b[i] = 0
	if v {
		b[i] = 1
	}
	return putTag(b, i, num, protowire.VarintType)
}

func putBool(b []byte, i int, num protowire.Number, v bool) int {
	if !v {
		return i
	}
	return putBoolAlways(b, i, num, true)
}

func putEnum(b []byte, i int, num protowire.Number, v int32) int {
	if v == 0 {
		return i
	}
	return putTag(b, putVarint(b, i, uint64(int64(v))), num, protowire.VarintType)
}

// putStr writes a string or bytes field, omitted when empty.
func putStr[T ~string | ~[]byte](b []byte, i int, num protowire.Number, v T) int {
	if len(v) == 0 {
		return i
	}
	return putString(b, i, num, v)
}

func sizeResponse(m *extprocv3.ProcessingResponse) int {
	if m == nil || len(m.ProtoReflect().GetUnknown()) != 0 || m.TypedDynamicMetadata != nil || m.ModeOverride != nil || m.RequestDrain ||
		m.OverrideMessageTimeout != nil || m.ServerWindowUpdate != nil || m.RequestDrainRequests || m.RequestDrainResponses {
		return -1
	}
	n := 0
	if m.DynamicMetadata != nil {
		s := sizeStruct(m.DynamicMetadata)
		if s < 0 {
			return -1
		}
		n = sizeField(8, s)
	}
	s := 0
	switch r := m.Response.(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		s = sizeSub(1, sizeCommonResp(r.RequestHeaders.GetResponse()))
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		s = sizeSub(2, sizeCommonResp(r.ResponseHeaders.GetResponse()))
	case *extprocv3.ProcessingResponse_RequestBody:
		s = sizeSub(3, sizeCommonResp(r.RequestBody.GetResponse()))
	case *extprocv3.ProcessingResponse_ResponseBody:
		s = sizeSub(4, sizeCommonResp(r.ResponseBody.GetResponse()))
	case *extprocv3.ProcessingResponse_RequestTrailers:
		s = sizeSub(5, sizeTrailersResp(r.RequestTrailers))
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		s = sizeSub(6, sizeTrailersResp(r.ResponseTrailers))
	case nil:
	default: // immediate responses: rare, protobuf writes them
		return -1
	}
	if s < 0 {
		return -1
	}
	return n + s
}

// putResponse writes m into b, whose length is sizeResponse(m).
func putResponse(b []byte, m *extprocv3.ProcessingResponse) int {
	i := len(b)
	switch r := m.Response.(type) { // the oneof, last
	case *extprocv3.ProcessingResponse_RequestHeaders:
		i = putLen(b, putCommonResp(b, i, r.RequestHeaders.GetResponse()), i, 1)
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		i = putLen(b, putCommonResp(b, i, r.ResponseHeaders.GetResponse()), i, 2)
	case *extprocv3.ProcessingResponse_RequestBody:
		i = putLen(b, putCommonResp(b, i, r.RequestBody.GetResponse()), i, 3)
	case *extprocv3.ProcessingResponse_ResponseBody:
		i = putLen(b, putCommonResp(b, i, r.ResponseBody.GetResponse()), i, 4)
	case *extprocv3.ProcessingResponse_RequestTrailers:
		i = putLen(b, putTrailersResp(b, i, r.RequestTrailers), i, 5)
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		i = putLen(b, putTrailersResp(b, i, r.ResponseTrailers), i, 6)
	}
	if m.DynamicMetadata != nil {
		i = putLen(b, putStruct(b, i, m.DynamicMetadata), i, 8)
	}
	return i
}

// A HeadersResponse or a BodyResponse: its one field, the CommonResponse
// (m.GetResponse()). A nil oneof member is written as an empty message by
// protobuf; so here.
func sizeCommonResp(m *extprocv3.CommonResponse) int {
	if m == nil {
		return 0
	}
	return sizeSub(1, sizeCommon(m))
}

func putCommonResp(b []byte, i int, m *extprocv3.CommonResponse) int {
	if m == nil {
		return i
	}
	return putLen(b, putCommon(b, i, m), i, 1)
}

func sizeTrailersResp(m *extprocv3.TrailersResponse) int {
	if m == nil || m.HeaderMutation == nil {
		return 0
	}
	return sizeSub(1, sizeHeaderMutation(m.HeaderMutation))
}

func putTrailersResp(b []byte, i int, m *extprocv3.TrailersResponse) int {
	if m == nil || m.HeaderMutation == nil {
		return i
	}
	return putLen(b, putHeaderMutation(b, i, m.HeaderMutation), i, 1)
}

func sizeCommon(m *extprocv3.CommonResponse) int {
	if m.Trailers != nil {
		return -1
	}
	n := sizeEnum(1, int32(m.Status))
	if m.HeaderMutation != nil {
		s := sizeHeaderMutation(m.HeaderMutation)
		if s < 0 {
			return -1
		}
		n += sizeField(2, s)
	}
	if m.BodyMutation != nil {
		s := sizeBodyMutation(m.BodyMutation)
		if s < 0 {
			return -1
		}
		n += sizeField(3, s)
	}
	return n + sizeBool(5, m.ClearRouteCache)
}

func putCommon(b []byte, i int, m *extprocv3.CommonResponse) int {
	i = putBool(b, i, 5, m.ClearRouteCache)
	if m.BodyMutation != nil {
		i = putLen(b, putBodyMutation(b, i, m.BodyMutation), i, 3)
	}
	if m.HeaderMutation != nil {
		i = putLen(b, putHeaderMutation(b, i, m.HeaderMutation), i, 2)
	}
	return putEnum(b, i, 1, int32(m.Status))
}

func sizeHeaderMutation(m *extprocv3.HeaderMutation) int {
	n := 0
	for _, h := range m.SetHeaders {
		s := sizeHVO(h)
		if s < 0 {
			return -1
		}
		n += sizeField(1, s)
	}
	for _, r := range m.RemoveHeaders {
		if !utf8.ValidString(r) {
			return -1
		}
		n += sizeField(2, len(r)) // repeated: written even when empty
	}
	return n
}

func putHeaderMutation(b []byte, i int, m *extprocv3.HeaderMutation) int {
	for k := len(m.RemoveHeaders) - 1; k >= 0; k-- {
		i = putString(b, i, 2, m.RemoveHeaders[k])
	}
	for k := len(m.SetHeaders) - 1; k >= 0; k-- {
		i = putLen(b, putHVO(b, i, m.SetHeaders[k]), i, 1)
	}
	return i
}

func sizeHVO(m *corev3.HeaderValueOption) int {
	if m == nil || m.Append != nil {
		return -1
	}
	n := 0
	if m.Header != nil {
		s := sizeHV(m.Header)
		if s < 0 {
			return -1
		}
		n += sizeField(1, s)
	}
	return n + sizeEnum(3, int32(m.AppendAction)) + sizeBool(4, m.KeepEmptyValue)
}

func putHVO(b []byte, i int, m *corev3.HeaderValueOption) int {
	i = putEnum(b, putBool(b, i, 4, m.KeepEmptyValue), 3, int32(m.AppendAction))
	if m.Header != nil {
		i = putLen(b, putHV(b, i, m.Header), i, 1)
	}
	return i
}

func sizeHV(m *corev3.HeaderValue) int {
	if !utf8.ValidString(m.Key) || !utf8.ValidString(m.Value) {
		return -1
	}
	return sizeStr(1, m.Key) + sizeStr(2, m.Value) + sizeStr(3, m.RawValue)
}

func putHV(b []byte, i int, m *corev3.HeaderValue) int {
	return putStr(b, putStr(b, putStr(b, i, 3, m.RawValue), 2, m.Value), 1, m.Key)
}

func sizeBodyMutation(m *extprocv3.BodyMutation) int {
	switch v := m.Mutation.(type) {
	case nil:
		return 0
	case *extprocv3.BodyMutation_Body: // oneof: written even when empty
		return sizeField(1, len(v.Body))
	case *extprocv3.BodyMutation_ClearBody:
		return protowire.SizeTag(2) + 1
	case *extprocv3.BodyMutation_StreamedResponse:
		return sizeField(3, sizeStreamed(v.StreamedResponse))
	}
	return -1
}

func putBodyMutation(b []byte, i int, m *extprocv3.BodyMutation) int {
	switch v := m.Mutation.(type) {
	case *extprocv3.BodyMutation_Body:
		i = putString(b, i, 1, v.Body)
	case *extprocv3.BodyMutation_ClearBody:
		i = putBoolAlways(b, i, 2, v.ClearBody)
	case *extprocv3.BodyMutation_StreamedResponse:
		i = putLen(b, putStreamed(b, i, v.StreamedResponse), i, 3)
	}
	return i
}

func sizeStreamed(m *extprocv3.StreamedBodyResponse) int {
	if m == nil {
		return 0
	}
	return sizeStr(1, m.Body) + sizeBool(2, m.EndOfStream) + sizeBool(3, m.EndOfStreamWithoutMessage) +
		sizeBool(4, m.GrpcMessageCompressed) + sizeBool(5, m.DrainComplete)
}

func putStreamed(b []byte, i int, m *extprocv3.StreamedBodyResponse) int {
	if m == nil {
		return i
	}
	i = putBool(b, i, 5, m.DrainComplete)
	i = putBool(b, i, 4, m.GrpcMessageCompressed)
	i = putBool(b, i, 3, m.EndOfStreamWithoutMessage)
	i = putBool(b, i, 2, m.EndOfStream)
	return putStr(b, i, 1, m.Body)
}

// google.protobuf.Struct: map<string, Value> fields = 1. An entry is a
// message {string key = 1; Value value = 2}; protobuf writes both even when
// empty.
func sizeStruct(m *structpb.Struct) int {
	n := 0
	for k, v := range m.Fields {
		if v == nil || !utf8.ValidString(k) {
			return -1
		}
		s := sizeValue(v)
		if s < 0 {
			return -1
		}
		n += sizeField(1, sizeField(1, len(k))+sizeField(2, s))
	}
	return n
}

func putStruct(b []byte, i int, m *structpb.Struct) int {
	for k, v := range m.Fields {
		end := i
		i = putLen(b, putValue(b, i, v), i, 2)
		i = putString(b, i, 1, k)
		i = putLen(b, i, end, 1)
	}
	return i
}

// google.protobuf.Value: string, struct, bool and number kinds (every kind
// is a oneof member: written even when zero).
func sizeValue(m *structpb.Value) int {
	switch v := m.Kind.(type) {
	case nil:
		return 0
	case *structpb.Value_NumberValue:
		return protowire.SizeTag(2) + 8
	case *structpb.Value_StringValue:
		if !utf8.ValidString(v.StringValue) {
			return -1
		}
		return sizeField(3, len(v.StringValue))
	case *structpb.Value_BoolValue:
		return protowire.SizeTag(4) + 1
	case *structpb.Value_StructValue:
		if v.StructValue == nil {
			return sizeField(5, 0)
		}
		return sizeSub(5, sizeStruct(v.StructValue))
	}
	return -1 // null and list values: protobuf writes them
}

func putValue(b []byte, i int, m *structpb.Value) int {
	switch v := m.Kind.(type) {
	case *structpb.Value_NumberValue:
		i -= 8
		protowire.AppendFixed64(b[i:i], math.Float64bits(v.NumberValue))
		i = putTag(b, i, 2, protowire.Fixed64Type)
	case *structpb.Value_StringValue:
		i = putString(b, i, 3, v.StringValue)
	case *structpb.Value_BoolValue:
		i = putBoolAlways(b, i, 4, v.BoolValue)
	case *structpb.Value_StructValue:
		if v.StructValue == nil {
			return putLen(b, i, i, 5)
		}
		i = putLen(b, putStruct(b, i, v.StructValue), i, 5)
	}
	return i
}
