#!/usr/bin/env bash
# Boot benchmark (issue 2), now a thin wrapper over `ember bench vmm-boot`
# (issue 20): the kernel-less and PVH null guests on ember-vmm, the PVH null
# guest on QEMU -M microvm (KVM, else TCG, said in the output), any
# Firecracker-compatible peers (BENCH_PEERS="firecracker=/path ..."), RUNS
# interleaved runs each (default 20): exec-to-exit median/p90/p99, boot-timer
# figure, peak RSS, ratios; raw records, plots and report.html in
# ${BENCH_OUT:-bench-results/vmm-boot}. Usage: scripts/bench-boot.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ember-vmm -p ember-host --bins --quiet
bash guest-agent/kernelless/build.sh --bin null >/dev/null
peers=()
for p in ${BENCH_PEERS:-}; do peers+=(--peer "$p"); done
exec "$target/release/ember" bench vmm-boot --runs "${1:-20}" --out "${BENCH_OUT:-bench-results/vmm-boot}" "${peers[@]}"
