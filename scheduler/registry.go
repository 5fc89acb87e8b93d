package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Params gives a plugin constructor its configured parameters. Each getter
// returns def when the parameter is absent and an error naming the parameter
// when it has the wrong type. The config layer rejects parameters that no
// getter asked for (unknown parameters), listing the ones the plugin knows.
type Params interface {
	Int(name string, def int) (int, error)
	Float(name string, def float64) (float64, error)
	Bool(name string, def bool) (bool, error)
	String(name string, def string) (string, error)
	Duration(name string, def time.Duration) (time.Duration, error)
	// Has reports whether the parameter was given.
	Has(name string) bool
}

// Factory builds one plugin type.
type Factory struct {
	Kind Kind
	// Params lists the parameter names the type accepts (for error messages).
	Params []string
	New    func(name string, p Params) (Plugin, error)
	// Doc is a one-line description.
	Doc string
}

// Registry maps GIE type names to factories. Build it explicitly at start-up
// (scorers.NewRegistry); it is read-only afterwards.
type Registry struct {
	m map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]Factory{}} }

// Register adds a type; registering a name twice is a programming error.
func (r *Registry) Register(typ string, f Factory) {
	if _, dup := r.m[typ]; dup {
		panic("scheduler: plugin type registered twice: " + typ)
	}
	r.m[typ] = f
}

// Lookup returns the factory for typ.
func (r *Registry) Lookup(typ string) (Factory, bool) {
	f, ok := r.m[typ]
	return f, ok
}

// Types lists registered type names, sorted.
func (r *Registry) Types() []string {
	ts := make([]string, 0, len(r.m))
	for t := range r.m {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// TypesOf lists registered type names of one kind, sorted.
func (r *Registry) TypesOf(k Kind) []string {
	var ts []string
	for t, f := range r.m {
		if f.Kind == k {
			ts = append(ts, t)
		}
	}
	slices.Sort(ts)
	return ts
}

// UnknownTypeError names an unregistered plugin type and the known ones.
type UnknownTypeError struct {
	Type  string
	Known []string
}

func (e *UnknownTypeError) Error() string {
	return fmt.Sprintf("unknown plugin type %q; known types: %s", e.Type, strings.Join(e.Known, ", "))
}
