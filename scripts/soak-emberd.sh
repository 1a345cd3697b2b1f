#!/usr/bin/env bash
# Soak: SECONDS (default 600) of mixed load against a throw-away emberd, then
# the verdict, acknowledged vs found: every acknowledged create/update is
# served with its code (GetFunction Code.Location + CodeSha256), every
# acknowledged delete is 404, every 202'd event ran exactly once (attempt log
# + its OnSuccess destination record), every sync invoke was answered; and
# emberd's RSS over time (start/peak/end, each minute, slope; with
# --flat-kib-per-min X the second half's slope must stay <= X). The load
# (scripts/soak-emberd.py): two tenants doing create/update/delete (each
# keeping at most --live-cap functions, default 200), cold, warm synchronous
# and asynchronous invokes; one hostile client (idle and half-header
# connections from 127.0.0.2, bad signatures); one hostile guest (trickled
# Result, log flood, a huge announced frame). Every environment runs the
# hostile test agent (guest-agent/kernelless/src/bin/hostile_agent.rs): its
# `honest` handler echoes the payload, the others misbehave. Exit 0 = PASS.
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
