// Package kube is epp's Kubernetes mode: the endpoints.Source that watches an
// InferencePool (inference.networking.k8s.io/v1) or a bare label selector and
// the Pods it matches, the InferenceObjective priorities, Lease-based leader
// election, and TokenReview/SubjectAccessReview authentication of /metrics.
//
// It is the only package that imports the Kubernetes client libraries, so
// the scheduler, the plugins, ext_proc and the rest of package endpoints stay
// light; cmd/epp wires it in when --pool-name or --endpoint-selector is
// given. Everything here runs off the request path: the pool source hands
// complete target lists to endpoints.Pool, and the objectives table is read
// through an atomic pointer.
package kube
