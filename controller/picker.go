package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"

	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// The picker's objects mirror deploy/charts/inferencepool rendered with the
// release named like the ModelRoute (TestPickerMatchesChart compares them):
// change one, change the other.
const (
	// ExtProcPort is the picker's ext_proc port (Service and container).
	ExtProcPort = 9002
	// HealthPort serves the gRPC health probes.
	HealthPort = 9003
	// MetricsPort serves /metrics.
	MetricsPort = 9090

	// DefaultConfigKey is the ConfigMap key of the default scoring.
	DefaultConfigKey = "default-plugins.yaml"
	// CustomConfigKey is the ConfigMap key of spec.picker.config.
	CustomConfigKey = "custom-plugins.yaml"

	// MetricsAuthClusterRole is the ClusterRole, installed once with the
	// controller (deploy/controller), that each picker's ClusterRoleBinding
	// grants: TokenReview and SubjectAccessReview for /metrics auth.
	MetricsAuthClusterRole = "fastepp-epp-metrics-auth"

	// ManagedBy is the app.kubernetes.io/managed-by value of the children.
	ManagedBy = "fastepp-controller"
	// LabelModelRoute names the owning ModelRoute on every child.
	LabelModelRoute = "fastepp.io/modelroute"
	// LabelOwnerNamespace is on the cluster-scoped ClusterRoleBinding, which
	// cannot carry an owner reference to a namespaced ModelRoute.
	LabelOwnerNamespace = "fastepp.io/modelroute-namespace"
)

// defaultConfig is the chart's default-plugins.yaml for a vLLM pool.
const defaultConfig = `apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
  parameters:
    fullScoreMatchBlocks: 64
- type: metrics-data-source
  parameters:
    scheme: "http"
    path: "/metrics"
    insecureSkipVerify: true
- type: core-metrics-extractor
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
`

// PickerObjects are the picker's children in the order they are applied:
// ServiceAccount, ConfigMap, Role and RoleBinding (twice with leader
// election), Service, Deployment, and the metrics-auth ClusterRoleBinding.
// image is the picker image when spec.picker.image is empty.
func PickerObjects(mr *v1alpha1.ModelRoute, image string) []client.Object {
	objs := []client.Object{PickerServiceAccount(mr), PickerConfigMap(mr)}
	for _, role := range PickerRBAC(mr) {
		objs = append(objs, role, PickerRoleBinding(mr, role))
	}
	return append(objs, PickerService(mr), PickerDeployment(mr, image), MetricsAuthBinding(mr))
}

// PickerName is the name of the picker's namespaced objects.
func PickerName(mr *v1alpha1.ModelRoute) string { return trunc(mr.Name, 40) + "-epp" }

// leaderElectionName names the leader-election Role and RoleBinding.
func leaderElectionName(mr *v1alpha1.ModelRoute) string { return PickerName(mr) + "-leader-election" }

// ClusterBindingName is the per-picker metrics-auth ClusterRoleBinding
// ("<name>-<namespace>-epp-metrics-auth", the chart's name).
func ClusterBindingName(mr *v1alpha1.ModelRoute) string {
	return fmt.Sprintf("%s-%s-epp-metrics-auth", trunc(mr.Name, 40), trunc(mr.Namespace, 40))
}

func trunc(s string, n int) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) > n {
		return s[:n]
	}
	return s
}

func replicas(mr *v1alpha1.ModelRoute) int32 {
	if r := mr.Spec.Picker.Replicas; r != nil && *r > 0 {
		return *r
	}
	return 1
}

func leaderElection(mr *v1alpha1.ModelRoute) bool {
	return replicas(mr) > 1 || mr.Spec.Picker.Flags["ha-enable-leader-election"] == "true"
}

// childLabels are the labels of every namespaced child.
func childLabels(mr *v1alpha1.ModelRoute) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       PickerName(mr),
		"app.kubernetes.io/instance":   mr.Name,
		"app.kubernetes.io/part-of":    "fastepp",
		"app.kubernetes.io/managed-by": ManagedBy,
		LabelModelRoute:                mr.Name,
	}
}

func objMeta(mr *v1alpha1.ModelRoute, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: mr.Namespace, Labels: childLabels(mr)}
}

