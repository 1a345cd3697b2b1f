#!/usr/bin/env bash
# Kernel-less null guest benchmark, now `ember bench vmm-boot` (issue 20)
# without QEMU: the null guest (writes 123 to the boot timer, exits 0) on
# ember-vmm RUNS times (default 30), interleaved with its peer in the same
# loop, `/bin/true` through the same launcher (exec + exit, no VM), so the
# VM's own cost shows as a ratio. Median/p90 exec-to-exit, boot-timer figure,
# peak RSS (GNU time's wait4 ru_maxrss). Targets (issue 2): 12 ms, 3 MiB.
# Usage: scripts/bench-null.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ember-vmm -p ember-host --bins --quiet
bash guest-agent/kernelless/build.sh --bin null >/dev/null
exec "$target/release/ember" bench vmm-boot --no-qemu --runs "${1:-30}" --out "${BENCH_OUT:-bench-results/null}"
