#!/usr/bin/env bash
# Wasm agent benchmark: cold start (spawn of ember-vmm → first response of the
# hello module, via the host library) and warm invocation round trip (host
# sends Invoke → Result), median and p99, with the kernel-less null guest's
# exec-to-exit (the VMM core's boot figure) run in the same script as the
# peer the cold start is compared with. Targets: cold ≤ 15 ms, warm ≤ 200 µs.
# Usage: scripts/bench-agent.sh [COLD_RUNS (default 200)] [WARM_RUNS (default 1000)]
set -euo pipefail
cd "$(dirname "$0")/.."
cold=${1:-200}
warm=${2:-1000}
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ember-vmm -p ember-host --bin ember-vmm --bin ember-run --quiet
bash guest-agent/kernelless/build.sh --bin ember-wasm-agent --bin null >/dev/null
command -v wat2wasm >/dev/null || bash scripts/setup.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wat2wasm examples/hello.wat -o "$tmp/hello.wasm"
vmm="$target/release/ember-vmm"
null="guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/null"

# Peer: exec → exit of the null guest, same number of runs.
python3 - "$vmm" "$null" "$cold" > "$tmp/peer" <<'PY'
import statistics, subprocess, sys, time
vmm, guest, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
w = []
for _ in range(runs):
    t0 = time.perf_counter()
    subprocess.run([vmm, "--kernel", guest, "--console", "off"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    w.append((time.perf_counter() - t0) * 1000)
w.sort()
print(f"{statistics.median(w):.3f} {w[max(0, int(len(w) * 0.99 + 0.999) - 1)]:.3f}")
PY
"$target/release/ember-run" --vmm "$vmm" --memory-mib 16 --bench-cold "$cold" --bench-warm "$warm" "$tmp/hello.wasm" | tee "$tmp/agent"
python3 - "$tmp/agent" "$tmp/peer" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"bench (\S+) n=(\d+) (.*)", line)
    if m:
        rows[m.group(1)] = dict(kv.split("=") for kv in m.group(3).split())
peer_med, peer_p99 = map(float, open(sys.argv[2]).read().split())
c, w = rows["cold_total"], rows.get("warm_round_trip")
cold_med = float(c["median_ms"])
print(f"peer: null guest exec->exit median {peer_med:.2f} ms, p99 {peer_p99:.2f} ms")
print(f"cold start / null-guest boot: {cold_med / peer_med:.2f}x (agent cold median {cold_med:.2f} ms, p99 {float(c['p99_ms']):.2f} ms)")
print(f"cold target 15 ms: {cold_med / 15:.2f}x ({'met' if cold_med <= 15 else 'MISSED'})")
if w:
    warm_med = float(w["median_us"])
    print(f"warm target 200 us: {warm_med / 200:.2f}x (median {warm_med:.1f} us, p99 {float(w['p99_us']):.1f} us; {'met' if warm_med <= 200 else 'MISSED'})")
PY
