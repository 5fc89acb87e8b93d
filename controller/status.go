package controller

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// state collects one reconcile's conditions and children.
type state struct {
	mr       *v1alpha1.ModelRoute
	children []v1alpha1.ChildRef
}

func (s *state) set(typ string, ok bool, reason, msg string) {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&s.mr.Status.Conditions, metav1.Condition{
		Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: s.mr.Generation,
	})
}

// ready sets Ready from the others: True when each is True and nothing
// conflicts, else False with the first failing condition's reason.
func (s *state) ready() {
	conds := s.mr.Status.Conditions
	if c := meta.FindStatusCondition(conds, CondChildConflict); c != nil && c.Status == metav1.ConditionTrue {
		s.set(CondReady, false, c.Reason, c.Message)
		return
	}
	for _, typ := range []string{CondConfigResolved, CondInferencePoolReady, CondEndpointPickerReady, CondRouteReady} {
		c := meta.FindStatusCondition(conds, typ)
		if c == nil {
			s.set(CondReady, false, "Unknown", typ+" is not reported")
			return
		}
		if c.Status != metav1.ConditionTrue {
			s.set(CondReady, false, c.Reason, typ+": "+c.Message)
			return
		}
	}
	s.set(CondReady, true, ReasonReady, "the picker is available and the route is accepted")
}

// pickerStatus: EndpointPickerReady from the Deployment's own status, at its
// current generation.
func (r *Reconciler) pickerStatus(ctx context.Context, s *state, want *appsv1.Deployment) error {
	d := &appsv1.Deployment{}
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(want), d)
	if apierrors.IsNotFound(err) {
		s.set(CondEndpointPickerReady, false, ReasonProgressing, "waiting for Deployment "+want.Name+" to appear")
		return nil
	}
	if err != nil {
		return err
	}
	s.set(pickerCondition(d))
	return nil
}

// pickerCondition maps a Deployment's status to EndpointPickerReady.
func pickerCondition(d *appsv1.Deployment) (string, bool, string, string) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	if d.Status.ObservedGeneration < d.Generation {
		return CondEndpointPickerReady, false, ReasonProgressing, fmt.Sprintf("Deployment %s: generation %d not observed yet (observed %d)", d.Name, d.Generation, d.Status.ObservedGeneration)
	}
	// Active-passive pickers: only the leader is ready, so one is enough.
	if d.Status.AvailableReplicas >= 1 {
		return CondEndpointPickerReady, true, ReasonAvailable, fmt.Sprintf("Deployment %s: %d of %d replicas available", d.Name, d.Status.AvailableReplicas, want)
	}
	return CondEndpointPickerReady, false, ReasonUnavailable, fmt.Sprintf("Deployment %s: 0 of %d replicas available", d.Name, want)
}

// poolStatus: InferencePoolReady from the pool's parents (a parent's
// Accepted counts only at the pool's current generation).
func (r *Reconciler) poolStatus(ctx context.Context, s *state, want *giev1.InferencePool) error {
	p := &giev1.InferencePool{}
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(want), p)
	if apierrors.IsNotFound(err) {
		s.set(CondInferencePoolReady, false, ReasonProgressing, "waiting for InferencePool "+want.Name+" to appear")
		return nil
	}
	if err != nil {
		return err
	}
	for _, ps := range p.Status.Parents {
		c := meta.FindStatusCondition(ps.Conditions, string(giev1.InferencePoolConditionAccepted))
		if c == nil || c.ObservedGeneration != p.Generation {
			continue
		}
		if c.Status == metav1.ConditionFalse {
			s.set(CondInferencePoolReady, false, ReasonNotAccepted, fmt.Sprintf("InferencePool %s: parent %s: %s: %s", p.Name, ps.ParentRef.Name, c.Reason, c.Message))
			return nil
		}
	}
	for _, ps := range p.Status.Parents {
		c := meta.FindStatusCondition(ps.Conditions, string(giev1.InferencePoolConditionAccepted))
		if c != nil && c.ObservedGeneration == p.Generation && c.Status == metav1.ConditionTrue {
			s.set(CondInferencePoolReady, true, ReasonAccepted, fmt.Sprintf("InferencePool %s accepted by %s", p.Name, ps.ParentRef.Name))
			return nil
		}
	}
	s.set(CondInferencePoolReady, true, ReasonCreated, fmt.Sprintf("InferencePool %s exists; no gateway has reported on it yet", p.Name))
	return nil
}

// routeStatus: RouteReady from the route's parent status for our Gateway
// at the route's current generation.
func (r *Reconciler) routeStatus(ctx context.Context, s *state, want client.Object, parent gwapiv1.ParentReference) error {
	var generation int64
	var parents []gwapiv1.RouteParentStatus
	var conds []metav1.Condition
	switch want.(type) {
	case *gwapiv1.HTTPRoute:
		rt := &gwapiv1.HTTPRoute{}
		err := r.Client.Get(ctx, client.ObjectKeyFromObject(want), rt)
		if apierrors.IsNotFound(err) {
			s.set(CondRouteReady, false, ReasonWaitingForGateway, "waiting for HTTPRoute "+want.GetName()+" to appear")
			return nil
		}
		if err != nil {
			return err
		}
		generation, parents = rt.Generation, rt.Status.Parents
	default:
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(AIGatewayRouteGVK)
		err := r.Client.Get(ctx, client.ObjectKeyFromObject(want), u)
		if apierrors.IsNotFound(err) {
			s.set(CondRouteReady, false, ReasonWaitingForGateway, "waiting for AIGatewayRoute "+want.GetName()+" to appear")
			return nil
		}
		if err != nil {
			return err
		}
		generation = u.GetGeneration()
		var st struct {
			Parents    []gwapiv1.RouteParentStatus `json:"parents"`
			Conditions []metav1.Condition          `json:"conditions"`
		}
		if m, ok := u.Object["status"].(map[string]any); ok {
			_ = fromMap(m, &st)
		}
		parents, conds = st.Parents, st.Conditions
	}
	typ, ok, reason, msg := routeCondition(want.GetObjectKind().GroupVersionKind().Kind, want.GetNamespace(), generation, parents, conds, parent)
	s.set(typ, ok, reason, msg)
	return nil
}

