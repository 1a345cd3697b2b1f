#!/usr/bin/env bash
# Runs the suites named in RESULTS/hvhost.env where KVM is hardware-backed
# (inside the nested layer, or directly on a VMX/SVM host): each suite's
# output goes to RESULTS/<suite>.log, its exit code to RESULTS/<suite>.rc and
# its wall time to RESULTS/<suite>.secs. Usage: inner.sh RESULTS_DIR.
set -uo pipefail
results=$1
set -a
# shellcheck disable=SC1091
. "$results/hvhost.env"
set +a
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ip link set lo up 2>/dev/null
per_suite=${HVHOST_SUITE_TIMEOUT_S:-1500}
for s in $HV_SUITES; do
  echo "hvhost-inner: suite $s starts"
  t0=$(date +%s)
  (cd "$REPO" && timeout -k 10 "$per_suite" bash "$REPO/tests/hvhost/suite/$s") > "$results/$s.log" 2>&1
  rc=$?
  echo $(( $(date +%s) - t0 )) > "$results/$s.secs"
  echo "$rc" > "$results/$s.rc"
  echo "hvhost-inner: suite $s ended with $rc in $(cat "$results/$s.secs") s (TCG: functional evidence only)"
done
sync
