package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GroupVersion is fastepp.io/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "fastepp.io", Version: "v1alpha1"}

// AddToScheme adds the three kinds to a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&ModelRoute{}, &ModelRouteList{},
		&RoutingConfig{}, &RoutingConfigList{},
		&ClusterRoutingConfig{}, &ClusterRoutingConfigList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// ModelRoute serves one model: the pods that run it, the endpoint picker in
// front of them (an InferencePool and its picker deployment) and the route
// from a Gateway to the pool.
//
// The name becomes label values and the picker Service's name
// (<name>-epp), so it must be a DNS-1035 label of at most 63 characters.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mr,categories=fastepp
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter) of at most 63 characters"
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.model`
// +kubebuilder:printcolumn:name="Path",type=string,JSONPath=`.status.path`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ModelRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ModelRouteSpec   `json:"spec"`
	Status ModelRouteStatus `json:"status,omitempty"`
}

// ModelRouteList is a list of ModelRoutes.
//
// +kubebuilder:object:root=true
type ModelRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ModelRoute `json:"items"`
}

// ModelRouteSpec is what the user asks for.
type ModelRouteSpec struct {
	// Model is the model name clients send (the OpenAI "model" field); an
	// AIGatewayRoute matches it in the x-ai-eg-model header.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Model string `json:"model"`

	// Selector chooses the model-server pods (the InferencePool's selector;
	// matchLabels only, as InferencePool v1).
	// +kubebuilder:validation:XValidation:rule="has(self.matchLabels) && size(self.matchLabels) > 0",message="selector.matchLabels must name at least one label"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || size(self.matchExpressions) == 0",message="selector.matchExpressions is not supported (InferencePool v1 selects by matchLabels only)"
	Selector metav1.LabelSelector `json:"selector"`

	// TargetPorts are the ports the model servers serve on.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	TargetPorts []Port `json:"targetPorts"`

	// AppProtocol is the model servers' protocol: http (default) or
	// kubernetes.io/h2c.
	// +kubebuilder:validation:Enum=http;kubernetes.io/h2c
	// +optional
	AppProtocol string `json:"appProtocol,omitempty"`

	// Picker says how the endpoint picker runs.
	// +optional
	Picker Picker `json:"picker,omitempty"`

	// Routing says how the model is exposed; unset fields come from the
	// RoutingConfig named by routingConfigName, then from the
	// ClusterRoutingConfig of that name.
	// +optional
	Routing *Routing `json:"routing,omitempty"`

	// RoutingConfigName names the RoutingConfig (this namespace) and
	// ClusterRoutingConfig that give routing defaults; "default" when empty.
	// A missing "default" is fine, a missing named config is an error
	// (ConfigNotFound).
	// +optional
	RoutingConfigName string `json:"routingConfigName,omitempty"`
}

// Port is one model-server port.
type Port struct {
	// Number is the port number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Number int32 `json:"number"`
}

// Picker is the endpoint picker deployment of one model.
type Picker struct {
	// Image is the picker image; the controller's --epp-image when empty.
	// +optional
	Image string `json:"image,omitempty"`

	// Replicas of the picker; more than one runs leader election
	// (active-passive). Default 1.
	// +kubebuilder:validation:Minimum=1
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// FailureMode is what the gateway does when the picker is unreachable:
	// FailOpen (default) or FailClose.
	// +kubebuilder:validation:Enum=FailOpen;FailClose
	// +optional
	FailureMode string `json:"failureMode,omitempty"`

	// Config is an EndpointPickerConfig (YAML) to load instead of the
	// default scoring (queue, kv-cache and prefix scorers).
	// +optional
	Config string `json:"config,omitempty"`

	// ConfigMapRef names a ConfigMap key (this namespace) holding the
	// EndpointPickerConfig; it wins over config.
	// +optional
	ConfigMapRef *ConfigMapKeyRef `json:"configMapRef,omitempty"`

	// Flags are extra picker flags, passed as --name=value (epp --help lists
	// them); v defaults to 1.
	// +optional
	Flags map[string]string `json:"flags,omitempty"`

	// Resources of the picker container; by default requests of 1 CPU and
	// 512Mi and a 2Gi memory limit.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
}

// ConfigMapKeyRef names one key of a ConfigMap.
type ConfigMapKeyRef struct {
	// Name of the ConfigMap.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Key holding the EndpointPickerConfig.
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
}

// RouteKind is the kind of the route child.
// +kubebuilder:validation:Enum=HTTPRoute;AIGatewayRoute
type RouteKind string

const (
	// RouteKindHTTPRoute is a Gateway API HTTPRoute.
	RouteKindHTTPRoute RouteKind = "HTTPRoute"
	// RouteKindAIGatewayRoute is an Envoy AI Gateway AIGatewayRoute.
	RouteKindAIGatewayRoute RouteKind = "AIGatewayRoute"
)

// Routing is how a model is exposed. Every field is optional; per field, a
// ModelRoute's value wins over its RoutingConfig's, which wins over the
// ClusterRoutingConfig's (annotations and labels merge per key).
type Routing struct {
	// Enabled creates the route child; default true.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// Kind of the route: HTTPRoute (default) or AIGatewayRoute.
	// +optional
	Kind RouteKind `json:"kind,omitempty"`

	// GatewayRef is the Gateway the route attaches to (namespace defaults to
	// the ModelRoute's).
	// +optional
	GatewayRef *gwapiv1.ParentReference `json:"gatewayRef,omitempty"`

	// PathTemplate is the HTTPRoute's path prefix: JSONPath expressions in
	// braces rendered against the ModelRoute, each value made RFC 1123-safe,
	// at most 200 characters. Default /{.metadata.namespace}/{.metadata.uid}.
	// +kubebuilder:validation:MaxLength=200
	// +optional
	PathTemplate string `json:"pathTemplate,omitempty"`

	// RequestTimeout is the route's request timeout (Gateway API duration).
	// +optional
	RequestTimeout *gwapiv1.Duration `json:"requestTimeout,omitempty"`

	// BackendRequestTimeout is the route's backend request timeout.
	// +optional
	BackendRequestTimeout *gwapiv1.Duration `json:"backendRequestTimeout,omitempty"`

	// BodyMode is Envoy AI Gateway's processing body mode for the pool
	// (annotation aigateway.envoyproxy.io/processing-body-mode): duplex or
	// buffered. Only with kind AIGatewayRoute.
	// +kubebuilder:validation:Enum=duplex;buffered
	// +optional
	BodyMode string `json:"bodyMode,omitempty"`

	// Annotations of the route (merged per key across levels).
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// Labels of the route (merged per key across levels).
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
}

// ChildRef names one object the controller owns for a ModelRoute.
type ChildRef struct {
	// APIVersion of the child.
	APIVersion string `json:"apiVersion"`
	// Kind of the child.
	Kind string `json:"kind"`
	// Name of the child.
	Name string `json:"name"`
	// Namespace of the child; empty for cluster-scoped children.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// ModelRouteStatus is what the controller observed.
type ModelRouteStatus struct {
	// ObservedGeneration is the generation this status is about.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Path is the rendered path prefix of the HTTPRoute (empty with an
	// AIGatewayRoute, which matches the model header instead).
	// +optional
	Path string `json:"path,omitempty"`
	// URL is the model's base URL when the Gateway's address is known.
	// +optional
	URL string `json:"url,omitempty"`
	// Children are the objects the controller owns for this ModelRoute.
	// +optional
	// +listType=atomic
	Children []ChildRef `json:"children,omitempty"`
	// Conditions: Ready, ConfigResolved, EndpointPickerReady,
	// InferencePoolReady, RouteReady, and ChildConflict while a child's name
	// is taken by an object the controller does not own.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// RoutingConfig carries routing defaults for the ModelRoutes of its
// namespace that name it (or for all of them when named "default").
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=fastepp
type RoutingConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec RoutingConfigSpec `json:"spec"`
}

// RoutingConfigSpec holds the routing defaults.
type RoutingConfigSpec struct {
	// Routing defaults, field by field.
	// +optional
	Routing Routing `json:"routing,omitempty"`
}

// RoutingConfigList is a list of RoutingConfigs.
//
// +kubebuilder:object:root=true
type RoutingConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RoutingConfig `json:"items"`
}

// ClusterRoutingConfig carries cluster-wide routing defaults, below a
// namespace's RoutingConfig of the same name.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=fastepp
type ClusterRoutingConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec RoutingConfigSpec `json:"spec"`
}

// ClusterRoutingConfigList is a list of ClusterRoutingConfigs.
//
// +kubebuilder:object:root=true
type ClusterRoutingConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterRoutingConfig `json:"items"`
}
