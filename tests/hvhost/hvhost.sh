#!/usr/bin/env bash
# The hardware-virtualization test host: runs the named suites
# (tests/hvhost/suite/<name>) where KVM is hardware-backed, so ember-vmm can
# boot Linux guests.
#
#   tests/hvhost/hvhost.sh [-v] SUITE...      (default: every suite)
#
# - On a host whose /dev/kvm is kvm_intel / kvm_amd the suites run directly.
# - Elsewhere (this project's PVM machines) they run inside a nested layer:
#   Debian's stock kernel (linux-image-*-amd64, `apt-get download`, cached
#   under ${EMBER_CACHE:-~/.cache/ember}/hvhost) boots under QEMU TCG with
#   emulated AMD SVM (`-cpu EPYC,+svm`), loads kvm_amd, mounts this machine's
#   root read-only over 9p with a tmpfs overlay, chroots into it and runs the
#   suites there. ONE QEMU boot runs every named suite. Timings measured inside
#   TCG are functional evidence only, never performance figures.
#
# Each suite's log and exit code come back through a second (writable) 9p
# share; the script prints a summary, shows the log of every failed suite, and
# exits non-zero when any suite failed, did not run, or the layer itself broke.
# Suites name the Rust test binaries they need in `# cargo-test: NAME` lines;
# those are built here (on the host, where compiling is fast) and passed in.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
verbose=0
[ "${1:-}" = "-v" ] && { verbose=1; shift; }
suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
  # Every suite, except those marked `# pending: WHY` (not yet green here):
  # they run only when named.
  for s in $(ls "$here/suite"); do
    why=$(sed -n 's/^# pending: *//p' "$here/suite/$s")
    if [ -n "$why" ]; then
      echo "hvhost: suite $s is pending and not run by default: $why" >&2
    else
      suites+=("$s")
    fi
  done
fi
for s in "${suites[@]}"; do
  [ -f "$here/suite/$s" ] || { echo "hvhost: no suite $s (tests/hvhost/suite/)" >&2; exit 2; }
done
log() { echo "hvhost: $*" >&2; }
cache="${EMBER_CACHE:-$HOME/.cache/ember}"
started=$(date +%s)

# The layer's watchdog first: a few seconds, no QEMU.
bash "$here/selftest.sh" >&2 || { log "the watchdog's self-test failed"; exit 1; }

