#!/usr/bin/env bash
# The nested layer's watchdog (watch.sh) against a stand-in for QEMU: a layer
# whose heartbeat went stale in the middle of a suite is stopped at once with
# a report naming the suite (regression: a layer whose kernel hung ran to a
# blanket 2400 s cap, and the report said only "did-not-run"); so is one that
# never starts its suites, or outlives its cap; one that ends by itself is
# left alone. hvhost.sh runs this first (a few seconds, no QEMU).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export HVHOST_WATCH_EVERY_S=0.2
fails=0
check() { # NAME WANT_RC WANT_TEXT RC RESULTS
  local text
  text=$(cat "$5/stall.txt" 2>/dev/null)
  if [ "$4" = "$2" ] && [[ "$text" == *"$3"* ]]; then
    echo "hvhost selftest: $1: ok"
  else
    echo "hvhost selftest: $1: FAILED (rc $4, want $2; stall.txt: '$text', want '$3')"
    fails=1
  fi
}
# A stand-in for QEMU: sets $pid.
fake_layer() {
  sleep 300 > /dev/null 2>&1 &
  pid=$!
}

r=$(mktemp -d)
fake_layer
echo linux_full_boot > "$r/current"
date +%s > "$r/heartbeat"
touch -d '-100 seconds' "$r/heartbeat"
t0=$(date +%s)
timeout 30 bash "$here/watch.sh" "$pid" "$r" 600 60 600 echo "RIP here" 2>/dev/null
rc=$?
kill -0 "$pid" 2>/dev/null && { echo "hvhost selftest: stale heartbeat: the layer was not killed"; fails=1; kill -9 "$pid"; }
(($(date +%s) - t0 < 10)) || { echo "hvhost selftest: stale heartbeat: took $(($(date +%s) - t0)) s"; fails=1; }
check "stale heartbeat during a suite" 124 "stopped responding (no heartbeat for 10" "$rc" "$r"
check "stale heartbeat: where the vCPU was" 124 "RIP here" "$rc" "$r"
check "stale heartbeat: the suite named" 124 "during suite linux_full_boot" "$rc" "$r"
rm -rf "$r"

r=$(mktemp -d)
fake_layer
timeout 30 bash "$here/watch.sh" "$pid" "$r" 600 60 1 2>/dev/null
check "no heartbeat after the boot allowance" 124 "did not start its suites within 1 s" "$?" "$r"
kill -9 "$pid" 2>/dev/null
rm -rf "$r"

r=$(mktemp -d)
fake_layer
echo agent-pid1 > "$r/current"
timeout 30 bash -c "while sleep 0.2; do date +%s > '$r/heartbeat'; done" &
beat=$!
timeout 30 bash "$here/watch.sh" "$pid" "$r" 2 60 600 2>/dev/null
check "a fresh heartbeat, past the cap" 124 "hit its cap of 2 s" "$?" "$r"
kill "$beat"
rm -rf "$r"

r=$(mktemp -d)
sleep 1 &
timeout 30 bash "$here/watch.sh" "$!" "$r" 600 60 600
check "a layer that ends by itself" 0 "" "$?" "$r"
rm -rf "$r"
exit "$fails"
