package controller

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// AIGatewayRouteGVK is Envoy AI Gateway's route (handled as unstructured so
// its Go module stays out of ours).
var AIGatewayRouteGVK = schema.GroupVersionKind{Group: "aigateway.envoyproxy.io", Version: "v1alpha1", Kind: "AIGatewayRoute"}

// Envoy AI Gateway's names.
const (
	// ModelHeader is the header Envoy AI Gateway puts the body's model in.
	ModelHeader = "x-ai-eg-model"
	// BodyModeAnnotation on an InferencePool chooses how Envoy AI Gateway
	// streams bodies to the picker: duplex or buffered.
	BodyModeAnnotation = "aigateway.envoyproxy.io/processing-body-mode"
)

// gatewayParent is the route's parentRef: the Gateway, defaulting group
// and kind the way Gateway API does, and the namespace to the ModelRoute's.
func gatewayParent(mr *v1alpha1.ModelRoute, r v1alpha1.Routing) gwapiv1.ParentReference {
	p := *r.GatewayRef.DeepCopy()
	if p.Group == nil {
		g := gwapiv1.Group(gwapiv1.GroupName)
		p.Group = &g
	}
	if p.Kind == nil {
		k := gwapiv1.Kind("Gateway")
		p.Kind = &k
	}
	if p.Namespace == nil {
		ns := gwapiv1.Namespace(mr.Namespace)
		p.Namespace = &ns
	}
	return p
}

func routeMeta(mr *v1alpha1.ModelRoute, r v1alpha1.Routing) metav1.ObjectMeta {
	labels := childLabels(mr)
	for k, v := range r.Labels {
		if _, ours := labels[k]; !ours {
			labels[k] = v
		}
	}
	m := metav1.ObjectMeta{Name: mr.Name, Namespace: mr.Namespace, Labels: labels}
	if len(r.Annotations) > 0 {
		m.Annotations = r.Annotations
	}
	return m
}

func timeouts(r v1alpha1.Routing) *gwapiv1.HTTPRouteTimeouts {
	if r.RequestTimeout == nil && r.BackendRequestTimeout == nil {
		return nil
	}
	return &gwapiv1.HTTPRouteTimeouts{Request: r.RequestTimeout, BackendRequest: r.BackendRequestTimeout}
}

// HTTPRoute is the route <name>: one rule, PathPrefix path, the prefix
// rewritten to "/" (backends see /v1/chat/completions), the InferencePool as
// backend, and the timeouts. r must be effective with a gatewayRef.
func HTTPRoute(mr *v1alpha1.ModelRoute, r v1alpha1.Routing, path string) *gwapiv1.HTTPRoute {
	group := gwapiv1.Group(giev1.GroupName)
	kind := gwapiv1.Kind("InferencePool")
	pathType := gwapiv1.PathMatchPathPrefix
	rule := gwapiv1.HTTPRouteRule{
		Matches: []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: &pathType, Value: ptr(path)}}},
		BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{
			Group: &group, Kind: &kind, Name: gwapiv1.ObjectName(mr.Name),
		}}}},
		Timeouts: timeouts(r),
	}
	if path != "/" {
		rule.Filters = []gwapiv1.HTTPRouteFilter{{
			Type: gwapiv1.HTTPRouteFilterURLRewrite,
			URLRewrite: &gwapiv1.HTTPURLRewriteFilter{Path: &gwapiv1.HTTPPathModifier{
				Type: gwapiv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr("/"),
			}},
		}}
	}
	return &gwapiv1.HTTPRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: gwapiv1.GroupVersion.String(), Kind: "HTTPRoute"},
		ObjectMeta: routeMeta(mr, r),
		Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{gatewayParent(mr, r)}},
			Rules:           []gwapiv1.HTTPRouteRule{rule},
		},
	}
}

// AIGatewayRoute is the Envoy AI Gateway route <name>: requests whose
// x-ai-eg-model header is the model go to the InferencePool.
func AIGatewayRoute(mr *v1alpha1.ModelRoute, r v1alpha1.Routing) *unstructured.Unstructured {
	p := gatewayParent(mr, r)
	parent := map[string]any{"name": string(p.Name), "kind": string(*p.Kind), "group": string(*p.Group)}
	if p.Namespace != nil && string(*p.Namespace) != mr.Namespace {
		parent["namespace"] = string(*p.Namespace)
	}
	if p.SectionName != nil {
		parent["sectionName"] = string(*p.SectionName)
	}
	rule := map[string]any{
		"matches": []any{map[string]any{"headers": []any{map[string]any{
			"type": "Exact", "name": ModelHeader, "value": mr.Spec.Model,
		}}}},
		"backendRefs": []any{map[string]any{"group": giev1.GroupName, "kind": "InferencePool", "name": mr.Name}},
	}
	if t := timeouts(r); t != nil {
		to := map[string]any{}
		if t.Request != nil {
			to["request"] = string(*t.Request)
		}
		if t.BackendRequest != nil {
			to["backendRequest"] = string(*t.BackendRequest)
		}
		rule["timeouts"] = to
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{"parentRefs": []any{parent}, "rules": []any{rule}},
	}}
	u.SetGroupVersionKind(AIGatewayRouteGVK)
	m := routeMeta(mr, r)
	u.SetName(m.Name)
	u.SetNamespace(m.Namespace)
	u.SetLabels(m.Labels)
	if len(m.Annotations) > 0 {
		u.SetAnnotations(m.Annotations)
	}
	return u
}
