"""Fixtures for the isolation suite (issue 8): one test file per seed promise.

The emberd-level fixtures (a real emberd on 127.0.0.1:0, boto3 clients, the
WAT test functions) are tests/api's, imported from tests/api/conftest.py so
both suites start emberd the same way. Added here: looking at environments
from outside (/proc), the `test-hooks` ember-vmm (built like
tests/tests/isolation_jail.rs builds it), an emberd pointed at it, and
running `ember-jailer` directly with the kernel-less test guests.
"""
import functools
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

_API = pathlib.Path(__file__).resolve().parents[1] / "api"
_spec = importlib.util.spec_from_file_location("api_conftest", _API / "conftest.py")
api = importlib.util.module_from_spec(_spec)
sys.modules["api_conftest"] = api
_spec.loader.exec_module(api)

# Fixtures and pytest hooks of tests/api, registered for this directory too.
from api_conftest import (  # noqa: E402,F401
    REPO, Emberd, bin_dir, create, data_dir, emberd, make_emberd, pytest_collection_modifyitems,
    pytest_configure, vmm_alive, wait_for, wasm,
)

WAT = pathlib.Path(__file__).resolve().parent / "wat"
KERNELLESS = REPO / "guest-agent/kernelless"


@functools.lru_cache(maxsize=None)
def iso_wasm(name: str) -> bytes:
    """A test function compiled from tests/isolation/wat/NAME.wat."""
    out = subprocess.run(["wat2wasm", str(WAT / f"{name}.wat"), "--output=/dev/stdout"],
                         check=True, capture_output=True)
    return out.stdout


def env_of(r) -> str:
    """The environment id emberd reports for an Invoke response."""
    return r["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"]


def status(pid, task=None) -> dict:
    """/proc/PID/status (or one task's) as a dict."""
    path = f"/proc/{pid}/task/{task}/status" if task else f"/proc/{pid}/status"
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def argv(pid) -> list:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def vmm_of(env_pid: int) -> int:
    """The jailed ember-vmm of an environment (its pid is the ember-jailer's)."""
    assert argv(env_pid)[0].endswith("ember-jailer"), argv(env_pid)
    with open(f"/proc/{env_pid}/task/{env_pid}/children") as f:
        [vmm] = [int(p) for p in f.read().split()]
    assert argv(vmm)[0].endswith("ember-vmm"), argv(vmm)
    return vmm


def env_dir(env_pid: int) -> pathlib.Path:
    """An environment's host work directory: what its jailer mounts as /run."""
    args = argv(env_pid)
    src = args[args.index("--dir-rw") + 1]
    host, in_jail = src.rsplit(":", 1)
    assert in_jail == "/run", src
    return pathlib.Path(host)


def cargo_target() -> pathlib.Path:
    return bin_dir().parent


@pytest.fixture(scope="session")
def hooks_vmm() -> pathlib.Path:
    """An ember-vmm built with `--features test-hooks` (the only kind that
    accepts `--test-hook`), in its own target dir like isolation_jail.rs's."""
    target = cargo_target() / "test-hooks"
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    r = subprocess.run(
        ["cargo", "build", "--release", "-p", "ember-vmm", "--bin", "ember-vmm",
         "--features", "test-hooks"],
        cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"building the test-hooks ember-vmm failed: {r.stderr[-3000:]}"
    return target / "release/ember-vmm"


@pytest.fixture
def hooks_emberd(make_emberd, hooks_vmm, monkeypatch, tmp_path):
    """Factory (tests/api's make_emberd) for an emberd whose environments run
    the test-hooks ember-vmm, jailed as usual. A directory of symlinks stands
    in for the build directory, so emberd, its default jailer and the VMM
    are found the usual way."""
    bins = tmp_path / "bin"
    bins.mkdir()
    for name in ("emberd", "ember-jailer"):
        os.symlink(bin_dir() / name, bins / name)
    os.symlink(hooks_vmm, bins / "ember-vmm")
    monkeypatch.setenv("EMBER_BIN_DIR", str(bins))
    return make_emberd


@pytest.fixture(scope="session")
def guests():
    """Builds (once) the kernel-less test guests this suite runs directly;
    returns NAME -> path."""
    names = ["spin", "hello", "memhog", "memscan", "vsock_client"]
    args = [a for n in names for a in ("--bin", n)]
    r = subprocess.run(["bash", str(KERNELLESS / "build.sh"), *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = KERNELLESS / "target/x86_64-unknown-linux-gnu/release"
    return {n: out / n for n in names}


def jailer_cmd(jail_id, vmm, guest, jail_args=(), vmm_args=()):
    """`ember-jailer` running `vmm` on kernel-less `guest` (mounted at /guest)."""
    return [str(bin_dir() / "ember-jailer"), "--id", jail_id, "--chroot-base", JAIL_BASE,
            "--exec-file", str(vmm), "--file", f"{guest}:/guest", *jail_args,
            "--", "--kernel", "/guest", "--mem-mib", "64", *vmm_args]


JAIL_BASE = "/tmp/ember-iso-jails"
