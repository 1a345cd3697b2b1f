#!/usr/bin/env bash
# wasm engine benchmark (issue 15), all in one run on this machine:
#  1. compute: fib(32) and SHA-256 over 16 MiB (examples/bench/compute.c),
#     timed inside the function with the WASI monotonic clock, through emberd
#     with --wasm-engine wasmtime (compiled ahead of time) and wasmi, against
#     the same runtime run natively on the host (wasm-native: same wasmtime
#     configuration, same WASI shim). Medians and ratios.
#  2. cold start through emberd (`ember bench --mode cold`: every call after a
#     configuration change, spare VM or boot): wasmtime vs wasmi, same module.
#  3. a ~5 MB module: compile time (ember-wasm-compile), and its Init in the
#     guest (ember-run --bench-cold) under wasmtime vs wasmi.
# Usage: scripts/bench-wasm.sh [RUNS (default 5)] [COLD (default 30)]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cold_n=${2:-30}
bin="${CARGO_TARGET_DIR:-target}/release"
nice -n 10 cargo build --release --quiet -p ember-vmm -p ember-host -p ember-wasm-compiler --bins
nice -n 10 cargo build --release --quiet -p ember-guest --features std,wasm,compile --example wasm-native
nice -n 10 bash guest-agent/kernelless/build.sh --bin ember-wasm-agent >/dev/null
agent=guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/ember-wasm-agent
command -v wat2wasm >/dev/null || bash scripts/setup.sh
command -v clang >/dev/null || bash examples/json-c/build.sh /dev/null >/dev/null
tmp=$(mktemp -d /tmp/bench-wasm.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
clang --target=wasm32-wasi --sysroot=/usr -O2 -o "$tmp/compute.wasm" examples/bench/compute.c
wat2wasm tests/api/wat/echo.wat -o "$tmp/echo.wasm"
# A ~5 MB module: many distinct functions (the size of an interpreter).
python3 - "$tmp/big.wat" <<'PY'
import sys
n = 9000
with open(sys.argv[1], "w") as f:
    f.write('(module\n (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))\n')
    f.write(' (memory (export "memory") 2)\n (global $g (mut i32) (i32.const 1))\n')
    for i in range(n):
        body = "".join(
            f"(local.set $x (i32.add (i32.mul (local.get $x) (i32.const {i * 7 + k + 3})) (i32.xor (local.get $y) (i32.const {k * 13 + i}))))"
            f"(local.set $y (i32.rotl (local.get $x) (i32.const {(i + k) % 31 + 1})))"
            f"(if (i32.gt_u (local.get $y) (i32.const {i * 977 % 100000})) (then (global.set $g (i32.add (global.get $g) (local.get $x)))))"
            for k in range(12))
        f.write(f' (func $f{i} (param $x i32) (result i32) (local $y i32) {body} (local.get $x))\n')
    f.write(' (func (export "_start") (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 2))\n')
    f.write('  (i32.store16 (i32.const 16) (i32.const 2683)) (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))')
    f.write(' (global.set $g (call $f0 (global.get $g))))\n)\n')
PY
wat2wasm "$tmp/big.wat" -o "$tmp/big.wasm"

start_emberd() { # TAG ENGINE -> sets ep_TAG
  local dir="$tmp/$1"
  mkdir -p "$dir"
  "$bin/emberd" --listen 127.0.0.1:0 --data-dir "$dir" --vmm "$bin/ember-vmm" --wasm-agent "$agent" \
    --wasm-engine "$2" --wasm-compiler "$bin/ember-wasm-compile" >"$dir/out" 2>"$dir/log" &
  pids+=($!)
  for _ in $(seq 200); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
  printf -v "ep_$1" '%s' "$(grep -o 'http://[0-9.:]*' "$dir/out")"
  export EMBER_CREDENTIALS="$dir/credentials.json"
}
cli() { # TAG ARGS...
  local tag=$1; shift
  local ep_var="ep_$tag"
  EMBER_CREDENTIALS="$tmp/$tag/credentials.json" "$bin/ember" --endpoint "${!ep_var}" "$@"
}

echo "wasm benchmark ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)); $runs runs per compute row"
start_emberd wt wasmtime
start_emberd wi wasmi
for tag in wt wi; do
  cli "$tag" fn create compute --memory 512 --timeout 120 --code "$tmp/compute.wasm" >/dev/null
  cli "$tag" fn create echo --code "$tmp/echo.wasm" >/dev/null
done
sleep 3 # the background compile at create

emberd_ns() { # TAG PAYLOAD RUNS -> one ns value per line
  for _ in $(seq "$3"); do
    cli "$1" --json invoke compute --payload "$2" |
      python3 -c 'import json,sys; p=json.load(sys.stdin)["Payload"]; print(p["ns"] if isinstance(p, dict) and "ns" in p else sys.exit("bad payload: %r" % p))'
  done
}
native_ns() { # ENGINE PAYLOAD RUNS
  for _ in $(seq "$3"); do echo "$2"; done |
    "$bin/examples/wasm-native" --engine "$1" --memory-mib 512 "$tmp/compute.wasm" 2>/dev/null |
    python3 -c 'import json,sys; [print(json.loads(l)["ns"]) for l in sys.stdin if l.strip()]'
}
wasmi_runs=$(( runs < 3 ? runs : 3 ))
for job in "fib 32" "sha 16"; do
  key=${job// /_}
  native_ns wasmtime "$job" "$runs" >"$tmp/native_$key"
  emberd_ns wt "$job" "$runs" >"$tmp/wt_$key"
  emberd_ns wi "$job" "$wasmi_runs" >"$tmp/wi_$key"
done
python3 - "$tmp" <<'PY'
import statistics, sys, os
d = sys.argv[1]
def med(name):
    v = [int(x) for x in open(os.path.join(d, name)).read().split()]
    return statistics.median(v) / 1e6, len(v)
for job, label in (("fib_32", "fib(32)"), ("sha_16", "SHA-256 16 MiB")):
    n, nn = med(f"native_{job}")
    t, tn = med(f"wt_{job}")
    i, inn = med(f"wi_{job}")
    print(f"{label:<15} host wasmtime {n:9.2f} ms (n={nn}) | emberd wasmtime {t:9.2f} ms (n={tn}), "
          f"{t / n:5.2f}x host (<= 1.3x: {'met' if t / n <= 1.3 else 'MISSED'}) | "
          f"emberd wasmi {i:9.2f} ms (n={inn}), wasmi/wasmtime {i / t:5.1f}x")
PY

echo "cold start through emberd (echo module, 128 MiB, $cold_n calls each after a configuration change)"
for tag in wt wi; do
  cli "$tag" bench echo --mode cold --requests "$cold_n" --pause-ms 200 >"$tmp/cold_$tag"
done
python3 - "$tmp/cold_wt" "$tmp/cold_wi" <<'PY'
import json, sys
t, i = (json.load(open(p)) for p in sys.argv[1:3])
print(f"cold invoke p50: wasmtime {t['p50_ms']:.2f} ms, wasmi {i['p50_ms']:.2f} ms, ratio {t['p50_ms'] / i['p50_ms']:.2f}x "
      f"(<= 1.0x: {'met' if t['p50_ms'] <= i['p50_ms'] else 'MISSED'}); p99 {t['p99_ms']:.2f} / {i['p99_ms']:.2f} ms")
PY

echo "a $(( $(stat -c %s "$tmp/big.wasm") / 1024 )) KiB module"
for r in 1 2 3; do
  /usr/bin/time -f "%e %M" -o "$tmp/compile_$r" "$bin/ember-wasm-compile" --memory-mib 512 \
    --features "$("$bin/ember-wasm-compile" --print-features)" "$tmp/big.wasm" "$tmp/big.cwasm"
done
big_cold=$(( cold_n < 10 ? cold_n : 10 ))
"$bin/ember-run" --vmm "$bin/ember-vmm" --agent "$agent" --compiler "$bin/ember-wasm-compile" \
  --memory-mib 512 --bench-cold "$big_cold" --quiet "$tmp/big.wasm" >"$tmp/big_wt" 2>/dev/null
"$bin/ember-run" --vmm "$bin/ember-vmm" --agent "$agent" --engine wasmi \
  --memory-mib 512 --bench-cold "$big_cold" --quiet "$tmp/big.wasm" >"$tmp/big_wi" 2>/dev/null
python3 - "$tmp" <<'PY'
import os, re, statistics, sys
d = sys.argv[1]
c = [open(os.path.join(d, f"compile_{r}")).read().split() for r in (1, 2, 3)]
secs = statistics.median(float(x[0]) for x in c)
rss = max(int(x[1]) for x in c) / 1024
size = os.path.getsize(os.path.join(d, "big.cwasm")) / 1024 / 1024
print(f"compile (cranelift, ember-wasm-compile): median {secs:.2f} s of 3, peak RSS {rss:.0f} MiB, artefact {size:.1f} MiB")
def rows(name):
    out = {}
    for line in open(os.path.join(d, name)):
        m = re.match(r"bench (\S+) n=(\d+) median_(ms|us)=([\d.]+)", line)
        if m:
            v = float(m.group(4)) / (1000 if m.group(3) == "us" else 1)
            out[m.group(1)] = v
    return out
t, i = rows("big_wt"), rows("big_wi")
for k in ("cold_init", "cold_total"):
    if k in t and k in i:
        print(f"big module {k}: wasmtime {t[k]:.1f} ms, wasmi {i[k]:.1f} ms, ratio {t[k] / i[k]:.2f}x")
PY
