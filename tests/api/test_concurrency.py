"""Concurrency on real microVMs: one invocation per environment, reserved
concurrency throttling, provisioned concurrency ready before any call."""
import concurrent.futures as cf
import json
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import create, vmm_alive, wait_for, wasm

pytestmark = pytest.mark.vm


def call(e, name, qualifier=None, client=None, barrier=None, payload=b"{}"):
    c = client or e.client()
    if barrier:
        barrier.wait(timeout=60)
    kw = {"Qualifier": qualifier} if qualifier else {}
    r = c.invoke(FunctionName=name, Payload=payload, **kw)
    body = r["Payload"].read()
    h = r["ResponseMetadata"]["HTTPHeaders"]
    return r.get("FunctionError"), body, h["x-amz-ember-environment"], h["x-amz-ember-cold-start"]


def test_twenty_concurrent_calls_get_twenty_environments(emberd):
    create(emberd.client(), "slow", wasm("counter"), Timeout=30)
    # Clients are built up front (boto3 client creation is slow and would
    # stagger the calls); a barrier releases all 20 calls at once.
    clients = [emberd.client() for _ in range(20)]
    barrier = threading.Barrier(20)
    with cf.ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(call, emberd, "slow", client=c, barrier=barrier, payload=b"3") for c in clients]

        # While they run, every busy environment seen is its own live
        # ember-vmm process (pids read from /proc, not from emberd's books).
        seen = {}
        while not all(f.done() for f in futures):
            for e in emberd.envs():
                if e["State"] == "busy" and e["Pid"] and vmm_alive(e["Pid"]):
                    seen[e["Id"]] = e["Pid"]
            time.sleep(0.01)
        results = [f.result() for f in futures]
    # The agent side: every environment's own counter says it served one call.
    assert all(err is None and json.loads(body) == {"calls": "01"} for err, body, _, _ in results), results
    ids = {int(env) for _, _, env, _ in results}
    assert len(ids) == 20, "two concurrent calls shared an environment"
    assert len(set(seen.values())) == len(seen) >= 2, seen
    # None served two calls: each environment counted exactly one invocation.
    envs = {e["Id"]: e for e in emberd.envs()}
    assert all(i in envs and envs[i]["Invocations"] == 1 for i in ids), envs


def test_reserved_concurrency_two_throttles_the_third(emberd):
    c = emberd.client()
    create(c, "res", wasm("slow"), Timeout=30)
    c.put_function_concurrency(FunctionName="res", ReservedConcurrentExecutions=2)
    clients = [emberd.client() for _ in range(2)]
    with cf.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(call, emberd, "res", client=cl) for cl in clients]
        assert wait_for(lambda: len(emberd.envs()) == 2, timeout=30)
        with pytest.raises(ClientError) as e:
            c.invoke(FunctionName="res", Payload=b"{}")
        err = e.value.response
        assert err["Error"]["Code"] == "TooManyRequestsException"
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert err["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
        assert all(f.result()[0] is None for f in running)
    assert call(emberd, "res")[0] is None, "a call after the others finished must pass"


def test_provisioned_concurrency_ready_before_first_call(emberd):
    c = emberd.client()
    create(c, "prov", wasm("echo"))
    c.publish_version(FunctionName="prov")
    c.create_alias(FunctionName="prov", Name="live", FunctionVersion="1")
    r = c.put_provisioned_concurrency_config(FunctionName="prov", Qualifier="live", ProvisionedConcurrentExecutions=3)
    assert r["RequestedProvisionedConcurrentExecutions"] == 3 and r["Status"] in ("IN_PROGRESS", "READY")
    ready = wait_for(lambda: c.get_provisioned_concurrency_config(FunctionName="prov", Qualifier="live")["Status"] == "READY", timeout=60)
    assert ready
    envs = emberd.envs()
    assert len(envs) == 3 and all(e["Provisioned"] and e["State"] == "idle" and e["Version"] == "1" for e in envs)
    assert all(e["Invocations"] == 0 for e in envs)
    err, body, env, cold = call(emberd, "prov", "live")
    assert err is None and cold == "false", "first call on provisioned concurrency was a cold start"
    assert int(env) in {e["Id"] for e in envs}
    # A dead provisioned environment is replaced.
    victim = envs[0]["Pid"]
    import os, signal
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len([e for e in emberd.envs() if e["Provisioned"] and e["State"] == "idle" and e["Pid"] != victim]) == 3, timeout=60)
