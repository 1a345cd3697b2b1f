#!/usr/bin/env bash
# Snapshot benchmark (issue 16): load (File backend, resumed) -> the
# kernel-less guest's first port write vs a fresh boot of the same guest,
# alternating, and create of a 128 MiB guest that touched 16 MiB (time,
# memory file on disk); and the wasm agent with vsock through the API socket:
# load of a snapshot taken after Init -> first answer vs fresh boot + Init ->
# first answer (examples/hello.wat); RUNS each (default 20), medians, p90,
# ratios.
# Usage: scripts/bench-snapshot.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p ember-vmm -p ember-tests --bins --quiet
bash guest-agent/kernelless/build.sh --bin snap_guest --bin ember-wasm-agent >/dev/null
command -v wat2wasm >/dev/null || bash scripts/setup.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wat2wasm examples/hello.wat -o "$tmp/hello.wasm"
target="${CARGO_TARGET_DIR:-target}"
"$target/release/bench_snapshot" "${1:-20}" --agent-module "$tmp/hello.wasm"
