"""Unsigned control headers and replays (issue 13, item 7).

Before the fix only `host` and `x-amz-date` had to be signed: an
`X-Amz-Invocation-Type` added on the path to a signed synchronous invoke
turned it into a DryRun or an Event (likewise `X-Amz-Log-Type`,
`X-Amz-Client-Context`), and a signed request could be replayed as often as
wanted within the 5-minute clock window.
"""
import http.client
import json
import socket
import uuid

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import create


def signed_then_added(e, path, body, added, signed_extra=None):
    """POSTs a request signed with `signed_extra` headers, to which `added`
    headers the signature does not cover are added afterwards, as a man in
    the middle would."""
    req = AWSRequest(method="POST", url=e.endpoint + path, data=body,
                     headers=dict(signed_extra or {}))
    SigV4Auth(Credentials(e.key["AccessKeyId"], e.key["SecretAccessKey"]),
              "lambda", "us-east-1").add_auth(req)
    sent = dict(req.headers.items())
    sent.update(added)
    conn = http.client.HTTPConnection(e.endpoint.removeprefix("http://"), timeout=30)
    conn.request("POST", path, body=body, headers=sent)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


INVOKE = "/2015-03-31/functions/f/invocations"


@pytest.mark.parametrize("added", [
    {"X-Amz-Invocation-Type": "DryRun"},
    {"X-Amz-Invocation-Type": "Event"},
    {"X-Amz-Log-Type": "Tail"},
    {"X-Amz-Client-Context": "eyJjdXN0b20iOnsiYSI6MX19"},
], ids=["dryrun", "event", "log-type", "client-context"])
def test_an_unsigned_x_amz_header_on_a_signed_invoke_is_refused(emberd, added):
    c = emberd.client()
    create(c, "f")
    status, h, d = signed_then_added(emberd, INVOKE, b'{"a":1}', added)
    # Before the fix: DryRun -> 204, Event -> 202 (queued), the others ran.
    assert status == 403, (status, d)
    assert h["x-amzn-errortype"] == "InvalidSignatureException", h
    body = json.loads(d)
    assert body["Type"] == "User", body
    name = next(iter(added)).lower()
    assert "not signed" in body["message"] and name in body["message"], body
    # Nothing was queued.
    status, _, d = emberd.raw("GET", "/ember/async")
    assert json.loads(d)["Stored"] == 0


def test_signed_x_amz_headers_still_work(emberd):
    c = emberd.client()
    create(c, "f")
    # boto3 signs every header it sends.
    r = c.invoke(FunctionName="f", InvocationType="DryRun", Payload=b"{}")
    assert r["StatusCode"] == 204
    # The same header, signed, through the raw path.
    status, _, d = signed_then_added(emberd, INVOKE, b"{}", {},
                                     signed_extra={"X-Amz-Invocation-Type": "DryRun"})
    assert status == 204, d


def replay(e, raw_request):
    host, port = e.endpoint.removeprefix("http://").rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(raw_request)
    out = b""
    while b"\r\n\r\n" not in out:
        b = s.recv(65536)
        if not b:
            break
        out += b
    s.close()
    return out


def captured_request(e, path):
    """A signed GET, as bytes on the wire (what an eavesdropper keeps)."""
    req = AWSRequest(method="GET", url=e.endpoint + path)
    SigV4Auth(Credentials(e.key["AccessKeyId"], e.key["SecretAccessKey"]),
              "lambda", "us-east-1").add_auth(req)
    host = e.endpoint.removeprefix("http://")
    head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{head}\r\n".encode()


def test_replay_cache_refuses_a_second_use_of_a_signature(make_emberd):
    e = make_emberd(["--replay-cache"])
    wire = captured_request(e, "/2015-03-31/functions")
    assert replay(e, wire).startswith(b"HTTP/1.1 200")
    again = replay(e, wire)
    assert again.startswith(b"HTTP/1.1 403"), again
    assert b"InvalidSignatureException" in again and b"already received" in again, again
    # Identical calls signed in the same second have the same signature:
    # boto3 adds its invocation id after signing, so a client that repeats
    # a call must sign something unique into it (documented) ...
    c = e.client()
    c.meta.events.register("before-sign.lambda", lambda request, **_: request.headers.
                           __setitem__("X-Ember-Nonce", uuid.uuid4().hex))
    for _ in range(30):
        c.list_functions()
    # ... which the ember CLI does.
    for _ in range(3):
        r = e.ember("fn", "list")
        assert r.returncode == 0, r.stderr


def test_without_replay_cache_a_replay_is_accepted(emberd):
    """The cache is opt-in (documented): without it the window is open."""
    wire = captured_request(emberd, "/2015-03-31/functions")
    assert replay(emberd, wire).startswith(b"HTTP/1.1 200")
    assert replay(emberd, wire).startswith(b"HTTP/1.1 200")
