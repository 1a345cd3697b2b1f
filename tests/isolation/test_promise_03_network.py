"""Promise 3: no inbound network to an environment except through the data
plane, and one environment cannot reach another's network or vsock (seed:
"iptables and routing tables – To prevent ingress network communications
and to isolate network connections between MVMs").

How ember holds it: each VMM is jailed in its own network namespace (no
interface but a down loopback; a TAP only when a VM asks for a network), it
may create AF_UNIX sockets only (seccomp) and bind/connect no TCP
(Landlock); its vsock device is hybrid (Firecracker's design): a guest
connection to host port P becomes a Unix connection to `/run/v.sock_P` in
the VMM's jail, which is that environment's own work directory, and a
packet for any CID but the host's never leaves the VM (there is no VM-to-VM
path: devices/src/virtio/vsock/device_tests.rs
`packets_for_any_cid_but_the_hosts_never_leave_the_vm`). Shown here from
the guest (a kernel-less guest dialing ports that another environment
listens on), from inside a jail (a process entering one environment's
namespaces as its uid), and from outside (/proc)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

from conftest import (argv, bin_dir, create, env_dir, jailer_cmd, status, vmm_of, wasm)

pytestmark = pytest.mark.vm


class Listener:
    """A host Unix listener at PATH that answers each connection with
    `reply` after the peer half-closes, and counts connections."""

    def __init__(self, path, reply=b"hi from host\n"):
        self.path, self.reply, self.accepted = str(path), reply, 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)  # the jailed VMM runs as its own uid
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.done = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.done:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(30)
                try:
                    while conn.recv(4096):
                        pass
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self):
        self.done = True
        self.thread.join(timeout=5)
        self.sock.close()


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def workdir():
    d = tempfile.mkdtemp(prefix="en", dir="/tmp")  # short: sun_path limit
    os.chmod(d, 0o755)
    return d


def jailed_guest(guests, jid, work, guest, cmdline, timeout_ms="20000", console="stdout"):
    return jailer_cmd(jid, bin_dir() / "ember-vmm", guests[guest],
                      ["--dir-rw", f"{work}:/run"],
                      ["--vsock", "3:/run/v.sock", "--cmdline", cmdline,
                       "--timeout-ms", timeout_ms, "--console", console])


def test_a_guest_cannot_reach_another_environments_vsock(guests, tmp_path):
    a, b = workdir(), workdir()
    uid = os.getpid()
    # Environment B: a live jailed VM (its own VMM listens on B's /run/v.sock)
    # and a host service listening on B's port 7001.
    vm_b = subprocess.Popen(jailed_guest(guests, f"b-{uid}", b, "spin", "", "30000", "off"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lb = Listener(os.path.join(b, "v.sock_7001"))
    la = None
    try:
        # Environment A's guest dials port 7001 (B's), and 9000 (the port every
        # environment's agent uses): nothing answers in A's own directory.
        for port in (7001, 9000):
            remove(os.path.join(a, "v.sock"))  # the previous VMM's vsock listener
            r = subprocess.run(jailed_guest(guests, f"a-{uid}-{port}", a, "vsock_client", f"refused {port}"),
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0 and "vsock: refused ok" in r.stdout, (port, r.returncode, r.stdout, r.stderr)
        assert lb.accepted == 0, "A's guest reached B's listener"
        # Counter-check: the same guest reaches a service in its own directory.
        la = Listener(os.path.join(a, "v.sock_7001"))
        remove(os.path.join(a, "v.sock"))
        r = subprocess.run(jailed_guest(guests, f"a-{uid}-own", a, "vsock_client", "hello 7001"),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "vsock: reply=hi from host" in r.stdout, (r.stdout, r.stderr)
        assert la.accepted == 1 and lb.accepted == 0
        assert vm_b.poll() is None, "B died"
    finally:
        vm_b.kill()
        vm_b.wait(timeout=30)
        lb.close()
        if la:
            la.close()
        for d in (a, b):
            shutil.rmtree(d, ignore_errors=True)


# Runs in a fresh (single-threaded) interpreter: enters the network and mount
# namespaces of the VMM whose pid is argv[1], becomes its uid/gid, and tries
# each target; prints one JSON object of outcomes.
INSIDE = r"""
import ctypes, encodings.idna, errno, json, os, socket, sys  # all imports before leaving the host's filesystem
pid, uid, gid, own, other, tcp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
libc = ctypes.CDLL(None, use_errno=True)
fds = {t: os.open(f"/proc/{pid}/ns/{t}", os.O_RDONLY) for t in ("net", "mnt")}
for t, flag in (("net", 0x40000000), ("mnt", 0x00020000)):
    if libc.setns(fds[t], flag) != 0:
        sys.exit(f"setns {t}: {os.strerror(ctypes.get_errno())}")
