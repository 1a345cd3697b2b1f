"""Warm idle environments count against the host's memory (issue 13, item
6): before, admission counted only concurrent invocations, so idle VMMs of
large functions piled up (a 2048 MB function left a 563 MB warm VMM) until
the host ran out. Now every environment claims its function's memory + 16
MiB of emberd's --memory-budget-mib while it exists; a start that does not
fit evicts least-recently-used idle environments first, and if even that
cannot make room the invocation gets Lambda's 429 TooManyRequestsException
at once. Here with a budget of 300 MiB: two 128 MB environments (2 x 144
MiB) fit, a third does not."""
import concurrent.futures as cf
import re
import time

import pytest

from conftest import create, wait_for, wasm

pytestmark = pytest.mark.vm

MIB = 1 << 20
CLAIM = (128 + 16) * MIB


def env_of(r):
    return r["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"]


def live(e, function=None):
    """Ids of environments that are not stopping (of `function` if given)."""
    return sorted(str(x["Id"]) for x in e.envs()
                  if x["State"] != "stopping" and (function is None or x["Function"] == function))


def metric(e, name):
    status, _, body = e.raw("GET", "/metrics")
    assert status == 200
    m = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    assert m, f"{name} not exported"
    return float(m.group(1))


def invoke(c, name):
    r = c.invoke(FunctionName=name, Payload=b"{}")
    assert "FunctionError" not in r, r["Payload"].read()
    r["Payload"].read()
    return r


def test_idle_environments_are_evicted_lru_and_over_budget_is_429(make_emberd):
    e = make_emberd(["--memory-budget-mib", "300", "--spare-vms", "0"])
    c = e.client()
    for name in ("first", "second", "third"):
        create(c, name, wasm("slow"), MemorySize=128, Timeout=10)
    assert metric(e, "ember_memory_budget_bytes") == 300 * MIB

    # Two overlapping calls: two environments of `first`, idle afterwards.
    with cf.ThreadPoolExecutor(2) as pool:
        envs = [env_of(r) for r in pool.map(lambda _: invoke(c, "first"), range(2))]
    assert len(set(envs)) == 2, envs
    # One more call reuses the most recently returned one; the other is now
    # the least recently used.
    recent = env_of(invoke(c, "first"))
    [old] = set(envs) - {recent}
    assert metric(e, "ember_memory_claimed_bytes") == 2 * CLAIM, "idle environments must count"

    # `second` does not fit beside them: the LRU idle environment makes room.
    t0 = time.monotonic()
    invoke(c, "second")
    assert time.monotonic() - t0 < 30
    ids = live(e)
    assert recent in ids and old not in ids, (recent, old, e.envs())
    assert metric(e, "ember_memory_claimed_bytes") == 2 * CLAIM

    # Three overlapping calls of `third`: two evict the idle environments,
    # the third finds every claim busy and gets 429 at once; nothing hangs.
    def call(_):
        t = time.monotonic()
        try:
            invoke(c, "third")
            return "ok", time.monotonic() - t
        except c.exceptions.TooManyRequestsException as err:
            return err.response["Reason"], time.monotonic() - t

    with cf.ThreadPoolExecutor(3) as pool:
        out = list(pool.map(call, range(3)))
    print(f"three overlapping calls with room for two: {out}")
    kinds = sorted(k for k, _ in out)
    assert kinds == ["ConcurrentInvocationLimitExceeded", "ok", "ok"], out
    assert all(t < 30 for _, t in out), out
    assert [t for k, t in out if k != "ok"][0] < 2, "the refusal must not wait"
    assert len(live(e, "third")) == 2 and not live(e, "first") and not live(e, "second")

    # Nothing was lost: the evicted functions still run (evicting again).
    invoke(c, "first")
    invoke(c, "second")
    assert metric(e, "ember_memory_claimed_bytes") <= 300 * MIB
