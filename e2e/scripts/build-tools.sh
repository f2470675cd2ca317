#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl, etcd and helm from their Go modules
# into a cache outside the repository, keyed by version. Prints the bin directory on stdout.
# Built once; later runs only check the cache. Progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../versions.env
. "$here/versions.env"
cache=${SKJOLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skjold}
bin="$cache/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
mkdir -p "$bin"

command -v go >/dev/null || { echo "build-tools: Go is required (https://go.dev/dl); not found on PATH" >&2; exit 1; }

check_pin() { # module dir, module path, version
  grep -Eq "^(require )?[[:space:]]*$2 $3([[:space:]]|\$)" "$here/tools/$1/go.mod" || {
    echo "build-tools: e2e/tools/$1/go.mod does not require $2 $3 (versions.env); fix one of them" >&2; exit 1; }
}
check_pin kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION"
check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin helm helm.sh/helm/v3 "$HELM_VERSION"

build() { # output name, module dir, package
  local out="$bin/$1"
  if [ -x "$out" ]; then return 0; fi
  echo "build-tools: building $1 from $3 (first time only; this takes a few minutes)..." >&2
  local start=$SECONDS
  (cd "$here/tools/$2" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$out.tmp" "$3") >&2
  mv "$out.tmp" "$out"
  echo "build-tools: $1 built in $((SECONDS - start))s" >&2
}
build etcd etcd go.etcd.io/etcd/server/v3
build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl kubernetes k8s.io/kubernetes/cmd/kubectl
build helm helm helm.sh/helm/v3/cmd/helm
echo "$bin"
