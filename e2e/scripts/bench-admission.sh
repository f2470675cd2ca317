#!/usr/bin/env bash
# API-server-observed webhook latency: starts the local cluster with Skjold, creates 1,000 pods
# in an injected namespace and prints p50/p99 of the API server's own
# apiserver_admission_webhook_admission_duration_seconds for our webhook, the webhook's
# skjold_webhook_request_duration_seconds, and the client-side create latency.
# Usage: e2e/scripts/bench-admission.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=()
if [ "${1:-}" = "--release" ]; then profile=(--release); fi
cargo build "${profile[@]}" -p skjold-webhook -p skjold-operator --bins
cargo test "${profile[@]}" -p skjold-e2e --test webhook -- --ignored --nocapture --test-threads=1 \
  bench_admission_latency_1000_pods
