package controller_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"

	"github.com/fastepp/fastepp/controller"
	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
	"github.com/fastepp/fastepp/internal/kubetest"
)

// TestPickerMatchesChart: the picker the controller makes for a ModelRoute
// is what deploy/charts/inferencepool renders for the same settings (the
// release named like the ModelRoute), so there is one definition of a
// correct picker deployment. Compared: the set of objects, the
// Deployment's spec (but the checksum/config annotation, a hash of
// different text), the Service's spec, the ConfigMap's data, the Roles'
// rules and RoleBindings' subjects and roles, the InferencePool's spec, the
// ClusterRoleBinding's subjects, and the chart's metrics-auth ClusterRole's
// rules against the one deploy/controller/rbac.yaml installs. Labels differ
// on purpose (the chart's name Helm).
func TestPickerMatchesChart(t *testing.T) {
	const ns = "models"
	base := `
inferenceExtension:
  image: {registry: example.com, repository: fastepp/epp, tag: v9}
inferencePool:
  modelServers:
    matchLabels: {app: vllm-llama3}
`
	custom := "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: queue-scorer\nschedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n"
	tests := []struct {
		name   string
		edit   func(mr *v1alpha1.ModelRoute)
		values string
	}{
		{"defaults", nil, "inferencePool: {targetPorts: [{number: 8000}]}"},
		{"leader election with 3 replicas", func(mr *v1alpha1.ModelRoute) { mr.Spec.Picker.Replicas = ptr(int32(3)) },
			"inferenceExtension: {replicas: 3}\ninferencePool: {targetPorts: [{number: 8000}]}"},
		{"inline config", func(mr *v1alpha1.ModelRoute) { mr.Spec.Picker.Config = custom },
			"inferenceExtension:\n  pluginsConfigFile: custom-plugins.yaml\n  pluginsCustomConfig:\n    custom-plugins.yaml: |\n" + indent(custom, "      ") + "inferencePool: {targetPorts: [{number: 8000}]}"},
		{"flags, resources, FailClose, two ports", func(mr *v1alpha1.ModelRoute) {
			mr.Spec.Picker.Flags = map[string]string{"v": "4", "refresh-metrics-interval": "100ms"}
			mr.Spec.Picker.FailureMode = "FailClose"
			mr.Spec.Picker.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}}
			mr.Spec.TargetPorts = []v1alpha1.Port{{Number: 8000}, {Number: 8001}}
		}, `
inferenceExtension:
  failureMode: FailClose
  flags: {v: "4", refresh-metrics-interval: 100ms}
  # Helm merges values into the defaults; spec.picker.resources replaces
  # them (a ResourceRequirements), so the defaults are nulled here.
  resources: {requests: {cpu: 250m, memory: null}, limits: null}
inferencePool: {targetPorts: [{number: 8000}, {number: 8001}]}
`},
	}
	authRules := metricsAuthRules(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mr := &v1alpha1.ModelRoute{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "llama"},
				Spec: v1alpha1.ModelRouteSpec{
					Model:       "m",
					Selector:    metav1.LabelSelector{MatchLabels: map[string]string{"app": "vllm-llama3"}},
					TargetPorts: []v1alpha1.Port{{Number: 8000}},
					Picker:      v1alpha1.Picker{Image: "example.com/fastepp/epp:v9"},
				},
			}
			if tc.edit != nil {
				tc.edit(mr)
			}
			chart := helmTemplate(t, mr.Name, ns, base, tc.values)
			ours := append(controller.PickerObjects(mr, "unused"), controller.InferencePool(mr, nil))

			// The same objects, but the ClusterRole the controller installs once.
			var chartNames, ourNames []string
			for _, u := range chart {
				if u.GetKind() == "ClusterRole" {
					if got := rulesOf(t, u); !equality.Semantic.DeepEqual(got, authRules) {
						t.Errorf("metrics-auth ClusterRole rules: chart %+v, deploy/controller/rbac.yaml %+v", got, authRules)
					}
					continue
				}
				chartNames = append(chartNames, u.GetKind()+"/"+u.GetName())
			}
			for _, o := range ours {
				ourNames = append(ourNames, o.GetObjectKind().GroupVersionKind().Kind+"/"+o.GetName())
			}
			slices.Sort(chartNames)
			slices.Sort(ourNames)
			if !slices.Equal(chartNames, ourNames) {
				t.Fatalf("objects: chart renders %v, controller makes %v", chartNames, ourNames)
			}
			for _, o := range ours {
				kind := o.GetObjectKind().GroupVersionKind().Kind
				u := findObj(chart, kind, o.GetName())
				want := freshOf(t, o)
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, want); err != nil {
					t.Fatalf("%s %s: %v", kind, o.GetName(), err)
				}
				var a, b any
				switch got := o.(type) {
				case *appsv1.Deployment:
					w := want.(*appsv1.Deployment)
					delete(w.Spec.Template.Annotations, "checksum/config")
					g := got.DeepCopy()
					delete(g.Spec.Template.Annotations, "checksum/config")
					a, b = g.Spec, w.Spec
				case *corev1.Service:
					a, b = got.Spec, want.(*corev1.Service).Spec
				case *corev1.ConfigMap:
					a, b = got.Data, want.(*corev1.ConfigMap).Data
				case *corev1.ServiceAccount:
					continue
				case *rbacv1.Role:
					a, b = got.Rules, want.(*rbacv1.Role).Rules
				case *rbacv1.RoleBinding:
					w := want.(*rbacv1.RoleBinding)
					a, b = []any{got.Subjects, got.RoleRef}, []any{w.Subjects, w.RoleRef}
				case *rbacv1.ClusterRoleBinding:
					a, b = got.Subjects, want.(*rbacv1.ClusterRoleBinding).Subjects
				case *giev1.InferencePool:
					a, b = got.Spec, want.(*giev1.InferencePool).Spec
				default:
					t.Fatalf("%T: no comparison", o)
				}
				if !equality.Semantic.DeepEqual(a, b) {
					t.Errorf("%s %s differs from the chart's:\n%s", kind, o.GetName(), jsonDiff(a, b))
				}
			}
		})
	}
}

