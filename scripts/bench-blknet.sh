#!/usr/bin/env bash
# Block and net throughput from a kernel-less guest, with ember-vmm's CPU use,
# each next to a host-side peer measured in the same run:
# - block: blk_test `bench` (1 MiB requests, write then read) vs the host
#   writing/reading the same file with 1 MiB pwrite/pread (page cache, like
#   ember's Unsafe cache mode);
# - net: net_test `bench` (1472-byte UDP datagrams guest->peer, then
#   peer->guest) through a TAP in a fresh namespace vs a host UDP sender in
#   the same namespace to the same peer over loopback.
# Medians over RUNS runs (default 3). Needs root (namespace, TAP).
# QEMU microvm is not measured: on this PVM host stock Linux cannot boot
# (guest CPL0 is emulated) and QEMU cannot run ember's kernel-less ABI guests.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
VMM=${EMBER_VMM:-target/release/ember-vmm}
GUESTS=guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release
[ -x "$VMM" ] || cargo build --release -p ember-vmm
[ -x "$GUESTS/blk_test" ] || bash guest-agent/kernelless/build.sh >/dev/null
exec python3 - "$VMM" "$GUESTS" "$RUNS" <<'PY'
import ctypes, os, re, resource, socket, statistics, subprocess, sys, threading, time

vmm, guests, runs = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), int(sys.argv[3])
MIB = 1 << 20

def run_vm(argv):
    """Runs argv; returns (console, cpu seconds of the child, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode != 0:
        sys.exit(f"ember-vmm failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout, cpu, wall

def field(text, key):
    m = re.search(rf"\b{key}=(\d+)", text)
    return int(m.group(1)) if m else None

def host_file_io(path, size):
    buf = os.urandom(MIB)
    fd = os.open(path, os.O_RDWR)
    t0 = time.monotonic()
    for off in range(0, size, MIB):
        os.pwrite(fd, buf, off)
    t1 = time.monotonic()
    for off in range(0, size, MIB):
        os.pread(fd, MIB, off)
    t2 = time.monotonic()
    os.close(fd)
    return size / MIB / (t1 - t0), size / MIB / (t2 - t1)

def bench_block():
    size = 256 * MIB
    path = f"/tmp/ember-bench-blk-{os.getpid()}.img"
    with open(path, "wb") as f:
        f.truncate(size)
    rows = []
    try:
        for _ in range(runs):
            out, cpu, wall = run_vm([vmm, "--kernel", f"{guests}/blk_test", "--cmdline", f"bench {size}",
                                     "--drive", path, "--mem-mib", "128", "--console", "stdout"])
            w, r = field(out, "write_ns"), field(out, "read_ns")
            if not w or not r:
                sys.exit(f"no bench line:\n{out}")
            hw, hr = host_file_io(path, size)
            rows.append((size / MIB / (w / 1e9), size / MIB / (r / 1e9), cpu / wall * 100, hw, hr))
    finally:
        os.unlink(path)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"block  write {med[0]:8.1f} MiB/s  read {med[1]:8.1f} MiB/s  ember-vmm CPU {med[2]:5.1f}% of one core")
    print(f"       host pwrite {med[3]:8.1f} MiB/s  pread {med[4]:8.1f} MiB/s  -> ember/host write {med[0]/med[3]:.2f}, read {med[1]/med[4]:.2f}")

def ns_thread(ns, fn):
    def body():
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        # os.setns needs Python 3.12; libc's works everywhere. 0x40000000 = CLONE_NEWNET.
        if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)
        fn()
    th = threading.Thread(target=body)
    th.start()
    return th

def bench_net():
    ns, tap, peer, guest, port = f"ember-bench-{os.getpid()}", "embbench0", "10.78.0.1", "10.78.0.2", 6000
    size = 64 * MIB
    ip = lambda *a: subprocess.run(["ip", *a], check=True)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    ip("netns", "add", ns)
    rows = []
    try:
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
        ip("-n", ns, "addr", "add", f"{peer}/24", "dev", tap)
        ip("-n", ns, "link", "set", tap, "up")
        for _ in range(runs):
            res = {}
            def peer_side():
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * MIB)
                s.bind((peer, port))
                s.settimeout(60)
                got, t0, t_end = 0, None, None
                # Flood until END (or GO, should every END have been dropped
                # by a full socket buffer), then wait for GO.
                while True:
                    data, addr = s.recvfrom(2048)
                    if data in (b"END", b"GO"):
                        t_end = t_end or time.monotonic()
                        if data == b"GO":
                            break
                        continue
                    t0 = t0 or time.monotonic()
                    got += len(data)
                res["tx_got"] = got
                chunk = b"\x24" * 1472
                for _ in range(size // 1472 // 4):  # a quarter the volume back, paced by the socket
                    s.sendto(chunk, addr)
                for _ in range(3):
                    time.sleep(0.05)
                    s.sendto(b"END", addr)
            th = ns_thread(ns, peer_side)
            time.sleep(0.2)
            out, cpu, wall = run_vm(["ip", "netns", "exec", ns, vmm, "--kernel", f"{guests}/net_test",
                                     "--cmdline", f"bench {guest} {peer} {port} {size}",
                                     "--net", f"{tap},06:00:0a:4e:00:02", "--mem-mib", "64", "--console", "stdout"])
            th.join()
            tx_ns, rx_b, rx_ns = field(out, "tx_ns"), field(out, "rx_bytes"), field(out, "rx_ns")
            tx_mibs = res["tx_got"] / MIB / (tx_ns / 1e9)
            rx_mibs = rx_b / MIB / (rx_ns / 1e9) if rx_ns else 0.0
            tx_b = field(out, "tx_bytes")
            loss = 1 - res["tx_got"] / tx_b
            rx_loss = 1 - rx_b / (size // 1472 // 4 * 1472)
            # Host peer: the same datagrams over loopback inside the namespace.
            host = {}
            def host_side():
                r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * MIB)
                r.bind(("127.0.0.1", port + 1))
                w = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                chunk, got = b"\x42" * 1472, 0
                t0 = time.monotonic()
                for _ in range(size // 1472 // 8):
                    w.sendto(chunk, ("127.0.0.1", port + 1))
                    try:
                        while True:
                            got += len(r.recv(2048, socket.MSG_DONTWAIT))
                    except BlockingIOError:
                        pass
                host["mibs"] = (size // 8) / MIB / (time.monotonic() - t0)
            ns_thread(ns, host_side).join()
            rows.append((tx_mibs, rx_mibs, cpu / wall * 100, host["mibs"], loss, rx_loss))
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"net    guest->peer {med[0]:7.1f} MiB/s (loss {med[4]*100:.1f}%)  peer->guest {med[1]:7.1f} MiB/s (loss {med[5]*100:.1f}%)  ember-vmm CPU {med[2]:5.1f}% of one core")
    print(f"       host python UDP over loopback {med[3]:7.1f} MiB/s  -> ember tx/host {med[0]/med[3]:.2f}")

print(f"ember block/net benchmark, medians of {runs} runs (kernel-less guest, 1 vCPU)")
bench_block()
bench_net()
print("QEMU microvm: not measured (PVM host: stock Linux cannot boot, and QEMU does not speak ember's kernel-less ABI)")
PY
