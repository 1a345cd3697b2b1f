#!/usr/bin/env bash
# Snapshot benchmark (issue 16): load (File backend, resumed) -> the
# kernel-less guest's first port write vs a fresh boot of the same guest,
# alternating, and create of a 128 MiB guest that touched 16 MiB (time,
# memory file on disk); RUNS each (default 20), medians, p90, ratios.
# Usage: scripts/bench-snapshot.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p ember-vmm -p ember-tests --bins --quiet
bash guest-agent/kernelless/build.sh --bin snap_guest >/dev/null
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/bench_snapshot" "${1:-20}"
