#!/usr/bin/env bash
# Builds the helm binary the deploy tests render the chart with, once per
# machine, and prints its path.
#
#   HELM="$(scripts/helm.sh)"; "$HELM" template my-pool deploy/charts/inferencepool ...
#
# helm is built from helm.sh/helm/v3 at the release pinned in tools/helm/go.mod
# (its own module, so Helm never enters the product's go.mod), with the
# ldflags Helm's own Makefile sets (version, and the Kubernetes version
# `helm template` reports as .Capabilities.KubeVersion). The only network it
# needs is the Go module proxy. Results are cached by version under
# ${FASTEPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastepp}/helm/<version>/.
# Progress goes to stderr; stdout is only the path.
set -euo pipefail
cd "$(dirname "$0")/../tools/helm"

helm_version=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
if [ -z "$helm_version" ]; then
	echo "helm.sh: cannot read the helm.sh/helm/v3 version from tools/helm/go.mod" >&2
	exit 1
fi
cache=${FASTEPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastepp}
dir="$cache/helm/$helm_version-$(go env GOOS)-$(go env GOARCH)"
mkdir -p "$dir"
# Test packages run in parallel and each may call this: one builds, the
# others wait for it.
exec 9>"$dir/.lock"
flock 9

if [ ! -x "$dir/helm" ]; then
	echo "helm.sh: building helm $helm_version (once per machine)..." >&2
	start=$(date +%s)
	# Helm's Makefile: the Kubernetes version is client-go's, major+1
	# (v0.36.x -> 1.36).
	k8s=$(go list -m -f '{{.Version}}' k8s.io/client-go)
	k8s=${k8s#v}
	k8s_major=$(( ${k8s%%.*} + 1 ))
	k8s_minor=$(echo "$k8s" | cut -d. -f2)
	ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
	ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		ldflags+=" -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
	done
	CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$dir/helm.tmp" helm.sh/helm/v3/cmd/helm
	mv "$dir/helm.tmp" "$dir/helm"
	echo "helm.sh: helm built in $(( $(date +%s) - start ))s" >&2
fi
echo "$dir/helm"
