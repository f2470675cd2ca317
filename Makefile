# Skjold: Istio-compatible sidecar injector and mesh operator in Rust.
#   make demo   set up everything on a fresh machine and run a local real cluster with Skjold
#   make test   lint, unit and golden tests, Helm chart tests, end-to-end tests on a real API server
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
E2E_THREADS ?= 1
# Image names match the chart's `image.registry` default; set IMAGE_TAG to the chart's `image.tag`.
IMAGE_REGISTRY ?= ghcr.io/skjold-mesh
IMAGE_TAG ?= dev
# Extra arguments of `skjold-cluster demo` (e.g. ARGS=--no-node).
ARGS ?=

.PHONY: help setup tools build build-release fmt lint deny unit helm-test e2e test fresh-check demo bench images fuzz clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## check/install the toolchains (Rust, Go) and the node's packages; build the pinned cluster binaries (cached)
	@bash scripts/setup.sh
	@bash e2e/scripts/build-tools.sh >/dev/null
	@bash e2e/scripts/build-node-tools.sh >/dev/null

tools: ## build kube-apiserver, kube-controller-manager, kubectl, etcd, helm, pilot-discovery, pilot-agent, istioctl from Go modules (cached)
	@bash e2e/scripts/build-tools.sh

build: ## build all binaries (debug)
	$(CARGO) build --workspace --bins

build-release: ## build all binaries (release)
	$(CARGO) build --workspace --bins --release

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: ## unit, golden and HTTP-level tests (no cluster needed)
	$(CARGO) test --workspace --exclude skjold-e2e

helm-test: tools ## helm lint + helm template with several value sets, CRDs (ours and Istio's) in sync
	@bash scripts/gen-istio-crds.sh --check
	@bash helm/test.sh

e2e: setup build ## end-to-end tests against a real kube-apiserver on loopback
	$(CARGO) test -p skjold-e2e --no-fail-fast -- --test-threads=$(E2E_THREADS)

deny: ## cargo-deny: licenses, bans, sources (+ advisories when the RustSec database is reachable)
	@bash scripts/deny.sh

test: setup lint deny unit helm-test e2e ## everything CI runs

fresh-check: ## `make test` in a clean clone of HEAD with every cache empty (as on a new machine), timed per stage
	@bash scripts/fresh-check.sh

demo: setup build ## local cluster with a real node, `helm install` of Skjold, istiod, an injected demo pod (ARGS=--no-node: no node, no root); Ctrl-C to stop
	$(CARGO) run -q -p skjold-e2e --bin skjold-cluster -- demo $(ARGS)

bench: setup ## webhook latency/throughput/RSS, operator reconcile latency, API-server-observed webhook latency
	@bash scripts/bench.sh

images: ## build container images named as the Helm chart expects (needs a Docker engine; none on the dev machines)
	docker build -f webhook/Dockerfile -t $(IMAGE_REGISTRY)/skjold-webhook:$(IMAGE_TAG) .
	docker build -f operator/Dockerfile -t $(IMAGE_REGISTRY)/skjold-operator:$(IMAGE_TAG) .
	docker build -f cli/Dockerfile -t $(IMAGE_REGISTRY)/skjoldctl:$(IMAGE_TAG) .

fuzz: ## run every cargo-fuzz target for FUZZ_SECONDS (default 60) each; new crashes go to fuzz/regressions/
	@bash scripts/fuzz.sh

clean: ## remove build output (the cluster binary cache stays: see e2e/scripts/build-tools.sh)
	$(CARGO) clean
