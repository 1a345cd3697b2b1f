#!/usr/bin/env bash
# Firecracker API socket benchmark (issue 16), one run, one machine:
# 1. API request overhead: GET /vm/config round trips on one keep-alive
#    connection (raw socket, so the client adds little), before boot and
#    with a running guest (seccomp on): p50/p99 in µs.
# 2. Boot through the API vs --config-file, alternating in one loop, RUNS
#    pairs (default 20) of the `null` guest: exec -> exit wall time, medians
#    and the ratio. The API side is what a Firecracker user does: spawn,
#    wait for the socket, PUT /boot-source, PUT /machine-config, PUT
#    /actions InstanceStart, wait for the exit.
# Usage: scripts/bench-fcapi.sh [RUNS] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ember-vmm --quiet
bash guest-agent/kernelless/build.sh >/dev/null
exec python3 - "$target/release/ember-vmm" "guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release" "${1:-20}" "${2:-2000}" <<'PY'
import json, os, socket, statistics, subprocess, sys, tempfile, time
vmm, guests, runs, nreq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tmp = tempfile.mkdtemp(prefix="bench-fcapi-")

def connect(path, deadline=10.0):
    end = time.monotonic() + deadline
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.0005)

def request(s, method, path, body=None):
    data = b"" if body is None else json.dumps(body).encode()
    s.sendall(f"{method} {path} HTTP/1.1\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        rest += s.recv(65536)
    return int(head.split(b" ")[1]), rest

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def round_trips(s, n):
    for _ in range(50):
        request(s, "GET", "/vm/config")
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        status, _ = request(s, "GET", "/vm/config")
        out.append((time.perf_counter_ns() - t0) / 1000)
        assert status == 200
    return out

# 1. Request overhead.
sock = os.path.join(tmp, "rt.sock")
p = subprocess.Popen([vmm, "--api-sock", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
s = connect(sock)
pre = round_trips(s, nreq)
assert request(s, "PUT", "/boot-source", {"kernel_image_path": os.path.join(guests, "spin")})[0] == 204
assert request(s, "PUT", "/serial", {"serial_out_path": "/dev/null"})[0] == 204
assert request(s, "PUT", "/actions", {"action_type": "InstanceStart"})[0] == 204
post = round_trips(s, nreq)
p.kill(); p.wait()
for name, xs in (("not started", pre), ("running (spin guest)", post)):
    print(f"GET /vm/config round trip, {name}: p50 {pct(xs, 50):.0f} us, p99 {pct(xs, 99):.0f} us "
          f"({len(xs)} requests, one keep-alive connection)")

# 2. Boot through the API vs --config-file.
null = os.path.join(guests, "null")
cfg = os.path.join(tmp, "vm.json")
with open(cfg, "w") as f:
    json.dump({"boot-source": {"kernel_image_path": null},
               "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}, f)

def by_file():
    t0 = time.perf_counter()
    rc = subprocess.run([vmm, "--no-api", "--config-file", cfg], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode
    assert rc == 0, rc
    return (time.perf_counter() - t0) * 1000

def by_api(i):
    path = os.path.join(tmp, f"b{i}.sock")
    t0 = time.perf_counter()
    p = subprocess.Popen([vmm, "--api-sock", path], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    s = connect(path)
    assert request(s, "PUT", "/boot-source", {"kernel_image_path": null})[0] == 204
    assert request(s, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128})[0] == 204
    assert request(s, "PUT", "/actions", {"action_type": "InstanceStart"})[0] == 204
    rc = p.wait()
    ms = (time.perf_counter() - t0) * 1000
    s.close()
    os.unlink(path)
    assert rc == 0, rc
    return ms

api, conf = [], []
for i in range(runs):
    api.append(by_api(i))
    conf.append(by_file())
ma, mc = statistics.median(api), statistics.median(conf)
print(f"null guest exec->exit, {runs} alternating pairs: API median {ma:.2f} ms (p90 {pct(api, 90):.2f}), "
      f"--config-file median {mc:.2f} ms (p90 {pct(conf, 90):.2f}); API/config-file {ma / mc:.2f}x")
PY
