"""Fixtures for the API tests: a real `emberd` on an ephemeral port (its own
data directory), boto3 Lambda clients pointed at it, raw HTTP for requests
an SDK would refuse to send, and the WAT test functions compiled with wat2wasm.

Tests marked `vm` start real microVMs; they are skipped (with the reason)
only when this machine cannot run them: no /dev/kvm, no `ember-vmm`, or no
kernel-less wasm agent built.
"""
import base64
import http.client
import io
import json
import os
import pathlib
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zipfile

import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

REPO = pathlib.Path(__file__).resolve().parents[2]
WAT = pathlib.Path(__file__).resolve().parent / "wat"


def bin_dir() -> pathlib.Path:
    if os.environ.get("EMBER_BIN_DIR"):
        return pathlib.Path(os.environ["EMBER_BIN_DIR"])
    return pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"


def agent_path() -> pathlib.Path:
    if os.environ.get("EMBER_WASM_AGENT"):
        return pathlib.Path(os.environ["EMBER_WASM_AGENT"])
    return REPO / "guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/ember-wasm-agent"


def built(script, *args):
    """Runs a cached build script of the repository (kernel-config/build.sh,
    images/build-images.sh); the path it printed last."""
    out = subprocess.run(["bash", str(REPO / script), *args], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=1800).stdout
    return out.strip().splitlines()[-1]


def python_wasm_dir() -> str:
    """CPython for the kernel-less guest (scripts/build-python-wasm.sh: built
    once per recipe, then cached); its directory."""
    out = subprocess.run(["bash", str(REPO / "scripts/build-python-wasm.sh")], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=1800).stdout
    return out.strip().splitlines()[-1]


def linux_flags(mode, kernel, images):
    """emberd flags for Linux guests from these files (`mode`: auto|force|off).
    python3.11 is kept on Linux guests (--python-guest linux): these tests are
    about the Linux path, not the kernel-less one (test_python_wasm.py)."""
    return ["--linux-guests", mode, "--linux-kernel", kernel, "--linux-images", images,
            "--code-image-tool", str(REPO / "images/code-image.sh"), "--spare-vms", "0",
            "--python-guest", "linux"]


def linux_boot_flags():
    """Under the nested test host (tests/hvhost) every Linux boot is emulated:
    its suites raise the boot and init-phase allowances through
    EMBER_LINUX_BOOT_TIMEOUT and EMBER_LINUX_INIT_TIMEOUT, and may lift the
    per-VM CPU quota (EMBER_MIB_PER_VCPU=0: the layer has one emulated core,
    and half of it per microVM only stretches every boot)."""
    flags = ["--linux-boot-timeout", os.environ.get("EMBER_LINUX_BOOT_TIMEOUT", "20"),
             "--linux-init-timeout", os.environ.get("EMBER_LINUX_INIT_TIMEOUT", "10")]
    if os.environ.get("EMBER_MIB_PER_VCPU"):
        flags += ["--mib-per-vcpu", os.environ["EMBER_MIB_PER_VCPU"]]
    return flags


def vm_unavailable_reason():
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    if not (bin_dir() / "ember-vmm").is_file():
        return f"ember-vmm not built in {bin_dir()}"
    if not agent_path().is_file():
        return f"the kernel-less wasm agent is not built ({agent_path()})"
    if not shutil.which("wat2wasm"):
        return "wat2wasm (wabt) is not installed"
    return None


def pytest_collection_modifyitems(config, items):
    reason = vm_unavailable_reason()
    if reason:
        skip = pytest.mark.skip(reason=f"needs real microVMs: {reason}")
        for item in items:
            if "vm" in item.keywords:
                item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "vm: starts real microVMs through emberd")
    config.addinivalue_line(
        "markers", "linux_guest: boots Linux guests: needs VMX/SVM-backed KVM; run by "
        "tests/hvhost/hvhost.sh (deselected with -m 'not linux_guest' elsewhere)")


