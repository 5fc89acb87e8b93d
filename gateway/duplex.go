package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"
)

// Causes of a cancelled ext_proc stream.
var (
	errClientGone = errors.New("client disconnected")
	errEPPTimeout = errors.New("epp did not answer in time")
	errUpstream   = errors.New("upstream response failed")
	errFinished   = errors.New("request finished")
)

// maxEcho bounds the request body epp may echo back.
const maxEcho = 256 << 20

// drainTimeout bounds the wait for epp to end a stream after the response.
const drainTimeout = 5 * time.Second

var duplexConfig = &extprocv3.ProtocolConfiguration{
	RequestBodyMode:  filterv3.ProcessingMode_FULL_DUPLEX_STREAMED,
	ResponseBodyMode: filterv3.ProcessingMode_FULL_DUPLEX_STREAMED,
}

// lowerKeys maps common canonical header keys to the lower-case form
// Envoy sends, without allocating.
var lowerKeys = map[string]string{
	"Accept": "accept", "Accept-Encoding": "accept-encoding", "Authorization": "authorization",
	"Content-Type": "content-type", "Content-Length": "content-length", "User-Agent": "user-agent",
	"X-Request-Id": "x-request-id", "Cache-Control": "cache-control", "Date": "date",
	"Server": "server", "Content-Encoding": "content-encoding",
	"X-Gateway-Inference-Objective":   "x-gateway-inference-objective",
	"X-Gateway-Inference-Fairness-Id": "x-gateway-inference-fairness-id",
	"X-Gateway-Model-Name-Rewrite":    "x-gateway-model-name-rewrite",
}

func lower(k string) string {
	if v, ok := lowerKeys[k]; ok {
		return v
	}
	return strings.ToLower(k)
}

func addHeader(m *corev3.HeaderMap, k, v string) {
	m.Headers = append(m.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
}

// toHeaderMap converts h (hop-by-hop headers dropped) to ext_proc's form.
func toHeaderMap(m *corev3.HeaderMap, h http.Header) {
	for k, vs := range h {
		if isHop(k) {
			continue
		}
		lk := lower(k)
		for _, v := range vs {
			addHeader(m, lk, v)
		}
	}
}

func headerValue(h *corev3.HeaderValue) string {
	if len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

// pseudo receives the pseudo-headers a mutation may change.
type pseudo struct {
	path, authority, method, status string
}

// applyMutation applies an ext_proc header mutation to h the way Envoy's
// ext_proc filter does: append_action when set, else the deprecated append
// flag, else overwrite. Pseudo-headers go to ps (nil: ignored).
// content-length is left to the proxy, which knows the real length; the
// result says whether the mutation set or removed it.
func applyMutation(m *extprocv3.HeaderMutation, h http.Header, ps *pseudo) (contentLength bool) {
	if m == nil {
		return false
	}
	for _, o := range m.GetSetHeaders() {
		hv := o.GetHeader()
		if hv == nil || hv.Key == "" {
			continue
		}
		k, v := hv.Key, headerValue(hv)
		if k[0] == ':' {
			if ps != nil {
				switch k {
				case ":path":
					ps.path = v
				case ":authority":
					ps.authority = v
				case ":method":
					ps.method = v
				case ":status":
					ps.status = v
				}
			}
			continue
		}
		if strings.EqualFold(k, "content-length") {
			contentLength = true
			continue
		}
		if strings.EqualFold(k, "host") {
			continue
		}
		ck := http.CanonicalHeaderKey(k)
		_, exists := h[ck]
		action := o.GetAppendAction()
		if action == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			if o.GetAppend().GetValue() {
				action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			} else {
				action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
		}
		switch action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h[ck] = append(h[ck], v)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h[ck] = []string{v}
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h[ck] = []string{v}
			}
		default: // OVERWRITE_IF_EXISTS_OR_ADD
			h[ck] = []string{v}
		}
	}
	for _, k := range m.GetRemoveHeaders() {
		if strings.EqualFold(k, "content-length") {
			contentLength = true
		}
		if k != "" && k[0] != ':' && !strings.EqualFold(k, "host") {
			h.Del(k)
		}
	}
	return contentLength
}

// destination returns the endpoint list from the header mutation, else from
// the envoy.lb dynamic metadata.
func destination(m *extprocv3.HeaderMutation, md *structpb.Struct) string {
	for _, o := range m.GetSetHeaders() {
		if strings.EqualFold(o.GetHeader().GetKey(), HeaderDestination) {
			return headerValue(o.GetHeader())
		}
	}
	return md.GetFields()[MetadataNamespaceLB].GetStructValue().GetFields()[HeaderDestination].GetStringValue()
}

// parseDestinations splits a fallback list, dropping malformed entries.
func parseDestinations(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if hp, err := ParseEndpoint(item); err == nil {
			out = append(out, hp)
		}
	}
	return out
}

