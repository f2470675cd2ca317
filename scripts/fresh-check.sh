#!/usr/bin/env bash
# `make fresh-check`: what a new user gets. Clones the committed HEAD into a temporary directory
# and runs the README's `make test` there with every cache empty: a new CARGO_HOME (so the crate
# registry and cargo-deny start from nothing), new Go module and build caches, a new Skjold binary
# cache (Kubernetes, etcd, helm, Istio, ...). Nothing of this checkout's or this machine's warm
# caches can hide a missing install step. Prints the time of every stage of `make test`.
#
#   bash scripts/fresh-check.sh [--keep DIR]
#     --keep DIR   put the clone and the caches in DIR and keep them (default: a temp dir, removed)
#
# Needs what the README says a fresh machine has: Rust (rustup) and Go on PATH, network access
# to crates.io and the Go module proxy. A full cold run takes tens of minutes on 2 cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
keep=""
if [ "${1:-}" = --keep ]; then keep=${2:?--keep needs a directory}; fi
if [ -n "$keep" ]; then root=$keep; mkdir -p "$root"; else root=$(mktemp -d /tmp/skjold-fresh.XXXXXX); fi
cleanup() { if [ -z "$keep" ]; then chmod -R u+w "$root" 2>/dev/null || true; rm -rf "$root"; fi; }
trap cleanup EXIT

rustup_bin=$(dirname "$(command -v rustup || command -v cargo)")
# Only the toolchain proxies, not whatever else `cargo install` left next to them (cargo-deny).
mkdir -p "$root/toolchain"
for t in cargo rustc rustup rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver; do
  [ -e "$rustup_bin/$t" ] && ln -sf "$rustup_bin/$t" "$root/toolchain/$t"
done
clean_path=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$rustup_bin" | paste -sd: -)

rm -rf "$root/src"
git clone -q --no-local "$repo" "$root/src"
export CARGO_HOME="$root/cargo" GOMODCACHE="$root/go/mod" GOCACHE="$root/go/build"
export GOPATH="$root/go/path" SKJOLD_CACHE="$root/skjold" XDG_CACHE_HOME="$root/xdg"
export PATH="$CARGO_HOME/bin:$root/toolchain:$clean_path"
unset CARGO_TARGET_DIR RUSTC_WRAPPER
cd "$root/src"
echo "fresh-check: clone of $(git rev-parse --short HEAD) in $root/src, all caches under $root"

# The same targets, in the same order, as `make test`'s prerequisites (checked below), one at a
# time so each one's time is known.
stages=(setup lint deny unit helm-test e2e)
declared=$(sed -n 's/^test: \(.*\) ## .*/\1/p' Makefile)
if [ "$declared" != "${stages[*]}" ]; then
  echo "fresh-check: make test runs '$declared', this script '${stages[*]}'; update it" >&2; exit 1
fi
total=$SECONDS
report=()
for s in "${stages[@]}"; do
  t=$SECONDS
  echo "fresh-check: === make $s"
  if ! make --no-print-directory "$s"; then
    echo "fresh-check: make $s FAILED after $((SECONDS - t))s"; exit 1
  fi
  report+=("$(printf '%-10s %5ds' "$s" $((SECONDS - t)))")
  echo "fresh-check: make $s passed in $((SECONDS - t))s (total $((SECONDS - total))s)"
done
echo "fresh-check: cold make test passed in $((SECONDS - total))s"
printf 'fresh-check:   %s\n' "${report[@]}"
