"""Guests that announce huge frames must not make emberd allocate them
(issue 13, item 4: the 64 MiB Init cap applied to agent -> host frames too,
and the buffer was allocated and zeroed before the body arrived; 12 hostile
guests took emberd from 9 to 778 MiB). Now each kind has the cap its sender
can legitimately need, host-only kinds from a guest are refused from their
header, and a frame's buffer grows only as its bytes arrive."""
import concurrent.futures as cf
import json
import threading
import time

import pytest

from hostile_guest import (  # noqa: F401
    assert_still_serves, hostile, invoke, make_function, rss_kib,
)

pytestmark = pytest.mark.vm

GUESTS = 50
RSS_LIMIT_KIB = 100 * 1024


def raw_invoke(e, name):
    t0 = time.monotonic()
    status, headers, body = e.raw("POST", f"/2015-03-31/functions/{name}/invocations", b"{}")
    return time.monotonic() - t0, status, headers.get("x-amz-function-error"), json.loads(body)


def test_fifty_frame_bombs_leave_emberd_under_100_mib(hostile):
    e = hostile(["--max-concurrency", "64"])
    c = e.client()
    make_function(c, "honest", "honest")
    # `bomb`: the header of a 64 MiB Init (a host-only kind). `bomb-result`:
    # the header of the largest Result a frame may announce, 4 KiB, silence.
    make_function(c, "bomb", "bomb", timeout=6)
    make_function(c, "bombr", "bomb-result", timeout=6)
    assert invoke(c, "honest")[1:3] == (200, None)
    base = rss_kib(e.proc.pid)
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak.append(rss_kib(e.proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with cf.ThreadPoolExecutor(GUESTS) as pool:
            names = ["bomb" if i % 2 else "bombr" for i in range(GUESTS)]
            futs = [pool.submit(raw_invoke, e, n) for n in names]
            results = list(zip(names, [f.result(timeout=180) for f in futs]))
    finally:
        done.set()
        sampler.join()
    top = max(peak)
    print(f"emberd RSS: {base} KiB before, peak {top} KiB during {GUESTS} hostile guests")
    for name, (took, status, err, body) in results:
        assert status == 200 and err == "Unhandled", (name, body)
        if name == "bomb":
            # Refused from the header: the environment dies at once.
            assert body["errorType"] == "Runtime.ExitError", body
            assert "never sent in this direction" in body["errorMessage"], body
        else:
            assert body["errorType"] == "Sandbox.Timedout", body
    assert top < RSS_LIMIT_KIB, f"emberd RSS peaked at {top} KiB (from {base} KiB)"
    assert_still_serves(e)


def test_a_log_flood_ends_at_the_deadline_and_keeps_a_bounded_log(hostile):
    e = hostile()
    c = e.client()
    make_function(c, "honest", "honest")
    make_function(c, "flood", "flood", timeout=2)
    base = rss_kib(e.proc.pid)
    took, status, err, body = invoke(c, "flood")
    assert (status, err) == (200, "Unhandled"), body
    assert body["errorType"] == "Sandbox.Timedout", body
    assert took < 2 + 1 + 0.9, f"took {took:.2f} s"
    assert rss_kib(e.proc.pid) < base + 32 * 1024
    assert_still_serves(e)
