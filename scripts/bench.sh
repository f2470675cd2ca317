#!/usr/bin/env bash
# make bench: every performance figure the project states, printed as numbers.
#  1. webhook over HTTPS keep-alive: fixed-rate latency, closed-loop throughput, peak RSS
#  2. the same webhook under wrk, next to nginx serving a fixed reply over TLS (transport ceiling)
#  3. operator: MeshConfig edit -> mesh ConfigMap latency, RSS with 1,000 namespaces
#  4. API server's own view of the webhook's latency over 1,000 real pod creations
#  5. webhook chaos: two instances, round-robin, certificate rotation + SIGTERM under load
#     (CHAOS_SECONDS, default 60; fails on any failed request)
#  6. mesh: kubectl patch meshconfig -> the changed config in istiod's xDS push to a sidecar
# Set BENCH_ONLY=webhook|wrk|operator|apiserver|chaos|mesh to run one part.
set -euo pipefail
cd "$(dirname "$0")/.."
only=${BENCH_ONLY:-all}
run() { [ "$only" = all ] || [ "$only" = "$1" ]; }

if run webhook; then
  echo "=== 1. skjold-webhook: HTTPS keep-alive load (release build)"
  cargo bench -q -p skjold-webhook --bench webhook_load
fi
if run wrk; then
  echo "=== 2. wrk: webhook vs nginx fixed reply over TLS"
  bash scripts/bench/wrk-vs-nginx.sh
fi
if run operator; then
  echo "=== 3. skjold-operator: reconcile latency and memory (release build)"
  cargo build -q --release -p skjold-operator --bin skjold-operator
  SKJOLD_OPERATOR_BIN=$PWD/target/release/skjold-operator \
    cargo test -q -p skjold-e2e --test operator -- --ignored --nocapture --test-threads=1 bench_
fi
if run apiserver; then
  echo "=== 4. kube-apiserver's apiserver_admission_webhook_admission_duration_seconds over 1,000 pods"
  bash e2e/scripts/bench-admission.sh --release
fi
if run chaos; then
  echo "=== 5. skjold-webhook chaos: 2 instances, cert rotation and SIGTERM under load, zero failed requests"
  cargo bench -q -p skjold-webhook --bench chaos_load
fi
if run mesh; then
  echo "=== 6. MeshConfig edit -> changed xDS from istiod (20 edits, release operator)"
  cargo build -q --release -p skjold-operator -p skjold-webhook --bins
  SKJOLD_OPERATOR_BIN=$PWD/target/release/skjold-operator SKJOLD_WEBHOOK_BIN=$PWD/target/release/skjold-webhook \
    cargo test -q -p skjold-e2e --test mesh -- --ignored --nocapture --test-threads=1 bench_
fi
