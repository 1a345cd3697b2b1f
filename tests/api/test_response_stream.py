"""InvokeWithResponseStream through boto3's own event-stream parser: the
response arrives as PayloadChunk events that add up to the function's
answer, then one InvokeComplete (the error's type and message for a function
error, the log tail when asked for); an invocation type the operation does
not have is refused."""
import base64
import json

import pytest
from botocore.exceptions import ClientError

from conftest import create, wasm

pytestmark = pytest.mark.vm


def streamed(c, name, payload, **kw):
    r = c.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(payload).encode(), **kw)
    chunks, complete = [], None
    for event in r["EventStream"]:
        if "PayloadChunk" in event:
            assert complete is None, "a chunk after InvokeComplete"
            chunks.append(event["PayloadChunk"]["Payload"])
        elif "InvokeComplete" in event:
            complete = event["InvokeComplete"]
        else:
            pytest.fail(f"unexpected event {event}")
    assert complete is not None, "no InvokeComplete"
    return r, b"".join(chunks), chunks, complete


def test_a_large_answer_arrives_in_chunks_that_add_up(emberd):
    c = emberd.client()
    create(c, "echo", wasm("echo"))
    # echo.wat answers up to 64 KiB; emberd's chunks are 32 KiB: two.
    payload = {"blob": "x" * 60_000}
    r, body, chunks, complete = streamed(c, "echo", payload)
    assert r["StatusCode"] == 200 and r["ExecutedVersion"] == "$LATEST"
    assert r["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    assert json.loads(body) == payload
    assert [len(x) for x in chunks] == [32 * 1024, len(body) - 32 * 1024], len(body)
    assert "ErrorCode" not in complete and "ErrorDetails" not in complete, complete
    # The same function through the buffered Invoke answers the same bytes.
    whole = c.invoke(FunctionName="echo", Payload=json.dumps(payload).encode())["Payload"].read()
    assert whole == body


def test_a_function_error_ends_the_stream_with_its_type_and_message(emberd):
    c = emberd.client()
    create(c, "fail", wasm("fail"))
    doc = json.loads(c.invoke(FunctionName="fail", Payload=b"{}")["Payload"].read())
    _, body, _, complete = streamed(c, "fail", {}, LogType="Tail")
    assert body == b""
    assert complete["ErrorCode"] == doc["errorType"], (complete, doc)
    assert complete["ErrorDetails"] == doc["errorMessage"], (complete, doc)
    log = base64.b64decode(complete["LogResult"]).decode()
    assert "failing on purpose" in log and "REPORT RequestId" in log, log


def test_a_qualifier_picks_the_version(emberd):
    c = emberd.client()
    create(c, "v", wasm("echo"))
    c.publish_version(FunctionName="v")
    r, body, _, _ = streamed(c, "v", {"q": 1}, Qualifier="1")
    assert r["ExecutedVersion"] == "1" and json.loads(body) == {"q": 1}


def test_an_event_invocation_is_not_a_streaming_one(emberd):
    c = emberd.client()
    create(c, "e", wasm("echo"))
    with pytest.raises(ClientError) as e:
        c.invoke_with_response_stream(FunctionName="e", InvocationType="Event", Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        c.invoke_with_response_stream(FunctionName="missing", Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