class Emberd:
    """One emberd process on 127.0.0.1:0 with its own data directory."""

    def __init__(self, data_dir: str, extra=()):
        self.data_dir = data_dir
        self.extra = list(extra)
        self.proc = None
        self.endpoint = None
        self.log_path = os.path.join(data_dir, "emberd.log")

    def start(self):
        exe = bin_dir() / "emberd"
        assert exe.is_file(), f"{exe} not built (cargo build --release --bins)"
        cmd = [str(exe), "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
               "--vmm", str(bin_dir() / "ember-vmm"), "--wasm-agent", str(agent_path()),
               "--drain-timeout", "5", *self.extra]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready, f"emberd did not start; log: {self.log()}"
        line = self.proc.stdout.readline().decode()
        assert "listening on http" in line, f"unexpected first line {line!r}; log: {self.log()}"
        self.endpoint = line.split("listening on ")[1].split()[0]
        # The key emberd created at its first start (it prints it once too).
        keys = self.keys()
        self.key = next(k for k in keys if k["Account"] == "000000000000")
        return self

    def keys(self):
        with open(os.path.join(self.data_dir, "credentials.json")) as f:
            return json.load(f)["Keys"]

    def ember(self, *args):
        """Runs the `ember` CLI against this emberd; returns the CompletedProcess."""
        cmd = [str(bin_dir() / "ember"), "--endpoint", self.endpoint,
               "--credentials", os.path.join(self.data_dir, "credentials.json"), *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)

    def add_key(self, account=None):
        """A new access key (dict with AccessKeyId, SecretAccessKey, Account)."""
        args = ["creds", "add", "--json"] + (["--account", account] if account else [])
        r = self.ember(*args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def log(self) -> str:
        try:
            return open(self.log_path, encoding="utf-8", errors="replace").read()[-4000:]
        except OSError:
            return ""

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def client(self, key=None, read_timeout=120):
        """boto3 Lambda client signing with `key` (default: emberd's first key)."""
        key = key or self.key
        return boto3.client(
            "lambda", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
            config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout,
                          connect_timeout=5),
        )

    def raw(self, method, path, body=b"", headers=None, sign=True, key=None, at=None,
            tamper=None):
        """One HTTP request, SigV4-signed by botocore like an SDK would (with
        `key`, default emberd's first key, at time `at`, a naive UTC datetime,
        default now), or unsigned with `sign=False`. `tamper(body, path)`
        returns what is actually sent after signing, for altered requests."""
        host = self.endpoint.removeprefix("http://")
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        headers = dict(headers or {})
        if sign:
            key = key or self.key
            req = AWSRequest(method=method, url=self.endpoint + path, data=body, headers=headers)
            signer = botocore.auth.SigV4Auth(
                Credentials(key["AccessKeyId"], key["SecretAccessKey"]), "lambda", "us-east-1")
            if at is None:
                signer.add_auth(req)
            else:
                real = botocore.auth.get_current_datetime
                botocore.auth.get_current_datetime = lambda: at
                try:
                    signer.add_auth(req)
                finally:
                    botocore.auth.get_current_datetime = real
            headers = dict(req.headers.items())
        if tamper:
            body, path = tamper(body, path)
        conn = http.client.HTTPConnection(host, timeout=120)
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def envs(self):
        status, _, body = self.raw("GET", "/ember/environments")
        assert status == 200
        return json.loads(body)["Environments"]


@pytest.fixture
def data_dir():
    # Short path: the vsock socket path inside must fit in 107 bytes.
    d = tempfile.mkdtemp(prefix="ea", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def emberd(data_dir):
    e = Emberd(data_dir).start()
    yield e
    e.stop()


@pytest.fixture
def make_emberd(data_dir):
    """Factory for tests that start emberd with extra flags or restart it."""
    started = []

    def make(extra=()):
        e = Emberd(data_dir, extra).start()
        started.append(e)
        return e

    yield make
    for e in started:
        e.stop()


_wasm_cache = {}


def wasm(name: str) -> bytes:
    """A test function compiled from tests/api/wat/NAME.wat."""
    if name not in _wasm_cache:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "m.wasm")
            subprocess.run(["wat2wasm", str(WAT / f"{name}.wat"), "-o", out], check=True)
            _wasm_cache[name] = open(out, "rb").read()
    return _wasm_cache[name]


def zipped(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


MODULE_HEADER = b"\0asm\x01\0\0\0"


def create(client, name, code=MODULE_HEADER, **kw):
    args = dict(FunctionName=name, Runtime="wasm", Role="arn:aws:iam::000000000000:role/ember",
                Handler="function.handler", Code={"ZipFile": code})
    args.update(kw)
    return client.create_function(**args)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def vmm_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0]
        # An environment's pid is its `ember-jailer` (emberd's default), whose
        # VMM dies with it, or a bare `ember-vmm` (--no-jail).
        is_env = argv0.endswith(b"ember-vmm") or argv0.endswith(b"ember-jailer")
        return state not in ("Z", "X") and is_env
    except (OSError, IndexError):
        return False


def at_once(calls):
    """Runs each callable on its own thread, all released together (a
    barrier); returns (their results, the repr of what any raised)."""
    outs, errors = [], []
    together = threading.Barrier(len(calls))

    def one(f):
        try:
            together.wait(timeout=60)
            outs.append(f())
        except Exception as x:  # noqa: BLE001 - returned to the caller
            errors.append(repr(x))

    threads = [threading.Thread(target=one, args=(f,)) for f in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs, errors


def wait_for(cond, timeout=30.0, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    return cond()
