"""Fixtures for the Firecracker API tests: a real `ember-vmm --api-sock` in
a temporary directory, driven the way Firecracker's users drive Firecracker:
`requests` over the Unix socket (requests-unixsocket, from PyPI), `curl
--unix-socket`, and raw sockets for what no client would send. Guests are
the kernel-less test guests of guest-agent/kernelless (built once per run
by its build.sh). Nothing is skipped: a missing piece fails the test.
"""
import os
import pathlib
import socket
import subprocess
import time
import urllib.parse

import pytest
import requests_unixsocket

REPO = pathlib.Path(__file__).resolve().parents[2]
GUESTS = REPO / "guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release"


def bin_dir() -> pathlib.Path:
    if os.environ.get("EMBER_BIN_DIR"):
        return pathlib.Path(os.environ["EMBER_BIN_DIR"])
    return pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"


@pytest.fixture(scope="session")
def guests():
    """The kernel-less test guests' directory (built once)."""
    subprocess.run(["bash", str(REPO / "guest-agent/kernelless/build.sh")], check=True,
                   stdout=subprocess.DEVNULL, timeout=1800)
    return GUESTS


def connectable(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


class Vmm:
    """One `ember-vmm` process serving the API on `self.sock`."""

    def __init__(self, tmp: pathlib.Path, args=(), name="vmm"):
        self.dir = tmp
        self.sock = str(tmp / f"{name}.sock")
        self.stdout = open(tmp / f"{name}.out", "w+")
        self.stderr = open(tmp / f"{name}.err", "w+")
        self.proc = subprocess.Popen(
            [str(bin_dir() / "ember-vmm"), "--api-sock", self.sock, *args],
            stdout=self.stdout, stderr=self.stderr, stdin=subprocess.DEVNULL)
        # The socket file appears at bind(), before listen(): wait until a
        # connection is accepted, as Firecracker's clients do.
        deadline = time.monotonic() + 10
        while not connectable(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ember-vmm did not serve its socket: {self.err()}")
            time.sleep(0.002)
        self.session = requests_unixsocket.Session()
        self.base = "http+unix://" + urllib.parse.quote(self.sock, safe="") + "/"

    def url(self, path):
        return self.base + path.lstrip("/")

    def get(self, path, **kw):
        return self.session.get(self.url(path), timeout=10, **kw)

    def put(self, path, body=None, **kw):
        return self.session.put(self.url(path), json=body, timeout=10, **kw)

    def patch(self, path, body=None, **kw):
        return self.session.patch(self.url(path), json=body, timeout=10, **kw)

    def raw(self, data: bytes, timeout=5.0) -> bytes:
        """Sends raw bytes on a new connection; everything read until the
        server closes it or `timeout` passes without data."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.sock)
            s.sendall(data)
            out = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            except socket.timeout:
                pass
            return out

    def curl(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-s", "-i", "--max-time", "10", "--unix-socket", self.sock,
                               *args], capture_output=True, text=True, timeout=20)

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout=10):
        return self.proc.wait(timeout=timeout)

    def out(self):
        self.stdout.flush()
        self.stdout.seek(0)
        return self.stdout.read()

    def err(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.session.close()
        self.stdout.close()
        self.stderr.close()


@pytest.fixture
def vmm_factory(tmp_path):
    made = []

    def make(*args, name=None):
        v = Vmm(tmp_path, args, name or f"vmm{len(made)}")
        made.append(v)
        return v

    yield make
    for v in made:
        v.close()


@pytest.fixture
def vmm(vmm_factory):
    """A fresh `ember-vmm --api-sock`, not configured."""
    return vmm_factory()


def fault(resp):
    """The `fault_message` of an error answer (asserting its shape)."""
    assert resp.headers.get("Content-Type") == "application/json", resp.headers
    body = resp.json()
    assert set(body) == {"fault_message"}, body
    return body["fault_message"]
