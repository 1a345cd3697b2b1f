"""The hostile guest (issue 13, items 3 and 4): an emberd whose every
environment runs guest-agent/kernelless/src/bin/hostile_agent.rs instead of
the wasm agent. The agent speaks the protocol honestly up to Init and then
misbehaves as the function's Handler says (honest, trickle-init,
trickle-result, bomb, bomb-result, flood; see the agent's header)."""
import json
import os
import time

import pytest

from conftest import REPO, Emberd, create, wait_for

HOSTILE_AGENT = REPO / "guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/hostile_agent"


@pytest.fixture
def hostile(data_dir, monkeypatch):
    """Factory: an emberd (no spare VMs) booting the hostile agent."""
    assert HOSTILE_AGENT.is_file(), f"{HOSTILE_AGENT} not built (guest-agent/kernelless/build.sh)"
    monkeypatch.setenv("EMBER_WASM_AGENT", str(HOSTILE_AGENT))
    started = []

    def make(extra=()):
        e = Emberd(data_dir, ["--spare-vms", "0", *extra]).start()
        started.append(e)
        return e

    yield make
    for e in started:
        e.stop()


def make_function(client, name, handler, timeout=3, memory=128):
    create(client, name, Handler=handler, Timeout=timeout, MemorySize=memory)


def invoke(client, name, payload=b'{"n": 1}'):
    """(seconds taken, status, function error, parsed payload)."""
    start = time.monotonic()
    r = client.invoke(FunctionName=name, Payload=payload)
    took = time.monotonic() - start
    body = r["Payload"].read()
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return took, r["StatusCode"], r.get("FunctionError"), body


def assert_still_serves(e, name="honest"):
    """emberd answers, and an honest function (created before the attack)
    still runs: nothing accepted was lost."""
    c = e.client()
    names = [f["FunctionName"] for f in c.list_functions()["Functions"]]
    assert name in names, names
    _, status, err, body = invoke(c, name, b'{"still": "here"}')
    assert (status, err, body) == (200, None, {"still": "here"}), body


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def env_pids(e):
    return {x["Pid"] for x in e.envs() if x.get("Pid")}


def pidfile(e):
    try:
        return [int(p) for p in open(os.path.join(e.data_dir, "run", "vmm.pids")).read().split()]
    except OSError:
        return []


def cgroup_dir(pid: int, controller: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return f"/sys/fs/cgroup/{controller}{path}"
            if ctrls == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
                return f"/sys/fs/cgroup{path}"
    raise AssertionError(f"no {controller} cgroup for {pid}")


def children(pid: int):
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def cpu_quota(vmm: int):
    """(quota_us, period_us) of the VMM's cgroup, v1 or v2."""
    return cgroup_cpu_quota(cgroup_dir(vmm, "cpu"))


def cgroup_cpu_quota(d: str):
    """(quota_us, period_us) of cpu cgroup directory `d`, v1 or v2."""
    if os.path.exists(os.path.join(d, "cpu.max")):
        q, p = open(os.path.join(d, "cpu.max")).read().split()
        return int(q), int(p)
    q = int(open(os.path.join(d, "cpu.cfs_quota_us")).read())
    p = int(open(os.path.join(d, "cpu.cfs_period_us")).read())
    return q, p


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_vmms(e, n):
    """The VMM pids (the jailers' children) of `n` busy environments of
    emberd `e`, or None if fewer are busy within 60 s."""
    def found():
        busy = [x["Pid"] for x in e.envs() if x["State"] == "busy" and x.get("Pid")]
        vmms = [c for p in busy for c in children(p)]
        return vmms if len(vmms) >= n else None
    return wait_for(found, timeout=60)