# --- what the suites need, built on this host ---------------------------------
log "building release binaries and the suites' test binaries"
(cd "$repo" && nice -n 5 cargo build --release --bins -q)
mapfile -t tests < <(sed -n 's/^# cargo-test: *//p' "${suites[@]/#/$here/suite/}" | tr ' ' '\n' | sort -u | grep .) || true
results=$(mktemp -d "${TMPDIR:-/tmp}/hvhost-results.XXXXXX")
chmod 755 "$results"
env_file="$results/hvhost.env"
{
  echo "REPO=$repo"
  echo "HV_RESULTS=$results"
  echo "HV_SUITES='${suites[*]}'"
  echo "EMBER_CACHE=$cache"
  echo "HOME=$HOME"
  # Narrow the run while iterating: a test-name filter the suites pass on.
  echo "HVHOST_TEST_FILTER='${HVHOST_TEST_FILTER:-}'"
} > "$env_file"
if [ ${#tests[@]} -gt 0 ]; then
  args=()
  for t in "${tests[@]}"; do args+=(--test "$t"); done
  (cd "$repo" && nice -n 5 cargo test --release -p ember-tests --no-run --message-format=json "${args[@]}" 2>/dev/null) |
    python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print("HV_TEST_%s=%s" % (m["target"]["name"], m["executable"]))
' >> "$env_file"
  for t in "${tests[@]}"; do
    grep -q "^HV_TEST_$t=" "$env_file" || { log "test binary $t was not built"; exit 1; }
  done
fi
# Builds the suites want before the boot (images, kernel): `# prepare: CMD`.
while IFS= read -r cmd; do
  [ -n "$cmd" ] || continue
  log "prepare: $cmd"
  (cd "$repo" && bash -c "$cmd" >&2)
done < <(sed -n 's/^# prepare: *//p' "${suites[@]/#/$here/suite/}" | sort -u)

# --- run ---------------------------------------------------------------------
hardware_kvm() {
  [ -e /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ] &&
    { [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; }
}
if hardware_kvm; then
  log "hardware-backed KVM here: running the suites directly"
  bash "$here/inner.sh" "$results" || true
  layer="direct"
else
  layer="nested (QEMU TCG + emulated SVM)"
  # One QEMU boot for every suite, except those whose header says
  # `# layer: own`: each gets a boot of its own, so that if it takes the
  # layer's kernel down (the triple fault stopped the whole layer once in
  # CI) the other suites' results stand.
  shared=() own=()
  for s in "${suites[@]}"; do
    if grep -q '^# layer: own' "$here/suite/$s"; then own+=("$s"); else shared+=("$s"); fi
  done
  # Boots the layer for the suites named; its cap is its boot plus their
  # budgets, not a blanket hour. LABEL names its console and stall files.
  boot_layer() { # LABEL SUITE...
    local label=$1 budgets=0 b s
    shift
    for s in "$@"; do
      b=$(sed -n 's/^# budget: *\([0-9]*\).*/\1/p' "$here/suite/$s")
      budgets=$((budgets + ${b:-600}))
    done
    sed -i "s/^HV_SUITES=.*/HV_SUITES='$*'/" "$env_file"
    rm -f "$results"/{heartbeat,current,layer.ok,stall.txt}
    HVHOST_TIMEOUT_S=${HVHOST_TIMEOUT_S:-$((budgets + 300))} \
      bash "$here/outer.sh" "$results" "$verbose" || true
    mv "$results/console.log" "$results/console-$label.log" 2>/dev/null || true
    [ ! -f "$results/stall.txt" ] || mv "$results/stall.txt" "$results/stall-$label.txt"
  }
  # Suites of LABEL's layer that have no result because the layer stopped
  # responding (or ended before them) get one more, fresh layer of their own
  # kind; suites that finished keep their results, and a suite that failed
  # is never rerun. Both attempts' consoles and stall reports are kept.
  retry_unfinished() { # LABEL SUITE...
    local label=$1 s missing=()
    shift
    for s in "$@"; do [ -f "$results/$s.rc" ] || missing+=("$s"); done
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ -f "$results/stall-$label.txt" ]; then
      log "${missing[*]}: $(head -n 1 "$results/stall-$label.txt"); once more in a fresh layer"
      mv "$results/stall-$label.txt" "$results/stall-$label-attempt1.txt"
    else
      log "${missing[*]}: the layer ended before them (console-$label-attempt1.log); once more in a fresh layer"
    fi
    mv "$results/console-$label.log" "$results/console-$label-attempt1.log" 2>/dev/null || true
    for s in "${missing[@]}"; do
      mv "$results/$s.log" "$results/$s-attempt1.log" 2>/dev/null || true
    done
    boot_layer "$label" "${missing[@]}"
  }
  if [ ${#shared[@]} -gt 0 ]; then
    boot_layer shared "${shared[@]}"
    retry_unfinished shared "${shared[@]}"
  fi
  for s in "${own[@]}"; do
    boot_layer "$s" "$s"
    retry_unfinished "$s" "$s"
  done
fi

# --- report ------------------------------------------------------------------
fail=0
echo "hvhost: results ($layer; timings inside TCG are functional evidence only):"
for s in "${suites[@]}"; do
  rc=$(cat "$results/$s.rc" 2>/dev/null || echo "did-not-run")
  secs=$(cat "$results/$s.secs" 2>/dev/null || echo "?")
  printf '  %-24s %s (%s s)\n' "$s" "$([ "$rc" = 0 ] && echo ok || echo "FAILED rc=$rc")" "$secs"
  if [ "$rc" != 0 ]; then
    fail=1
    echo "----- $s log (last 200 lines of $results/$s.log) -----"
    tail -n 200 "$results/$s.log" 2>/dev/null || echo "(no log)"
    [ ! -f "$results/$s.why" ] || echo "hvhost: suite $s $(cat "$results/$s.why")"
    # The last test it started: a test binary prints `test NAME ... `,
    # pytest -v `path::NAME `.
    last=$(grep -aoE '^test [^ ]+ \.\.\.|^[^ ]+\.py::[^ ]+ ' "$results/$s.log" 2>/dev/null | tail -n 1 || true)
    last=${last#test }
    [ -z "$last" ] || echo "hvhost: suite $s: the last test it started: ${last% ...}"
  fi
done
for f in "$results"/stall-*.txt; do
  [ -f "$f" ] || continue
  echo "----- why a nested layer was stopped ($f) -----"
  cat "$f"
done
if [ "$fail" != 0 ]; then
  for f in "$results"/console*.log; do
    [ -f "$f" ] || continue
    echo "----- outer console (last 60 lines of $f) -----"
    tail -n 60 "$f"
  done
fi
echo "hvhost: wall time $(( $(date +%s) - started )) s (layer boot + suites + builds)"
[ "$fail" = 0 ] || exit 1
[ "${HVHOST_KEEP:-0}" = 1 ] || rm -rf "$results"
