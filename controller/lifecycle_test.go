package controller_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fastepp/fastepp/controller"
	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// testSpecChanges: children follow spec changes, and what a new spec no
// longer needs goes: the leader-election Role and RoleBinding when replicas
// drop to 1, the HTTPRoute when the kind becomes AIGatewayRoute (and back).
func (s *server) testSpecChanges(t *testing.T) {
	ctx := context.Background()
	ns := s.env.Namespace(t)
	mr := modelRoute(ns, "m")
	mr.Spec.Picker.Replicas = ptr(int32(3))
	if err := s.c.Create(ctx, mr); err != nil {
		t.Fatal(err)
	}
	le := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m-epp-leader-election"}}
	eventually(t, "leader-election Role with 3 replicas", func() error { return s.get(le) })
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m-epp"}}
	eventually(t, "--ha-enable-leader-election", func() error {
		if err := s.get(dep); err != nil {
			return err
		}
		if !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, "--ha-enable-leader-election") {
			return fmt.Errorf("expected --ha-enable-leader-election, found %v", dep.Spec.Template.Spec.Containers[0].Args)
		}
		return nil
	})

	update := func(edit func(*v1alpha1.ModelRoute)) {
		t.Helper()
		eventually(t, "updating the ModelRoute", func() error {
			cur := &v1alpha1.ModelRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m"}}
			if err := s.get(cur); err != nil {
				return err
			}
			edit(cur)
			return s.c.Update(ctx, cur)
		})
	}
	gone := func(what string, o client.Object) {
		t.Helper()
		eventually(t, what+" deleted", func() error {
			if err := s.get(o); !apierrors.IsNotFound(err) {
				return fmt.Errorf("expected NotFound, found %v", err)
			}
			return nil
		})
	}
	update(func(m *v1alpha1.ModelRoute) { m.Spec.Picker.Replicas = ptr(int32(1)) })
	gone("leader-election Role", le)
	gone("leader-election RoleBinding", &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m-epp-leader-election"}})

	aig := &unstructured.Unstructured{}
	aig.SetGroupVersionKind(controller.AIGatewayRouteGVK)
	aig.SetNamespace(ns)
	aig.SetName("m")
	update(func(m *v1alpha1.ModelRoute) { m.Spec.Routing.Kind = v1alpha1.RouteKindAIGatewayRoute })
	eventually(t, "AIGatewayRoute", func() error { return s.get(aig) })
	gone("HTTPRoute after the switch to AIGatewayRoute", &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m"}})

	update(func(m *v1alpha1.ModelRoute) { m.Spec.Routing.Enabled = ptr(false) })
	gone("AIGatewayRoute with routing disabled", aig)
	s.condition(t, ns, "m", controller.CondRouteReady, metav1.ConditionTrue, controller.ReasonRoutingDisabled)
}
