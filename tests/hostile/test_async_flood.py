"""A hostile tenant must not starve another's asynchronous invocations
(issue 13, item 6). The async workers are shared by every account: account
A floods slow events (each runs 1.5 s of a 3 s timeout), then account B sends
a few quick ones. B's events must start within a second of their 202, not
after A's backlog (before the per-account scheduler: 5 s and more), and
every event of both accounts is still delivered exactly as acknowledged.

Measured: B's delay is the attempt log's StartMs (written before the payload
reaches a VM) minus the wall time at which B's 202 arrived."""
import json
import time

import pytest

from conftest import create, wait_for, wasm

pytestmark = pytest.mark.vm

B_ACCOUNT = "111111111111"
FLOOD = 12


def attempts(e, key, request_id):
    status, _, body = e.raw("GET", f"/ember/async/attempts?RequestId={request_id}", key=key)
    assert status == 200, body
    return json.loads(body)["Attempts"]


def event(c, name, n):
    r = c.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": n}).encode())
    assert r["StatusCode"] == 202
    return r["ResponseMetadata"]["RequestId"], time.time() * 1000


def test_one_tenants_slow_events_do_not_delay_anothers(make_emberd):
    # emberd's defaults: 4 async workers shared by every account.
    e = make_emberd(["--async-workers", "4"])
    a = e.client()
    b_key = e.add_key(account=B_ACCOUNT)
    b = e.client(b_key)
    create(a, "slow", wasm("slow"), Timeout=3)
    create(b, "quick", wasm("echo"))
    # B's environment is warm, so what is measured is the queue, not a boot.
    assert "FunctionError" not in b.invoke(FunctionName="quick", Payload=b"{}")

    flood = [event(a, "slow", n)[0] for n in range(FLOOD)]
    # A's backlog is being delivered (its first attempt has started).
    assert wait_for(lambda: attempts(e, None, flood[0]), timeout=30), e.log()

    sent = [event(b, "quick", n) for n in range(3)]
    delays = []
    for rid, at in sent:
        started = wait_for(lambda: attempts(e, b_key, rid), timeout=60, interval=0.02)
        assert started, f"B's event {rid} never started; log: {e.log()}"
        delays.append(started[0]["StartMs"] - at)
    print(f"B's event start delays behind A's flood of {FLOOD}: {[round(d) for d in delays]} ms")
    assert max(delays) < 1000, f"B's events waited behind A's flood: {delays} ms"

    # Nothing acknowledged was lost: every event of both accounts ran once,
    # successfully.
    for key, rids in ((None, flood), (b_key, [r for r, _ in sent])):
        for rid in rids:
            done = wait_for(lambda: [x for x in attempts(e, key, rid) if x["Result"]],
                            timeout=90, interval=0.2)
            assert [x["Result"] for x in done] == ["Success"], (rid, done, e.log())
    status, _, body = e.raw("GET", "/ember/async")
    assert json.loads(body)["Stored"] == 0
