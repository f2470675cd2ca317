#!/usr/bin/env bash
# make fuzz: run every cargo-fuzz (libFuzzer) target of skjold-inject for a bounded time.
#
# FUZZ_SECONDS (default 60) per target; FUZZ_TARGETS (default: all) to pick some; FUZZ_RSS_MB
# (default 1024) is libFuzzer's memory cap, so an unbounded allocation is reported as a crash;
# FUZZ_MAX_LEN (default 262144 bytes) bounds one input. Needs nightly (`rustup toolchain install
# nightly`); installs cargo-fuzz if missing. Seeds and every input that ever crashed live in
# fuzz/regressions/<target>/ and run in `cargo test -p skjold-inject --test fuzz_regressions`.
# New crashes are copied there; the script then exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
rss_mb=${FUZZ_RSS_MB:-1024}
max_len=${FUZZ_MAX_LEN:-262144}
targets=${FUZZ_TARGETS:-"admission_inject annotation_parsers inject_annotations"}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: needs the nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

target_dir=${CARGO_TARGET_DIR:-$PWD/fuzz/target}
failed=0
for t in $targets; do
  corpus=fuzz/corpus/$t
  artifacts=fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts" "fuzz/regressions/$t"
  before=$(find "$artifacts" -type f | wc -l)
  echo "=== fuzz $t for ${seconds}s (rss limit ${rss_mb} MiB, max input ${max_len} bytes)"
  # The regressions dir is a read-only seed corpus; new interesting inputs go to fuzz/corpus.
  if ! cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$t" \
      "$corpus" "fuzz/regressions/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -malloc_limit_mb="$rss_mb" \
      -max_len="$max_len" -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$artifacts/" 2>&1 | tail -n 25; then
    failed=1
  fi
  after=$(find "$artifacts" -type f | wc -l)
  if [ "$after" -gt "$before" ]; then
    failed=1
    for f in "$artifacts"/*; do
      name=found-$(basename "$f")
      if [ ! -e "fuzz/regressions/$t/$name" ]; then
        cp "$f" "fuzz/regressions/$t/$name"
        echo "fuzz: $t: new failing input saved as fuzz/regressions/$t/$name"
      fi
    done
  fi
done
if [ "$failed" != 0 ]; then
  echo "fuzz: failures found; reproduce with: cargo +nightly fuzz run --fuzz-dir fuzz TARGET FILE" >&2
  exit 1
fi
echo "fuzz: no crash, hang or memory blow-up in ${seconds}s per target"
