"""Promise 10: environments are replaced at their maximum lifetime (seed:
state "may continue to persist for hours before it is destroyed as a part of
normal execution environment lifecycle management"; emberd: --max-lifetime)."""
import json

import pytest

from conftest import create, env_of, vmm_alive, vmm_of, wait_for, wasm

pytestmark = pytest.mark.vm


def test_environments_are_replaced_at_their_maximum_lifetime(make_emberd):
    e = make_emberd(["--max-lifetime", "5", "--spare-vms", "0"])
    c = e.client()
    create(c, "aging", wasm("counter"))
    r = c.invoke(FunctionName="aging", Payload=b"0")
    first = env_of(r)
    [env] = e.envs()
    vmm = vmm_of(env["Pid"])
    # Young: reused, with its state.
    r = c.invoke(FunctionName="aging", Payload=b"0")
    assert env_of(r) == first and json.loads(r["Payload"].read()) == {"calls": "02"}
    # Idle past its lifetime: retired by emberd, its VMM gone.
    assert wait_for(lambda: not vmm_alive(env["Pid"]) and not e.envs(), timeout=30), e.envs()
    assert not vmm_alive(vmm)
    r = c.invoke(FunctionName="aging", Payload=b"0")
    assert env_of(r) != first and json.loads(r["Payload"].read()) == {"calls": "01"}


def test_a_busy_environment_is_retired_after_its_call_past_its_lifetime(make_emberd):
    e = make_emberd(["--max-lifetime", "4", "--spare-vms", "0"])
    c = e.client()
    create(c, "aging", wasm("counter"), Timeout=30)
    first = env_of(c.invoke(FunctionName="aging", Payload=b"0"))
    # This call runs across the lifetime (4.5 s spin): it completes, in the old
    # environment, which is then replaced rather than reused.
    r = c.invoke(FunctionName="aging", Payload=b"9")
    assert "FunctionError" not in r and env_of(r) == first
    assert json.loads(r["Payload"].read()) == {"calls": "02"}
    r = c.invoke(FunctionName="aging", Payload=b"0")
    assert env_of(r) != first and json.loads(r["Payload"].read()) == {"calls": "01"}