// PickerConfigMap is the ConfigMap <name>-epp: the default scoring and,
// when set, spec.picker.config.
func PickerConfigMap(mr *v1alpha1.ModelRoute) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objMeta(mr, PickerName(mr)),
		Data:       map[string]string{DefaultConfigKey: defaultConfig},
	}
	if c := mr.Spec.Picker.Config; c != "" {
		cm.Data[CustomConfigKey] = c
	}
	return cm
}

// configFile is the --config-file the picker loads and the ConfigMap it
// mounts at /config.
func configFile(mr *v1alpha1.ModelRoute) (path, configMap string) {
	p := mr.Spec.Picker
	switch {
	case p.ConfigMapRef != nil:
		return "/config/" + p.ConfigMapRef.Key, p.ConfigMapRef.Name
	case p.Config != "":
		return "/config/" + CustomConfigKey, PickerName(mr)
	}
	return "/config/" + DefaultConfigKey, PickerName(mr)
}

// PickerDeployment is the Deployment <name>-epp. image is used when
// spec.picker.image is empty.
func PickerDeployment(mr *v1alpha1.ModelRoute, image string) *appsv1.Deployment {
	name := PickerName(mr)
	p := mr.Spec.Picker
	if p.Image != "" {
		image = p.Image
	}
	cfgPath, cfgMap := configFile(mr)
	args := []string{
		"--pool-name", mr.Name,
		"--pool-namespace", mr.Namespace,
		"--pool-group", giev1.GroupName,
		"--zap-encoder", "json",
		"--config-file", cfgPath,
	}
	if leaderElection(mr) {
		args = append(args, "--ha-enable-leader-election")
	}
	flags := map[string]string{"v": "1"}
	maps.Copy(flags, p.Flags)
	for _, k := range slices.Sorted(maps.Keys(flags)) {
		if k == "ha-enable-leader-election" {
			continue
		}
		args = append(args, fmt.Sprintf("--%s=%s", k, flags[k]))
	}
	args = append(args, "--tracing=false")

	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("512Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")},
	}
	if p.Resources != nil {
		res = *p.Resources.DeepCopy()
	}
	selector := map[string]string{"inferencepool": name}
	podLabels := map[string]string{
		"inferencepool":                        name,
		"app.kubernetes.io/name":               name,
		"app.kubernetes.io/instance":           mr.Name,
		"inference.networking.k8s.io/igw-mode": "inferencepool",
	}
	labels := childLabels(mr)
	labels["inference.networking.k8s.io/igw-mode"] = "inferencepool"
	n := replicas(mr)
	grace := int64(130)
	fieldRef := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: mr.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      podLabels,
					Annotations: map[string]string{"checksum/config": configChecksum(mr)},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName:            name,
					TerminationGracePeriodSeconds: &grace,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr(true),
						RunAsUser:      ptr(int64(65532)),
						RunAsGroup:     ptr(int64(65532)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "epp",
						Image:           image,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args:            args,
						Ports: []corev1.ContainerPort{
							{Name: "grpc", ContainerPort: ExtProcPort},
							{Name: "grpc-health", ContainerPort: HealthPort},
							{Name: "metrics", ContainerPort: MetricsPort},
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:        corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: HealthPort, Service: ptr("liveness")}},
							InitialDelaySeconds: 5,
							PeriodSeconds:       10,
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: HealthPort, Service: ptr("readiness")}},
							PeriodSeconds: 2,
						},
						Env: []corev1.EnvVar{
							{Name: "NAMESPACE", ValueFrom: fieldRef("metadata.namespace")},
							{Name: "POD_NAME", ValueFrom: fieldRef("metadata.name")},
						},
						Resources: res,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr(false),
							ReadOnlyRootFilesystem:   ptr(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "plugins-config-volume", MountPath: "/config", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{
						Name: "plugins-config-volume",
						VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: cfgMap},
						}},
					}},
				},
			},
		},
	}
}

// configChecksum rolls the picker's pods when its config changes (the
// chart's checksum/config annotation; the value differs from the chart's,
// which hashes the whole rendered ConfigMap).
func configChecksum(mr *v1alpha1.ModelRoute) string {
	h := sha256.New()
	cm := PickerConfigMap(mr)
	for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
		fmt.Fprintf(h, "%s\x00%s\x00", k, cm.Data[k])
	}
	if r := mr.Spec.Picker.ConfigMapRef; r != nil {
		fmt.Fprintf(h, "ref\x00%s\x00%s", r.Name, r.Key)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// PickerService is the Service <name>-epp.
func PickerService(mr *v1alpha1.ModelRoute) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objMeta(mr, PickerName(mr)),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{"inferencepool": PickerName(mr)},
			Ports: []corev1.ServicePort{
				{Name: "grpc-ext-proc", Protocol: corev1.ProtocolTCP, Port: ExtProcPort, TargetPort: intstr.FromInt32(ExtProcPort), AppProtocol: ptr("http2")},
				{Name: "http-metrics", Protocol: corev1.ProtocolTCP, Port: MetricsPort, TargetPort: intstr.FromInt32(MetricsPort)},
			},
		},
	}
}

