"""Fixtures for the hostile suite (issue 13): attacks on a real emberd by a
hostile API client, a hostile tenant with valid keys and a hostile guest,
each asserting the fixed behaviour, that nothing accepted was lost, and that
emberd still answers.

The emberd-level fixtures (a real emberd on 127.0.0.1:0, boto3 clients, the
WAT test functions) are tests/api's, imported from tests/api/conftest.py so
every suite starts emberd the same way. Attack loops are bounded in count and
time, and target loopback only.
"""
import importlib.util
import pathlib
import sys

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

HOSTILE = pathlib.Path(__file__).resolve().parent


def latencies(client, n, deadline):
    """Durations (s) of up to `n` ListFunctions calls, stopping at `deadline` (monotonic)."""
    import time
    out = []
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        t = time.monotonic()
        client.list_functions()
        out.append(time.monotonic() - t)
    return out


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]
