package scheduler

import (
	"fmt"
	"time"
)

// MapParams is a Params over values given in Go, for building plugins in
// code (tests, benchmarks, a plan assembled without YAML). A nil MapParams
// gives every parameter its default. A value of the wrong Go type is an
// error naming the parameter, as the config layer's would be.
type MapParams map[string]any

// Has implements Params.
func (m MapParams) Has(name string) bool { _, ok := m[name]; return ok }

// Int implements Params.
func (m MapParams) Int(name string, def int) (int, error) { return get(m, name, def, "an integer") }

// Float implements Params; an int value is accepted as a number.
func (m MapParams) Float(name string, def float64) (float64, error) {
	if v, ok := m[name].(int); ok {
		return float64(v), nil
	}
	return get(m, name, def, "a number")
}

// Bool implements Params.
func (m MapParams) Bool(name string, def bool) (bool, error) {
	return get(m, name, def, "true or false")
}

// String implements Params.
func (m MapParams) String(name string, def string) (string, error) {
	return get(m, name, def, "a string")
}

// Duration implements Params.
func (m MapParams) Duration(name string, def time.Duration) (time.Duration, error) {
	return get(m, name, def, "a duration")
}

func get[T any](m MapParams, name string, def T, expected string) (T, error) {
	v, ok := m[name]
	if !ok {
		return def, nil
	}
	t, ok := v.(T)
	if !ok {
		return def, fmt.Errorf("%s: expected %s, found %v (%T)", name, expected, v, v)
	}
	return t, nil
}
