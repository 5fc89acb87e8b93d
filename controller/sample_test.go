package controller_test

import (
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"

	"github.com/fastepp/fastepp/controller"
	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// testSample applies deploy/samples (the Envoy AI Gateway guide's mistral
// example) and checks what the guide writes by hand appears.
func (s *server) testSample(t *testing.T) {
	ns := s.env.Namespace(t)
	for _, f := range []string{"gateway.yaml", "mistral.yaml"} {
		s.env.ApplyFile(t, s.c, ns, filepath.Join(repoRoot, "deploy", "samples", f))
	}
	s.condition(t, ns, "mistral", controller.CondConfigResolved, metav1.ConditionTrue, controller.ReasonResolved)

	route := &unstructured.Unstructured{}
	route.SetGroupVersionKind(controller.AIGatewayRouteGVK)
	route.SetNamespace(ns)
	route.SetName("mistral")
	eventually(t, "AIGatewayRoute mistral", func() error { return s.get(route) })
	wantSpec := map[string]any{
		"parentRefs": []any{map[string]any{"name": "inference-pool-with-aigwroute", "kind": "Gateway", "group": "gateway.networking.k8s.io"}},
		"rules": []any{map[string]any{
			"matches":     []any{map[string]any{"headers": []any{map[string]any{"type": "Exact", "name": "x-ai-eg-model", "value": "mistral:latest"}}}},
			"backendRefs": []any{map[string]any{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "mistral"}},
		}},
	}
	if !reflect.DeepEqual(route.Object["spec"], wantSpec) {
		t.Errorf("AIGatewayRoute spec:\nexpected %v\nfound    %v", wantSpec, route.Object["spec"])
	}

	pool := &giev1.InferencePool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mistral"}}
	eventually(t, "InferencePool mistral", func() error { return s.get(pool) })
	if len(pool.Spec.TargetPorts) != 1 || pool.Spec.TargetPorts[0].Number != 8080 || pool.Spec.Selector.MatchLabels["app"] != "mistral-upstream" ||
		pool.Spec.EndpointPickerRef == nil || pool.Spec.EndpointPickerRef.Name != "mistral-epp" || pool.Spec.EndpointPickerRef.Port.Number != 9002 {
		t.Errorf("InferencePool: expected app=mistral-upstream:8080 picked by mistral-epp:9002, found %+v", pool.Spec)
	}

	mr := &v1alpha1.ModelRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mistral"}}
	if err := s.get(mr); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mistral-epp"}}
	eventually(t, "ConfigMap mistral-epp", func() error { return s.get(cm) })
	if cm.Data[controller.CustomConfigKey] != mr.Spec.Picker.Config {
		t.Errorf("ConfigMap %s: expected the sample's config, found %q", controller.CustomConfigKey, cm.Data[controller.CustomConfigKey])
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mistral-epp"}}
	eventually(t, "Deployment mistral-epp", func() error {
		if err := s.get(dep); err != nil {
			return err
		}
		args := dep.Spec.Template.Spec.Containers[0].Args
		for i, a := range args {
			if a == "--config-file" && i+1 < len(args) && args[i+1] == "/config/"+controller.CustomConfigKey {
				return nil
			}
		}
		return fmt.Errorf("expected --config-file /config/%s, found args %v", controller.CustomConfigKey, args)
	})
}
