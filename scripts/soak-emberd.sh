#!/usr/bin/env bash
# Soak: SECONDS (default 600) of mixed load against a throw-away emberd, then
# the verdict: zero lost acknowledgements (every function that got 201 and
# was not deleted still serves the code of its last acknowledged upload,
# every event that got 202 was delivered) and emberd's RSS over time
# (first/median/max, first and last tenth). The load (scripts/soak-emberd.py):
# two tenants doing create/update/delete, cold, warm synchronous and
# asynchronous invokes; one hostile client (idle and half-header connections
# from 127.0.0.2, bad signatures); one hostile guest (trickled Result, log
# flood, a huge announced frame). Every environment runs the hostile test
# agent (guest-agent/kernelless/src/bin/hostile_agent.rs): its `honest`
# handler echoes the payload, the others misbehave. Exit status 0 = PASS.
# Usage: scripts/soak-emberd.sh [SECONDS [--flat-kib-per-min X] [--live-cap N]]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
hostile=guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/hostile_agent
[ -f "$hostile" ] || bash guest-agent/kernelless/build.sh --bin hostile_agent >/dev/null
export EMBER_WASM_AGENT="$PWD/$hostile"
venv=$(bash scripts/api-venv.sh)
source scripts/throwaway-emberd.sh soak
[ -n "$ep" ] || { echo "emberd did not start: $(tail -5 "$work/log")" >&2; exit 1; }
"$bin/ember" --endpoint "$ep" creds add --account 111111111111 --json >/dev/null
rc=0
"$venv/bin/python" scripts/soak-emberd.py "$seconds" "$ep" "$EMBER_CREDENTIALS" "$pid" "$@" || rc=$?
if ! kill -0 "$pid" 2>/dev/null; then
  echo "emberd died during the soak: $(tail -20 "$work/log")" >&2
  rc=1
fi
exit "$rc"
