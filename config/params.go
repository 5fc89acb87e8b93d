package config

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// params implements scheduler.Params over a YAML mapping node, recording every
// parameter's effective value (given or default) and which keys were read.
type params struct {
	node      *yaml.Node // mapping, or nil when absent
	used      map[string]bool
	effective []param
}

type param struct {
	Name  string
	Value any
}

func newParams(n *yaml.Node) (*params, error) {
	if n != nil && n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			n = nil
		} else {
			return nil, fmt.Errorf("line %d: parameters: expected a mapping of name: value, found %s", n.Line, describe(n))
		}
	}
	return &params{node: n, used: map[string]bool{}}, nil
}

func (p *params) find(name string) *yaml.Node {
	if p.node == nil {
		return nil
	}
	for i := 0; i+1 < len(p.node.Content); i += 2 {
		if p.node.Content[i].Value == name {
			p.used[name] = true
			return p.node.Content[i+1]
		}
	}
	return nil
}

func (p *params) record(name string, v any) { p.effective = append(p.effective, param{name, v}) }

func (p *params) Has(name string) bool { return p.find(name) != nil }

// paramError is a parameter error at the parameter's own line.
type paramError struct {
	line int
	msg  string
}

func (e *paramError) Error() string { return e.msg }

func wrongType(name string, n *yaml.Node, want string) error {
	return &paramError{n.Line, fmt.Sprintf("parameter %q: expected %s, found %s", name, want, describe(n))}
}

func (p *params) Int(name string, def int) (int, error) {
	n := p.find(name)
	if n == nil {
		p.record(name, def)
		return def, nil
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		return 0, wrongType(name, n, "an integer")
	}
	v, err := strconv.ParseInt(n.Value, 0, 64)
	if err != nil || v > math.MaxInt32 || v < math.MinInt32 {
		return 0, wrongType(name, n, "an integer within ±2147483647")
	}
	p.record(name, int(v))
	return int(v), nil
}

func (p *params) Float(name string, def float64) (float64, error) {
	n := p.find(name)
	if n == nil {
		p.record(name, def)
		return def, nil
	}
	v, err := floatOf(n)
	if err != nil {
		return 0, wrongType(name, n, "a finite number")
	}
	p.record(name, v)
	return v, nil
}

func floatOf(n *yaml.Node) (float64, error) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
		return 0, fmt.Errorf("not a number")
	}
	var v float64
	if err := n.Decode(&v); err != nil {
		return 0, err
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return v, fmt.Errorf("not finite")
	}
	return v, nil
}

func (p *params) Bool(name string, def bool) (bool, error) {
	n := p.find(name)
	if n == nil {
		p.record(name, def)
		return def, nil
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return false, wrongType(name, n, "true or false")
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		return false, wrongType(name, n, "true or false")
	}
	p.record(name, v)
	return v, nil
}

func (p *params) String(name string, def string) (string, error) {
	n := p.find(name)
	if n == nil {
		p.record(name, def)
		return def, nil
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return "", wrongType(name, n, "a string")
	}
	p.record(name, n.Value)
	return n.Value, nil
}

func (p *params) Duration(name string, def time.Duration) (time.Duration, error) {
	n := p.find(name)
	if n == nil {
		p.record(name, def.String())
		return def, nil
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return 0, wrongType(name, n, `a duration such as "200ms" or "2s"`)
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		return 0, wrongType(name, n, `a duration such as "200ms" or "2s"`)
	}
	p.record(name, d.String())
	return d, nil
}

// Decode decodes the structured parameter name (a list or a mapping, such as
// core-metrics-extractor's engineConfigs) into v; a *yaml.Node receives the
// node itself, with its lines, for the plugin to check. An absent parameter
// leaves v as it is. The value is recorded for the effective configuration
// with aliases expanded, so the rendering stands alone. This is beyond
// scheduler.Params: plugins reach it with a checked type assertion.
func (p *params) Decode(name string, v any) error {
	n := p.find(name)
	if n == nil {
		return nil
	}
	budget := maxDecodedNodes
	c, err := expand(n, &budget, 0)
	if err != nil {
		return &paramError{n.Line, fmt.Sprintf("parameter %q: %v", name, err)}
	}
	if err := c.Decode(v); err != nil {
		return &paramError{n.Line, fmt.Sprintf("parameter %q: %v", name, err)}
	}
	p.record(name, c)
	return nil
}

// maxDecodedNodes bounds a structured parameter once aliases are expanded
// (a few aliases can otherwise stand for billions of nodes).
const maxDecodedNodes = 100000

// expand copies n with aliases replaced by copies of what they name and
// anchors dropped, spending one unit of budget per node.
func expand(n *yaml.Node, budget *int, depth int) (*yaml.Node, error) {
	if *budget--; *budget < 0 || depth > 100 {
		return nil, fmt.Errorf("expected a value of at most %d nodes nested at most 100 deep (aliases expanded), found more", maxDecodedNodes)
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return expand(n.Alias, budget, depth+1)
	}
	c := *n
	c.Anchor, c.Alias = "", nil
	c.HeadComment, c.LineComment, c.FootComment = "", "", ""
	c.Content = nil
	for _, k := range n.Content {
		e, err := expand(k, budget, depth+1)
		if err != nil {
			return nil, err
		}
		c.Content = append(c.Content, e)
	}
	return &c, nil
}

// unused lists given keys no getter read, with their lines.
func (p *params) unused() []*yaml.Node {
	if p.node == nil {
		return nil
	}
	var out []*yaml.Node
	for i := 0; i+1 < len(p.node.Content); i += 2 {
		if !p.used[p.node.Content[i].Value] {
			out = append(out, p.node.Content[i])
		}
	}
	return out
}

// describe names a node's kind for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!null":
		return "null"
	case "!!str":
		return strconv.Quote(n.Value)
	}
	return n.Value
}
