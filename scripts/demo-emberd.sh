#!/usr/bin/env bash
# The emberd demo: builds what is needed, starts emberd on a free port with a
# throw-away data directory, creates a wasm function, invokes it cold (no
# environment yet, no spare VM of its size), cold with a spare VM, and warm,
# printing each latency, lists the environments, and stops emberd (SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${EMBER_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}"
agent="${EMBER_WASM_AGENT:-guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/ember-wasm-agent}"
[ -x "$bin/emberd" ] && [ -x "$bin/ember" ] && [ -x "$bin/ember-vmm" ] || cargo build --release --bins -p ember-host -p ember-vmm
[ -f "$agent" ] || bash guest-agent/kernelless/build.sh >/dev/null
work=$(mktemp -d /tmp/ed.XXXXXX)
# The ember CLI signs its requests with the key emberd creates at first start.
export EMBER_CREDENTIALS="$work/credentials.json"
"$bin/emberd" --listen 127.0.0.1:0 --data-dir "$work" --vmm "$bin/ember-vmm" --wasm-agent "$agent" >"$work/out" 2>"$work/log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
cat "$work/out"
ember() { "$bin/ember" --endpoint "$(grep -o 'http://[0-9.:]*' "$work/out")" "$@"; }
wat2wasm tests/api/wat/echo.wat -o "$work/echo.wasm"
sleep 0.5 # let emberd boot its spare VMs
ember fn create echo256 --memory 256 --code "$work/echo.wasm" >/dev/null
ember fn create echo --code "$work/echo.wasm" >/dev/null
echo "== cold (boots a VM: no spare VM has 256 MiB)"; ember invoke echo256 --payload '{"hello":"cold"}' 2>&1
echo "== cold (takes a booted spare VM, then Init)"; ember invoke echo --payload '{"hello":"cold"}' 2>&1
echo "== warm";                                      ember invoke echo --payload '{"hello":"warm"}' 2>&1
echo "== warm";                                      ember invoke echo --payload '{"hello":"warm again"}' 2>&1
ember env list
