"""Invocations on real microVMs through boto3: cold then warm, versions and
aliases, LogType Tail, and version isolation of environments."""
import base64
import json
import time

import pytest

from conftest import create, vmm_alive, wasm

pytestmark = pytest.mark.vm


def invoke(c, name, payload, **kw):
    r = c.invoke(FunctionName=name, Payload=json.dumps(payload).encode(), **kw)
    return r, r["Payload"].read()


def test_echo_cold_then_warm(emberd):
    c = emberd.client()
    create(c, "echo", wasm("echo"))
    t0 = time.monotonic()
    r, body = invoke(c, "echo", {"hello": "world"})
    cold = time.monotonic() - t0
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    assert json.loads(body) == {"hello": "world"}
    assert r["ExecutedVersion"] == "$LATEST"
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-ember-cold-start"] == "true"
    env_id = headers["x-amz-ember-environment"]
    t0 = time.monotonic()
    r, body = invoke(c, "echo", [1, 2, 3])
    warm = time.monotonic() - t0
    assert json.loads(body) == [1, 2, 3]
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-ember-cold-start"] == "false" and headers["x-amz-ember-environment"] == env_id
    print(f"cold {cold * 1000:.2f} ms, warm {warm * 1000:.2f} ms")
    [env] = emberd.envs()
    assert env["Invocations"] == 2 and vmm_alive(env["Pid"])


def test_versions_aliases_and_isolation(emberd):
    c = emberd.client()
    create(c, "iso", wasm("echo"))
    c.publish_version(FunctionName="iso")
    c.create_alias(FunctionName="iso", Name="live", FunctionVersion="1")
    envs = {}
    for q in ["$LATEST", "1", "live"]:
        r, body = invoke(c, "iso", {"q": q}, Qualifier=q)
        assert json.loads(body) == {"q": q}
        envs[q] = r["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"]
        assert r["ExecutedVersion"] == ("$LATEST" if q == "$LATEST" else "1")
    assert envs["$LATEST"] != envs["1"], "version 1 ran in $LATEST's environment"
    assert envs["live"] == envs["1"], "the alias should reuse version 1's warm environment"
    # Updating $LATEST retires its environments: the next call is cold, elsewhere.
    c.update_function_configuration(FunctionName="iso", Environment={"Variables": {"X": "1"}})
    r, _ = invoke(c, "iso", {})
    h = r["ResponseMetadata"]["HTTPHeaders"]
    assert h["x-amz-ember-cold-start"] == "true" and h["x-amz-ember-environment"] != envs["$LATEST"]


def test_state_persists_within_an_environment_never_across(emberd):
    c = emberd.client()
    create(c, "state", wasm("counter"))
    c.publish_version(FunctionName="state")
    calls = [json.loads(invoke(c, "state", 0)[1])["calls"] for _ in range(3)]
    assert calls == ["01", "02", "03"], "a warm environment keeps its instance state"
    assert json.loads(invoke(c, "state", 0, Qualifier="1")[1])["calls"] == "01", "version 1 saw $LATEST's state"
    c.update_function_code(FunctionName="state", ZipFile=wasm("counter"))
    c.update_function_configuration(FunctionName="state", Description="new revision")
    assert json.loads(invoke(c, "state", 0)[1])["calls"] == "01", "a new revision saw the old environment's state"


def test_log_tail(emberd):
    c = emberd.client()
    create(c, "tail", wasm("echo"))
    r, _ = invoke(c, "tail", {"x": 1}, LogType="Tail")
    log = base64.b64decode(r["LogResult"]).decode()
    assert log.startswith("START RequestId: ") and "END RequestId: " in log and "REPORT RequestId: " in log
    assert len(base64.b64decode(r["LogResult"])) <= 4096
    assert "Init Duration: " in log and "Max Memory Used: " in log, log
    r, _ = invoke(c, "tail", {"x": 2}, LogType="Tail")
    assert "Init Duration" not in base64.b64decode(r["LogResult"]).decode(), "a warm call reported an init phase"


def test_delete_function_stops_its_environments(emberd):
    c = emberd.client()
    create(c, "gone", wasm("echo"))
    invoke(c, "gone", {})
    [env] = emberd.envs()
    c.delete_function(FunctionName="gone")
    from conftest import wait_for
    assert wait_for(lambda: not vmm_alive(env["Pid"]) and not emberd.envs(), timeout=10)
