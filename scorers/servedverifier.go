package scorers

import "github.com/fastepp/fastepp/scheduler"

// Interface guards: what config checks at load time, checked at compile time.
var (
	_ Passive                    = (*servedVerifier)(nil)
	_ scheduler.ResponseHeaderer = (*servedVerifier)(nil)
)

// ServedVerifierType is a plugin of GIE's conformance tests: on response
// headers it copies the endpoint the proxy reports having served the request
// (envoy.lb metadata x-gateway-destination-endpoint-served) into the response
// header x-conformance-test-served-endpoint, or "fail: ..." when the metadata
// is missing. It takes no parameters.

const ServedVerifierType = "destination-endpoint-served-verifier"

type servedVerifier struct{ base }

// Role implements Passive.
func (*servedVerifier) Role() string { return RoleResponse }

func registerServedVerifier(r *scheduler.Registry) {
	r.MustRegister(ServedVerifierType, scheduler.Factory{
		Kind:  scheduler.KindRequestControl,
		Proto: (*servedVerifier)(nil),
		Doc:   "GIE's conformance tests: writes the endpoint that served the request into the x-conformance-test-served-endpoint response header",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &servedVerifier{newBase(ServedVerifierType, name)}, nil
		},
	})
}

// ConformanceResultHeader is the response header the verifier writes (GIE's).
const ConformanceResultHeader = "x-conformance-test-served-endpoint"

// ResponseHeader implements scheduler.ResponseHeaderer with GIE's values.
func (*servedVerifier) ResponseHeader(served string, hasLB bool) (string, string) {
	switch {
	case !hasLB:
		return ConformanceResultHeader, "fail: missing envoy lb metadata"
	case served == "":
		return ConformanceResultHeader, "fail: missing destination endpoint served metadata"
	}
	return ConformanceResultHeader, served
}
