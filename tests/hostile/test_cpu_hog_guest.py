"""A function that loops must not hold a full host core until its timeout
(issue 13, item 8): every jailed VM gets a CFS quota by Lambda's rule (1,769
MB of memory = one vCPU, at least half a core), so a 128 MB function's VM is
capped at half a core however hard it spins."""
import concurrent.futures as cf
import time

import pytest

from conftest import create, wait_for, wasm
from hostile_guest import children, cpu_quota, cpu_seconds

pytestmark = pytest.mark.vm


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
