"""Every host binary answers `--version` and `--help` the way command-line
tools do (issue 17): on stdout, exit code 0, the version from the
workspace's Cargo.toml. (`ember-vmm --version` keeps Firecracker's format;
its API-socket tests check it.)"""
import re
import subprocess

import pytest

from conftest import REPO, bin_dir

BINARIES = ["emberd", "ember", "ember-run", "ember-jailer", "ember-wasm-compile"]


def workspace_version():
    text = (REPO / "Cargo.toml").read_text()
    m = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', text, re.M | re.S)
    assert m, "no [workspace.package] version"
    return m.group(1)


@pytest.mark.parametrize("name", BINARIES)
def test_version_and_help_exit_zero_on_stdout(name):
    exe = bin_dir() / name
    v = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0, (v.stdout, v.stderr)
    assert v.stdout.strip() == f"{name} {workspace_version()}", v.stdout
    h = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    assert h.returncode == 0, (h.stdout, h.stderr)
    assert "usage" in h.stdout.lower(), h.stdout
    # A usage error stays distinct from success and from a function error.
    bad = subprocess.run([exe, "--no-such-option"], capture_output=True, text=True, timeout=10)
    assert bad.returncode not in (0, 1), (name, bad.returncode, bad.stderr)


@pytest.mark.vm
def test_ember_exit_codes_are_distinct(emberd):
    from conftest import create, wasm
    c = emberd.client()
    create(c, "ok", wasm("echo"))
    create(c, "bad", wasm("fail"))
    ok = emberd.ember("invoke", "ok", "--payload", '{"a": 1}')
    assert ok.returncode == 0, ok.stderr
    # The function ran and failed: its own code, not clap's usage code 2.
    failed = emberd.ember("invoke", "bad", "--payload", "{}")
    assert failed.returncode == 3, (failed.returncode, failed.stdout, failed.stderr)
    assert "errorMessage" in failed.stdout, failed.stdout
    # The request failed (no such function): 1.
    missing = emberd.ember("invoke", "nope", "--payload", "{}")
    assert missing.returncode == 1, (missing.returncode, missing.stderr)
    assert "ResourceNotFoundException" in missing.stderr, missing.stderr
    # A usage error: 2.
    usage = emberd.ember("invoke")
    assert usage.returncode == 2, (usage.returncode, usage.stderr)
    assert "Exit codes:" in emberd.ember("--help").stdout
