package scorers

import "github.com/fastepp/fastepp/scheduler"

// Interface guard: what config checks at load time, checked at compile time.
var _ Passive = (*inflightProducer)(nil)

// InflightProducerType is GIE's in-flight load producer: in GIE it counts the
// requests and estimated tokens dispatched to each endpoint (PreRequest) and
// not yet answered (ResponseBody at end of stream), for token-load-scorer and
// concurrency-detector. fastepp does this for every request whether or not
// the type is configured: Pick charges the primary endpoint's Handle
// (Handle.Inflight, Handle.InflightTokens) and the ext_proc server releases
// it when the response ends. So the type is accepted and does nothing. It
// takes no parameters, as in GIE.
const InflightProducerType = "inflight-load-producer"

type inflightProducer struct{ base }

// Role implements Passive.
func (*inflightProducer) Role() string { return RoleProducer }

func registerInflightProducer(r *scheduler.Registry) {
	r.MustRegister(InflightProducerType, scheduler.Factory{
		Kind:  scheduler.KindRequestControl,
		Proto: (*inflightProducer)(nil),
		Doc:   "accepted for GIE compatibility: fastepp counts in-flight requests and tokens on every endpoint itself",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &inflightProducer{newBase(InflightProducerType, name)}, nil
		},
	})
}
