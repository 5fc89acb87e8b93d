#!/usr/bin/env bash
# Builds the binaries envtest needs (kube-apiserver and etcd) once per machine
# and prints the directory to use as KUBEBUILDER_ASSETS.
#
#   export KUBEBUILDER_ASSETS="$(scripts/kube-assets.sh)"
#
# kube-apiserver is built from k8s.io/kubernetes at the release pinned in
# tools/kubeassets/go.mod (its own module, so Kubernetes itself never enters
# the product's go.mod), and etcd from go.etcd.io/etcd/server/v3 at the version
# that release requires (Debian's etcd-server is 3.4, older than Kubernetes
# supports). Results are cached by version under
# ${FASTEPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastepp}/kubebuilder/.
# Progress goes to stderr; stdout is only the directory.
set -euo pipefail
cd "$(dirname "$0")/../tools/kubeassets"

k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
k8s_version=${k8s_version#v}
cache=${FASTEPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastepp}
dir="$cache/kubebuilder/k8s-$k8s_version-$(go env GOOS)-$(go env GOARCH)"
mkdir -p "$dir"
# Test packages run in parallel and each may call this: one builds, the
# others wait for it.
exec 9>"$dir/.lock"
flock 9

if [ ! -x "$dir/kube-apiserver" ]; then
	echo "kube-assets: building kube-apiserver $k8s_version (once per machine; several minutes)..." >&2
	start=$(date +%s)
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
	mv "$dir/kube-apiserver.tmp" "$dir/kube-apiserver"
	echo "kube-assets: kube-apiserver built in $(( $(date +%s) - start ))s" >&2
fi

if [ ! -x "$dir/etcd" ]; then
	echo "kube-assets: building etcd $(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)..." >&2
	start=$(date +%s)
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$dir/etcd.tmp" go.etcd.io/etcd/server/v3
	mv "$dir/etcd.tmp" "$dir/etcd"
	echo "kube-assets: etcd built in $(( $(date +%s) - start ))s" >&2
fi
echo "$dir"
