"""A function that loops must not hold a full host core until its timeout
(issue 13, item 8): every jailed VM gets a CFS quota by Lambda's rule (1,769
MB of memory = one vCPU, at least half a core), so a 128 MB function's VM is
capped at half a core however hard it spins."""
import concurrent.futures as cf
import os
import time

import pytest

from conftest import create, wait_for, wasm

pytestmark = pytest.mark.vm


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
    d = cgroup_dir(vmm, "cpu")
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


def test_a_spinning_function_is_held_to_its_cpu_quota(emberd):
    c = emberd.client()
    # slow.wat spins on the clock for 1.5 s of wall time.
    create(c, "hog", wasm("slow"), Timeout=30, MemorySize=128)
    with cf.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(lambda: c.invoke(FunctionName="hog", Payload=b"{}"))
        busy = wait_for(lambda: [e for e in emberd.envs() if e["State"] == "busy" and e["Pid"]],
                        timeout=30)
        assert busy
        vmm = wait_for(lambda: children(busy[0]["Pid"]), timeout=5)
        assert vmm, "the jailer's VMM"
        quota, period = cpu_quota(vmm[0])
        t0, c0 = time.monotonic(), cpu_seconds(vmm[0])
        time.sleep(1.0)
        used = (cpu_seconds(vmm[0]) - c0) / (time.monotonic() - t0)
        r = fut.result(timeout=60)
    assert "FunctionError" not in r
    assert (quota, period) == (50_000, 100_000), (quota, period)
    # Half a core, plus the tick accounting's slack.
    assert used < 0.6, f"the spinning VM used {used:.2f} cores"
