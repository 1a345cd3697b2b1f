#!/usr/bin/env bash
# Kernel-less null guest benchmark: runs `ember-vmm --boot-timer` with the
# `null` guest (writes 123 to the boot timer, exits 0) RUNS times (default 30),
# alternating with a peer in the same loop: `ember-vmm --version` (the same
# binary's exec + exit, no VM) — so the VM's own cost shows as a difference.
# Prints median/p90 exec-to-exit wall time, the boot-timer figure, peak RSS
# (GNU time's wait4 ru_maxrss), and the ratios to the peer and to the issue's targets
# (12 ms, 3 MiB). Usage: scripts/bench-null.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ember-vmm --quiet
bash guest-agent/kernelless/build.sh --bin null >/dev/null
exec python3 - "$target/release/ember-vmm" "guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/null" "${1:-30}" <<'PY'
import os, re, statistics, subprocess, sys, time
vmm, guest, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])

def run(args):
    # Peak RSS from GNU time's wait4: a child forked from this Python process
    # would inherit Python's RSS high-water mark across exec.
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "RSS %M"] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = (time.perf_counter() - t0) * 1000
    err = p.stderr.decode()
    rss = re.search(r"RSS (\d+)", err)
    m = re.search(r"Guest-boot-time = (\d+) us", err)
    return wall, (int(rss.group(1)) / 1024 if rss else 0), (int(m.group(1)) / 1000 if m else None), p.returncode, err

vm, peer = [], []
for i in range(runs):
    r = run([vmm, "--kernel", guest, "--boot-timer", "--console", "off"])
    if r[3] != 0:
        sys.exit(f"null guest failed (exit {r[3]}): {r[4]}")
    vm.append(r)
    peer.append(run([vmm, "--version"]))

def p90(xs): return sorted(xs)[max(0, int(round(0.9 * len(xs))) - 1)]
def row(name, rs):
    w = [r[0] for r in rs]; rss = [r[1] for r in rs]; bt = [r[2] for r in rs if r[2] is not None]
    btm = f"{statistics.median(bt):8.2f}" if bt else "       -"
    print(f"{name:<28} {statistics.median(w):8.2f} {p90(w):8.2f} {btm} {statistics.median(rss):8.2f}")
    return statistics.median(w), statistics.median(rss)
print(f"runs: {runs} each, alternating")
print(f"{'':<28} {'med ms':>8} {'p90 ms':>8} {'boot ms':>8} {'RSS MiB':>8}")
vw, vr = row("ember-vmm kernel-less null", vm)
pw, pr = row("peer: ember-vmm --version", peer)
print(f"VM cost over the bare process: {vw - pw:.2f} ms, {vr - pr:.2f} MiB (ratio {vw / pw:.2f}x time)")
print(f"vs targets: time {vw / 12:.2f}x of 12 ms, RSS {vr / 3:.2f}x of 3 MiB "
      f"({'met' if vw <= 12 and vr <= 3 else 'MISSED'})")
PY