// routeCondition maps a route's status to RouteReady: the parent entry for
// our Gateway (Gateway API's shape), else top-level conditions (Envoy AI
// Gateway's AIGatewayRoute), counted only at the route's generation.
func routeCondition(kind, ns string, generation int64, parents []gwapiv1.RouteParentStatus, conds []metav1.Condition, want gwapiv1.ParentReference) (string, bool, string, string) {
	for _, ps := range parents {
		if !sameParent(ps.ParentRef, want, ns) {
			continue
		}
		c := meta.FindStatusCondition(ps.Conditions, string(gwapiv1.RouteConditionAccepted))
		if c == nil || c.ObservedGeneration != generation {
			continue
		}
		if c.Status == metav1.ConditionTrue {
			return CondRouteReady, true, ReasonAccepted, fmt.Sprintf("%s accepted by Gateway %s", kind, want.Name)
		}
		return CondRouteReady, false, ReasonNotAccepted, fmt.Sprintf("%s not accepted by Gateway %s: %s: %s", kind, want.Name, c.Reason, c.Message)
	}
	if c := meta.FindStatusCondition(conds, "Accepted"); c != nil && c.ObservedGeneration == generation {
		if c.Status == metav1.ConditionTrue {
			return CondRouteReady, true, ReasonAccepted, kind + " accepted"
		}
		return CondRouteReady, false, ReasonNotAccepted, fmt.Sprintf("%s not accepted: %s: %s", kind, c.Reason, c.Message)
	}
	if c := meta.FindStatusCondition(conds, "NotAccepted"); c != nil && c.ObservedGeneration == generation && c.Status == metav1.ConditionTrue {
		return CondRouteReady, false, ReasonNotAccepted, fmt.Sprintf("%s not accepted: %s: %s", kind, c.Reason, c.Message)
	}
	return CondRouteReady, false, ReasonWaitingForGateway, fmt.Sprintf("waiting for Gateway %s to accept %s generation %d", want.Name, kind, generation)
}

func sameParent(got, want gwapiv1.ParentReference, routeNS string) bool {
	ns := func(p gwapiv1.ParentReference) string {
		if p.Namespace != nil {
			return string(*p.Namespace)
		}
		return routeNS
	}
	sec := func(p gwapiv1.ParentReference) string {
		if p.SectionName != nil {
			return string(*p.SectionName)
		}
		return ""
	}
	return got.Name == want.Name && ns(got) == ns(want) && sec(got) == sec(want)
}

// gatewayURL is scheme://host[:port]path from the Gateway's listener (the
// named section, else the first HTTP or HTTPS one): its hostname unless a
// wildcard, else the Gateway's first address. "" when unknown.
func (r *Reconciler) gatewayURL(ctx context.Context, parent gwapiv1.ParentReference, path string) string {
	if parent.Kind != nil && *parent.Kind != "Gateway" {
		return ""
	}
	gw := &gwapiv1.Gateway{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: string(*parent.Namespace), Name: string(parent.Name)}, gw); err != nil {
		return ""
	}
	return GatewayURL(gw, parent, path)
}

// GatewayURL computes the model's URL from a Gateway (see gatewayURL).
func GatewayURL(gw *gwapiv1.Gateway, parent gwapiv1.ParentReference, path string) string {
	var l *gwapiv1.Listener
	for i := range gw.Spec.Listeners {
		li := &gw.Spec.Listeners[i]
		if parent.SectionName != nil {
			if li.Name == *parent.SectionName {
				l = li
				break
			}
			continue
		}
		if li.Protocol == gwapiv1.HTTPProtocolType || li.Protocol == gwapiv1.HTTPSProtocolType {
			l = li
			break
		}
	}
	if l == nil {
		return ""
	}
	host := ""
	if l.Hostname != nil && !strings.HasPrefix(string(*l.Hostname), "*") {
		host = string(*l.Hostname)
	} else if len(gw.Status.Addresses) > 0 {
		host = gw.Status.Addresses[0].Value
	}
	if host == "" {
		return ""
	}
	scheme, def := "http", gwapiv1.PortNumber(80)
	if l.Protocol == gwapiv1.HTTPSProtocolType {
		scheme, def = "https", 443
	}
	if l.Port != def && l.Port != 0 {
		host = net.JoinHostPort(host, strconv.Itoa(int(l.Port)))
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + path
}

func fromMap(m map[string]any, into any) error {
	return runtimeConverter.FromUnstructured(m, into)
}

var runtimeConverter = runtime.DefaultUnstructuredConverter
