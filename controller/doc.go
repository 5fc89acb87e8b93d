// Package controller is fastepp's companion Kubernetes controller. It owns
// the reconciliation of ModelRoutes (API in controller/api/v1alpha1): for
// each one it creates and keeps converged an InferencePool <name>, the
// endpoint picker's Deployment, Service, ConfigMap, ServiceAccount, Role and
// RoleBinding <name>-epp (the objects deploy/charts/inferencepool renders),
// a metrics-auth ClusterRoleBinding removed by a finalizer, and an HTTPRoute
// or Envoy AI Gateway AIGatewayRoute <name>; it resolves routing defaults
// (ModelRoute > RoutingConfig > ClusterRoutingConfig, per field), renders
// path templates, and reports status conditions computed from the
// children's own status.
//
// It never overwrites an object it does not own: such a child is reported
// in the ChildConflict condition until the object carries the hand-over
// annotation fastepp.io/adopt: "true".
package controller
