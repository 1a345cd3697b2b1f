#!/usr/bin/env bash
# ember's demo on a fresh machine (root, /dev/kvm): installs what is missing,
# builds everything, boots kernel-less guests directly with ember-vmm (exec to
# exit timed, boot timer on), then starts emberd and invokes a WebAssembly
# function through the Lambda API cold and warm, with timings.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bins
bin="${CARGO_TARGET_DIR:-target}/release"
guest=guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/hello

null=guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/null

echo "== ember-vmm: a kernel-less guest that prints its arguments"
"$bin/ember-vmm" --kernel "$guest" --cmdline "hello world"
echo "== ember-vmm: the null guest (writes the boot timer, exits), 5 runs"
for _ in 1 2 3 4 5; do
  start=$(date +%s%N)
  "$bin/ember-vmm" --boot-timer --console off --kernel "$null" 2>&1 | grep -o 'Guest-boot-time.*' || true
  end=$(date +%s%N)
  echo "  exec to exit: $(( (end - start) / 1000 )) us (including the shell's fork/exec)"
done

echo
echo "== emberd: a wasm function through the Lambda API"
bash scripts/demo-emberd.sh
