"""Promise 2 (versions and functions; tenants: test_promise_02_tenants.py):
execution environments are reserved for one function version and never
reused across versions or functions (seed: "Execution environments are
reserved for a specific function version and cannot be reused across
function versions, functions, or AWS accounts")."""
import json

import pytest

from conftest import create, env_of, vmm_of, wasm

pytestmark = pytest.mark.vm


def calls(c, name, qualifier=None):
    kw = {"Qualifier": qualifier} if qualifier else {}
    r = c.invoke(FunctionName=name, Payload=b"0", **kw)
    assert "FunctionError" not in r, r
    return json.loads(r["Payload"].read())["calls"], int(env_of(r))


def test_environments_are_never_shared_across_versions_or_functions(emberd):
    c = emberd.client()
    # Two functions with identical code and configuration: only the name differs.
    for name in ("alpha", "beta"):
        create(c, name, wasm("counter"))
    c.publish_version(FunctionName="alpha")  # version 1
    c.update_function_configuration(FunctionName="alpha", Description="v2")
    c.publish_version(FunctionName="alpha")  # version 2
    c.create_alias(FunctionName="alpha", Name="live", FunctionVersion="1")
    targets = [("alpha", None), ("alpha", "1"), ("alpha", "2"), ("beta", None)]
    envs = {}
    for t in targets:
        # Warm the target twice: its environment counts its own calls only.
        assert [calls(c, *t)[0] for _ in range(2)] == ["01", "02"], t
        envs[t] = calls(c, *t)[1]
    assert len(set(envs.values())) == len(targets), f"an environment served two versions/functions: {envs}"
    # emberd's books and the processes agree: one environment per target,
    # each its own ember-vmm.
    listed = {e["Id"]: e for e in emberd.envs()}
    for (fn, q), env in envs.items():
        assert listed[env]["Function"] == fn and listed[env]["Version"] == (q or "$LATEST"), listed[env]
    pids = {vmm_of(listed[e]["Pid"]) for e in envs.values()}
    assert len(pids) == len(targets), pids
    # An alias is a pointer, not a version: it reuses version 1's environment.
    assert calls(c, "alpha", "live") == ("04", envs[("alpha", "1")])


def test_a_new_revision_of_latest_never_gets_the_old_environment(emberd):
    c = emberd.client()
    create(c, "rev", wasm("counter"))
    first = calls(c, "rev")
    assert calls(c, "rev") == ("02", first[1])
    c.update_function_code(FunctionName="rev", ZipFile=wasm("counter"))
    after_code = calls(c, "rev")
    assert after_code[0] == "01" and after_code[1] != first[1], (first, after_code)
    c.update_function_configuration(FunctionName="rev", MemorySize=192)
    after_conf = calls(c, "rev")
    assert after_conf[0] == "01" and after_conf[1] not in (first[1], after_code[1])
