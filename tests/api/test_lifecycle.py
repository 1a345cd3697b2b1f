"""Environment lifecycle on real microVMs: function timeout, idle reaping and
the maximum lifetime."""
import json
import time

import pytest

from conftest import create, vmm_alive, wait_for, wasm

pytestmark = pytest.mark.vm


def env_of(r):
    return r["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"]


def test_timeout_is_a_function_error_and_the_environment_is_replaced(emberd):
    c = emberd.client()
    create(c, "late", wasm("counter"), Timeout=1)
    r = c.invoke(FunctionName="late", Payload=b"4")  # spins 2 s
    assert r["FunctionError"] == "Unhandled"
    body = json.loads(r["Payload"].read())
    assert body["errorType"] == "Sandbox.Timedout", body
    first = env_of(r)
    r = c.invoke(FunctionName="late", Payload=b"0")
    assert "FunctionError" not in r and json.loads(r["Payload"].read()) == {"calls": "01"}
    assert env_of(r) != first, "a timed-out environment was reused"


def test_idle_environments_are_reaped(make_emberd):
    e = make_emberd(["--idle-timeout", "1"])
    c = e.client()
    create(c, "idle", wasm("echo"))
    c.invoke(FunctionName="idle", Payload=b"{}")
    [env] = e.envs()
    assert wait_for(lambda: not e.envs(), timeout=15), e.envs()
    assert wait_for(lambda: not vmm_alive(env["Pid"]), timeout=5)


def test_environments_are_replaced_at_their_maximum_lifetime(make_emberd):
    e = make_emberd(["--max-lifetime", "2"])
    c = e.client()
    create(c, "aging", wasm("counter"))
    r = c.invoke(FunctionName="aging", Payload=b"0")
    first = env_of(r)
    [env] = e.envs()
    assert env_of(c.invoke(FunctionName="aging", Payload=b"0")) == first, "reused while young"
    assert wait_for(lambda: not vmm_alive(env["Pid"]), timeout=15), "not retired at its max lifetime"
    r = c.invoke(FunctionName="aging", Payload=b"0")
    assert env_of(r) != first and json.loads(r["Payload"].read()) == {"calls": "01"}
