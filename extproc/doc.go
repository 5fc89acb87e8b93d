// Package extproc owns fastepp's ext_proc server: the gRPC service
// envoy.service.ext_proc.v3.ExternalProcessor that a gateway (Envoy, Envoy
// Gateway, kgateway, Istio, GKE) opens one stream per HTTP request to.
//
// It owns, per stream: the state machine of docs/PROTOCOL.md
// (FULL_DUPLEX_STREAMED and BUFFERED request bodies, headers-only requests,
// response pass-through), the one-pass JSON body scan that finds the model,
// the stream flags and the prompt's byte spans without decoding the document,
// the call into scheduler.Pick, the answer (x-gateway-destination-endpoint
// header and envoy.lb dynamic metadata, body echo, model-name rewrite spliced
// into the original bytes), the usage read from the response, the release of
// in-flight accounting at response end, error or cancel, the error responses
// (ImmediateResponse with an OpenAI-style JSON body), the request-phase limits
// (an idle timeout for streams not yet answered, a bound on the request body
// bytes all streams buffer; idle.go) and the request-path Prometheus metrics
// with the GIE names, whose model labels are limited to the models the picker
// knows (models.go). On the wire (wire.go, wire_encode.go) it has its own
// gRPC codec and stream handler: requests decode into the stream's pooled
// message tree and replies are hand-encoded into pooled buffers, without
// protobuf reflection or allocation; anything else goes to protobuf, so the
// bytes are protobuf's either way.
//
// It does not own the pool (package endpoints), the scoring (scheduler,
// scorers), flags or serving (cmd/epp): cmd/epp builds a Server with New and
// registers it on its grpc.Server with Register.
package extproc
