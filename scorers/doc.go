// Package scorers holds fastepp's scheduling plugins, one file per plugin,
// registered under the GIE type names (queue-scorer, prefix-cache-scorer,
// max-score-picker, ...) so existing EndpointPickerConfigs route the same way.
// The math of each plugin is pinned by table tests against docs/COMPAT.md;
// every plugin keeps the contract written on the scheduler interfaces it
// implements (scheduler/plugin.go). README.md says how to add one.
//
// Register adds this package's types to a registry explicitly (no init-time
// registration); config.NewRegistry composes it with the data-layer types.
// Besides the scheduling plugins it registers the GIE types that take no part
// in a pick (Passive: producers, the OpenAI parser, a conformance-test
// verifier), so GIE configurations that name them load; bind.go says how
// config treats them.
package scorers

import "github.com/fastepp/fastepp/scheduler"

// base carries the type and instance name every plugin reports.
type base struct{ typ, name string }

func (b base) Type() string { return b.typ }
func (b base) Name() string { return b.name }

func newBase(typ, name string) base {
	if name == "" {
		name = typ
	}
	return base{typ: typ, name: name}
}

// NewRegistry returns a registry with every plugin type of this package.
func NewRegistry() *scheduler.Registry {
	r := scheduler.NewRegistry()
	Register(r)
	return r
}

// Register adds every plugin type of this package to r.
func Register(r *scheduler.Registry) {
	registerQueue(r)
	registerRunning(r)
	registerKVCache(r)
	registerPrefix(r)
	registerLoRA(r)
	registerTokenLoad(r)
	registerPickers(r)
	registerProfileHandlers(r)
	registerUtilization(r)
	registerConcurrency(r)
	registerPrefixAffinity(r)
	registerHeaderTestFilter(r)
	registerPrefixProducer(r)
	registerInflightProducer(r)
	registerParsers(r)
	registerServedVerifier(r)
	registerGPUHeadroom(r)
	registerCapacityQueue(r)
}
