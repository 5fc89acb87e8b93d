package scorers

import "github.com/fastepp/fastepp/scheduler"

// What package config asks of a plugin beyond the scheduler's interfaces.
// Each interface is optional; config looks for it with a checked type
// assertion on every plugin it builds, once, at load time (never per pick).

// Noter is implemented by plugins with something the operator should know
// about how their configuration was read: a deprecated parameter ignored as
// GIE ignores it, a part of GIE's behaviour fastepp cannot offer yet. config
// adds each note to Loaded.Notes, prefixed with the plugin's name and type.
type Noter interface {
	scheduler.Plugin
	// Notes returns the notes; the same ones on every call.
	Notes() []string
}

// Binder is implemented by plugins that work with other plugins of their
// configuration, as GIE's data producers and consumers do (the
// approx-prefix-cache-producer's parameters define the prefix index the
// prefix-cache-scorer reads; the prefix-cache-affinity-filter reads that
// index). config calls Bind once per configuration, after every plugin and
// profile is built and before the plan is made, so nothing runs yet.
type Binder interface {
	scheduler.Plugin
	// Bind receives every plugin of the configuration (config order, implicit
	// ones last) and its profiles. It returns notes for the operator, or an
	// error saying what was expected and what was found.
	Bind(plugins []scheduler.Plugin, profiles []*scheduler.Profile) (notes []string, err error)
}

// Passive is implemented by the GIE plugin types fastepp accepts that take
// no part in a pick: GIE's request-control and request-handling plugins whose
// work fastepp does itself (in-flight accounting on every Handle, the prefix
// index updated at pick time, the one-pass OpenAI body scan) or cannot do yet.
//
// They are registered as scheduler.KindRequestControl, which promises
// nothing beyond scheduler.Plugin. config skips them, with a note, when a
// profile names one (GIE ignores them there too), and the config's parser
// section names a Passive plugin of RoleParser.
type Passive interface {
	scheduler.Plugin
	// Role is GIE's name for what the type does, e.g. RoleParser. It is a
	// constant of the type: config calls it on the registry's Proto, a nil
	// pointer, so it must not read the receiver.
	Role() string
}

// Roles of Passive plugins.
const (
	// RoleProducer: a request-control data producer (PrepareData/PreRequest).
	RoleProducer = "request data producer"
	// RoleParser: a request parser, named by the config's parser section.
	RoleParser = "parser"
	// RoleResponse: a request-control response plugin (ResponseHeader).
	RoleResponse = "response plugin"
)
