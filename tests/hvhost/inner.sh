#!/usr/bin/env bash
# Runs the suites named in RESULTS/hvhost.env where KVM is hardware-backed
# (inside the nested layer, or directly on a VMX/SVM host): each suite's
# output goes to RESULTS/<suite>.log, its exit code to RESULTS/<suite>.rc and
# its wall time to RESULTS/<suite>.secs. Usage: inner.sh RESULTS_DIR.
#
# Each suite runs under its own budget (`# budget: SECONDS` in its header);
# one that overruns it is killed and fails with RESULTS/<suite>.why saying so.
# RESULTS/current names the suite running now and RESULTS/heartbeat is
# rewritten every few seconds: outer.sh watches it, so a layer whose kernel
# stopped (nothing here runs any more, not even `timeout`) is ended within
# minutes and reported with the suite it was in.
set -uo pipefail
results=$1
set -a
# shellcheck disable=SC1091
. "$results/hvhost.env"
set +a
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ip link set lo up 2>/dev/null
(while :; do date +%s > "$results/heartbeat"; sleep 5; done) &
beat=$!
for s in $HV_SUITES; do
  budget=$(sed -n 's/^# budget: *\([0-9]*\).*/\1/p' "$REPO/tests/hvhost/suite/$s")
  budget=${budget:-600}
  echo "$s" > "$results/current"
  echo "hvhost-inner: suite $s starts (budget $budget s)"
  t0=$(date +%s)
  (cd "$REPO" && timeout -k 10 "$budget" bash "$REPO/tests/hvhost/suite/$s") > "$results/$s.log" 2>&1
  rc=$?
  echo $(( $(date +%s) - t0 )) > "$results/$s.secs"
  [ "$rc" = 124 ] || [ "$rc" = 137 ] &&
    echo "exceeded its budget of $budget s and was killed" > "$results/$s.why"
  echo "$rc" > "$results/$s.rc"
  echo "hvhost-inner: suite $s ended with $rc in $(cat "$results/$s.secs") s (TCG: functional evidence only)"
done
rm -f "$results/current"
kill "$beat" 2>/dev/null
sync
