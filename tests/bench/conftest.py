"""Fixtures for the `ember bench` tests: the release binaries, the kernel-less
null guest (built once by guest-agent/kernelless/build.sh, tests/fcapi's
fixture), and helpers that
run `ember bench` and read its result directory. Real VMMs on /dev/kvm, a real
throw-away emberd, real QEMU and headless Chromium; nothing is skipped.
"""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

# bin_dir and the kernel-less guests fixture are tests/fcapi's (same build,
# same places), imported as tests/isolation imports tests/api's conftest.
_FCAPI = pathlib.Path(__file__).resolve().parents[1] / "fcapi"
_spec = importlib.util.spec_from_file_location("fcapi_conftest", _FCAPI / "conftest.py")
_fcapi = importlib.util.module_from_spec(_spec)
sys.modules["fcapi_conftest"] = _fcapi
_spec.loader.exec_module(_fcapi)
from fcapi_conftest import GUESTS, REPO, bin_dir, guests  # noqa: E402,F401

# The fields raw.jsonl documents (README, "Benchmarks").
RECORD_FIELDS = {"scenario", "case", "round", "seq", "warmup", "ok", "start_ms", "wall_ms",
                 "peak_rss_kib", "boot_timer_ms", "phases", "step", "batch_ms", "error"}
CSV_COLUMNS = ["scenario", "case", "round", "seq", "warmup", "ok", "start_ms", "wall_ms",
               "peak_rss_kib", "boot_timer_ms", "step", "batch_ms", "error"]


class Run:
    """One finished `ember bench` command and its result directory."""

    def __init__(self, proc, out):
        self.rc, self.stdout, self.stderr, self.out = proc.returncode, proc.stdout, proc.stderr, out

    def records(self):
        return [json.loads(l) for l in (self.out / "raw.jsonl").read_text().splitlines() if l.strip()]

    def summary(self):
        return json.loads((self.out / "summary.json").read_text())

    def case(self, name):
        return next(c for c in self.summary()["cases"] if c["case"] == name)

    def __repr__(self):
        return f"rc={self.rc}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr[-3000:]}"


@pytest.fixture
def bench(tmp_path, guests):
    """bench(*args, out=NAME) runs `ember bench ARGS --out tmp/NAME`."""
    def run(*args, out="out", timeout=300, env=None):
        d = tmp_path / out
        cmd = [str(bin_dir() / "ember"), "bench", *args]
        if args and args[0] != "compare":
            cmd += ["--out", str(d)]
        e = dict(os.environ, EMBER_NULL_KERNELLESS=str(guests / "null"),
                 EMBER_WASM_AGENT=str(guests / "ember-wasm-agent"),
                 EMBER_SNAP_GUEST=str(guests / "snap_guest"))
        e.update(env or {})
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e,
                           cwd=tmp_path)
        return Run(p, d)
    return run
