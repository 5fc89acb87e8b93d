package controller

import (
	"fmt"
	"maps"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/jsonpath"

	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// DefaultConfigName is the RoutingConfig/ClusterRoutingConfig name used
// when a ModelRoute names none; its absence is not an error.
const DefaultConfigName = "default"

// DefaultPathTemplate is the path template when no level sets one.
const DefaultPathTemplate = "/{.metadata.namespace}/{.metadata.uid}"

// MaxPathLen is the longest rendered path.
const MaxPathLen = 200

// MergeRouting resolves routing per field: the first non-nil level that sets
// a field wins (levels from the highest precedence: ModelRoute, namespace,
// cluster); annotations and labels merge per key, the higher level winning.
// nil levels are skipped. Defaults are not applied here (see Effective).
func MergeRouting(levels ...*v1alpha1.Routing) v1alpha1.Routing {
	var out v1alpha1.Routing
	// Walk from the lowest precedence up so higher levels overwrite.
	for i := len(levels) - 1; i >= 0; i-- {
		l := levels[i]
		if l == nil {
			continue
		}
		if l.Enabled != nil {
			v := *l.Enabled
			out.Enabled = &v
		}
		if l.Kind != "" {
			out.Kind = l.Kind
		}
		if l.GatewayRef != nil {
			out.GatewayRef = l.GatewayRef.DeepCopy()
		}
		if l.PathTemplate != "" {
			out.PathTemplate = l.PathTemplate
		}
		if l.RequestTimeout != nil {
			v := *l.RequestTimeout
			out.RequestTimeout = &v
		}
		if l.BackendRequestTimeout != nil {
			v := *l.BackendRequestTimeout
			out.BackendRequestTimeout = &v
		}
		if l.BodyMode != "" {
			out.BodyMode = l.BodyMode
		}
		if len(l.Annotations) > 0 {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			maps.Copy(out.Annotations, l.Annotations)
		}
		if len(l.Labels) > 0 {
			if out.Labels == nil {
				out.Labels = map[string]string{}
			}
			maps.Copy(out.Labels, l.Labels)
		}
	}
	return out
}

// Effective fills the defaults into a merged Routing: enabled, kind
// HTTPRoute, the default path template.
func Effective(r v1alpha1.Routing) v1alpha1.Routing {
	if r.Enabled == nil {
		t := true
		r.Enabled = &t
	}
	if r.Kind == "" {
		r.Kind = v1alpha1.RouteKindHTTPRoute
	}
	if r.PathTemplate == "" {
		r.PathTemplate = DefaultPathTemplate
	}
	return r
}

// literalRE is what a template may hold outside braces.
var literalRE = regexp.MustCompile(`^[A-Za-z0-9/._~-]*$`)

// RenderPath renders a path template against the ModelRoute: each {...} is
// a JSONPath expression (client-go's syntax without the braces' own
// nesting), its value made RFC 1123-safe (lowercase alphanumerics and '-',
// at most 63 characters). The result starts with '/', has no "//" and is at
// most MaxPathLen characters. Errors say what was expected and what was
// found; nothing panics on a bad template.
func RenderPath(tmpl string, mr *v1alpha1.ModelRoute) (string, error) {
	if !strings.HasPrefix(tmpl, "/") {
		return "", fmt.Errorf("path template %q: expected it to start with '/'", tmpl)
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(mr)
	if err != nil {
		return "", fmt.Errorf("path template %q: %v", tmpl, err)
	}
	var b strings.Builder
	rest := tmpl
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		closeIdx := strings.IndexByte(rest, '}')
		if closeIdx >= 0 && (open < 0 || closeIdx < open) {
			return "", fmt.Errorf("path template %q: found '}' without '{'", tmpl)
		}
		if open < 0 {
			if !literalRE.MatchString(rest) {
				return "", fmt.Errorf("path template %q: literal %q: expected only letters, digits and / . _ ~ -", tmpl, rest)
			}
			b.WriteString(rest)
			break
		}
		lit := rest[:open]
		if !literalRE.MatchString(lit) {
			return "", fmt.Errorf("path template %q: literal %q: expected only letters, digits and / . _ ~ -", tmpl, lit)
		}
		b.WriteString(lit)
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return "", fmt.Errorf("path template %q: found '{' without '}'", tmpl)
		}
		expr := rest[open+1 : open+end]
		if strings.ContainsRune(expr, '{') {
			return "", fmt.Errorf("path template %q: found nested '{' in {%s}", tmpl, expr)
		}
		v, err := evalJSONPath(expr, obj)
		if err != nil {
			return "", fmt.Errorf("path template %q: {%s}: %v", tmpl, expr, err)
		}
		s := rfc1123(v)
		if s == "" {
			return "", fmt.Errorf("path template %q: {%s} rendered %q, expected a value with at least one letter or digit", tmpl, expr, v)
		}
		b.WriteString(s)
		rest = rest[open+end+1:]
	}
	p := b.String()
	if strings.Contains(p, "//") {
		return "", fmt.Errorf("path template %q: rendered %q, expected no empty segment (\"//\")", tmpl, p)
	}
	if len(p) > MaxPathLen {
		return "", fmt.Errorf("path template %q: rendered %d characters, expected at most %d", tmpl, len(p), MaxPathLen)
	}
	return p, nil
}

// evalJSONPath evaluates one expression (without braces) to a single
// string; a missing key or a list result is an error.
func evalJSONPath(expr string, obj map[string]any) (_ string, err error) {
	// A template is user input: whatever client-go's JSONPath does with
	// it, it becomes an error, never a crash of the controller.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("expected a JSONPath expression, found one that fails: %v", p)
		}
	}()
	if strings.TrimSpace(expr) == "" {
		return "", fmt.Errorf("expected a JSONPath expression, found an empty one")
	}
	jp := jsonpath.New("path").AllowMissingKeys(false)
	if err := jp.Parse("{" + expr + "}"); err != nil {
		return "", fmt.Errorf("expected a JSONPath expression: %v", err)
	}
	res, err := jp.FindResults(obj)
	if err != nil {
		return "", err
	}
	var vals []string
	for _, r := range res {
		for _, v := range r {
			if !v.IsValid() || !v.CanInterface() {
				continue
			}
			switch x := v.Interface().(type) {
			case string:
				vals = append(vals, x)
			case int64, int32, int, float64, bool:
				vals = append(vals, fmt.Sprint(x))
			default:
				return "", fmt.Errorf("expected a string or number, found %T", x)
			}
		}
	}
	if len(vals) != 1 {
		return "", fmt.Errorf("expected one value, found %d", len(vals))
	}
	return vals[0], nil
}

// rfc1123 lowercases s, turns every character that is not [a-z0-9] into
// '-', collapses runs of '-', trims '-' at both ends and cuts to 63.
func rfc1123(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.TrimRight(b.String(), "-")
	if len(out) > 63 {
		out = strings.TrimRight(out[:63], "-")
	}
	return out
}
