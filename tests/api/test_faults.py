"""Faults on real microVMs: a VM killed mid-invocation, emberd crashing with
environments running, and SIGTERM leaving nothing behind."""
import concurrent.futures as cf
import json
import os
import signal

import pytest

from conftest import create, vmm_alive, wait_for, wasm

pytestmark = pytest.mark.vm


def spare_pids(e):
    """The spare VMs emberd keeps booted (from its pid file), once they are up."""
    path = os.path.join(e.data_dir, "run", "spare.pids")
    if e.proc.poll() is None:
        wait_for(lambda: os.path.exists(path) and open(path).read().split(), timeout=30)
    try:
        return [int(p) for p in open(path).read().split()]
    except OSError:
        return []


def test_vm_killed_mid_invocation_is_a_function_error(emberd):
    c = emberd.client()
    create(c, "victim", wasm("slow"), Timeout=30)
    with cf.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(lambda: c.invoke(FunctionName="victim", Payload=b"{}"))
        busy = wait_for(lambda: [e for e in emberd.envs() if e["State"] == "busy" and e["Pid"]], timeout=30)
        assert busy
        os.kill(busy[0]["Pid"], signal.SIGKILL)
        r = fut.result(timeout=60)
    assert r["StatusCode"] == 200 and r["FunctionError"] == "Unhandled"
    body = json.loads(r["Payload"].read())
    assert body["errorType"] == "Runtime.ExitError", body
    r = c.invoke(FunctionName="victim", Payload=b"{}")
    assert "FunctionError" not in r and json.loads(r["Payload"].read()) == {"slept": True}
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"] != str(busy[0]["Id"])


def test_restart_after_crash_leaves_no_orphans(make_emberd):
    e = make_emberd()
    c = e.client()
    create(c, "warm", wasm("echo"))
    c.publish_version(FunctionName="warm")
    for q in ["$LATEST", "1"]:
        c.invoke(FunctionName="warm", Qualifier=q, Payload=b"{}")
    pids = [env["Pid"] for env in e.envs()]
    assert len(pids) == 2 and all(vmm_alive(p) for p in pids)
    pids += spare_pids(e)  # booted spare VMs are children too
    e.kill()  # SIGKILL: emberd cannot clean up; its children are orphaned
    e2 = make_emberd()
    assert wait_for(lambda: not any(vmm_alive(p) for p in pids), timeout=10), "orphaned ember-vmm survived the restart"
    assert os.listdir(os.path.join(e2.data_dir, "run", "envs")) == []
    c2 = e2.client()
    assert [v["Version"] for v in c2.list_versions_by_function(FunctionName="warm")["Versions"]] == ["$LATEST", "1"]
    r = c2.invoke(FunctionName="warm", Qualifier="1", Payload=b'{"again":true}')
    assert json.loads(r["Payload"].read()) == {"again": True}


def test_sigterm_stops_every_vm_and_removes_work_dirs(make_emberd):
    e = make_emberd()
    c = e.client()
    create(c, "bye", wasm("echo"))
    with cf.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: c.invoke(FunctionName="bye", Payload=b"{}"), range(3)))
    pids = [env["Pid"] for env in e.envs()]
    assert pids and all(vmm_alive(p) for p in pids)
    pids += spare_pids(e)
    assert e.stop() == 0
    assert not any(vmm_alive(p) for p in pids)
    envs_dir = os.path.join(e.data_dir, "run", "envs")
    assert not os.path.exists(envs_dir) or os.listdir(envs_dir) == []
    assert open(os.path.join(e.data_dir, "run", "vmm.pids")).read().strip() == ""
    assert spare_pids(e) == []


def test_sigterm_drains_an_in_flight_invocation(make_emberd):
    e = make_emberd()
    c = e.client()
    create(c, "draining", wasm("counter"), Timeout=30)
    with cf.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(lambda: c.invoke(FunctionName="draining", Payload=b"4"))  # 2 s
        busy = wait_for(lambda: [x for x in e.envs() if x["State"] == "busy"], timeout=30)
        assert busy
        e.proc.send_signal(signal.SIGTERM)
        r = fut.result(timeout=60)
    assert "FunctionError" not in r and json.loads(r["Payload"].read()) == {"calls": "01"}
    assert e.proc.wait(timeout=30) == 0
    assert not vmm_alive(busy[0]["Pid"])
