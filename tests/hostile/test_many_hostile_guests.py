"""Fifty hostile guests at once, every misbehaviour of the hostile agent
mixed (issue 13, items 3 and 4: "50 hostile guests leave emberd's RSS under
100 MiB"): trickled Init and Result frames, huge announced frames, a log
flood, a credit storm (see test_vsock_storm.py: the flood's driver once held
both cores of the host for up to 32 s). emberd's own RSS (VmRSS of its process, sampled every 20 ms) must
stay under 100 MiB, every call must end by its deadline with the error
that says what happened, every hostile environment must be gone afterwards
(no VMM left), and an honest function created before the attack still
runs. The frame-bomb test covers 50 bombs alone; this is the mixed crowd."""
import concurrent.futures as cf
import json
import threading
import time

import pytest

from conftest import vmm_alive, wait_for
from hostile_guest import (  # noqa: F401
    assert_still_serves, env_pids, hostile, invoke, make_function, rss_kib,
)

pytestmark = pytest.mark.vm

GUESTS = 50
RSS_LIMIT_KIB = 100 * 1024
TIMEOUT = 2
# Handler -> the function error it must end with.
KINDS = {
    "trickle-init": None,  # a failed start: 200 Unhandled or a 500, by the start deadline
    "trickle-result": "Sandbox.Timedout",
    "bomb": "Runtime.ExitError",
    "bomb-result": "Sandbox.Timedout",
    "flood": "Sandbox.Timedout",
    "credit-storm": "Sandbox.Timedout",
}


def raw_invoke(e, name):
    t0 = time.monotonic()
    status, headers, body = e.raw("POST", f"/2015-03-31/functions/{name}/invocations", b"{}")
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return time.monotonic() - t0, status, headers.get("x-amz-function-error"), body


def test_fifty_mixed_hostile_guests_leave_emberd_small_and_clean(hostile):
    # Init of a trickling start is cut at max(Timeout, boot timeout) + 1 s.
    # 15 s, not less: 50 VMs booting at once on 2 shared cores can take
    # more than 5 s to connect (seen at load 39: "did not connect within
    # 5s", a 500 instead of the guest's own error); what is tested is that
    # each hostile guest ends with its error, not how fast 50 boot.
    e = hostile(["--max-concurrency", "64", "--boot-timeout", "15"])
    c = e.client()
    make_function(c, "honest", "honest")
    for kind in KINDS:
        make_function(c, kind, kind, timeout=TIMEOUT)
    assert invoke(c, "honest")[1:3] == (200, None)
    honest_pids = env_pids(e)
    base = rss_kib(e.proc.pid)
    peak = [base]
    seen_pids = set()
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak.append(rss_kib(e.proc.pid))
            time.sleep(0.02)

    def watch_envs():
        while not done.is_set():
            seen_pids.update(env_pids(e))
            time.sleep(0.2)

    samplers = [threading.Thread(target=sample), threading.Thread(target=watch_envs)]
    for t in samplers:
        t.start()
    t0 = time.monotonic()
    try:
        names = [list(KINDS)[i % len(KINDS)] for i in range(GUESTS)]
        with cf.ThreadPoolExecutor(GUESTS) as pool:
            futs = [pool.submit(raw_invoke, e, n) for n in names]
            results = list(zip(names, [f.result(timeout=300) for f in futs]))
    finally:
        done.set()
        for t in samplers:
            t.join()
    wall = time.monotonic() - t0
    top = max(peak)
    slowest = max(r[0] for _, r in results)
    print(f"emberd RSS: {base} KiB before, peak {top} KiB during {GUESTS} mixed hostile "
          f"guests ({len(seen_pids - honest_pids)} VMs seen); slowest call {slowest:.1f} s, "
          f"all done in {wall:.1f} s")
    for name, (took, status, err, body) in results:
        expected = KINDS[name]
        if expected is None:
            assert status in (200, 500), (name, status, body)
        else:
            assert (status, err) == (200, "Unhandled"), (name, status, body)
            assert body["errorType"] == expected, (name, body)
        # Every deadline is a few seconds; 50 VMs on a shared 2-core host
        # get generous slack, but nothing may hang.
        assert took < 60, (name, took)
    assert top < RSS_LIMIT_KIB, f"emberd RSS peaked at {top} KiB (from {base} KiB)"
    # No hostile environment survives its failure.
    hostile_pids = seen_pids - honest_pids
    assert wait_for(lambda: not [x for x in e.envs() if x["Function"] in KINDS], timeout=30), \
        e.envs()
    assert wait_for(lambda: not [p for p in hostile_pids if vmm_alive(p)], timeout=30)
    assert_still_serves(e)
