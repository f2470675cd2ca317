#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl, etcd, helm and Istio's pilot-discovery,
# pilot-agent and istioctl from their Go modules into a cache outside the repository, keyed by
# version, plus the tests' xDS client (e2e/tools/istio/xdsprobe, rebuilt when its source changes).
# Prints the bin directory on stdout.
# Built once; later runs only check the cache. Progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../versions.env
. "$here/versions.env"
cache=${SKJOLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skjold}
# Bump RECIPE when the way the binaries are built changes, so stale caches are not reused
# (r2: Kubernetes binaries carry their real version; r1 reported v0.0.0-master).
RECIPE=r4
# r3: adds Istio (keyed by the module's commit) and the xDS probe.
# r4: Istio's binaries carry a version (`istioctl version` said "unknown").
istio_commit=${ISTIO_MODULE_VERSION##*-}
bin="$cache/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-istio-$istio_commit-$RECIPE"
mkdir -p "$bin"
# One builder at a time: concurrent runs (parallel test binaries, several shells) wait here
# instead of racing on the same output files.
exec 9>"$bin/.lock"
if ! flock -n 9; then
  echo "build-tools: another build is running; waiting for it..." >&2
  flock 9
fi

command -v go >/dev/null || { echo "build-tools: Go is required (https://go.dev/dl); not found on PATH" >&2; exit 1; }

check_pin() { # module dir, module path, version
  grep -Eq "^(require )?[[:space:]]*$2 $3([[:space:]]|\$)" "$here/tools/$1/go.mod" || {
    echo "build-tools: e2e/tools/$1/go.mod does not require $2 $3 (versions.env); fix one of them" >&2; exit 1; }
}
check_pin kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION"
check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin helm helm.sh/helm/v3 "$HELM_VERSION"
check_pin istio istio.io/istio "$ISTIO_MODULE_VERSION"

# Kubernetes stamps its version at link time (hack/lib/version.sh); without it the binaries
# report v0.0.0-master and version checks (Helm's kubeVersion, kubectl skew) fail.
k8s_minor=${KUBERNETES_VERSION#v*.}; k8s_minor=${k8s_minor%%.*}
k8s_major=${KUBERNETES_VERSION#v}; k8s_major=${k8s_major%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() { # output name, module dir, package
  local out="$bin/$1"
  if [ -x "$out" ]; then return 0; fi
  echo "build-tools: building $1 from $3 (first time only; this takes a few minutes)..." >&2
  local start=$SECONDS
  local ldflags='-s -w'
  if [ "$2" = kubernetes ]; then ldflags+="$k8s_ldflags"; fi
  (cd "$here/tools/$2" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="$ldflags" -o "$out.tmp" "$3") >&2
  mv "$out.tmp" "$out"
  echo "build-tools: $1 built in $((SECONDS - start))s" >&2
}
build etcd etcd go.etcd.io/etcd/server/v3
build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl kubernetes k8s.io/kubernetes/cmd/kubectl
build helm helm helm.sh/helm/v3/cmd/helm

# Istio's three binaries share most of their dependencies: one `go build` compiles them together
# (about a third of three separate builds).
istio_bins=(pilot-discovery pilot-agent istioctl)
missing=0
for b in "${istio_bins[@]}"; do [ -x "$bin/$b" ] || missing=1; done
if [ $missing = 1 ]; then
  echo "build-tools: building pilot-discovery, pilot-agent, istioctl from istio.io/istio@$ISTIO_MODULE_VERSION (first time only; about 10 minutes on 2 cores)..." >&2
  start=$SECONDS
  rm -rf "$bin/.istio.tmp"; mkdir -p "$bin/.istio.tmp"
  # Stamped as Istio stamps a build of its development line (Makefile.core.mk: VERSION ?= 1.N-dev),
  # with the module's commit as the git revision.
  istio_ldflags="-s -w -X istio.io/istio/pkg/version.buildVersion=${ISTIO_VERSION%.*}-dev"
  istio_ldflags+=" -X istio.io/istio/pkg/version.buildGitRevision=$istio_commit -X istio.io/istio/pkg/version.buildStatus=Clean"
  (cd "$here/tools/istio" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="$istio_ldflags" -o "$bin/.istio.tmp/" \
    istio.io/istio/pilot/cmd/pilot-discovery istio.io/istio/pilot/cmd/pilot-agent istio.io/istio/istioctl/cmd/istioctl) >&2
  for b in "${istio_bins[@]}"; do mv "$bin/.istio.tmp/$b" "$bin/$b"; done
  rmdir "$bin/.istio.tmp"
  echo "build-tools: Istio binaries built in $((SECONDS - start))s" >&2
fi
# Istio's images carry Envoy's bootstrap template (pilot-agent renders it before it starts Envoy);
# the local node's pilot/proxyv2 images take it from the same module (e2e/src/images.rs).
if [ ! -f "$bin/envoy_bootstrap.json" ]; then
  istio_dir=$(cd "$here/tools/istio" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' istio.io/istio)
  cp "$istio_dir/tools/packaging/common/envoy_bootstrap.json" "$bin/envoy_bootstrap.json.tmp"
  mv "$bin/envoy_bootstrap.json.tmp" "$bin/envoy_bootstrap.json"
fi
# Our own Go code: rebuilt whenever a source file is newer than the binary (Go's build cache
# makes an unchanged rebuild a no-op).
probe="$bin/skjold-xds-probe"
if [ ! -x "$probe" ] || [ -n "$(find "$here/tools/istio" -newer "$probe" -name '*.go' -o -newer "$probe" -name 'go.*' | head -1)" ]; then
  echo "build-tools: building skjold-xds-probe (e2e/tools/istio/xdsprobe)..." >&2
  (cd "$here/tools/istio" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$probe.tmp" ./xdsprobe) >&2
  mv "$probe.tmp" "$probe"
fi
echo "$bin"
