// Package v1alpha1 holds the companion controller's API, group fastepp.io,
// version v1alpha1: ModelRoute (namespaced; one model: its pods, its picker
// and the route to it), RoutingConfig (namespaced routing defaults) and
// ClusterRoutingConfig (cluster-wide routing defaults). The CRDs in
// deploy/controller/crds are generated from these types by controller-gen
// (tools/controllergen, built into bin/); `go generate ./controller/...`
// regenerates them and the deepcopy functions, and the controller's tests
// fail when they are stale.
//
// +kubebuilder:object:generate=true
// +groupName=fastepp.io
package v1alpha1

//go:generate go build -C ../../../tools/controllergen -o ../../bin/controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen
//go:generate ../../../bin/controller-gen object paths=./... crd:maxDescLen=400 output:crd:artifacts:config=../../../deploy/controller/crds
