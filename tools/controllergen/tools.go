//go:build tools

// Package controllergen pins the controller-gen release that generates the
// companion controller's CRDs (deploy/controller/crds) from the Go types in
// controller/api/v1alpha1. It lives in its own module so that controller-tools
// and its dependencies never enter the product's go.mod; run
// `go generate ./controller/...` (or `make controller-crds`) to use it.
package controllergen

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
