package extproc

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// replies are the ProcessingResponse messages of one stream, built once per
// pooled stream and refilled for each answer, so that answering allocates
// nothing. grpc-go marshals a message inside Send, before it returns, so a
// message may be refilled after Send (true unless grpc.EnableTracing is set,
// whose lazy /debug/requests log keeps messages: do not enable it).
type replies struct {
	wired bool

	// The decision: headers answer (streamed) or body answer (buffered).
	dest, reqID, contentLen corev3.HeaderValue
	destO, reqIDO, cLenO    corev3.HeaderValueOption
	set                     [3]*corev3.HeaderValueOption
	hm                      extprocv3.HeaderMutation
	common                  extprocv3.CommonResponse
	bodyMut                 extprocv3.BodyMutation
	bodyMutBody             extprocv3.BodyMutation_Body
	hdrs                    extprocv3.HeadersResponse
	hdrsW                   extprocv3.ProcessingResponse_RequestHeaders
	body                    extprocv3.BodyResponse
	bodyW                   extprocv3.ProcessingResponse_RequestBody
	decision                extprocv3.ProcessingResponse

	// envoy.lb metadata.
	md       structpb.Struct
	lb       structpb.Value
	lbKind   structpb.Value_StructValue
	lbStruct structpb.Struct
	destV    structpb.Value
	destKind structpb.Value_StringValue

	echoReq  echoMsg // request body echo
	echoResp echoMsg // response body pass-through (FULL_DUPLEX_STREAMED)

	// Response headers and non-streamed response bodies.
	rHdrs      extprocv3.HeadersResponse
	rHdrsW     extprocv3.ProcessingResponse_ResponseHeaders
	rHdrsCom   extprocv3.CommonResponse
	rHdrsHM    extprocv3.HeaderMutation
	rBody      extprocv3.BodyResponse
	rBodyW     extprocv3.ProcessingResponse_ResponseBody
	rBodyCom   extprocv3.CommonResponse
	rBodyMut   extprocv3.BodyMutation
	rBodyMutB  extprocv3.BodyMutation_Body
	rHdrsReply extprocv3.ProcessingResponse
	rBodyReply extprocv3.ProcessingResponse
}

// echoMsg is one StreamedBodyResponse message.
type echoMsg struct {
	sbr    extprocv3.StreamedBodyResponse
	sbrM   extprocv3.BodyMutation_StreamedResponse
	bm     extprocv3.BodyMutation
	common extprocv3.CommonResponse
	br     extprocv3.BodyResponse
	reqW   extprocv3.ProcessingResponse_RequestBody
	respW  extprocv3.ProcessingResponse_ResponseBody
	msg    extprocv3.ProcessingResponse
}

var removeContentLength = []string{"content-length"}

func (e *echoMsg) wire(request bool) {
	e.sbrM.StreamedResponse = &e.sbr
	e.bm.Mutation = &e.sbrM
	e.common.BodyMutation = &e.bm
	e.br.Response = &e.common
	if request {
		e.reqW.RequestBody = &e.br
		e.msg.Response = &e.reqW
	} else {
		e.respW.ResponseBody = &e.br
		e.msg.Response = &e.respW
	}
}

func (e *echoMsg) fill(b []byte, eos bool) *extprocv3.ProcessingResponse {
	e.sbr.Body, e.sbr.EndOfStream = b, eos
	return &e.msg
}

