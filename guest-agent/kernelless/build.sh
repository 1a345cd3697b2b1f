#!/usr/bin/env bash
# Builds every kernel-less guest of this workspace in release mode (or only
# the ones named: build.sh --bin hello --bin null). The ELFs
# land in guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/<bin>
# (the integration tests look there); their paths are printed one per line.
# The caller's CARGO_* environment (CARGO_TARGET_DIR, CARGO_BUILD_*, and the
# variables cargo sets for build scripts and tests) is cleared so this nested
# build is independent of whatever invoked it.
set -euo pipefail
cd "$(dirname "$0")"
for v in $(env | sed -n 's/^\(CARGO_[A-Za-z0-9_]*\)=.*/\1/p'); do
  case "$v" in
    CARGO_HOME) ;;  # keep the registry cache location
    *) unset "$v" ;;
  esac
done
unset RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTDOC RUSTC_BOOTSTRAP 2>/dev/null || true
out=target/x86_64-unknown-linux-gnu/release
if [ $# -eq 0 ]; then set -- --bins; fi
cargo build --release --quiet "$@"
for src in src/bin/*.rs src/bin/*/main.rs; do
  [ -e "$src" ] || continue
  case "$src" in
    */main.rs) name=$(basename "$(dirname "$src")") ;;
    *) name=$(basename "$src" .rs) ;;
  esac
  echo "$PWD/$out/$name"
done
