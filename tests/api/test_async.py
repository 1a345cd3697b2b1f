"""Asynchronous invocation (InvocationType Event) through boto3 against a real
emberd with real microVMs: 202 only once stored, the 1 MiB limit, event invoke
config CRUD and validation, the retry schedule (short test clock), on-success
and on-failure destinations (emberd's local queues), max-age expiry, events
queueing behind reserved concurrency, and 1,000 events surviving two SIGKILLs.

What the tests observe: destination records (Lambda's record shape) read
from emberd's queues, and emberd's attempt log (`/ember/async/attempts`), in
which an attempt is recorded durably before its payload reaches a VM and
completed with its outcome."""
import json
import re
import threading
import time

import pytest

from conftest import create, wait_for, wasm

# A short test clock: retries after 300 ms then 600 ms, throttle backoff
# 50 ms doubling to 400 ms.
FAST = ["--async-retry-delays-ms", "300,600", "--async-backoff-ms", "50,400"]
ACCOUNT = "000000000000"


def queue_arn(q):
    return f"arn:aws:sqs:us-east-1:{ACCOUNT}:{q}"


def get_json(e, path):
    status, _, body = e.raw("GET", path)
    assert status == 200, (path, status, body)
    return json.loads(body)


def records(e, queue):
    """Every message body of a local queue, oldest first (all pages)."""
    out, marker = [], None
    while True:
        path = f"/ember/queues/{queue}?MaxItems=1000" + (f"&Marker={marker}" if marker else "")
        v = get_json(e, path)
        out += [m["Body"] for m in v["Messages"]]
        marker = v.get("NextMarker")
        if not marker:
            return out


def attempts(e, request_id=None):
    out, after = [], 0
    while True:
        q = f"/ember/async/attempts?MaxItems=5000&After={after}"
        if request_id:
            q += f"&RequestId={request_id}"
        v = get_json(e, q)
        out += v["Attempts"]
        if "NextAfter" not in v:
            return out
        after = v["NextAfter"]


def wait_records(e, queue, n, timeout=60):
    got = wait_for(lambda: len(records(e, queue)) >= n, timeout=timeout, interval=0.1)
    assert got, f"{queue}: expected {n} records, have {len(records(e, queue))}; log: {e.log()}"
    return records(e, queue)


def event(c, name, payload, **kw):
    r = c.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(payload).encode(), **kw)
    assert r["StatusCode"] == 202 and r["Payload"].read() == b""
    return r["ResponseMetadata"]["RequestId"]


def config(c, name, **kw):
    return c.put_function_event_invoke_config(FunctionName=name, **kw)


@pytest.mark.vm
def test_event_is_stored_then_processed_to_on_success(make_emberd):
    e = make_emberd(FAST)
    c = e.client()
    create(c, "echo", wasm("echo"))
    config(c, "echo", DestinationConfig={"OnSuccess": {"Destination": queue_arn("ok")}})
    rid = event(c, "echo", {"n": 1})
    [rec] = wait_records(e, "ok", 1)
    assert rec["version"] == "1.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["timestamp"])
    assert rec["requestContext"] == {
        "requestId": rid, "condition": "Success", "approximateInvokeCount": 1,
        "functionArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:echo:$LATEST"}
    assert rec["requestPayload"] == {"n": 1} and rec["responsePayload"] == {"n": 1}
    assert rec["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    [a] = attempts(e, rid)
    assert a["Result"] == "Success" and a["Attempt"] == 1 and a["EndMs"] >= a["StartMs"]
    assert get_json(e, "/ember/async")["Stored"] == 0

    # The same queue through the CLI: list, read, delete one message.
    def ember(*args):
        p = e.ember("--json", "queue", *args)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    assert {q["Name"]: q["Messages"] for q in ember("list")["Queues"]} == {"ok": 1}
    [msg] = ember("read", "ok")["Messages"]
    assert msg["Body"] == rec
    assert ember("delete", "ok", "--message", msg["MessageId"])["Deleted"] == 1
    assert records(e, "ok") == []
    status, _, _ = e.raw("DELETE", f"/ember/queues/ok?MessageId={msg['MessageId']}")
    assert status == 404
    # Counted in the metrics (received once, never dropped).
    status, _, text = e.raw("GET", "/metrics")
    assert status == 200
    samples = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.decode().splitlines()
               if line.startswith("ember_async_events_") and 'function="echo"' in line}
    received = [v for k, v in samples.items() if k.startswith("ember_async_events_received_total")]
    assert received == ["1"], samples


