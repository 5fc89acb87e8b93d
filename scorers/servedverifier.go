package scorers

import "github.com/fastepp/fastepp/scheduler"

// Interface guards: what config checks at load time, checked at compile time.
var (
	_ Passive = (*servedVerifier)(nil)
	_ Noter   = (*servedVerifier)(nil)
)

// ServedVerifierType is a plugin of GIE's conformance tests: on response
// headers it copies the endpoint the proxy reports having served the request
// (envoy.lb metadata x-gateway-destination-endpoint-served) into the response
// header x-conformance-test-served-endpoint, or "fail: ..." when the metadata
// is missing. It takes no parameters.
//
// fastepp accepts the type so conformance configurations load, but its
// ext_proc server does not write that header yet (it reads the served
// metadata only to move in-flight accounting): a note says so.
const ServedVerifierType = "destination-endpoint-served-verifier"

type servedVerifier struct{ base }

// Role implements Passive.
func (*servedVerifier) Role() string { return RoleResponse }

func registerServedVerifier(r *scheduler.Registry) {
	r.MustRegister(ServedVerifierType, scheduler.Factory{
		Kind:  scheduler.KindDataLayer, // see Passive
		Proto: (*servedVerifier)(nil),
		Doc:   "accepted for GIE's conformance tests; the x-conformance-test-served-endpoint response header is not written yet",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &servedVerifier{newBase(ServedVerifierType, name)}, nil
		},
	})
}

// Notes implements Noter.
func (*servedVerifier) Notes() []string {
	return []string{"accepted, but fastepp's ext_proc server does not write the x-conformance-test-served-endpoint response header yet, so GIE's conformance checks that read it fail"}
}
