package deploy_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// manifestFiles are deploy/manifests/*.yaml, read with the ClusterRoleBinding
// subjects moved to ns.
func manifestFiles(t *testing.T, ns string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("manifests", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no deploy/manifests/*.yaml (%v)", err)
	}
	files := map[string][]byte{}
	for _, p := range paths {
		if filepath.Base(p) == "rbac.yaml" {
			files[p] = manifestsRBAC(t, ns)
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = b
	}
	return files
}

// TestManifests applies every plain manifest to a real API server (the
// InferencePool validated by GIE's CRD), then checks that the pieces fit
// together, that the Deployment is GIE's picker Deployment in fastepp's
// image, and that its pod passes the restricted Pod Security Standard.
func TestManifests(t *testing.T) {
	t.Parallel()
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	var objs []*unstructured.Unstructured
	files := manifestFiles(t, ns)
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, p)
	}
	slices.Sort(names)
	for _, p := range names {
		t.Run("apply "+filepath.Base(p), func(t *testing.T) {
			stored := env.Apply(t, nil, ns, files[p])
			if len(stored) == 0 {
				t.Fatalf("%s: no objects", p)
			}
			for _, o := range stored {
				if o.GetUID() == "" {
					t.Errorf("%s: %s/%s was not stored", p, o.GetKind(), o.GetName())
				}
			}
			objs = append(objs, stored...)
		})
	}
	if t.Failed() {
		return
	}

	// What a kubectl user of these files gets.
	want := map[string]int{"ServiceAccount": 2, "Role": 1, "RoleBinding": 1, "ClusterRole": 2, "ClusterRoleBinding": 2,
		"Secret": 1, "ConfigMap": 1, "Deployment": 1, "Service": 1, "InferencePool": 1}
	if got := kinds(objs); !maps.Equal(got, want) {
		t.Errorf("objects by kind: %v, expected %v", got, want)
	}

	t.Run("deployment", func(t *testing.T) {
		d := deployment(t, objs, eppName)
		checkPickerDeployment(t, d, pickerExpect{
			image: "ghcr.io/fastepp/epp:<version>",
			args: []string{"--pool-name", poolName, "--pool-namespace", "$(NAMESPACE)", "--pool-group", "inference.networking.k8s.io",
				"--zap-encoder", "json", "--config-file", "/config/default-plugins.yaml", "--v", "1", "--tracing=false"},
			configMap: eppName, serviceAccount: eppName, replicas: 1,
		})
	})

	t.Run("the pieces fit", func(t *testing.T) {
		checkWiring(t, objs, poolName, eppName)
		cm := find(t, objs, "ConfigMap", eppName)
		got, _, _ := unstructured.NestedString(cm.Object, "data", "default-plugins.yaml")
		want, err := os.ReadFile(filepath.Join(repoRoot, "configs", "epp", "recommended.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("ConfigMap %s default-plugins.yaml differs from configs/epp/recommended.yaml:\n%s", eppName, got)
		}
		pool := find(t, objs, "InferencePool", poolName)
		if m, _, _ := unstructured.NestedString(pool.Object, "metadata", "annotations", "aigateway.envoyproxy.io/processing-body-mode"); m != "duplex" {
			t.Errorf("InferencePool: processing-body-mode annotation %q, expected duplex", m)
		}
	})

	t.Run("restricted pod security", func(t *testing.T) {
		checkRestricted(t, env, deployment(t, objs, eppName).Spec.Template)
	})
}

// pickerExpect is what a picker Deployment must be.
type pickerExpect struct {
	image, configMap, serviceAccount string
	args                             []string
	replicas                         int32
	extraMounts                      map[string]string // volume name -> mount path
}

// checkPickerDeployment checks a picker Deployment against GIE v1.5.0's
// chart (ports, gRPC probes on 9003, Recreate, NAMESPACE and POD_NAME, the
// config at /config) and fastepp's hardening (non-root, read-only root
// filesystem, no privilege escalation, no capabilities, requests and a
// memory limit).
func checkPickerDeployment(t *testing.T, d *appsv1.Deployment, want pickerExpect) {
	t.Helper()
	if d.Spec.Replicas == nil || *d.Spec.Replicas != want.replicas {
		t.Errorf("replicas %v, expected %d", d.Spec.Replicas, want.replicas)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy %q, expected Recreate (GIE's)", d.Spec.Strategy.Type)
	}
	ps := d.Spec.Template.Spec
	if ps.ServiceAccountName != want.serviceAccount {
		t.Errorf("serviceAccountName %q, expected %q", ps.ServiceAccountName, want.serviceAccount)
	}
	var c *corev1.Container
	for i := range ps.Containers {
		if ps.Containers[i].Name == "epp" {
			c = &ps.Containers[i]
		}
	}
	if c == nil {
		t.Fatalf("no container named epp in %v", ps.Containers)
	}
	if c.Image != want.image {
		t.Errorf("image %q, expected %q", c.Image, want.image)
	}
	if !slices.Equal(c.Args, want.args) {
		t.Errorf("args:\n  %q\nexpected\n  %q", c.Args, want.args)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, port := range map[string]int32{"grpc": 9002, "grpc-health": 9003, "metrics": 9090} {
		if ports[name] != port {
			t.Errorf("container port %s = %d, expected %d (ports %v)", name, ports[name], port, c.Ports)
		}
	}
	for _, p := range []struct {
		kind    string
		probe   *corev1.Probe
		service string
	}{{"liveness", c.LivenessProbe, "liveness"}, {"readiness", c.ReadinessProbe, "readiness"}} {
		if p.probe == nil || p.probe.GRPC == nil || p.probe.GRPC.Port != 9003 || p.probe.GRPC.Service == nil || *p.probe.GRPC.Service != p.service {
			t.Errorf("%s probe %+v, expected gRPC on 9003 with service %q", p.kind, p.probe, p.service)
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["NAMESPACE"] != "metadata.namespace" || env["POD_NAME"] != "metadata.name" {
		t.Errorf("env NAMESPACE, POD_NAME from %q, %q; expected metadata.namespace, metadata.name", env["NAMESPACE"], env["POD_NAME"])
	}
	sc, psc := c.SecurityContext, ps.SecurityContext
	switch {
	case sc == nil || psc == nil:
		t.Errorf("no security context (pod %v, container %v)", psc, sc)
	case psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0:
		t.Errorf("pod security context %+v: expected runAsNonRoot and a non-root runAsUser", psc)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("container security context: expected readOnlyRootFilesystem")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("container security context: expected allowPrivilegeEscalation false")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("container capabilities %+v, expected drop [ALL] and nothing added", sc.Capabilities)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: expected CPU and memory requests and a memory limit", c.Resources)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	var cfgVol string
	for name, path := range mounts {
		if path == "/config" {
			cfgVol = name
		}
	}
	if v, ok := vols[cfgVol]; !ok || v.ConfigMap == nil || v.ConfigMap.Name != want.configMap {
		t.Errorf("/config: mount %q of volume %+v, expected ConfigMap %s", cfgVol, vols[cfgVol], want.configMap)
	}
	for name, path := range want.extraMounts {
		if mounts[name] != path {
			t.Errorf("volume %s mounted at %q, expected %q (mounts %v)", name, mounts[name], path, mounts)
		}
	}
}

// checkWiring checks that the Service selects the picker's pods and exposes
// ext_proc (9002, appProtocol http2) and metrics (9090), and that the
// InferencePool's endpointPickerRef names that Service and port.
func checkWiring(t *testing.T, objs []*unstructured.Unstructured, pool, epp string) {
	t.Helper()
	d := deployment(t, objs, epp)
	var svc corev1.Service
	if err := fromUnstructured(find(t, objs, "Service", epp), &svc); err != nil {
		t.Fatal(err)
	}
	if sel := labels.SelectorFromSet(svc.Spec.Selector); len(svc.Spec.Selector) == 0 || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Service selector %v does not select the pod labels %v", svc.Spec.Selector, d.Spec.Template.Labels)
	}
	ports := map[int32]corev1.ServicePort{}
	for _, p := range svc.Spec.Ports {
		ports[p.Port] = p
	}
	if p, ok := ports[9002]; !ok || p.AppProtocol == nil || *p.AppProtocol != "http2" || p.TargetPort.IntValue() != 9002 {
		t.Errorf("Service port 9002: %+v, expected targetPort 9002 with appProtocol http2", p)
	}
	if p, ok := ports[9090]; !ok || p.TargetPort.IntValue() != 9090 {
		t.Errorf("Service port 9090: %+v, expected targetPort 9090", p)
	}
	ip := find(t, objs, "InferencePool", pool)
	ref, _, _ := unstructured.NestedMap(ip.Object, "spec", "endpointPickerRef")
	port, _, _ := unstructured.NestedInt64(ref, "port", "number")
	if ref["name"] != epp || port != 9002 || ref["failureMode"] != "FailOpen" {
		t.Errorf("InferencePool endpointPickerRef %v, expected name %s, port 9002, failureMode FailOpen", ref, epp)
	}
	if kind, ok := ref["kind"]; ok && kind != "Service" {
		t.Errorf("InferencePool endpointPickerRef kind %v, expected Service", kind)
	}
}

// checkRestricted creates (dry run) a pod of the template in a namespace that
// enforces the restricted Pod Security Standard: the API server's
// PodSecurity admission refuses it if the picker's pod is not restricted.
func checkRestricted(t *testing.T, env *kubetest.Env, tpl corev1.PodTemplateSpec) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "restricted-",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}
	if err := env.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "epp", Labels: tpl.Labels}, Spec: *tpl.Spec.DeepCopy()}
	if err := env.Client.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Errorf("the picker's pod is refused under the restricted Pod Security Standard: %v", err)
	}
	// The check is real: a pod that runs as root is refused.
	root := pod.DeepCopy()
	root.Spec.SecurityContext = nil
	for i := range root.Spec.Containers {
		root.Spec.Containers[i].SecurityContext = nil
	}
	if err := env.Client.Create(ctx, root, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "restricted") {
		t.Errorf("a pod without a security context was not refused as non-restricted (err %v): PodSecurity admission is not checking", err)
	}
}
