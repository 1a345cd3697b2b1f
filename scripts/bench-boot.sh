#!/usr/bin/env bash
# Boot benchmark (issue 2): the PVH null guest on ember-vmm and on QEMU
# -M microvm, and ember's kernel-less null guest, alternating, RUNS each
# (default 20): exec-to-exit median/p90, boot-timer figure, peak RSS, ratios.
# Usage: scripts/bench-boot.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-system-x86_64 >/dev/null || echo "bench-boot: qemu-system-x86_64 missing (scripts/setup.sh installs it)" >&2
cargo build --release -p ember-vmm -p ember-tests --bins --quiet
if [ -f guest-agent/kernelless/Cargo.toml ]; then
  bash guest-agent/kernelless/build.sh >/dev/null
fi
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/bench_boot" "${1:-20}"
