//go:build tools

// Package helm pins the Helm release the deploy tests render the chart with.
// It lives in its own module so that Helm and its dependencies never enter
// the product's go.mod; scripts/helm.sh builds the binary from it.
package helm

import _ "helm.sh/helm/v3/cmd/helm"
