package controller

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestPickerCondition(t *testing.T) {
	dep := func(gen, observed int64, available int32) *appsv1.Deployment {
		n := int32(2)
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "m-epp", Generation: gen},
			Spec:       appsv1.DeploymentSpec{Replicas: &n},
			Status:     appsv1.DeploymentStatus{ObservedGeneration: observed, AvailableReplicas: available},
		}
	}
	tests := []struct {
		name   string
		d      *appsv1.Deployment
		ok     bool
		reason string
	}{
		{"new generation not observed", dep(2, 1, 1), false, ReasonProgressing},
		{"none available", dep(1, 1, 0), false, ReasonUnavailable},
		{"leader available", dep(1, 1, 1), true, ReasonAvailable},
		{"all available", dep(3, 3, 2), true, ReasonAvailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			typ, ok, reason, msg := pickerCondition(tc.d)
			if typ != CondEndpointPickerReady || ok != tc.ok || reason != tc.reason {
				t.Errorf("expected %s=%v/%s, found %s=%v/%s (%s)", CondEndpointPickerReady, tc.ok, tc.reason, typ, ok, reason, msg)
			}
		})
	}
}

func TestRouteCondition(t *testing.T) {
	ns := gwapiv1.Namespace("ns")
	gw := gwapiv1.ParentReference{Name: "gw", Namespace: &ns}
	other := gwapiv1.ParentReference{Name: "other"}
	accepted := func(p gwapiv1.ParentReference, st metav1.ConditionStatus, gen int64) gwapiv1.RouteParentStatus {
		return gwapiv1.RouteParentStatus{ParentRef: p, ControllerName: "example.com/gw", Conditions: []metav1.Condition{
			{Type: "Accepted", Status: st, Reason: "R", Message: "m", ObservedGeneration: gen},
		}}
	}
	tests := []struct {
		name    string
		parents []gwapiv1.RouteParentStatus
		conds   []metav1.Condition
		ok      bool
		reason  string
	}{
		{"no status", nil, nil, false, ReasonWaitingForGateway},
		{"accepted at current generation", []gwapiv1.RouteParentStatus{accepted(gwapiv1.ParentReference{Name: "gw"}, metav1.ConditionTrue, 2)}, nil, true, ReasonAccepted},
		{"accepted at an old generation", []gwapiv1.RouteParentStatus{accepted(gw, metav1.ConditionTrue, 1)}, nil, false, ReasonWaitingForGateway},
		{"not accepted", []gwapiv1.RouteParentStatus{accepted(gw, metav1.ConditionFalse, 2)}, nil, false, ReasonNotAccepted},
		{"another parent's acceptance", []gwapiv1.RouteParentStatus{accepted(other, metav1.ConditionTrue, 2)}, nil, false, ReasonWaitingForGateway},
		{"AIGatewayRoute Accepted", nil, []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, ObservedGeneration: 2}}, true, ReasonAccepted},
		{"AIGatewayRoute NotAccepted", nil, []metav1.Condition{{Type: "NotAccepted", Status: metav1.ConditionTrue, ObservedGeneration: 2}}, false, ReasonNotAccepted},
		{"AIGatewayRoute old Accepted", nil, []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, ObservedGeneration: 1}}, false, ReasonWaitingForGateway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			typ, ok, reason, msg := routeCondition("HTTPRoute", "ns", 2, tc.parents, tc.conds, gw)
			if typ != CondRouteReady || ok != tc.ok || reason != tc.reason {
				t.Errorf("expected %s=%v/%s, found %s=%v/%s (%s)", CondRouteReady, tc.ok, tc.reason, typ, ok, reason, msg)
			}
		})
	}
}

func TestGatewayURL(t *testing.T) {
	host := gwapiv1.Hostname("models.example.com")
	wild := gwapiv1.Hostname("*.example.com")
	sec := gwapiv1.SectionName("https")
	gwWith := func(addr string, ls ...gwapiv1.Listener) *gwapiv1.Gateway {
		g := &gwapiv1.Gateway{Spec: gwapiv1.GatewaySpec{Listeners: ls}}
		if addr != "" {
			g.Status.Addresses = []gwapiv1.GatewayStatusAddress{{Value: addr}}
		}
		return g
	}
	tests := []struct {
		name   string
		gw     *gwapiv1.Gateway
		parent gwapiv1.ParentReference
		want   string
	}{
		{"hostname", gwWith("", gwapiv1.Listener{Name: "http", Protocol: gwapiv1.HTTPProtocolType, Port: 80, Hostname: &host}), gwapiv1.ParentReference{}, "http://models.example.com/p"},
		{"wildcard uses the address", gwWith("10.0.0.1", gwapiv1.Listener{Name: "http", Protocol: gwapiv1.HTTPProtocolType, Port: 8080, Hostname: &wild}), gwapiv1.ParentReference{}, "http://10.0.0.1:8080/p"},
		{"section https", gwWith("1.2.3.4",
			gwapiv1.Listener{Name: "http", Protocol: gwapiv1.HTTPProtocolType, Port: 80},
			gwapiv1.Listener{Name: "https", Protocol: gwapiv1.HTTPSProtocolType, Port: 443}), gwapiv1.ParentReference{SectionName: &sec}, "https://1.2.3.4/p"},
		{"no address", gwWith("", gwapiv1.Listener{Name: "http", Protocol: gwapiv1.HTTPProtocolType, Port: 80}), gwapiv1.ParentReference{}, ""},
		{"IPv6", gwWith("fd00::1", gwapiv1.Listener{Name: "http", Protocol: gwapiv1.HTTPProtocolType, Port: 80}), gwapiv1.ParentReference{}, "http://[fd00::1]/p"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := GatewayURL(tc.gw, tc.parent, "/p"); got != tc.want {
				t.Errorf("expected %q, found %q", tc.want, got)
			}
		})
	}
}