func writeImmediate(w http.ResponseWriter, ir *extprocv3.ImmediateResponse) {
	code := int(ir.GetStatus().GetCode())
	if code < 100 || code > 599 {
		code = http.StatusInternalServerError
	}
	h := w.Header()
	applyMutation(ir.GetHeaders(), h, nil)
	h.Set("Content-Length", strconv.Itoa(len(ir.GetBody())))
	w.WriteHeader(code)
	_, _ = w.Write(ir.GetBody())
}

// serveExtProc is the Envoy path: one FULL_DUPLEX_STREAMED ext_proc stream
// per request.
func (g *Gateway) serveExtProc(w http.ResponseWriter, r *http.Request) {
	parent := r.Context()
	// The stream outlives the handler by one round trip (the graceful close
	// below), so it is not tied to r.Context(); a client disconnect cancels
	// it through the AfterFunc.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	stopWatch := context.AfterFunc(parent, func() { cancel(errClientGone) })
	handedOff := false
	defer func() {
		if !handedOff {
			stopWatch()
			cancel(errFinished)
		}
	}()

	stream, err := g.client.Process(ctx)
	if err != nil {
		g.streamFailed(w, ctx, err, "opening a stream")
		return
	}

	// Request headers, as Envoy sends them.
	uri := r.URL.RequestURI()
	reqID := r.Header.Get(HeaderRequestID)
	genID := reqID == ""
	if genID {
		reqID = uuid.NewString()
	}
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	hm := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(r.Header)+6)}
	addHeader(hm, ":authority", r.Host)
	addHeader(hm, ":path", uri)
	addHeader(hm, ":method", r.Method)
	addHeader(hm, ":scheme", "http")
	toHeaderMap(hm, r.Header)
	if r.ContentLength > 0 && r.Header.Get("Content-Length") == "" {
		addHeader(hm, "content-length", strconv.FormatInt(r.ContentLength, 10))
	}
	if genID {
		addHeader(hm, HeaderRequestID, reqID)
	}
	err = stream.Send(&extprocv3.ProcessingRequest{
		Request:        &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: !hasBody}},
		ProtocolConfig: duplexConfig,
	})
	if err != nil && err != io.EOF {
		g.streamFailed(w, ctx, err, "sending the request headers")
		return
	}
	if err == nil && hasBody {
		if rerr := g.sendRequestBody(stream, r); rerr != nil {
			cancel(errClientGone)
			if parent.Err() == nil {
				writeError(w, http.StatusBadRequest, "reading the request body: "+rerr.Error())
			}
			return
		}
	}

	// The routing answer: headers (mutation + destination), then the body
	// echo, or an ImmediateResponse.
	timer := time.AfterFunc(g.cfg.EPPTimeout, func() { cancel(errEPPTimeout) })
	up := &upstreamRequest{method: r.Method, host: r.Host, header: make(http.Header, len(r.Header)+2)}
	forwardHeader(up.header, r.Header)
	up.header.Del("Content-Length")
	if genID {
		up.header.Set(HeaderRequestID, reqID)
	}
	ps := pseudo{path: uri}
	body := g.getBody(r.ContentLength)
	defer g.putBody(body)
	dest := ""
	gotHeaders, gotBody := false, !hasBody
	for !gotHeaders || !gotBody {
		resp, err := stream.Recv()
		if err != nil {
			timer.Stop()
			g.streamFailed(w, ctx, err, "waiting for the routing answer")
			return
		}
		switch m := resp.Response.(type) {
		case *extprocv3.ProcessingResponse_ImmediateResponse:
			timer.Stop()
			writeImmediate(w, m.ImmediateResponse)
			g.closeStream(stream, cancel, stopWatch, &handedOff)
			return
		case *extprocv3.ProcessingResponse_RequestHeaders:
			if gotHeaders {
				timer.Stop()
				writeError(w, http.StatusInternalServerError, "ext_proc: expected one RequestHeaders answer, found a second")
				return
			}
			gotHeaders = true
			common := m.RequestHeaders.GetResponse()
			applyMutation(common.GetHeaderMutation(), up.header, &ps)
			dest = destination(common.GetHeaderMutation(), resp.GetDynamicMetadata())
		case *extprocv3.ProcessingResponse_RequestBody:
			if !gotHeaders || gotBody {
				timer.Stop()
				writeError(w, http.StatusInternalServerError, "ext_proc: expected the RequestHeaders answer then the body, found a RequestBody answer out of order")
				return
			}
			common := m.RequestBody.GetResponse()
			applyMutation(common.GetHeaderMutation(), up.header, &ps)
			switch bm := common.GetBodyMutation().GetMutation().(type) {
			case *extprocv3.BodyMutation_StreamedResponse:
				if len(*body)+len(bm.StreamedResponse.GetBody()) > maxEcho {
					timer.Stop()
					writeError(w, http.StatusInternalServerError, "ext_proc: expected a body echo of at most "+strconv.Itoa(maxEcho)+" bytes, found more")
					return
				}
				*body = append(*body, bm.StreamedResponse.GetBody()...)
				gotBody = bm.StreamedResponse.GetEndOfStream()
			case *extprocv3.BodyMutation_Body: // a whole replacement (not duplex, accepted anyway)
				*body = append((*body)[:0], bm.Body...)
				gotBody = true
			default:
				timer.Stop()
				writeError(w, http.StatusInternalServerError, "ext_proc: in FULL_DUPLEX_STREAMED mode, expected a streamed body answer, found none")
				return
			}
		case nil:
			// flow-control only
		default:
			timer.Stop()
			writeError(w, http.StatusInternalServerError, "ext_proc: expected a request-phase answer, found "+resp.String())
			return
		}
	}
	timer.Stop()

	dests := parseDestinations(dest)
	if len(dests) == 0 {
		writeError(w, http.StatusServiceUnavailable, "no healthy upstream: expected "+HeaderDestination+" as ip:port[,ip:port...] from epp, found "+strconv.Quote(dest))
		g.closeStream(stream, cancel, stopWatch, &handedOff)
		return
	}
	if ps.method != "" {
		up.method = ps.method
	}
	if ps.authority != "" {
		up.host = ps.authority
	}
	if up.uri, err = url.ParseRequestURI(ps.path); err != nil {
		writeError(w, http.StatusInternalServerError, "ext_proc: expected :path to be a request URI, found "+strconv.Quote(ps.path))
		return
	}
	up.body = *body

	resp, served, err := g.roundTrip(parent, up, dests)
	if err != nil {
		if parent.Err() == nil {
			g.log.Debug("gateway: upstream failed", "endpoint", served, "error", err)
			upstreamFailure(w, served, err)
			g.closeStream(stream, cancel, stopWatch, &handedOff)
		}
		return
	}
	defer resp.Body.Close()

	// Response headers through ext_proc, with the endpoint that served.
	rh := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(resp.Header)+1)}
	addHeader(rh, ":status", strconv.Itoa(resp.StatusCode))
	toHeaderMap(rh, resp.Header)
	noBody := resp.Body == http.NoBody || resp.ContentLength == 0
	err = stream.Send(&extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: rh, EndOfStream: noBody}},
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			MetadataNamespaceLB: {Fields: map[string]*structpb.Value{ServedKey: structpb.NewStringValue(served)}},
		}},
	})
	if err != nil && err != io.EOF {
		g.streamFailed(w, ctx, err, "sending the response headers")
		return
	}
	timer = time.AfterFunc(g.cfg.EPPTimeout, func() { cancel(errEPPTimeout) })
	var hr *extprocv3.HeadersResponse
	for hr == nil {
		m, err := stream.Recv()
		if err != nil {
			timer.Stop()
			g.streamFailed(w, ctx, err, "waiting for the response headers answer")
			return
		}
		switch x := m.Response.(type) {
		case *extprocv3.ProcessingResponse_ResponseHeaders:
			hr = x.ResponseHeaders
		case *extprocv3.ProcessingResponse_ImmediateResponse:
			timer.Stop()
			writeImmediate(w, x.ImmediateResponse)
			g.closeStream(stream, cancel, stopWatch, &handedOff)
			return
		case nil:
		default:
			timer.Stop()
			writeError(w, http.StatusInternalServerError, "ext_proc: expected a ResponseHeaders answer, found "+m.String())
			return
		}
	}
	timer.Stop()
	out := w.Header()
	forwardHeader(out, resp.Header)
	rps := pseudo{}
	if applyMutation(hr.GetResponse().GetHeaderMutation(), out, &rps) {
		// epp removed (or set) content-length: the body length changes, so
		// the client gets it chunked.
		out.Del("Content-Length")
	}
	status := resp.StatusCode
	if n, err := strconv.Atoi(rps.status); err == nil && n >= 100 && n <= 599 {
		status = n
	}
	w.WriteHeader(status)
	flush(w)
	if noBody {
		g.closeStream(stream, cancel, stopWatch, &handedOff)
		return
	}

	// Response body: a sender relays upstream chunks to ext_proc while this
	// goroutine relays ext_proc's answers to the client, flushing each.
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		buf := g.getChunk()
		defer g.putChunk(buf)
		for {
			n, rerr := resp.Body.Read(*buf)
			eos := rerr == io.EOF
			if n > 0 || eos {
				if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
					ResponseBody: &extprocv3.HttpBody{Body: (*buf)[:n], EndOfStream: eos},
				}}); err != nil {
					return // the receive loop sees why
				}
			}
			if eos {
				return
			}
			if rerr != nil {
				if parent.Err() != nil {
					cancel(errClientGone) // the read failed because the client left
				} else {
					cancel(errUpstream)
				}
				return
			}
		}
	}()
	finished := false
	for !finished {
		m, err := stream.Recv()
		if err != nil {
			break
		}
		var b []byte
		switch x := m.Response.(type) {
		case *extprocv3.ProcessingResponse_ResponseBody:
			sr := x.ResponseBody.GetResponse().GetBodyMutation().GetStreamedResponse()
			if sr == nil {
				cancel(errors.New("ext_proc: in FULL_DUPLEX_STREAMED mode, expected a streamed response body answer, found " + m.String()))
				break
			}
			b, finished = sr.GetBody(), sr.GetEndOfStream()
		case nil:
			continue
		default:
			// Nothing else can be honoured once the headers are out.
			cancel(errors.New("ext_proc: expected a ResponseBody answer, found " + m.String()))
		}
		if ctx.Err() != nil {
			break
		}
		if len(b) > 0 {
			if _, werr := w.Write(b); werr != nil {
				cancel(errClientGone)
				break
			}
			flush(w)
		}
	}
	if finished {
		<-sendDone
		g.closeStream(stream, cancel, stopWatch, &handedOff)
		return
	}
	// Broken: stop the sender (its Read or Send returns), then abort the
	// client's response so a truncated stream is not taken as complete.
	cause := context.Cause(ctx)
	if cause == nil {
		cause = errors.New("ext_proc stream ended before the response did")
		cancel(cause)
	}
	resp.Body.Close()
	<-sendDone
	if cause != errClientGone && parent.Err() == nil {
		g.log.Debug("gateway: response aborted", "endpoint", served, "cause", cause)
		panic(http.ErrAbortHandler) // net/http recovers it and resets the connection
	}
}

