"""Promise 8: block and network rate limits from the VM's configuration hold
(seed: "Firecracker configuration – Used to rate limit block device and
network device throughput"). A jailed ember-vmm gets a Firecracker-style
config with a token-bucket `rate_limiter` on its drive / the transmit side of
its network interface; the guest measures its own throughput (guest TSC),
compared with the configured limit, and with a peer run in the same test
(no limit for the drive; a second limit for the network) so the limit, not
the machine, sets the pace. (Same scheme as tests/tests/rate_limit.rs, which
runs the VMM unjailed.)"""
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import JAIL_BASE, bin_dir

pytestmark = pytest.mark.vm

MIB = 1 << 20
_runs = itertools.count()


def guest(name):
    from conftest import KERNELLESS
    r = subprocess.run(["bash", str(KERNELLESS / "build.sh"), "--bin", name], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return KERNELLESS / "target/x86_64-unknown-linux-gnu/release" / name


def run_configured(config, files, jail_args=(), timeout=180):
    """Runs a jailed ember-vmm from a config file; `files` maps host paths
    to (in-jail path, writable). Returns (exit code, console, stderr)."""
    work = tempfile.mkdtemp(prefix="rl", dir="/tmp")
    try:
        cfg = os.path.join(work, "vm.json")
        with open(cfg, "w") as f:
            json.dump(config, f)
        args = [str(bin_dir() / "ember-jailer"), "--id", f"rl-{os.getpid()}-{next(_runs)}",
                "--chroot-base", JAIL_BASE, "--exec-file", str(bin_dir() / "ember-vmm"),
                "--file", f"{cfg}:/vm.json", *jail_args]
        for host, (dst, rw) in files.items():
            args += ["--file-rw" if rw else "--file", f"{host}:{dst}"]
        args += ["--", "--no-api", "--config-file", "/vm.json", "--console", "stdout"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def field(text, key):
    m = re.search(rf"\b{key}=(\d+)", text)
    assert m, f"no {key}= in {text!r}"
    return int(m.group(1))


def block_write_seconds(limit, nbytes=30 * MIB):
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="rld") as disk:
        disk.truncate(nbytes)
        drive = {"drive_id": "bench", "path_on_host": "/disk", "is_root_device": False, "is_read_only": False}
        if limit:
            drive["rate_limiter"] = limit
        config = {"boot-source": {"kernel_image_path": "/guest", "boot_args": f"bench {nbytes} w"},
                  "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}, "drives": [drive]}
        code, out, err = run_configured(config, {str(guest("blk_test")): ("/guest", False),
                                                 disk.name: ("/disk", True)})
    assert code == 0 and "blk: bench " in out, (code, out, err)
    return field(out, "write_ns") / 1e9


def test_block_rate_limit_from_the_vm_config_holds(tmp_path):
    # 10 MiB/s: a 1 MiB bucket refilled every 100 ms.
    limited = block_write_seconds({"bandwidth": {"size": MIB, "refill_time": 100}})
    free = block_write_seconds(None)
    rate = 30 / limited
    print(f"block: limited {rate:.2f} MiB/s ({limited:.2f} s), unlimited {30 / free:.1f} MiB/s; ratio {limited / free:.1f}x")
    assert 8.5 <= rate <= 11.5, f"limited write ran at {rate:.2f} MiB/s, configured 10 MiB/s (±15%)"
    assert free < limited / 2, f"without a limit the write must be much faster ({free:.2f} s vs {limited:.2f} s)"


PEER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(90)
print("ready", flush=True)
got = 0
while True:
    data, src = s.recvfrom(2048)
    if data == b"GO":
        for _ in range(3):
            s.sendto(b"END", src)
        print(got, flush=True)
        break
    if data != b"END":
        got += len(data)
"""


def net_tx_rate(limit_mib, nbytes):
    ns = f"ember-iso-rl-{os.getpid()}-{next(_runs)}"
    tap, peer, guest_ip, port = "embiso0", "10.81.0.1", "10.81.0.2", 5601
    ip = lambda *a: subprocess.run(["ip", *a], check=True, capture_output=True)  # noqa: E731
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    ip("netns", "add", ns)
    try:
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
        ip("-n", ns, "addr", "add", f"{peer}/24", "dev", tap)
        ip("-n", ns, "link", "set", tap, "up")
        srv = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", PEER, peer, str(port)],
                               stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        config = {"boot-source": {"kernel_image_path": "/guest",
                                  "boot_args": f"bench {guest_ip} {peer} {port} {nbytes}"},
                  "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
                  "network-interfaces": [{
                      "iface_id": "eth0", "host_dev_name": tap, "guest_mac": "06:00:0a:51:00:02",
                      "tx_rate_limiter": {"bandwidth": {"size": limit_mib * MIB // 10, "refill_time": 100}}}]}
        code, out, err = run_configured(config, {str(guest("net_test")): ("/guest", False)},
                                        ["--netns", f"/var/run/netns/{ns}", "--tun"])
        srv.wait(timeout=120)
        peer_got = int(srv.stdout.read().strip() or 0)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert code == 0 and "net: bench " in out, (code, out, err)
    assert peer_got > 0, "the peer saw no traffic"
    # The limiter counts frame bytes after the vnet header: payload + 42 header bytes.
    wire = field(out, "tx_bytes") * (1472 + 42) / 1472
    return wire / MIB / (field(out, "tx_ns") / 1e9)


def test_net_tx_rate_limit_from_the_vm_config_holds():
    fast = net_tx_rate(10, 20 * MIB)
    slow = net_tx_rate(5, 10 * MIB)
    print(f"net tx: limit 10 -> {fast:.2f} MiB/s, limit 5 -> {slow:.2f} MiB/s")
    assert 8.5 <= fast <= 11.5, f"{fast:.2f} MiB/s with a 10 MiB/s limit"
    assert 4.25 <= slow <= 5.75, f"{slow:.2f} MiB/s with a 5 MiB/s limit"
