#!/usr/bin/env bash
# What isolation costs: cold start of a kernel-less VM (spawn -> the guest's
# first console line) and exec-to-exit, for a bare ember-vmm (sandbox off),
# ember-vmm with its sandbox (seccomp + Landlock), and ember-jailer + sandbox,
# interleaved in one run (N rounds, default 20). Prints medians, p90 and the
# differences against the bare run. Target: the jail adds <= 3 ms to a cold
# start. Then the same through emberd: cold and warm Invoke round trips with
# jailed environments vs --no-jail (scripts/bench-isolation-emberd.py, W warm
# calls per round, default 10). Needs root. Usage:
# scripts/bench-isolation.sh [N [W]]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
W=${2:-10}
T=${CARGO_TARGET_DIR:-target}
cargo build --release -p ember-vmm -p ember-jailer --bins --quiet
bash guest-agent/kernelless/build.sh --bin hello >/dev/null
GUEST=guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/hello
python3 - "$N" "$T/release/ember-vmm" "$T/release/ember-jailer" "$GUEST" <<'PY'
import os, statistics, subprocess, sys, time
n, vmm, jailer, guest = int(sys.argv[1]), *sys.argv[2:]
vmm, jailer, guest = map(os.path.abspath, (vmm, jailer, guest))
vm_args = ["--mem-mib", "64", "--cmdline", "x"]
modes = {
    "bare (no sandbox)": [vmm, "--kernel", guest, "--no-seccomp", "--no-landlock", *vm_args],
    "sandbox": [vmm, "--kernel", guest, *vm_args],
    "jail + sandbox": [jailer, "--id", "bench", "--chroot-base", "/tmp/ember-bench-jail",
                       "--exec-file", vmm, "--file", guest + ":/guest",
                       "--mem-limit-mib", "128", "--", "--kernel", "/guest", *vm_args],
}
first, total = {m: [] for m in modes}, {m: [] for m in modes}
for _ in range(n):
    for m, cmd in modes.items():
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = p.stdout.readline()
        t1 = time.perf_counter()
        p.stdout.read(); p.wait()
        t2 = time.perf_counter()
        if b"hello from ember" not in line or p.returncode != 0:
            sys.exit(f"{m}: unexpected run: {line!r} rc={p.returncode}")
        first[m].append((t1 - t0) * 1e3); total[m].append((t2 - t0) * 1e3)
def p90(v): return sorted(v)[int(0.9 * (len(v) - 1))]
base_f, base_t = statistics.median(first["bare (no sandbox)"]), statistics.median(total["bare (no sandbox)"])
print(f"{n} rounds, interleaved; times in ms (median / p90)")
print(f"{'mode':20} {'cold start':>16} {'vs bare':>9} {'exec-to-exit':>16} {'vs bare':>9}")
for m in modes:
    f, t = statistics.median(first[m]), statistics.median(total[m])
    print(f"{m:20} {f:7.2f} / {p90(first[m]):6.2f} {f - base_f:+8.2f} {t:7.2f} / {p90(total[m]):6.2f} {t - base_t:+8.2f}")
jail_cost = statistics.median(first["jail + sandbox"]) - statistics.median(first["sandbox"])
print(f"jail cost on cold start (jail+sandbox minus sandbox, medians): {jail_cost:+.2f} ms "
      f"(target <= 3 ms: {'met' if jail_cost <= 3 else 'MISSED'})")
PY
cargo build --release -p ember-host --bins --quiet
bash guest-agent/kernelless/build.sh --bin ember-wasm-agent >/dev/null
venv=$(bash scripts/api-venv.sh)
CARGO_TARGET_DIR=$(realpath "$T") "$venv/bin/python" scripts/bench-isolation-emberd.py "$N" "$W"
