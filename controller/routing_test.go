package controller

import (
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// levelValues gives a Routing with every field set to values naming the
// level, so a merged result shows where each field came from.
func levelValues(level string) *v1alpha1.Routing {
	en := level != "cluster" // cluster says false, the others true
	d := gwapiv1.Duration(map[string]string{"mr": "10s", "ns": "20s", "cluster": "30s"}[level])
	bd := gwapiv1.Duration(map[string]string{"mr": "11s", "ns": "21s", "cluster": "31s"}[level])
	kind := map[string]v1alpha1.RouteKind{"mr": v1alpha1.RouteKindAIGatewayRoute, "ns": v1alpha1.RouteKindHTTPRoute, "cluster": v1alpha1.RouteKindAIGatewayRoute}[level]
	mode := map[string]string{"mr": "buffered", "ns": "duplex", "cluster": "buffered"}[level]
	return &v1alpha1.Routing{
		Enabled:               &en,
		Kind:                  kind,
		GatewayRef:            &gwapiv1.ParentReference{Name: gwapiv1.ObjectName("gw-" + level)},
		PathTemplate:          "/" + level,
		RequestTimeout:        &d,
		BackendRequestTimeout: &bd,
		BodyMode:              mode,
		Annotations:           map[string]string{"a/" + level: level, "a/shared": level},
		Labels:                map[string]string{"l-" + level: level, "l-shared": level},
	}
}

// fieldSource lists, per field, which level's value it holds.
func fieldSource(r v1alpha1.Routing) map[string]string {
	src := map[string]string{}
	for _, lvl := range []string{"mr", "ns", "cluster"} {
		v := levelValues(lvl)
		if r.Enabled != nil && *r.Enabled == *v.Enabled && src["enabled"] == "" {
			// enabled only tells true (mr or ns) from false (cluster)
			src["enabled"] = map[bool]string{true: "mr|ns", false: "cluster"}[*r.Enabled]
		}
		if r.GatewayRef != nil && r.GatewayRef.Name == v.GatewayRef.Name {
			src["gatewayRef"] = lvl
		}
		if r.PathTemplate == v.PathTemplate {
			src["pathTemplate"] = lvl
		}
		if r.RequestTimeout != nil && *r.RequestTimeout == *v.RequestTimeout {
			src["requestTimeout"] = lvl
		}
		if r.BackendRequestTimeout != nil && *r.BackendRequestTimeout == *v.BackendRequestTimeout {
			src["backendRequestTimeout"] = lvl
		}
		if r.Annotations["a/shared"] == lvl {
			src["annotations"] = lvl
		}
		if r.Labels["l-shared"] == lvl {
			src["labels"] = lvl
		}
	}
	return src
}

func TestMergeRoutingPrecedence(t *testing.T) {
	tests := []struct {
		name          string
		mr, ns, clu   bool
		want          map[string]string
		wantAnnotKeys []string
	}{
		{"all three levels: ModelRoute wins every field", true, true, true,
			map[string]string{"enabled": "mr|ns", "gatewayRef": "mr", "pathTemplate": "mr", "requestTimeout": "mr", "backendRequestTimeout": "mr", "annotations": "mr", "labels": "mr"},
			[]string{"a/cluster", "a/mr", "a/ns", "a/shared"}},
		{"no ModelRoute routing: namespace wins", false, true, true,
			map[string]string{"enabled": "mr|ns", "gatewayRef": "ns", "pathTemplate": "ns", "requestTimeout": "ns", "backendRequestTimeout": "ns", "annotations": "ns", "labels": "ns"},
			[]string{"a/cluster", "a/ns", "a/shared"}},
		{"no RoutingConfig: ModelRoute over cluster", true, false, true,
			map[string]string{"enabled": "mr|ns", "gatewayRef": "mr", "pathTemplate": "mr", "requestTimeout": "mr", "backendRequestTimeout": "mr", "annotations": "mr", "labels": "mr"},
			[]string{"a/cluster", "a/mr", "a/shared"}},
		{"no ClusterRoutingConfig", true, true, false,
			map[string]string{"enabled": "mr|ns", "gatewayRef": "mr", "pathTemplate": "mr", "requestTimeout": "mr", "backendRequestTimeout": "mr", "annotations": "mr", "labels": "mr"},
			[]string{"a/mr", "a/ns", "a/shared"}},
		{"cluster only", false, false, true,
			map[string]string{"enabled": "cluster", "gatewayRef": "cluster", "pathTemplate": "cluster", "requestTimeout": "cluster", "backendRequestTimeout": "cluster", "annotations": "cluster", "labels": "cluster"},
			[]string{"a/cluster", "a/shared"}},
		{"nothing", false, false, false, map[string]string{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mr, ns, clu *v1alpha1.Routing
			if tc.mr {
				mr = levelValues("mr")
			}
			if tc.ns {
				ns = levelValues("ns")
			}
			if tc.clu {
				clu = levelValues("cluster")
			}
			got := MergeRouting(mr, ns, clu)
			if src := fieldSource(got); !reflect.DeepEqual(src, tc.want) {
				t.Errorf("field sources: expected %v, found %v", tc.want, src)
			}
			var keys []string
			for k := range got.Annotations {
				keys = append(keys, k)
			}
			if !sameSet(keys, tc.wantAnnotKeys) {
				t.Errorf("annotation keys: expected %v (merged), found %v", tc.wantAnnotKeys, keys)
			}
		})
	}
}

// TestMergeRoutingPerField: each field alone at one level, the others
// unset, is taken from that level (no field depends on another).
func TestMergeRoutingPerField(t *testing.T) {
	f := false
	d := gwapiv1.Duration("5s")
	fields := map[string]v1alpha1.Routing{
		"enabled":               {Enabled: &f},
		"kind":                  {Kind: v1alpha1.RouteKindAIGatewayRoute},
		"gatewayRef":            {GatewayRef: &gwapiv1.ParentReference{Name: "g"}},
		"pathTemplate":          {PathTemplate: "/x"},
		"requestTimeout":        {RequestTimeout: &d},
		"backendRequestTimeout": {BackendRequestTimeout: &d},
		"bodyMode":              {BodyMode: "buffered"},
		"annotations":           {Annotations: map[string]string{"k": "v"}},
		"labels":                {Labels: map[string]string{"k": "v"}},
	}
	for field, r := range fields {
		for level := 0; level < 3; level++ {
			levels := make([]*v1alpha1.Routing, 3)
			levels[level] = &r
			got := MergeRouting(levels...)
			if !reflect.DeepEqual(got, r) {
				t.Errorf("%s only at level %d: expected %+v, found %+v", field, level, r, got)
			}
		}
	}
}

func TestEffectiveDefaults(t *testing.T) {
	got := Effective(v1alpha1.Routing{})
	if got.Enabled == nil || !*got.Enabled || got.Kind != v1alpha1.RouteKindHTTPRoute || got.PathTemplate != DefaultPathTemplate {
		t.Errorf("expected enabled, HTTPRoute, %s; found %+v", DefaultPathTemplate, got)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestRenderPath(t *testing.T) {
	mr := &v1alpha1.ModelRoute{ObjectMeta: metav1.ObjectMeta{
		Name: "Llama_3.1-8B", Namespace: "team-a", UID: "0b6c5a3e-1111-2222-3333-444455556666",
		Labels: map[string]string{"team": "Research & Dev", "empty": "__"},
	}, Spec: v1alpha1.ModelRouteSpec{Model: "meta-llama/Llama-3.1-8B-Instruct", TargetPorts: []v1alpha1.Port{{Number: 8000}}}}
	// 96 characters that render to 222.
	long := strings.Repeat("/{.metadata.uid}", 6)
	tests := []struct {
		name, tmpl, want, errHas string
	}{
		{"default", DefaultPathTemplate, "/team-a/0b6c5a3e-1111-2222-3333-444455556666", ""},
		{"name made RFC 1123", "/{.metadata.namespace}/{.metadata.name}", "/team-a/llama-3-1-8b", ""},
		{"label with quotes", "/{.metadata.namespace}/{.metadata.labels['team']}/inference", "/team-a/research-dev/inference", ""},
		{"spec field", "/m/{.spec.model}", "/m/meta-llama-llama-3-1-8b-instruct", ""},
		{"no expressions", "/static/path", "/static/path", ""},
		{"label missing", "/{.metadata.labels['nope']}", "", "not found"},
		{"value with nothing safe", "/{.metadata.labels['empty']}", "", "expected a value with at least one letter or digit"},
		{"unclosed brace", "/{.metadata.name", "", "'{' without '}'"},
		{"stray close", "/a}", "", "'}' without '{'"},
		{"empty expression", "/{}", "", "empty"},
		{"bad JSONPath", "/{.metadata[}", "", "expected a JSONPath expression"},
		{"no leading slash", "{.metadata.name}", "", "start with '/'"},
		{"bad literal", "/a b/{.metadata.name}", "", "expected only letters"},
		{"empty segment", "//{.metadata.name}", "", "empty segment"},
		{"too long", long, "", "expected at most 200"},
		{"list result", "/{.metadata.labels.*}", "", "expected one value"},
		{"filter", "/{.spec.targetPorts[?(@.number==8000)].number}", "/8000", ""},
		{"range", "/{range .metadata.labels}x{end}", "", ""},
		{"index out of range", "/{.spec.targetPorts[5].number}", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RenderPath(tc.tmpl, mr)
			if tc.want == "" && tc.errHas == "" { // only: an error, not a crash
				if err == nil {
					t.Fatalf("expected an error, found path %q", got)
				}
				return
			}
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("expected an error containing %q, found %v (path %q)", tc.errHas, err, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("expected %q, found %q (err %v)", tc.want, got, err)
			}
		})
	}
}

func TestRFC1123(t *testing.T) {
	for in, want := range map[string]string{
		"Abc":                          "abc",
		"a__b":                         "a-b",
		"-x-":                          "x",
		strings.Repeat("a", 70):        strings.Repeat("a", 63),
		strings.Repeat("a", 62) + "_b": strings.Repeat("a", 62),
	} {
		if got := rfc1123(in); got != want {
			t.Errorf("rfc1123(%q): expected %q, found %q", in, want, got)
		}
	}
}

// FuzzRenderPath: any template gives a path within the rules or an error,
// never a panic.
func FuzzRenderPath(f *testing.F) {
	for _, s := range []string{DefaultPathTemplate, "/{.metadata.labels['team']}/x", "/{", "/}", "/{.a[}", "/{range .x}{end}", "/{.spec.targetPorts[*].number}"} {
		f.Add(s)
	}
	mr := &v1alpha1.ModelRoute{ObjectMeta: metav1.ObjectMeta{Name: "m", Namespace: "n", UID: "u", Labels: map[string]string{"team": "t"}},
		Spec: v1alpha1.ModelRouteSpec{TargetPorts: []v1alpha1.Port{{Number: 1}, {Number: 2}}}}
	f.Fuzz(func(t *testing.T, tmpl string) {
		p, err := RenderPath(tmpl, mr)
		if err != nil {
			return
		}
		if len(p) > MaxPathLen || !strings.HasPrefix(p, "/") || strings.Contains(p, "//") || !literalRE.MatchString(p) {
			t.Fatalf("template %q rendered %q: expected a path of at most %d safe characters starting with /", tmpl, p, MaxPathLen)
		}
	})
}
