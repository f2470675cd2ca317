#!/usr/bin/env bash
# Builds the local node's binaries into a cache outside the repository, keyed by version:
# kubelet, kube-proxy and kube-scheduler from k8s.io/kubernetes (KUBERNETES_VERSION), the CNI plugins bridge,
# host-local, loopback and portmap (CNI_PLUGINS_VERSION, into cni/), CoreDNS (COREDNS_VERSION), and our own pause binary and
# OCI image writer (e2e/tools/node, rebuilt when their source changes). containerd and runc come from Debian's
# packages (scripts/setup.sh). Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../versions.env
. "$here/versions.env"
cache=${SKJOLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skjold}
# Bump RECIPE when the way the binaries are built changes, so stale caches are not reused.
RECIPE=r1
bin="$cache/bin/node-k8s-$KUBERNETES_VERSION-cni-$CNI_PLUGINS_VERSION-$RECIPE"
mkdir -p "$bin/cni"
exec 9>"$bin/.lock"
if ! flock -n 9; then
  echo "build-node-tools: another build is running; waiting for it..." >&2
  flock 9
fi
command -v go >/dev/null || { echo "build-node-tools: Go is required (https://go.dev/dl); not found on PATH" >&2; exit 1; }
grep -Eq "^(require )?[[:space:]]*k8s.io/kubernetes $KUBERNETES_VERSION([[:space:]]|\$)" "$here/tools/kubernetes/go.mod" || {
  echo "build-node-tools: e2e/tools/kubernetes/go.mod does not require k8s.io/kubernetes $KUBERNETES_VERSION (versions.env)" >&2; exit 1; }
grep -Eq "^(require )?[[:space:]]*github.com/containernetworking/plugins $CNI_PLUGINS_VERSION([[:space:]]|\$)" "$here/tools/node/go.mod" || {
  echo "build-node-tools: e2e/tools/node/go.mod does not require github.com/containernetworking/plugins $CNI_PLUGINS_VERSION (versions.env)" >&2; exit 1; }
grep -Eq "^(require )?[[:space:]]*github.com/coredns/coredns $COREDNS_VERSION([[:space:]]|\$)" "$here/tools/coredns/go.mod" || {
  echo "build-node-tools: e2e/tools/coredns/go.mod does not require github.com/coredns/coredns $COREDNS_VERSION (versions.env)" >&2; exit 1; }

k8s_minor=${KUBERNETES_VERSION#v*.}; k8s_minor=${k8s_minor%%.*}
k8s_major=${KUBERNETES_VERSION#v}; k8s_major=${k8s_major%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

missing() { for b in "$@"; do [ -x "$bin/$b" ] || return 0; done; return 1; }
if missing kubelet kube-proxy kube-scheduler; then
  echo "build-node-tools: building kubelet, kube-proxy, kube-scheduler from k8s.io/kubernetes@$KUBERNETES_VERSION (first time only; a few minutes)..." >&2
  start=$SECONDS
  rm -rf "$bin/.k8s.tmp"; mkdir -p "$bin/.k8s.tmp"
  (cd "$here/tools/kubernetes" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="$k8s_ldflags" -o "$bin/.k8s.tmp/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-scheduler) >&2
  mv "$bin/.k8s.tmp/kubelet" "$bin/.k8s.tmp/kube-proxy" "$bin/.k8s.tmp/kube-scheduler" "$bin/"
  rmdir "$bin/.k8s.tmp"
  echo "build-node-tools: kubelet, kube-proxy, kube-scheduler built in $((SECONDS - start))s" >&2
fi
cni=(bridge host-local loopback portmap)
cni_missing=0
for p in "${cni[@]}"; do [ -x "$bin/cni/$p" ] || cni_missing=1; done
if [ $cni_missing = 1 ]; then
  echo "build-node-tools: building CNI plugins ${cni[*]} from github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION..." >&2
  start=$SECONDS
  rm -rf "$bin/.cni.tmp"; mkdir -p "$bin/.cni.tmp"
  (cd "$here/tools/node" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w" -o "$bin/.cni.tmp/" \
    github.com/containernetworking/plugins/plugins/main/bridge github.com/containernetworking/plugins/plugins/ipam/host-local \
    github.com/containernetworking/plugins/plugins/main/loopback github.com/containernetworking/plugins/plugins/meta/portmap) >&2
  for p in "${cni[@]}"; do mv "$bin/.cni.tmp/$p" "$bin/cni/$p"; done
  rmdir "$bin/.cni.tmp"
  echo "build-node-tools: CNI plugins built in $((SECONDS - start))s" >&2
fi
# CoreDNS (cluster DNS) with only the plugins e2e/tools/coredns/main.go imports; rebuilt when that
# module changes (its go.mod holds the pinned version).
coredns="$bin/coredns"
if [ ! -x "$coredns" ] || [ -n "$(find "$here/tools/coredns" -newer "$coredns" -type f | head -1)" ]; then
  echo "build-node-tools: building CoreDNS $COREDNS_VERSION (e2e/tools/coredns; about a minute)..." >&2
  start=$SECONDS
  (cd "$here/tools/coredns" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$coredns.tmp" .) >&2
  mv "$coredns.tmp" "$coredns"
  echo "build-node-tools: CoreDNS built in $((SECONDS - start))s" >&2
fi
# Our own Go code (the pause binary, the OCI image writer): rebuilt whenever a source file is
# newer than the binary.
own() { # binary name, package dir
  local out="$bin/$1"
  if [ ! -x "$out" ] || [ -n "$(find "$here/tools/node/$2" "$here/tools/node/go.mod" -newer "$out" | head -1)" ]; then
    (cd "$here/tools/node" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$out.tmp" "./$2") >&2
    mv "$out.tmp" "$out"
  fi
}
own pause pause
own skjold-oci-image ociimage
echo "$bin"
