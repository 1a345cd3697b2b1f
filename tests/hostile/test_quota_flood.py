"""One tenant must not fill the host's disk (issue 13, item 5): per-account
byte quotas on function code, layers and queued async events, with Lambda's
error shapes. Account A floods each; past its quota it gets
CodeStorageExceededException (400) for code and layers and
TooManyRequestsException (429) for Event invokes, while account B is not
affected; what A deletes (or what is delivered) frees its quota again, and
nothing that was acknowledged is lost."""
import json
import os
import time

import botocore.exceptions
import pytest

from api_conftest import zipped
from conftest import create, wait_for, wasm
from test_gc_race import variant

pytestmark = pytest.mark.vm

B_ACCOUNT = "222222222222"
KIB = 1024


def refused(call, status, code):
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        call()
    err = exc.value.response
    assert (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]) == (status, code), err
    return err


def padded(module: bytes, tag: str, kib: int) -> bytes:
    """`module` with a custom section of `kib` KiB of random bytes: a
    distinct, incompressible package of about that size that runs the same."""
    return variant(module, tag + os.urandom(kib * KIB).hex()[: kib * KIB])


def test_code_and_layer_quotas(make_emberd):
    e = make_emberd(["--account-code-mib", "1", "--account-layers-mib", "1"])
    a = e.client()
    b = e.client(e.add_key(account=B_ACCOUNT))
    echo = wasm("echo")

    # Code: three packages of ~300 KiB fit in A's 1 MiB, a fourth does not.
    for i in range(3):
        create(a, f"f{i}", padded(echo, f"a{i}", 300))
    err = refused(lambda: create(a, "f3", padded(echo, "a3", 300)),
                  400, "CodeStorageExceededException")
    assert err["Error"]["Message"].startswith("Code storage limit exceeded"), err
    # A version copies $LATEST's code: it counts too.
    refused(lambda: a.publish_version(FunctionName="f0"), 400, "CodeStorageExceededException")
    refused(lambda: a.update_function_code(FunctionName="f1", ZipFile=padded(echo, "big", 700)),
            400, "CodeStorageExceededException")
    # B is not affected by A's usage.
    create(b, "g0", padded(echo, "b0", 300))
    create(b, "g1", padded(echo, "b1", 300))
    # Replacing code with code of the same size fits; deleting frees.
    a.update_function_code(FunctionName="f1", ZipFile=padded(echo, "a1-new", 300))
    a.delete_function(FunctionName="f2")
    create(a, "f3", padded(echo, "a3", 300))

    # Layers: two of ~400 KiB fit in 1 MiB, a third does not.
    def layer(client, name, kib):
        return client.publish_layer_version(
            LayerName=name, Content={"ZipFile": zipped({"blob.bin": os.urandom(kib * KIB)})})

    layer(a, "la", 400)
    layer(a, "la", 400)
    refused(lambda: layer(a, "lb", 400), 400, "CodeStorageExceededException")
    layer(b, "lb", 400)
    a.delete_layer_version(LayerName="la", VersionNumber=1)
    layer(a, "lb", 400)

    # Nothing acknowledged was lost: every function still there runs.
    for client, names in ((a, ["f0", "f1", "f3"]), (b, ["g0", "g1"])):
        for name in names:
            r = client.invoke(FunctionName=name, Payload=json.dumps({"n": name}).encode())
            assert json.loads(r["Payload"].read()) == {"n": name}, name
    assert sorted(f["FunctionName"] for f in a.list_functions()["Functions"]) == ["f0", "f1", "f3"]
    assert e.proc.poll() is None


def attempts(e, key, rid):
    status, _, body = e.raw("GET", f"/ember/async/attempts?RequestId={rid}", key=key)
    assert status == 200, body
    return json.loads(body)["Attempts"]


