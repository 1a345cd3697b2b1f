#!/usr/bin/env bash
# Watches the nested layer (tests/hvhost/outer.sh) and ends it early when it
# can no longer report:
#
#   watch.sh PID RESULTS CAP STALL BOOT_CAP [DUMP_CMD...]
#
# - CAP: the whole run's time cap (hvhost.sh sizes it from the suites' budgets);
# - STALL: inner.sh rewrites RESULTS/heartbeat every few seconds while
#   RESULTS/current names the running suite; a heartbeat older than STALL
#   seconds means the layer's kernel stopped (nothing in it runs any more,
#   not even the suite's own `timeout`);
# - BOOT_CAP: no heartbeat at all this long after the start: the layer never
#   reached its suites.
# On any of these it writes the reason, the layer's threads (state, CPU
# time) and DUMP_CMD's output (where its vCPU is) to RESULTS/stall.txt,
# kills PID (TERM, then KILL) and exits 124. Otherwise it exits 0 when PID
# has ended by itself.
set -uo pipefail
pid=$1 results=$2 cap=$3 stall=$4 boot_cap=$5
shift 5
t0=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  sleep "${HVHOST_WATCH_EVERY_S:-5}"
  now=$(date +%s)
  why=
  if ((now - t0 >= cap)); then
    why="the nested layer hit its cap of $cap s"
  elif [ -f "$results/heartbeat" ] && [ -f "$results/current" ]; then
    age=$((now - $(stat -c %Y "$results/heartbeat")))
    ((age < stall)) ||
      why="the nested layer stopped responding (no heartbeat for $age s) during suite $(cat "$results/current")"
  elif [ ! -f "$results/heartbeat" ] && ((now - t0 >= boot_cap)); then
    why="the nested layer did not start its suites within $boot_cap s"
  fi
  if [ -n "$why" ]; then
    echo "hvhost: $why: stopping it" >&2
    {
      echo "$why"
      echo "its threads (a busy vCPU thread: the layer's guest code spins; idle: it waits):"
      ps -L -o tid=,stat=,time=,wchan:24=,comm= -p "$pid" 2>&1
      [ $# -eq 0 ] || "$@" 2>&1
    } > "$results/stall.txt"
    kill "$pid" 2>/dev/null
    for _ in 1 2 3 4 5; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill -9 "$pid" 2>/dev/null
    exit 124
  fi
done
exit 0
