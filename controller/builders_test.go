package controller

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

func testRoute() *v1alpha1.ModelRoute {
	return &v1alpha1.ModelRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "m"},
		Spec: v1alpha1.ModelRouteSpec{Model: "m", Selector: metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
			TargetPorts: []v1alpha1.Port{{Number: 8000}}},
	}
}

func TestPickerConfigSources(t *testing.T) {
	tests := []struct {
		name             string
		picker           v1alpha1.Picker
		wantFile, wantCM string
		wantKeys         []string
	}{
		{"default", v1alpha1.Picker{}, "/config/default-plugins.yaml", "m-epp", []string{DefaultConfigKey}},
		{"inline", v1alpha1.Picker{Config: "x: 1\n"}, "/config/custom-plugins.yaml", "m-epp", []string{CustomConfigKey, DefaultConfigKey}},
		{"ConfigMap wins over inline", v1alpha1.Picker{Config: "x: 1\n", ConfigMapRef: &v1alpha1.ConfigMapKeyRef{Name: "mine", Key: "epp.yaml"}},
			"/config/epp.yaml", "mine", []string{CustomConfigKey, DefaultConfigKey}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mr := testRoute()
			mr.Spec.Picker = tc.picker
			d := PickerDeployment(mr, "img")
			args := d.Spec.Template.Spec.Containers[0].Args
			i := slices.Index(args, "--config-file")
			if i < 0 || args[i+1] != tc.wantFile {
				t.Errorf("--config-file: expected %s, found args %v", tc.wantFile, args)
			}
			if cm := d.Spec.Template.Spec.Volumes[0].ConfigMap.Name; cm != tc.wantCM {
				t.Errorf("config volume: expected ConfigMap %s, found %s", tc.wantCM, cm)
			}
			var keys []string
			for k := range PickerConfigMap(mr).Data {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tc.wantKeys) {
				t.Errorf("ConfigMap keys: expected %v, found %v", tc.wantKeys, keys)
			}
		})
	}
	// A config change rolls the pods.
	a, b := testRoute(), testRoute()
	b.Spec.Picker.Config = "x: 2\n"
	if configChecksum(a) == configChecksum(b) {
		t.Error("checksum/config: expected a different value for a different config")
	}
}

func TestHTTPRouteBuilder(t *testing.T) {
	mr := testRoute()
	other := gwapiv1.Namespace("gateways")
	r := Effective(v1alpha1.Routing{GatewayRef: &gwapiv1.ParentReference{Name: "gw", Namespace: &other}, Labels: map[string]string{"team": "a", LabelModelRoute: "spoof"}})
	rt := HTTPRoute(mr, r, "/")
	p := rt.Spec.ParentRefs[0]
	if *p.Group != "gateway.networking.k8s.io" || *p.Kind != "Gateway" || *p.Namespace != "gateways" {
		t.Errorf("parentRef: expected Gateway gateways/gw with group and kind set, found %+v", p)
	}
	if len(rt.Spec.Rules[0].Filters) != 0 {
		t.Errorf("path /: expected no rewrite, found %+v", rt.Spec.Rules[0].Filters)
	}
	if rt.Spec.Rules[0].Timeouts != nil {
		t.Errorf("no timeouts set: expected none, found %+v", rt.Spec.Rules[0].Timeouts)
	}
	if rt.Labels["team"] != "a" || rt.Labels[LabelModelRoute] != "m" {
		t.Errorf("labels: expected routing labels merged under the controller's own, found %v", rt.Labels)
	}
}