func (r *replies) wire() {
	r.wired = true
	r.destO = corev3.HeaderValueOption{Header: &r.dest, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	r.reqIDO = corev3.HeaderValueOption{Header: &r.reqID, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	r.cLenO = corev3.HeaderValueOption{Header: &r.contentLen, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	r.dest.Key, r.reqID.Key, r.contentLen.Key = HeaderDestination, HeaderRequestID, "content-length"
	r.common.HeaderMutation = &r.hm
	r.bodyMut.Mutation = &r.bodyMutBody
	r.hdrsW.RequestHeaders = &r.hdrs
	r.bodyW.RequestBody = &r.body

	r.destV.Kind = &r.destKind
	r.lbStruct.Fields = map[string]*structpb.Value{HeaderDestination: &r.destV}
	r.lbKind.StructValue = &r.lbStruct
	r.lb.Kind = &r.lbKind
	r.md.Fields = map[string]*structpb.Value{MetadataNamespaceLB: &r.lb}

	r.echoReq.wire(true)
	r.echoResp.wire(false)

	r.rHdrsW.ResponseHeaders = &r.rHdrs
	r.rHdrsReply.Response = &r.rHdrsW
	r.rHdrsCom.HeaderMutation = &r.rHdrsHM
	r.rBodyW.ResponseBody = &r.rBody
	r.rBodyReply.Response = &r.rBodyW
	r.rBodyCom.BodyMutation = &r.rBodyMut
	r.rBodyMut.Mutation = &r.rBodyMutB
}

// decisionReply fills the answer that routes the request: destination header
// and envoy.lb metadata (same string), a generated x-request-id, Content-Length
// when the body changed, ClearRouteCache; on the body answer (BUFFERED, with
// the new body when changed) or the headers answer. extra are more headers
// to set (trace context).
func (r *replies) decisionReply(destBytes []byte, dest string, reqID []byte, contentLen []byte, extra []*corev3.HeaderValueOption, onBody bool, newBody []byte) *extprocv3.ProcessingResponse {
	if !r.wired {
		r.wire()
	}
	r.dest.RawValue = destBytes
	set := append(r.set[:0], &r.destO)
	if reqID != nil {
		r.reqID.RawValue = reqID
		set = append(set, &r.reqIDO)
	}
	if contentLen != nil {
		r.contentLen.RawValue = contentLen
		set = append(set, &r.cLenO)
	}
	set = append(set, extra...)
	r.hm.SetHeaders = set
	r.common.ClearRouteCache = true
	r.common.BodyMutation = nil
	r.destKind.StringValue = dest
	r.decision.DynamicMetadata = &r.md
	r.hdrs.Response, r.body.Response = nil, nil
	if onBody {
		r.body.Response = &r.common
		if newBody != nil {
			r.bodyMutBody.Body = newBody
			r.common.BodyMutation = &r.bodyMut
		}
		r.decision.Response = &r.bodyW
	} else {
		r.hdrs.Response = &r.common
		r.decision.Response = &r.hdrsW
	}
	return &r.decision
}

func (r *replies) requestEcho(b []byte, eos bool) *extprocv3.ProcessingResponse {
	if !r.wired {
		r.wire()
	}
	return r.echoReq.fill(b, eos)
}

func (r *replies) responseEcho(b []byte, eos bool) *extprocv3.ProcessingResponse {
	if !r.wired {
		r.wire()
	}
	return r.echoResp.fill(b, eos)
}

func (r *replies) responseHeaders(removeCL bool, set []*corev3.HeaderValueOption) *extprocv3.ProcessingResponse {
	if !r.wired {
		r.wire()
	}
	r.rHdrs.Response = nil
	r.rHdrsHM.RemoveHeaders = nil
	if removeCL {
		r.rHdrsHM.RemoveHeaders = removeContentLength
	}
	r.rHdrsHM.SetHeaders = set
	if removeCL || len(set) > 0 {
		r.rHdrs.Response = &r.rHdrsCom
	}
	return &r.rHdrsReply
}

// responseBody answers a non-streamed response body chunk, replacing it
// when mutated is not nil.
func (r *replies) responseBody(mutated []byte) *extprocv3.ProcessingResponse {
	if !r.wired {
		r.wire()
	}
	r.rBody.Response = nil
	if mutated != nil {
		r.rBodyMutB.Body = mutated
		r.rBody.Response = &r.rBodyCom
	}
	return &r.rBodyReply
}

// clear drops references to request and response bytes before pooling.
func (r *replies) clear() {
	r.dest.RawValue, r.reqID.RawValue, r.contentLen.RawValue = nil, nil, nil
	r.bodyMutBody.Body = nil
	r.destKind.StringValue = ""
	r.echoReq.sbr.Body, r.echoResp.sbr.Body = nil, nil
	r.rBodyMutB.Body = nil
}
