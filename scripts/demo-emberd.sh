#!/usr/bin/env bash
# The emberd demo: builds what is needed, starts emberd on a free port with a
# throw-away data directory, creates a wasm function, invokes it cold (no
# environment yet, no spare VM of its size), cold with a spare VM, and warm,
# printing each latency, lists the environments, and stops emberd (SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/throwaway-emberd.sh ed
cat "$work/out"
ember() { "$bin/ember" --endpoint "$ep" "$@"; }
wat2wasm tests/api/wat/echo.wat -o "$work/echo.wasm"
sleep 0.5 # let emberd boot its spare VMs
ember fn create echo256 --memory 256 --code "$work/echo.wasm" >/dev/null
ember fn create echo --code "$work/echo.wasm" >/dev/null
echo "== cold (boots a VM: no spare VM has 256 MiB)"; ember invoke echo256 --payload '{"hello":"cold"}' 2>&1
echo "== cold (takes a booted spare VM, then Init)"; ember invoke echo --payload '{"hello":"cold"}' 2>&1
echo "== warm";                                      ember invoke echo --payload '{"hello":"warm"}' 2>&1
echo "== warm";                                      ember invoke echo --payload '{"hello":"warm again"}' 2>&1
ember env list
