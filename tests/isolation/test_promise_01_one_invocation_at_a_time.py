"""Promise 1: an execution environment runs one invocation at a time;
concurrent calls land in distinct microVMs (seed: "Each execution
environment may only be used for one concurrent invocation at a time")."""
import concurrent.futures as cf
import json
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import create, env_of, vmm_alive, vmm_of, wait_for, wasm

pytestmark = pytest.mark.vm

N = 6


def call(client, barrier, payload):
    barrier.wait(timeout=60)
    r = client.invoke(FunctionName="busy", Payload=payload)
    return r.get("FunctionError"), json.loads(r["Payload"].read()), env_of(r)


def test_concurrent_invocations_run_in_distinct_microvms(emberd):
    create(emberd.client(), "busy", wasm("counter"), Timeout=30)
    clients = [emberd.client() for _ in range(N)]
    barrier = threading.Barrier(N)
    vmms = {}
    with cf.ThreadPoolExecutor(N) as pool:
        futures = [pool.submit(call, c, barrier, b"2") for c in clients]  # each spins 1 s
        while not all(f.done() for f in futures):
            for e in emberd.envs():
                if e["State"] == "busy" and e["Pid"] and vmm_alive(e["Pid"]):
                    try:
                        vmms[e["Id"]] = vmm_of(e["Pid"])
                    except (OSError, ValueError, AssertionError):
                        pass  # exited between the listing and /proc
            time.sleep(0.01)
        results = [f.result() for f in futures]
    # Each environment's own instance counter: it served exactly this call.
    assert [(err, body) for err, body, _ in results] == [(None, {"calls": "01"})] * N, results
    envs = {int(env) for _, _, env in results}
    assert len(envs) == N, f"{N} concurrent calls shared environments: {results}"
    # Distinct environments are distinct ember-vmm processes (from /proc).
    assert len(vmms) >= 2 and len(set(vmms.values())) == len(vmms), vmms
    # Sequential calls afterwards reuse warm environments, one call each time:
    # every count continues from 01, so no environment ran two at once.
    seen = [json.loads(emberd.client().invoke(FunctionName="busy", Payload=b"0")["Payload"].read())
            for _ in range(3)]
    assert all(s["calls"] in ("02", "03", "04") for s in seen), seen


def test_a_busy_environment_is_never_given_a_second_call(emberd):
    """With one environment allowed (reserved concurrency 1), a second
    concurrent call is throttled rather than handed the busy environment."""
    c = emberd.client()
    create(c, "busy", wasm("counter"), Timeout=30)
    c.put_function_concurrency(FunctionName="busy", ReservedConcurrentExecutions=1)
    with cf.ThreadPoolExecutor(1) as pool:
        first = pool.submit(lambda: emberd.client().invoke(FunctionName="busy", Payload=b"4"))  # 2 s
        assert wait_for(lambda: [e for e in emberd.envs() if e["State"] == "busy"], timeout=60)
        with pytest.raises(ClientError) as err:
            c.invoke(FunctionName="busy", Payload=b"0")
        assert err.value.response["Error"]["Code"] == "TooManyRequestsException"
        r = first.result(timeout=120)
    assert json.loads(r["Payload"].read()) == {"calls": "01"}
    [env] = emberd.envs()
    assert env["Invocations"] == 1, env
