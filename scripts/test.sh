#!/usr/bin/env bash
# Runs ember's whole test suite: unit tests, real-microVM integration tests on
# /dev/kvm, and the API tests with AWS clients. Needs root (KVM, TAP, netns).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --release --bins
cargo test --workspace --release 2>&1
