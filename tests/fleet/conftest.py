"""Fixtures for the fleet suite (issue 21): a NATS cluster of 3 nats-server
processes with JetStream (each in its own temp dir, on free loopback
ports), and emberd hosts joined to it with --cluster.

emberd, boto3 clients and the WAT functions are tests/api's (imported from
tests/api/conftest.py, as tests/isolation does).
"""
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

_API = pathlib.Path(__file__).resolve().parents[1] / "api"
_spec = importlib.util.spec_from_file_location("api_conftest", _API / "conftest.py")
api = importlib.util.module_from_spec(_spec)
sys.modules["api_conftest"] = api
_spec.loader.exec_module(api)

from api_conftest import (  # noqa: E402,F401
    Emberd, create, pytest_collection_modifyitems, pytest_configure, wait_for, wasm,
)

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    def __init__(self, name, root, port, cport, mport, routes):
        self.name, self.port, self.mport = name, port, mport
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "nats.conf")
        with open(self.conf, "w") as f:
            f.write(f"""server_name: {name}
listen: 127.0.0.1:{port}
http: 127.0.0.1:{mport}
jetstream {{ store_dir: "{self.dir}/js", max_memory_store: 64MB, max_file_store: 1GB }}
cluster {{
  name: ember
  listen: 127.0.0.1:{cport}
  routes: [{", ".join(f"nats-route://127.0.0.1:{r}" for r in routes)}]
}}
""")
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        log = open(os.path.join(self.dir, "nats.log"), "ab")
        self.proc = subprocess.Popen([NATS, "-c", self.conf], stdout=log, stderr=log)
        return self

    def jsz(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/jsz", timeout=2) as r:
            return json.load(r)

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()


class Cluster:
    """3 clustered nats-server with JetStream, ready when a meta leader is elected."""

    def __init__(self, n=3):
        assert os.path.exists(NATS), "nats-server is not installed (scripts/setup.sh installs it)"
        self.root = tempfile.mkdtemp(prefix="nats", dir="/tmp")
        ports = [(free_port(), free_port(), free_port()) for _ in range(n)]
        self.servers = [
            NatsServer(f"n{i + 1}", self.root, p, c, m, [o[1] for o in ports if o[1] != c])
            for i, (p, c, m) in enumerate(ports)
        ]

    def start(self, timeout=30):
        for s in self.servers:
            s.start()

        seen = []

        def ready():
            try:
                seen[:] = [s.jsz().get("meta_cluster", {}) for s in self.servers]
                return all(m.get("leader") for m in seen)
            except OSError as e:
                seen[:] = [repr(e)]
                return False
        if not wait_for(ready, timeout, 0.2):
            self.stop()
            raise AssertionError(f"JetStream cluster elected no meta leader: {seen}")
        return self

    def meta_leader(self):
        """The server that leads JetStream's meta group (creates consumers)."""
        for s in self.servers:
            if s.proc and s.proc.poll() is None:
                name = s.jsz().get("meta_cluster", {}).get("leader")
                return next(x for x in self.servers if x.name == name)
        raise AssertionError("no live NATS server")

    def stream_leader(self, stream):
        """The server leading `stream` (a KV bucket is stream KV_<bucket>):
        the one its listings and up-to-date reads ask."""
        for s in self.servers:
            if s.proc and s.proc.poll() is None:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{s.mport}/jsz?streams=true", timeout=2) as r:
                    j = json.load(r)
                for acc in j.get("account_details", []):
                    for st in acc.get("stream_detail", []):
                        if st["name"] == stream:
                            name = st.get("cluster", {}).get("leader")
                            return next(x for x in self.servers if x.name == name)
        raise AssertionError(f"no live NATS server knows stream {stream}")

    def server_of(self, node_id):
        """The server an emberd host is attached to (its connection is named
        emberd-<node id>), or None."""
        for s in self.servers:
            if s.proc and s.proc.poll() is None:
                with urllib.request.urlopen(f"http://127.0.0.1:{s.mport}/connz", timeout=2) as r:
                    if any(c.get("name") == f"emberd-{node_id}"
                           for c in json.load(r).get("connections", [])):
                        return s
        return None

    @property
    def urls(self):
        return ",".join(s.url for s in self.servers)

    def stop(self):
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def key_file(path):
    """The operator's fleet key: 32 random bytes, mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    return path


class Fleet:
    """N emberd hosts on one cluster, sharing the operator's key and one
    credentials file (copied from the first host: access keys are per host
    until the fleet shares them)."""

    def __init__(self, cluster, n=3, extra=()):
        self.cluster = cluster
        self.root = tempfile.mkdtemp(prefix="fl", dir="/tmp")
        self.key = key_file(os.path.join(self.root, "fleet.key"))
        self.hosts = []
        self.extra = list(extra)
        try:
            for i in range(n):
                self.add(f"host{chr(ord('a') + i)}")
        except BaseException:
            self.stop()  # the hosts that did start
            raise

    def add(self, node_id):
        d = tempfile.mkdtemp(prefix="fe", dir="/tmp")
        if self.hosts:
            shutil.copy(os.path.join(self.hosts[0].data_dir, "credentials.json"), d)
        e = Emberd(d, ["--cluster", self.cluster.urls, "--node-id", node_id,
                       "--cluster-key", self.key, "--spare-vms", "0", *self.extra])
        e.node_id = node_id
        self.hosts.append(e)
        try:
            e.start()
        except BaseException:
            e.kill()
            raise
        return e

    def stop(self):
        for e in self.hosts:
            if os.environ.get("EMBER_FLEET_LOGS"):
                print(f"--- {e.node_id} log:\n{e.log()}")
            if e.proc and e.proc.poll() is None:
                e.stop()
            shutil.rmtree(e.data_dir, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    try:
        c = Cluster().start()
    except AssertionError as e:
        # Seen once on a loaded machine: no meta leader within 30 s. One
        # more try on fresh ports, saying so.
        print(f"NATS cluster start failed, retrying once: {e}")
        c = Cluster().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def fleet(cluster):
    f = Fleet(cluster, extra=os.environ.get("EMBER_FLEET_EXTRA", "").split())
    yield f
    f.stop()
