#!/usr/bin/env bash
# vsock benchmark: round trip (median µs) and MiB/s both ways between a
# kernel-less guest and a host Unix socket through ember-vmm's hybrid vsock,
# each beside the same measure on a host Unix socket pair (the peer) and with
# ember-vmm's CPU use. Usage: scripts/bench-vsock.sh [MIB per transfer, default 512]
set -euo pipefail
cd "$(dirname "$0")/.."
bash guest-agent/kernelless/build.sh >/dev/null
cargo build --release -q -p ember-vmm -p ember-tests --bin ember-vmm --bin bench-vsock
t=${CARGO_TARGET_DIR:-target}
"$t/release/bench-vsock" "$t/release/ember-vmm" guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release "${1:-512}"
