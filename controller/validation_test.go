package controller_test

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// testValidation: the generated CRD refuses what the controller cannot
// serve, at admission.
func (s *server) testValidation(t *testing.T) {
	ns := s.env.Namespace(t)
	tests := []struct {
		name   string
		edit   func(mr *v1alpha1.ModelRoute)
		errHas string
	}{
		{"valid", func(*v1alpha1.ModelRoute) {}, ""},
		{"matchExpressions", func(mr *v1alpha1.ModelRoute) {
			mr.Spec.Selector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpExists}}
		}, "matchExpressions is not supported"},
		{"empty selector", func(mr *v1alpha1.ModelRoute) { mr.Spec.Selector = metav1.LabelSelector{} }, "at least one label"},
		{"no ports", func(mr *v1alpha1.ModelRoute) { mr.Spec.TargetPorts = nil }, "targetPorts"},
		{"port 0", func(mr *v1alpha1.ModelRoute) { mr.Spec.TargetPorts = []v1alpha1.Port{{Number: 0}} }, "number"},
		{"no model", func(mr *v1alpha1.ModelRoute) { mr.Spec.Model = "" }, "model"},
		{"bad body mode", func(mr *v1alpha1.ModelRoute) { mr.Spec.Routing.BodyMode = "stream" }, "bodyMode"},
		{"bad route kind", func(mr *v1alpha1.ModelRoute) { mr.Spec.Routing.Kind = "GRPCRoute" }, "kind"},
		{"template over 200", func(mr *v1alpha1.ModelRoute) { mr.Spec.Routing.PathTemplate = "/" + strings.Repeat("a", 200) }, "pathTemplate"},
		{"replicas 0", func(mr *v1alpha1.ModelRoute) { mr.Spec.Picker.Replicas = ptr(int32(0)) }, "replicas"},
		{"name starting with a digit", func(mr *v1alpha1.ModelRoute) { mr.Name = "1model" }, "DNS-1035"},
		{"name of 64 characters", func(mr *v1alpha1.ModelRoute) { mr.Name = "m" + strings.Repeat("a", 63) }, "DNS-1035"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mr := modelRoute(ns, "v"+strings.Repeat("x", i))
			tc.edit(mr)
			err := s.c.Create(context.Background(), mr)
			if tc.errHas == "" {
				if err != nil {
					t.Fatalf("expected the ModelRoute accepted, found %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("expected a rejection naming %q, found %v", tc.errHas, err)
			}
		})
	}
}
