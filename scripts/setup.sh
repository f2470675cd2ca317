#!/usr/bin/env bash
# Makes a fresh machine ready: Rust (rustfmt, clippy) and Go are required; installs what is
# missing where it can (rustup components, Debian packages), and says what to do otherwise.
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  if need apt-get && [ "$(id -u)" = 0 ]; then
    echo "setup: installing $* from Debian packages" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: please install: $*" >&2; return 1
  fi
}

if ! need cargo; then
  echo "setup: Rust is required: install it with rustup (https://rustup.rs), then re-run" >&2; exit 1
fi
if need rustup; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" >&2
  done
fi
need go || apt_install golang-go
need go || { echo "setup: Go >= 1.24 is required (https://go.dev/dl)" >&2; exit 1; }
# curl/openssl are used by diagnostics in scripts; git for version stamping.
need git || apt_install git
# The local cluster's real node (e2e/src/node.rs): containerd and runc run its pods, iptables is
# what kube-proxy and istio-init program, busybox-static is the test workloads' image.
node_pkgs=()
need containerd || node_pkgs+=(containerd)
need runc || [ -x /usr/sbin/runc ] || node_pkgs+=(runc)
need iptables || [ -x /usr/sbin/iptables ] || node_pkgs+=(iptables)
dpkg -s busybox-static >/dev/null 2>&1 || node_pkgs+=(busybox-static)
if [ ${#node_pkgs[@]} -gt 0 ]; then
  apt_install "${node_pkgs[@]}" || echo "setup: without ${node_pkgs[*]} the real-node tests (e2e/tests/node.rs) cannot run" >&2
fi
echo "setup: ok (rust $(rustc --version | cut -d' ' -f2), $(go version | cut -d' ' -f3))" >&2
