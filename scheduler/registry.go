package scheduler

import (
	"fmt"
	"slices"
	"strconv"
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
	// Kind is the role the type plays; the plugins New returns implement the
	// interface it promises (Kind.Check).
	Kind Kind
	// Proto is a nil pointer of the plugin's concrete type, e.g.
	// (*queueScorer)(nil): Register checks it against Kind without calling New.
	Proto Plugin
	// Params lists the parameter names the type accepts (for error messages).
	Params []string
	New    func(name string, p Params) (Plugin, error)
	// Doc is a one-line description.
	Doc string
}

// Registry maps GIE type names to factories. Build it explicitly at start-up
// (config.NewRegistry composes every package's types); it is read-only
// afterwards and then safe for concurrent use.
type Registry struct {
	m map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]Factory{}} }

// Register adds a type. It refuses an empty or duplicate name, a factory
// without New or Proto, and a Proto that does not implement what Kind
// promises.
func (r *Registry) Register(typ string, f Factory) error {
	switch {
	case typ == "":
		return fmt.Errorf("plugin registry: expected a type name, found an empty one")
	case f.New == nil:
		return fmt.Errorf("plugin type %q: expected a New constructor, found none", typ)
	case f.Proto == nil:
		return fmt.Errorf("plugin type %q: expected a Proto (a nil pointer of the plugin type), found none", typ)
	case !f.Kind.Check(f.Proto):
		return fmt.Errorf("plugin type %q is registered as a %s, but %T does not implement %s", typ, f.Kind, f.Proto, f.Kind.iface())
	}
	if _, dup := r.m[typ]; dup {
		return fmt.Errorf("plugin type %q: registered twice", typ)
	}
	r.m[typ] = f
	return nil
}

// MustRegister is Register for start-up code, where a refusal is a bug in
// the program: it panics with Register's error.
func (r *Registry) MustRegister(typ string, f Factory) {
	if err := r.Register(typ, f); err != nil {
		panic(err)
	}
}

// Lookup returns the factory for typ.
func (r *Registry) Lookup(typ string) (Factory, bool) {
	f, ok := r.m[typ]
	return f, ok
}

// New builds a plugin of type typ named name (the type when empty) and
// checks that what the factory returned implements what its kind promises,
// so callers may rely on it. Errors from the factory are returned as they
// are (they name the parameter).
func (r *Registry) New(typ, name string, p Params) (Plugin, error) {
	f, ok := r.m[typ]
	if !ok {
		return nil, &UnknownTypeError{Type: typ, Known: r.Types()}
	}
	if name == "" {
		name = typ
	}
	pl, err := f.New(name, p)
	if err != nil {
		return nil, err
	}
	if pl == nil || !f.Kind.Check(pl) {
		return nil, fmt.Errorf("plugin type %q: its constructor returned %T, which does not implement %s (a bug in the plugin)", typ, pl, f.Kind.iface())
	}
	return pl, nil
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

// iface names the interface a kind promises, for error messages.
func (k Kind) iface() string {
	switch k {
	case KindFilter:
		return "scheduler.Filter"
	case KindScorer:
		return "scheduler.Scorer"
	case KindPicker:
		return "scheduler.Picker"
	case KindProfileHandler:
		return "scheduler.ProfileHandler"
	case KindSaturation:
		return "scheduler.SaturationDetector"
	case KindDataLayer, KindRequestControl:
		return "scheduler.Plugin"
	}
	return "a known kind (" + strconv.Quote(string(k)) + " is not one)"
}
