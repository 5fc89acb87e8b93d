// Package scorers holds fastepp's scheduling plugins, one file per plugin,
// registered under the GIE type names (queue-scorer, prefix-cache-scorer,
// max-score-picker, ...) so existing EndpointPickerConfigs route the same way.
// The math of each plugin is pinned by table tests against COMPAT.md.
//
// NewRegistry builds the registry explicitly (no init-time registration).
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
	registerQueue(r)
	registerRunning(r)
	registerKVCache(r)
	registerPrefix(r)
	registerLoRA(r)
	registerTokenLoad(r)
	registerPickers(r)
	registerProfileHandlers(r)
	registerUtilization(r)
	registerDataLayer(r)
	return r
}
