#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (config: deny.toml), run by `make test`.
#   licenses, bans, sources   always (need Cargo.lock and every crate it names, fetched first)
#   advisories                only when the RustSec database can be fetched; otherwise a SKIPPED
#                             line says so (some build machines reach crates.io but not GitHub).
# Exit status: non-zero on any failed check, zero when advisories are merely skipped.
# Env: SKJOLD_DENY_REQUIRE_ADVISORIES=1 turns a skipped advisories check into a failure (for CI
# runners that do reach GitHub).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2

if ! cargo deny --version >/dev/null 2>&1; then
    echo "deny.sh: installing cargo-deny $CARGO_DENY_VERSION (one-time; ~6.5 min on 2 cores)" >&2
    cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
fi

# `cargo build` downloads only this platform's crates, but cargo-deny runs `cargo metadata`, which
# needs every crate in Cargo.lock (Windows-only ones too). Fetch them all first, so the offline
# check below never depends on a warm registry cache (a no-op when they are already there).
echo "deny.sh: cargo fetch --locked"
cargo fetch --locked --quiet
echo "deny.sh: cargo deny check licenses bans sources"
cargo deny --offline check --hide-inclusion-graph licenses bans sources

# `fetch db` fails at once when the host is unreachable; the timeout covers a hanging network.
if fetch_log=$(timeout 120 cargo deny fetch db 2>&1); then
    echo "deny.sh: cargo deny check advisories"
    cargo deny check --disable-fetch --hide-inclusion-graph advisories
else
    reason=$(printf '%s\n' "$fetch_log" | grep -m1 -oE 'Could not resolve host: [^ ]+|timed out|Connection refused' || true)
    echo "deny.sh: advisories SKIPPED: the RustSec advisory database could not be fetched (${reason:-see cargo deny fetch db})"
    if [[ "${SKJOLD_DENY_REQUIRE_ADVISORIES:-0}" == 1 ]]; then
        echo "deny.sh: SKJOLD_DENY_REQUIRE_ADVISORIES=1: failing" >&2
        exit 1
    fi
fi
