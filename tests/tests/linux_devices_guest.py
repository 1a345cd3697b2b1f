# The guest half of tests/tests/linux_devices.rs: runs inside a Linux microVM
# under ember-vmm (python3.11 from the runtime image, chrooted; busybox at
# /tmp/busybox) and exercises ember's virtio devices through Linux's own
# drivers. Every result is one console line `EMBER-DEV <step> key=value...`;
# the host side checks them against what it sent, received and stored.
import errno
import hashlib
import os
import socket
import subprocess
import time

BB = "/tmp/busybox"
MIB = 1 << 20
HOST, HOST2 = "10.81.0.1", "10.82.0.1"


def say(step, **kv):
    print("EMBER-DEV", step, " ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def drives():
    """Block devices by size in MiB (the host gives each drive its own size)."""
    out = {}
    for d in sorted(os.listdir("/sys/block")):
        if d.startswith("vd"):
            sectors = int(open(f"/sys/block/{d}/size").read())
            out[sectors * 512 // MIB] = d
    return out


def read_all(sock):
    chunks = []
    while True:
        b = sock.recv(1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def step(name, fn):
    try:
        fn()
    except Exception as e:  # reported, and the next step still runs
        say(name, error=repr(e).replace(" ", "_"))


def blk_read():
    # The ext4 drive (64 MiB): mounted read-write, a file the host put there.
    r = subprocess.run([BB, "mount", "-t", "ext4", f"/dev/{D[64]}", "/mnt"], capture_output=True)
    say("blk-mount", rc=r.returncode)
    say("blk-read", sha=sha(open("/mnt/from-host.bin", "rb").read()))


def blk_ro():
    # The read-only drive (8 MiB): readable, and Linux refuses writes.
    dev = f"/dev/{D[8]}"
    ro = open(f"/sys/block/{D[8]}/ro").read().strip()
    content = sha(open(dev, "rb").read())
    try:
        fd = os.open(dev, os.O_WRONLY)
        try:
            os.write(fd, b"overwritten" * 100)
            os.fsync(fd)
            refused = "no"
        except OSError as e:
            refused = "write:" + errno.errorcode.get(e.errno, str(e.errno))
        os.close(fd)
    except OSError as e:
        refused = "open:" + errno.errorcode.get(e.errno, str(e.errno))
    say("blk-ro", ro=ro, sha=content, refused=refused)


def timed_read(dev):
    t0 = time.monotonic()
    n = 0
    with open(f"/dev/{dev}", "rb", buffering=0) as f:
        while True:
            b = f.read(MIB)
            if not b:
                break
            n += len(b)
    return n, time.monotonic() - t0


def blk_rate():
    # 12 MiB drive: bandwidth-limited; 16 MiB drive: the same, unlimited.
    n1, t1 = timed_read(D[12])
    n2, t2 = timed_read(D[16])
    say("blk-rate", limited_bytes=n1, limited_s=f"{t1:.3f}", free_bytes=n2, free_s=f"{t2:.3f}")


def ping():
    r = subprocess.run([BB, "ping", "-c", "3", "-W", "10", HOST], capture_output=True, text=True)
    say("net-ping", rc=r.returncode, received=r.stdout.count("bytes from"))


def tcp_out():
    data = os.urandom(MIB)
    s = socket.create_connection((HOST, 5701), timeout=60)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    read_all(s)
    s.close()
    say("tcp-sent", bytes=len(data), sha=sha(data))


def tcp_in():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", 5702))
    ls.listen(1)
    ls.settimeout(120)
    say("tcp-listening")
    s, _ = ls.accept()
    s.settimeout(60)
    data = read_all(s)
    s.close()
    say("tcp-got", bytes=len(data), sha=sha(data))


def udp_out():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    grams = [n.to_bytes(2, "big") + os.urandom(998) for n in range(16)]
    for g in grams:
        s.sendto(g, (HOST, 5703))
        time.sleep(0.01)
    say("udp-sent", count=len(grams), sha=sha(b"".join(grams)))


def udp_in():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 5704))
    s.settimeout(60)
    say("udp-listening")
    got = {}
    while len(got) < 16:
        g = s.recv(2048)
        got[int.from_bytes(g[:2], "big")] = g
    say("udp-got", count=len(got), sha=sha(b"".join(got[n] for n in sorted(got))))


def net_rate():
    # eth1 has a tx limit; 512 KiB over it, then 512 KiB over unlimited eth0.
    for peer, port in ((HOST2, 5705), (HOST, 5706)):
        data = os.urandom(MIB // 2)
        s = socket.create_connection((peer, port), timeout=60)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        read_all(s)
        s.close()
    say("net-rate-sent", bytes=MIB // 2)


def vsock_out():
    data = os.urandom(64 * MIB)
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.settimeout(300)
    s.connect((socket.VMADDR_CID_HOST, 5000))
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    read_all(s)
    s.close()
    say("vsock-sent", bytes=len(data), sha=sha(data))


def vsock_in():
    ls = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    ls.bind((socket.VMADDR_CID_ANY, 5001))
    ls.listen(1)
    ls.settimeout(300)
    say("vsock-listening")
    s, _ = ls.accept()
    s.settimeout(300)
    data = read_all(s)
    s.close()
    say("vsock-got", bytes=len(data), sha=sha(data))


def blk_sync():
    # Written and fsync'd; the host then SIGKILLs the VMM and reads the image.
    data = os.urandom(4 * MIB)
    fd = os.open("/mnt/written.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    d = os.open("/mnt", os.O_RDONLY)
    os.fsync(d)
    os.close(d)
    say("blk-synced", bytes=len(data), sha=sha(data))


D = drives()
say("drives", **{f"mib{k}": v for k, v in sorted(D.items())})
for name, fn in [("blk-read", blk_read), ("blk-ro", blk_ro), ("blk-rate", blk_rate),
                 ("net-ping", ping), ("tcp-sent", tcp_out), ("tcp-got", tcp_in),
                 ("udp-sent", udp_out), ("udp-got", udp_in), ("net-rate", net_rate),
                 ("vsock-sent", vsock_out), ("vsock-got", vsock_in), ("blk-synced", blk_sync)]:
    step(name, fn)
say("done")