// sendRequestBody sends the client body in chunks, the last with
// end_of_stream. A Send error ends it early (epp answered, e.g. 413, and
// closed the stream; the caller reads why). It returns only client read
// errors.
func (g *Gateway) sendRequestBody(stream extprocv3.ExternalProcessor_ProcessClient, r *http.Request) error {
	buf := g.getChunk()
	defer g.putChunk(buf)
	var sent int64
	for {
		// Fill a chunk; only io.EOF ends the body (a short body is an error
		// from net/http, not EOF, and must not pass for a complete one).
		n := 0
		var err error
		for n < len(*buf) && err == nil {
			var m int
			m, err = r.Body.Read((*buf)[n:])
			n += m
		}
		sent += int64(n)
		if err != nil && err != io.EOF {
			return err
		}
		eos := err == io.EOF || (r.ContentLength > 0 && sent >= r.ContentLength)
		if serr := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
			RequestBody: &extprocv3.HttpBody{Body: (*buf)[:n], EndOfStream: eos},
		}}); serr != nil || eos {
			return nil
		}
	}
}

// streamFailed answers the client when the ext_proc stream broke before
// the response started: nothing if the client left, 504 on the epp
// timeout, else 500 like Envoy's FailClose.
func (g *Gateway) streamFailed(w http.ResponseWriter, ctx context.Context, err error, during string) {
	switch context.Cause(ctx) {
	case errClientGone:
		return
	case errEPPTimeout:
		writeError(w, http.StatusGatewayTimeout, "ext_proc: expected an answer from epp at "+g.cfg.EPP+" within "+g.cfg.EPPTimeout.String()+" while "+during+", found none")
		return
	}
	if err == io.EOF {
		writeError(w, http.StatusInternalServerError, "ext_proc: epp at "+g.cfg.EPP+" closed the stream while "+during)
		return
	}
	g.log.Debug("gateway: ext_proc stream failed", "during", during, "error", err)
	msg := "ext_proc: stream to epp at " + g.cfg.EPP + " failed while " + during + ": " + err.Error()
	if hint := g.eppHint(err); hint != "" {
		msg += " (" + hint + ")"
	}
	writeError(w, http.StatusInternalServerError, msg)
}

// closeStream ends a stream gracefully, off the request path: half-close,
// wait for epp to end it (its state is released on EOF), then cancel. The
// client is not kept waiting for that round trip.
func (g *Gateway) closeStream(stream extprocv3.ExternalProcessor_ProcessClient, cancel context.CancelCauseFunc, stopWatch func() bool, handedOff *bool) {
	*handedOff = true
	if !stopWatch() {
		cancel(errClientGone) // the client already left: the AfterFunc cancelled
		return
	}
	go func() {
		t := time.AfterFunc(drainTimeout, func() { cancel(errEPPTimeout) })
		defer t.Stop()
		defer cancel(errFinished)
		if stream.CloseSend() != nil {
			return
		}
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
}