func indent(s, pre string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString(pre + l)
		}
	}
	return b.String()
}

func freshOf(t testing.TB, o client.Object) client.Object {
	t.Helper()
	switch o.(type) {
	case *appsv1.Deployment:
		return &appsv1.Deployment{}
	case *corev1.Service:
		return &corev1.Service{}
	case *corev1.ConfigMap:
		return &corev1.ConfigMap{}
	case *corev1.ServiceAccount:
		return &corev1.ServiceAccount{}
	case *rbacv1.Role:
		return &rbacv1.Role{}
	case *rbacv1.RoleBinding:
		return &rbacv1.RoleBinding{}
	case *rbacv1.ClusterRoleBinding:
		return &rbacv1.ClusterRoleBinding{}
	case *giev1.InferencePool:
		return &giev1.InferencePool{}
	}
	t.Fatalf("%T: unexpected", o)
	return nil
}

func findObj(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, u := range objs {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

func rulesOf(t testing.TB, u *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	var cr rbacv1.ClusterRole
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cr); err != nil {
		t.Fatal(err)
	}
	return cr.Rules
}

// metricsAuthRules are the rules of the shared metrics-auth ClusterRole in
// deploy/controller/rbac.yaml.
func metricsAuthRules(t testing.TB) []rbacv1.PolicyRule {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "controller", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubetest.DecodeYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	if u := findObj(objs, "ClusterRole", controller.MetricsAuthClusterRole); u != nil {
		return rulesOf(t, u)
	}
	t.Fatalf("deploy/controller/rbac.yaml: expected ClusterRole %s", controller.MetricsAuthClusterRole)
	return nil
}

// jsonDiff shows both sides as JSON, from the first line that differs.
func jsonDiff(ours, chart any) string {
	a, _ := json.MarshalIndent(ours, "", "  ")
	b, _ := json.MarshalIndent(chart, "", "  ")
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	i := 0
	for i < len(al) && i < len(bl) && al[i] == bl[i] {
		i++
	}
	from := max(0, i-3)
	return fmt.Sprintf("controller (from line %d):\n%s\nchart:\n%s", from+1,
		strings.Join(al[from:min(len(al), i+8)], "\n"), strings.Join(bl[from:min(len(bl), i+8)], "\n"))
}

// helmBinary is $HELM, else scripts/helm.sh's build (cached per machine).
func helmBinary(t testing.TB) string {
	t.Helper()
	h, err := kubetest.Helm()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// helmTemplate renders deploy/charts/inferencepool as release in ns with
// the values files (later ones win).
func helmTemplate(t testing.TB, release, ns string, values ...string) []*unstructured.Unstructured {
	t.Helper()
	h := helmBinary(t)
	dir, err := os.MkdirTemp("", "controller-chart-") // no commas: helm splits -f on them
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	args := []string{"template", release, filepath.Join(repoRoot, "deploy", "charts", "inferencepool"), "--namespace", ns}
	for i, v := range values {
		f := filepath.Join(dir, fmt.Sprintf("values-%d.yaml", i))
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", f)
	}
	env := kubetest.HelmEnv(dir)
	out, err := command(time.Minute, env, h, args...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubetest.DecodeYAML(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// command runs name with a deadline and returns its stdout.
func command(timeout time.Duration, env []string, name string, args ...string) ([]byte, error) {
	return kubetest.Command(timeout, env, name, args...)
}
