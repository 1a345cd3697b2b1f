"""What isolation costs at the emberd level (scripts/bench-isolation.sh runs
this after the ember-vmm part): one emberd with jailed environments (the
default) and one with --no-jail, side by side, interleaved. Per round, each
emberd gets a new function (its first call is a real cold start: no spare
VMs, and no old environment being torn down meanwhile) and then W warm calls. Prints medians
and the jailed-minus-unjailed difference. Usage: python3 this.py N W (run with
the API tests' venv; CARGO_TARGET_DIR selects the build)."""
import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests/api"))
from conftest import Emberd, create, wasm  # noqa: E402

n, w = int(sys.argv[1]), int(sys.argv[2])
modes = {"jailed (default)": [], "--no-jail": ["--no-jail"]}
daemons, clients, dirs = {}, {}, []
try:
    for m, flags in modes.items():
        d = tempfile.mkdtemp(prefix="eb", dir="/tmp")
        dirs.append(d)
        daemons[m] = Emberd(d, ["--spare-vms", "0", *flags]).start()
        clients[m] = daemons[m].client()
    cold = {m: [] for m in modes}
    warm = {m: [] for m in modes}
    for i in range(n):
        for m, c in clients.items():
            create(c, f"bench{i}", wasm("echo"))
            t0 = time.perf_counter()
            r = c.invoke(FunctionName=f"bench{i}", Payload=b'{"round":1}')
            cold[m].append((time.perf_counter() - t0) * 1e3)
            assert json.loads(r["Payload"].read()) == {"round": 1}
            assert r["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-cold-start"] == "true"
            for _ in range(w):
                t0 = time.perf_counter()
                c.invoke(FunctionName=f"bench{i}", Payload=b"{}")["Payload"].read()
                warm[m].append((time.perf_counter() - t0) * 1e3)
finally:
    for e in daemons.values():
        e.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)

print(f"\nemberd: {n} rounds, interleaved, {w} warm calls each; boto3 round trips in ms (median / p90)")
print(f"{'mode':18} {'cold invoke':>16} {'warm invoke':>16}")
p90 = lambda v: sorted(v)[int(0.9 * (len(v) - 1))]  # noqa: E731
for m in modes:
    print(f"{m:18} {statistics.median(cold[m]):7.2f} / {p90(cold[m]):6.2f} "
          f"{statistics.median(warm[m]):7.2f} / {p90(warm[m]):6.2f}")
dc = statistics.median(cold["jailed (default)"]) - statistics.median(cold["--no-jail"])
dw = statistics.median(warm["jailed (default)"]) - statistics.median(warm["--no-jail"])
print(f"jail cost through emberd (medians): cold invoke {dc:+.2f} ms, warm invoke {dw:+.2f} ms")