// PickerServiceAccount is the ServiceAccount <name>-epp.
func PickerServiceAccount(mr *v1alpha1.ModelRoute) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: objMeta(mr, PickerName(mr)),
	}
}

// PickerRBAC is the Role and RoleBinding <name>-epp (read the pool, its pods
// and the InferenceObjectives) and, with leader election, the Role and
// RoleBinding <name>-epp-leader-election (the Lease).
func PickerRBAC(mr *v1alpha1.ModelRoute) []*rbacv1.Role {
	read := []string{"get", "list", "watch"}
	roles := []*rbacv1.Role{{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: objMeta(mr, PickerName(mr)),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: read},
			{APIGroups: []string{giev1.GroupName}, Resources: []string{"inferencepools"}, Verbs: read},
			{APIGroups: []string{"inference.networking.x-k8s.io"}, Resources: []string{"inferenceobjectives"}, Verbs: read},
		},
	}}
	if leaderElection(mr) {
		roles = append(roles, &rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
			ObjectMeta: objMeta(mr, leaderElectionName(mr)),
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
			},
		})
	}
	return roles
}

// PickerRoleBinding binds role to the picker's ServiceAccount.
func PickerRoleBinding(mr *v1alpha1.ModelRoute, role *rbacv1.Role) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: objMeta(mr, role.Name),
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: PickerName(mr), Namespace: mr.Namespace}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
	}
}

// MetricsAuthBinding is the picker's ClusterRoleBinding to
// MetricsAuthClusterRole. It carries no owner reference (a namespaced owner
// cannot own a cluster-scoped object); the ModelRoute's finalizer deletes it.
func MetricsAuthBinding(mr *v1alpha1.ModelRoute) *rbacv1.ClusterRoleBinding {
	labels := childLabels(mr)
	labels[LabelOwnerNamespace] = mr.Namespace
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: ClusterBindingName(mr), Labels: labels},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: PickerName(mr), Namespace: mr.Namespace}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: MetricsAuthClusterRole},
	}
}

// InferencePool is the pool <name>: the ModelRoute's selector and ports,
// the picker as endpointPickerRef; annotations carry Envoy AI Gateway's body
// mode when routing sets one.
func InferencePool(mr *v1alpha1.ModelRoute, annotations map[string]string) *giev1.InferencePool {
	ports := make([]giev1.Port, 0, len(mr.Spec.TargetPorts))
	for _, p := range mr.Spec.TargetPorts {
		ports = append(ports, giev1.Port{Number: giev1.PortNumber(p.Number)})
	}
	sel := map[giev1.LabelKey]giev1.LabelValue{}
	for k, v := range mr.Spec.Selector.MatchLabels {
		sel[giev1.LabelKey(k)] = giev1.LabelValue(v)
	}
	proto := giev1.AppProtocol(mr.Spec.AppProtocol)
	if proto == "" {
		proto = "http"
	}
	fm := giev1.EndpointPickerFailureMode(mr.Spec.Picker.FailureMode)
	if fm == "" {
		fm = giev1.EndpointPickerFailOpen
	}
	m := objMeta(mr, mr.Name)
	if len(annotations) > 0 {
		m.Annotations = annotations
	}
	return &giev1.InferencePool{
		TypeMeta:   metav1.TypeMeta{APIVersion: giev1.GroupVersion.String(), Kind: "InferencePool"},
		ObjectMeta: m,
		Spec: giev1.InferencePoolSpec{
			Selector:    giev1.LabelSelector{MatchLabels: sel},
			TargetPorts: ports,
			AppProtocol: proto,
			EndpointPickerRef: &giev1.EndpointPickerRef{
				Name:        giev1.ObjectName(PickerName(mr)),
				Port:        &giev1.Port{Number: ExtProcPort},
				FailureMode: fm,
			},
		},
	}
}

func ptr[T any](v T) *T { return &v }
