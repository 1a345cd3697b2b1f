"""python3.11 on the kernel-less guest through emberd's API (issue 19):
create -> first (cold) invoke of a trivial handler, then warm invokes, vs a
wasm echo (tests/api/wat/echo.wat, compiled ahead of time) in the same run
and the same emberd. Prints medians and ratios. Usage (venv python):
  python scripts/bench-python-wasm.py [N_WARM]"""
import io, json, os, statistics, subprocess, sys, tempfile, time, zipfile
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "api"))
from conftest import Emberd, wasm  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
py_dir = subprocess.run(["bash", os.path.join(os.path.dirname(__file__), "build-python-wasm.sh")],
                        check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
d = tempfile.mkdtemp(prefix="ebp", dir="/tmp")
e = Emberd(d, ["--python-wasm-dir", py_dir, "--spare-vms", "0"]).start()
c = e.client()
role = "arn:aws:iam::000000000000:role/ember"
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("lambda_function.py", "def lambda_handler(event, context):\n    return event\n")
t = time.monotonic()
c.create_function(FunctionName="py", Runtime="python3.11", Role=role, MemorySize=256,
                  Handler="lambda_function.lambda_handler", Code={"ZipFile": buf.getvalue()})
c.create_function(FunctionName="wat", Runtime="wasm", Role=role, MemorySize=256,
                  Handler="function.handler", Code={"ZipFile": wasm("echo")})
# Wait for the background compiles (python's runtime artefact, the echo module).
time.sleep(1)
def call(name):
    t0 = time.perf_counter()
    r = c.invoke(FunctionName=name, Payload=b'{"a":1}', LogType="Tail")
    body = r["Payload"].read()
    assert "FunctionError" not in r, body
    import base64
    return time.perf_counter() - t0, base64.b64decode(r["LogResult"]).decode()
cold = {}
for name in ("wat", "py"):
    dt, logs = call(name)
    init = [l for l in logs.splitlines() if "Init Duration" in l]
    cold[name] = (dt, init[0].split("Init Duration: ")[1] if init else "?")
# Cold again, the artefacts now cached: a new revision gets new environments.
recold = {}
for rev in range(3):
    for name in ("wat", "py"):
        c.update_function_configuration(FunctionName=name, Description=f"rev {rev}")
        dt, logs = call(name)
        init = [l for l in logs.splitlines() if "Init Duration" in l]
        recold.setdefault(name, []).append((dt * 1e3, init[0].split("Init Duration: ")[1].split()[0] if init else "?"))
warm = {"wat": [], "py": []}
for i in range(n):
    for name in ("wat", "py"):
        warm[name].append(call(name)[0])
load = os.getloadavg()
med = {k: statistics.median(v) * 1e3 for k, v in warm.items()}
p99 = {k: sorted(v)[int(len(v) * 0.99) - 1] * 1e3 for k, v in warm.items()}
print(f"load average {load[0]:.1f} {load[1]:.1f} on {os.cpu_count()} cores")
for k in ("wat", "py"):
    print(f"{k}: cold invoke {cold[k][0]*1e3:.1f} ms (Init Duration {cold[k][1]}), "
          f"warm median {med[k]:.3f} ms p99 {p99[k]:.3f} ms over {n}")
for k in ("wat", "py"):
    print(f"{k}: cold invokes with the artefact cached (ms, Init Duration ms): {recold[k]}")
print(f"warm ratio py/wat: {med['py']/med['wat']:.2f}x")
e.stop()