@pytest.mark.vm
def test_event_payload_limit_and_bad_requests(make_emberd):
    e = make_emberd(FAST)
    c = e.client()
    create(c, "echo", wasm("echo"))
    config(c, "echo", MaximumRetryAttempts=0)
    exactly = json.dumps("x" * (1024 * 1024 - 2)).encode()
    assert len(exactly) == 1024 * 1024
    r = c.invoke(FunctionName="echo", InvocationType="Event", Payload=exactly)
    assert r["StatusCode"] == 202
    with pytest.raises(c.exceptions.RequestTooLargeException):
        c.invoke(FunctionName="echo", InvocationType="Event", Payload=exactly + b" ")
    status, h, _ = e.raw("POST", "/2015-03-31/functions/echo/invocations", b"{not json",
                         {"X-Amz-Invocation-Type": "Event"})
    assert status == 400 and h["x-amzn-errortype"] == "InvalidRequestContentException"
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.invoke(FunctionName="nope", InvocationType="Event", Payload=b"{}")
    # Nothing refused was stored; the accepted 1 MiB event is processed.
    assert wait_for(lambda: get_json(e, "/ember/async")["Stored"] == 0, timeout=60)
    assert len(attempts(e)) == 1


def test_event_invoke_config_crud_and_validation(emberd):
    c = emberd.client()
    create(c, "cfg")
    c.publish_version(FunctionName="cfg")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.get_function_event_invoke_config(FunctionName="cfg")
    put = config(c, "cfg", MaximumRetryAttempts=1,
                 DestinationConfig={"OnFailure": {"Destination": queue_arn("dlq")}})
    assert put["FunctionArn"].endswith(":function:cfg:$LATEST")
    assert (put["MaximumRetryAttempts"], put["MaximumEventAgeInSeconds"]) == (1, 21600)
    assert put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {"Destination": queue_arn("dlq")}}
    got = c.get_function_event_invoke_config(FunctionName="cfg")
    assert got["MaximumRetryAttempts"] == 1 and got["DestinationConfig"] == put["DestinationConfig"]
    # Update merges: the destination stays.
    up = c.update_function_event_invoke_config(FunctionName="cfg", MaximumEventAgeInSeconds=60)
    assert (up["MaximumRetryAttempts"], up["MaximumEventAgeInSeconds"]) == (1, 60)
    assert up["DestinationConfig"]["OnFailure"] == {"Destination": queue_arn("dlq")}
    # Put replaces: omitted fields return to their defaults.
    put = config(c, "cfg", MaximumEventAgeInSeconds=120)
    assert (put["MaximumRetryAttempts"], put["DestinationConfig"]) == (2, {"OnSuccess": {}, "OnFailure": {}})
    config(c, "cfg", Qualifier="1", MaximumRetryAttempts=0)
    listed = c.list_function_event_invoke_configs(FunctionName="cfg")["FunctionEventInvokeConfigs"]
    assert sorted(x["FunctionArn"].rsplit(":", 1)[1] for x in listed) == ["$LATEST", "1"]
    page = c.list_function_event_invoke_configs(FunctionName="cfg", MaxItems=1)
    assert len(page["FunctionEventInvokeConfigs"]) == 1 and "NextMarker" in page
    rest = c.list_function_event_invoke_configs(FunctionName="cfg", Marker=page["NextMarker"])
    assert len(rest["FunctionEventInvokeConfigs"]) == 1 and "NextMarker" not in rest
    c.delete_function_event_invoke_config(FunctionName="cfg", Qualifier="1")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.get_function_event_invoke_config(FunctionName="cfg", Qualifier="1")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.delete_function_event_invoke_config(FunctionName="cfg", Qualifier="1")

    # Validation: a clean 400 and nothing changed.
    bad = [
        {"MaximumRetryAttempts": 3},
        {"MaximumRetryAttempts": -1},
        {"MaximumEventAgeInSeconds": 59},
        {"MaximumEventAgeInSeconds": 21601},
        {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sns:us-east-1:000000000000:t"}}},
        {"DestinationConfig": {"OnSuccess": {"Destination": "not-an-arn"}}},
        {"DestinationConfig": {"OnSuccess": {"Destination": queue_arn("../etc")}}},
        {"Unknown": 1},
        {"MaximumRetryAttempts": "two"},
    ]
    for body in bad:
        status, h, out = emberd.raw("PUT", "/2019-09-25/functions/cfg/event-invoke-config", body)
        assert status == 400 and h["x-amzn-errortype"] == "InvalidParameterValueException", (body, out)
    status, _, _ = emberd.raw("PUT", "/2019-09-25/functions/cfg/event-invoke-config", b"{oops")
    assert status == 400
    assert c.get_function_event_invoke_config(FunctionName="cfg")["MaximumEventAgeInSeconds"] == 120
    with pytest.raises(c.exceptions.InvalidParameterValueException):
        config(c, "cfg", MaximumRetryAttempts=5)
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        config(c, "missing", MaximumRetryAttempts=0)
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        config(c, "cfg", Qualifier="7", MaximumRetryAttempts=0)
    status, _, _ = emberd.raw("GET", "/2019-09-25/functions/cfg/event-invoke-config/list?MaxItems=51")
    assert status == 400
    status, _, _ = emberd.raw("GET", "/ember/queues/bad.name")
    assert status == 400
    # Another account sees neither this function's configs nor this
    # account's queues, and cannot name them as destinations.
    other = emberd.add_key(account="111111111111")
    oc = emberd.client(other)
    with pytest.raises(oc.exceptions.ResourceNotFoundException):
        oc.get_function_event_invoke_config(FunctionName="cfg")
    create(oc, "cfg")
    with pytest.raises(oc.exceptions.InvalidParameterValueException):
        config(oc, "cfg", DestinationConfig={"OnFailure": {"Destination": queue_arn("dlq")}})
    ok = config(oc, "cfg", DestinationConfig={
        "OnFailure": {"Destination": "arn:aws:sqs:us-east-1:111111111111:dlq"}})
    assert ok["FunctionArn"] == "arn:aws:lambda:us-east-1:111111111111:function:cfg:$LATEST"
    assert c.get_function_event_invoke_config(FunctionName="cfg")["DestinationConfig"]["OnFailure"] == {}
    # Deleting the function deletes its configs.
    c.delete_function(FunctionName="cfg")
    create(c, "cfg")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.get_function_event_invoke_config(FunctionName="cfg")


@pytest.mark.vm
def test_retry_schedule_and_on_failure_destination(make_emberd):
    e = make_emberd(FAST)
    c = e.client()
    create(c, "fail", wasm("fail"))
    config(c, "fail", DestinationConfig={"OnFailure": {"Destination": queue_arn("dlq")},
                                         "OnSuccess": {"Destination": queue_arn("ok")}})
    rid = event(c, "fail", {"k": "v"})
    [rec] = wait_records(e, "dlq", 1)
    ctx = rec["requestContext"]
    assert (ctx["requestId"], ctx["condition"], ctx["approximateInvokeCount"]) == (rid, "RetriesExhausted", 3)
    assert rec["requestPayload"] == {"k": "v"}
    assert rec["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert rec["responsePayload"]["errorType"] == "Runtime.ExitError"
    tries = attempts(e, rid)
    assert [a["Attempt"] for a in tries] == [1, 2, 3]
    assert all(a["Result"] == "FunctionError:Runtime.ExitError" for a in tries)
    gaps = [b["StartMs"] - a["EndMs"] for a, b in zip(tries, tries[1:])]
    print(f"retry gaps {gaps} ms (configured 300, 600)")
    assert 300 <= gaps[0] < 300 + 10_000 and 600 <= gaps[1] < 600 + 10_000, gaps
    assert records(e, "ok") == []

    # MaximumRetryAttempts 0: one attempt, then the destination.
    config(c, "fail", MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": queue_arn("dlq")}})
    rid = event(c, "fail", [1])
    recs = wait_records(e, "dlq", 2)
    assert recs[1]["requestContext"]["requestId"] == rid
    assert recs[1]["requestContext"]["approximateInvokeCount"] == 1
    assert len(attempts(e, rid)) == 1


@pytest.mark.vm
def test_max_age_expiry(make_emberd):
    # One "second" of MaximumEventAgeInSeconds lasts 100 ms here: 60 s -> 6 s.
    e = make_emberd(["--async-retry-delays-ms", "1000,20000", "--async-backoff-ms", "50,200",
                     "--async-age-unit-ms", "100"])
    c = e.client()
    # Reserved concurrency 0: every delivery is throttled, so the event waits
    # (retried with backoff, never invoked) until it is too old.
    create(c, "held", wasm("echo"))
    c.put_function_concurrency(FunctionName="held", ReservedConcurrentExecutions=0)
    config(c, "held", MaximumEventAgeInSeconds=60, DestinationConfig={"OnFailure": {"Destination": queue_arn("old")}})
    t0 = time.monotonic()
    rid = event(c, "held", {"late": True})
    [rec] = wait_records(e, "old", 1)
    waited = time.monotonic() - t0
    assert rec["requestContext"]["condition"] == "EventAgeExceeded"
    assert rec["requestContext"]["requestId"] == rid and rec["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in rec and rec["requestPayload"] == {"late": True}
    assert attempts(e, rid) == [], "a throttled event must never reach an environment"
    assert 5.5 < waited < 40, waited

    # A failing function: the retry after 1 s fits in 6 s (if the first,
    # cold attempt ends within 5 s), the next (20 s) does not, so the event
    # expires after two invocations.
    create(c, "fail", wasm("fail"))
    config(c, "fail", MaximumEventAgeInSeconds=60, DestinationConfig={"OnFailure": {"Destination": queue_arn("old")}})
    rid = event(c, "fail", {})
    rec = wait_records(e, "old", 2)[1]
    assert rec["requestContext"]["condition"] == "EventAgeExceeded"
    assert rec["requestContext"]["approximateInvokeCount"] == 2 == len(attempts(e, rid))
    assert rec["responseContext"]["functionError"] == "Unhandled"


@pytest.mark.vm
def test_events_queue_behind_reserved_concurrency(make_emberd):
    e = make_emberd(FAST + ["--async-workers", "4"])
    c = e.client()
    # `counter` keeps a call count per environment; "1" spins 0.5 s.
    create(c, "one", wasm("counter"))
    c.put_function_concurrency(FunctionName="one", ReservedConcurrentExecutions=1)
    config(c, "one", DestinationConfig={"OnSuccess": {"Destination": queue_arn("ok")}})
    rids = [event(c, "one", 1) for _ in range(5)]
    # While they run, a synchronous call competes for the same single unit.
    throttled = 0
    while len(records(e, "ok")) < 5:
        try:
            c.invoke(FunctionName="one", Payload=b"0")
        except c.exceptions.TooManyRequestsException:
            throttled += 1
        time.sleep(0.05)
        assert throttled < 10_000
    recs = wait_records(e, "ok", 5)
    assert sorted(r["requestContext"]["requestId"] for r in recs) == sorted(rids)
    envs = {a["Environment"] for rid in rids for a in attempts(e, rid)}
    assert len(envs) == 1, f"reserved concurrency 1 used {len(envs)} environments"
    spans = sorted((a["StartMs"], a["EndMs"]) for rid in rids for a in attempts(e, rid))
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:])), f"events overlapped: {spans}"
    assert throttled > 0, "the synchronous calls never met a busy reservation"


@pytest.mark.vm
def test_thousand_events_survive_two_sigkills(make_emberd):
    """1,000 events, emberd SIGKILLed twice while accepting and processing:
    every acknowledged event is processed (exactly one success record, its
    payload intact), every index at least once, and no request id is ever
    being delivered twice at once: its attempts never overlap, and attempts
    interrupted by a kill end before any later attempt begins (an attempt of
    the next run starts only after the test saw the killed emberd dead)."""
    n, senders = 1000, 8
    flags = FAST + ["--async-workers", "6"]
    e = make_emberd(flags)
    c = e.client()
    create(c, "echo", wasm("echo"))
    config(c, "echo", DestinationConfig={"OnSuccess": {"Destination": queue_arn("done")}})
    state = {"e": e}
    acked = {}                   # index -> request id acknowledged (202)
    lock = threading.Lock()
    failures = []

    def send(indices):
        client, endpoint = None, None
        for i in indices:
            deadline = time.monotonic() + 120
            while True:
                cur = state["e"]
                if client is None or endpoint != cur.endpoint:
                    client, endpoint = cur.client(), cur.endpoint
                try:
                    rid = event(client, "echo", {"i": i})
                    with lock:
                        acked[i] = rid
                    break
                except Exception as ex:  # connection refused/reset while emberd is down
                    if time.monotonic() > deadline:
                        failures.append((i, repr(ex)))
                        return
                    client = None
                    time.sleep(0.05)

    t0 = time.monotonic()
    threads = [threading.Thread(target=send, args=(range(k, n, senders),)) for k in range(senders)]
    for t in threads:
        t.start()
    boots, kills = [get_json(e, "/ember/async")["Boot"]], []
    for threshold in (300, 700):
        assert wait_for(lambda: len(acked) >= threshold, timeout=120, interval=0.01), len(acked)
        e.kill()
        kills.append(time.time() * 1000)  # the killed emberd is dead (reaped) now
        e = make_emberd(flags)
        state["e"] = e
        boots.append(get_json(e, "/ember/async")["Boot"])
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    assert len(acked) == n and boots == sorted(set(boots)) and len(boots) == 3, boots
    assert wait_for(lambda: get_json(e, "/ember/async")["Stored"] == 0, timeout=150, interval=0.2), \
        get_json(e, "/ember/async")
    took = time.monotonic() - t0
    recs = records(e, "done")
    by_rid = {}
    for r in recs:
        rid = r["requestContext"]["requestId"]
        assert rid not in by_rid, f"two success records for {rid}"
        assert r["requestPayload"] == r["responsePayload"] and set(r["requestPayload"]) == {"i"}
        by_rid[rid] = r
    for i, rid in acked.items():
        assert rid in by_rid, f"acknowledged event {i} ({rid}) was lost"
        assert by_rid[rid]["requestPayload"] == {"i": i}
    assert {r["requestPayload"]["i"] for r in recs} == set(range(n))

    log = attempts(e)
    per_rid = {}
    for a in log:
        per_rid.setdefault(a["RequestId"], []).append(a)
    interrupted = 0
    for rid, tries in per_rid.items():
        tries.sort(key=lambda a: a["Id"])
        assert [a["Attempt"] for a in tries] == list(range(1, len(tries) + 1)), tries
        for a, b in zip(tries, tries[1:]):
            assert a["EndMs"] is not None and a["EndMs"] <= b["StartMs"], f"{rid} overlapped: {a} {b}"
            assert a["Result"] in ("Interrupted", "ServiceError") or a["Result"].startswith("FunctionError"), a
            if a["Result"] == "Interrupted":
                interrupted += 1
                killed = kills[boots.index(a["Boot"])]
                assert a["StartMs"] <= killed <= b["StartMs"], (a, b, kills)
                assert b["Boot"] > a["Boot"]
        assert tries[-1]["Result"] == "Success" or rid not in by_rid
        if rid in by_rid:
            assert by_rid[rid]["requestContext"]["approximateInvokeCount"] == len(tries)
    assert set(by_rid) <= set(per_rid)
    redelivered = sum(len(t) > 1 for t in per_rid.values())
    print(f"{len(recs)} records for {n} events ({len(by_rid) - n} extra from unacknowledged sends), "
          f"{len(log)} attempts, {interrupted} interrupted by a kill, {redelivered} redelivered, "
          f"{took:.1f} s in all")
    assert took < 180