os.chdir("/")
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.close()
def tcp():
    s = socket.create_connection(("127.0.0.1", tcp_port), timeout=5)
    s.close()
print(json.dumps({"uid": os.getuid(), "root": sorted(os.listdir("/")),
    "own": attempt(lambda: unix("/run/v.sock_7003")),
    "other": attempt(lambda: unix(other)),
    "other_via_proc": attempt(lambda: os.listdir("/proc")),
    "emberd_tcp": attempt(tcp)}))
"""


def two_environments(e):
    c = e.client()
    for name in ("one", "two"):
        create(c, name, wasm("echo"))
        c.invoke(FunctionName=name, Payload=b"{}")
    envs = {x["Function"]: x for x in e.envs()}
    return envs["one"]["Pid"], envs["two"]["Pid"]


def test_from_inside_one_jail_another_environments_socket_and_the_host_are_unreachable(emberd):
    ja, jb = two_environments(emberd)
    va = vmm_of(ja)
    st = status(va)
    uid, gid = st["Uid"].split()[0], st["Gid"].split()[0]
    listeners = [Listener(env_dir(j) / "v.sock_7003") for j in (ja, jb)]
    try:
        port = int(emberd.endpoint.rsplit(":", 1)[1])
        other = str(env_dir(jb) / "v.sock_7003")
        r = subprocess.run([sys.executable, "-c", INSIDE, str(va), uid, gid, "/run/v.sock_7003", other, str(port)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["uid"] == int(uid) and got["uid"] != 0
        # Its own work directory, as the VMM sees it: reachable.
        assert got["own"] == "ok", got
        assert listeners[0].accepted == 1
        # The other environment's socket, by its host path: not in this world.
        assert got["other"] == "ENOENT", got
        assert got["other_via_proc"] == "ENOENT", got
        assert listeners[1].accepted == 0
        # The host's loopback (emberd's own API port): unreachable from the
        # environment's network namespace, reachable from the host.
        assert got["emberd_tcp"] in ("ENETUNREACH", "ECONNREFUSED", "EHOSTUNREACH"), got
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(other)  # and B's socket is live from the host
        # Nothing of the host's filesystem is there.
        for host_only in ("etc", "home", "proc", "root", "tmp", "usr", "var"):
            assert host_only not in got["root"], got["root"]
    finally:
        for lst in listeners:
            lst.close()


def sockets(pid):
    """The socket inodes among PID's open fds."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def test_no_inbound_network_no_tap_and_only_the_data_plane_listens(emberd):
    ja, jb = two_environments(emberd)
    for jailer in (ja, jb):
        vmm = vmm_of(jailer)
        # Its network namespace: loopback only (down), no TAP; no device node for one.
        with open(f"/proc/{vmm}/net/dev") as f:
            ifaces = [line.split(":")[0].strip() for line in f.readlines()[2:]]
        assert ifaces == ["lo"], ifaces
        assert os.listdir(f"/proc/{vmm}/root/dev") == ["kvm"]
        # No IP socket of any kind in that namespace.
        for proto in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
            with open(f"/proc/{vmm}/net/{proto}") as f:
                assert len(f.readlines()) <= 1, f"{proto} socket in the VMM's namespace"
        # Every socket the VMM holds is a Unix socket; the one that listens is
        # its vsock device's, in its own work directory: the data plane.
        mine = sockets(vmm)
        assert mine, "the VMM holds no socket at all"
        with open(f"/proc/{vmm}/net/unix") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        unix = {r[6]: r for r in rows}
        assert mine <= set(unix), f"non-Unix sockets: {mine - set(unix)}"
        listening = [unix[i] for i in mine if int(unix[i][3], 16) & 0x10000]
        assert [r[7] if len(r) > 7 else None for r in listening] == ["/run/v.sock"], listening
        assert argv(jailer)[argv(jailer).index("--dir-rw") + 1].endswith(":/run")