def test_queued_event_quota(make_emberd):
    # A's events fail and wait 8 s for their retry: they stay queued.
    e = make_emberd(["--account-queue-mib", "1", "--async-retry-delays-ms", "8000,8000"])
    a = e.client()
    b_key = e.add_key(account=B_ACCOUNT)
    b = e.client(b_key)
    create(a, "failing", wasm("fail"), Timeout=5)
    create(b, "quick", wasm("echo"))
    payload = json.dumps({"pad": "x" * (200 * KIB)}).encode()

    def event(client, name, body=payload):
        r = client.invoke(FunctionName=name, InvocationType="Event", Payload=body)
        assert r["StatusCode"] == 202
        return r["ResponseMetadata"]["RequestId"]

    start = time.monotonic()
    accepted = [event(a, "failing") for _ in range(5)]  # 5 x 200 KiB fit in 1 MiB
    err = refused(lambda: event(a, "failing"), 429, "TooManyRequestsException")
    assert err.get("Reason") == "CallerRateLimitExceeded", err
    assert "asynchronous events queued" in err["Error"]["Message"], err
    assert time.monotonic() - start < 6, "the flood took longer than the retry delay"
    # Another account's events are accepted and run at once.
    rid = event(b, "quick", b'{"n": 1}')
    done = wait_for(lambda: [x for x in attempts(e, b_key, rid) if x["Result"]], timeout=30)
    assert [x["Result"] for x in done] == ["Success"], done

    # Once A's events have had their three attempts (and are dropped), its
    # quota is free again; every accepted event was attempted three times.
    for rid in accepted:
        got = wait_for(lambda: len([x for x in attempts(e, None, rid) if x["Result"]]) == 3
                       and attempts(e, None, rid), timeout=60, interval=0.2)
        assert got, (rid, attempts(e, None, rid), e.log())
    assert wait_for(lambda: json.loads(e.raw("GET", "/ember/async")[2])["Stored"] == 0, timeout=10)
    event(a, "failing")
    assert e.proc.poll() is None


def test_unread_destination_records_count_against_the_quota(make_emberd):
    # Each success record carries the 200 KiB request (and the echo): a
    # 1 MiB quota holds a few unread records, then the next event still
    # runs but its record does not fit.
    quota = 1 << 20
    e = make_emberd(["--account-queue-mib", "1"])
    c = e.client()
    create(c, "echo", wasm("echo"))
    c.put_function_event_invoke_config(FunctionName="echo", DestinationConfig={
        "OnSuccess": {"Destination": "arn:aws:sqs:us-east-1:000000000000:ok"}})
    payload = json.dumps({"pad": "x" * (200 * KIB)}).encode()

    def event():
        r = c.invoke(FunctionName="echo", InvocationType="Event", Payload=payload)
        assert r["StatusCode"] == 202
        return r["ResponseMetadata"]["RequestId"]

    def queue():
        status, _, body = e.raw("GET", "/ember/queues/ok?MaxItems=100")
        assert status == 200, body
        return json.loads(body)["Messages"]

    def failures():
        text = e.raw("GET", "/metrics")[2].decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("ember_destination_delivery_failures_total{"))

    # One event at a time, each settled (record delivered or refused)
    # before the next, until a record is refused.
    rid = None
    for sent in range(1, 11):
        rid = event()
        assert wait_for(lambda: len(queue()) + failures() == sent, timeout=60), \
            (sent, len(queue()), failures(), e.log())
        if failures():
            break
    assert failures() == 1, (len(queue()), e.log())
    held = queue()
    assert 1 <= len(held) < sent
    assert sum(len(json.dumps(m["Body"])) for m in held) <= quota
    # The refused record is logged with its event (the event itself ran).
    assert f"destination record for event {rid}" in e.log(), e.log()
    # Deleting the unread records frees the quota: records flow again.
    for m in held:
        assert e.raw("DELETE", f"/ember/queues/ok?MessageId={m['MessageId']}")[0] in (200, 204)
    event()
    assert wait_for(lambda: len(queue()) == 1, timeout=60), (queue(), e.log())
    assert failures() == 1
    assert e.proc.poll() is None
