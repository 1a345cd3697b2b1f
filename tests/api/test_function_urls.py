"""Function URLs through a real emberd (`--url-listen`): the URL config
operations with boto3, and calls through the URL listener with plain HTTP
(http.client with the URL's Host header, the path form, and curl on the
FunctionUrl itself): Lambda's payload format 2.0 event, the response
mapping, the two policy grants a public URL needs, SigV4 for AWS_IAM URLs,
CORS, and RESPONSE_STREAM's prelude."""
import http.client
import json
import os
import shutil
import subprocess
import threading
import urllib.parse

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import create, wasm

pytestmark = pytest.mark.vm


def url_emberd(make_emberd, extra=()):
    """An emberd serving function URLs (with `extra` flags); its URL
    listener's address (read from its stdout by a thread: the fixture's
    readline may have buffered the line already, so select() on the pipe
    cannot tell)."""
    e = make_emberd(["--url-listen", "127.0.0.1:0", *extra])
    found = []

    def read():
        for raw in e.proc.stdout:
            line = raw.decode()
            if "serves function URLs on http://" in line:
                found.append(line.split("http://")[1].split()[0])
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(30)
    assert found, f"emberd never printed its function URL address; log: {e.log()}"
    e.url_addr = found[0]
    return e


def call(e, url, method="GET", path="/", body=b"", headers=None, key=None, via_path=False):
    """One HTTP request to function URL `url` through the listener, signed
    with SigV4 (service lambda) when `key` is given."""
    host = urllib.parse.urlsplit(url).netloc
    url_id = host.split(".")[0]
    target = f"/lambda-url/{url_id}{path}" if via_path else path
    headers = dict(headers or {})
    if not via_path:
        headers["Host"] = host
    if key:
        base = f"http://{e.url_addr}" if via_path else url.rstrip("/")
        req = AWSRequest(method=method, url=base + target, data=body, headers=headers)
        botocore.auth.SigV4Auth(Credentials(key["AccessKeyId"], key["SecretAccessKey"]),
                                "lambda", "us-east-1").add_auth(req)
        headers = dict(req.headers.items())
    conn = http.client.HTTPConnection(e.url_addr, timeout=120)
    conn.request(method, target, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.msg.get_all("set-cookie") or [], data


def make_public(c, name, qualifier=None):
    """The two statements Lambda requires for a public URL since October 2025."""
    q = {"Qualifier": qualifier} if qualifier else {}
    c.add_permission(FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl",
                     Principal="*", FunctionUrlAuthType="NONE", **q)
    c.add_permission(FunctionName=name, StatementId="url-invoke", Action="lambda:InvokeFunction",
                     Principal="*", InvokedViaFunctionUrl=True, **q)


def test_url_config_operations_follow_the_lambda_model(make_emberd):
    e = url_emberd(make_emberd)
    c = e.client()
    create(c, "site", wasm("echo"))
    made = c.create_function_url_config(FunctionName="site", AuthType="AWS_IAM")
    assert made["ResponseMetadata"]["HTTPStatusCode"] == 201
    port = e.url_addr.split(":")[1]
    assert made["FunctionUrl"].startswith("http://")
    assert made["FunctionUrl"].endswith(f".lambda-url.us-east-1.localhost:{port}/")
    assert len(made["FunctionUrl"].split("//")[1].split(".")[0]) == 32
    assert made["FunctionArn"].endswith(":function:site")
    assert made["AuthType"] == "AWS_IAM" and made["InvokeMode"] == "BUFFERED"
    with pytest.raises(c.exceptions.ResourceConflictException):
        c.create_function_url_config(FunctionName="site", AuthType="NONE")
    got = c.get_function_url_config(FunctionName="site")
    assert got["FunctionUrl"] == made["FunctionUrl"] and "LastModifiedTime" in got
    cors = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["x-custom"], "MaxAge": 300, "AllowCredentials": True}
    up = c.update_function_url_config(FunctionName="site", AuthType="NONE", Cors=cors)
    assert up["AuthType"] == "NONE" and up["Cors"]["AllowOrigins"] == ["https://app.example"]
    assert up["Cors"]["MaxAge"] == 300 and up["FunctionUrl"] == made["FunctionUrl"]
    # An alias gets its own URL; a version number cannot have one.
    c.create_alias(FunctionName="site", Name="live", FunctionVersion="$LATEST")
    live = c.create_function_url_config(FunctionName="site", Qualifier="live", AuthType="NONE")
    assert live["FunctionArn"].endswith(":function:site:live")
    assert live["FunctionUrl"] != made["FunctionUrl"]
    listed = c.list_function_url_configs(FunctionName="site")["FunctionUrlConfigs"]
    assert sorted(u["FunctionUrl"] for u in listed) == sorted([made["FunctionUrl"], live["FunctionUrl"]])
    page = c.list_function_url_configs(FunctionName="site", MaxItems=1)
    assert len(page["FunctionUrlConfigs"]) == 1 and page["NextMarker"]
    c.publish_version(FunctionName="site")
    with pytest.raises(c.exceptions.InvalidParameterValueException):
        c.create_function_url_config(FunctionName="site", Qualifier="1", AuthType="NONE")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.create_function_url_config(FunctionName="site", Qualifier="nope", AuthType="NONE")
    with pytest.raises(c.exceptions.InvalidParameterValueException):
        c.create_function_url_config(FunctionName="site", Qualifier="live", AuthType="OPEN")
    with pytest.raises(c.exceptions.InvalidParameterValueException):
        c.update_function_url_config(FunctionName="site", Cors={"AllowMethods": ["FETCH"]})
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.get_function_url_config(FunctionName="missing")
    c.delete_function_url_config(FunctionName="site")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.get_function_url_config(FunctionName="site")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.delete_function_url_config(FunctionName="site")
    # The deleted URL no longer answers; the alias's still does (policy aside).
    assert call(e, made["FunctionUrl"])[0] == 404
    assert call(e, live["FunctionUrl"])[0] == 403


def test_deleting_an_alias_or_the_function_deletes_its_url_configs(make_emberd):
    e = url_emberd(make_emberd)
    c = e.client()
    create(c, "gone", wasm("echo"))
    c.create_alias(FunctionName="gone", Name="live", FunctionVersion="$LATEST")
    plain = c.create_function_url_config(FunctionName="gone", AuthType="NONE")["FunctionUrl"]
    live = c.create_function_url_config(FunctionName="gone", Qualifier="live",
                                        AuthType="NONE")["FunctionUrl"]
    c.delete_alias(FunctionName="gone", Name="live")
    # As Lambda: the alias's URL config goes with it, the function's stays.
    listed = c.list_function_url_configs(FunctionName="gone")["FunctionUrlConfigs"]
    assert [u["FunctionUrl"] for u in listed] == [plain]
    assert call(e, live)[0] == 404
    # A new alias of the same name starts without a URL.
    c.create_alias(FunctionName="gone", Name="live", FunctionVersion="$LATEST")
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.get_function_url_config(FunctionName="gone", Qualifier="live")
    again = c.create_function_url_config(FunctionName="gone", Qualifier="live", AuthType="NONE")
    assert again["FunctionUrl"] != live
    c.delete_function(FunctionName="gone")
    assert call(e, plain)[0] == 404 and call(e, again["FunctionUrl"])[0] == 404
    create(c, "gone", wasm("echo"))
    assert c.list_function_url_configs(FunctionName="gone")["FunctionUrlConfigs"] == []


def test_refused_url_calls_are_in_the_audit_trail(make_emberd):
    """As a refused Invoke: a URL call that authentication or the resource
    policy refused is recorded (who, which function, 403); allowed calls
    are data plane and are not, nor is a 403 the function answered itself."""
    from test_audit import audit_list
    e = url_emberd(make_emberd)
    c = e.client()
    create(c, "audited", wasm("echo"))
    create(c, "denier", wasm("forbidden"))
    make_public(c, "denier")
    denier = c.create_function_url_config(FunctionName="denier", AuthType="NONE")["FunctionUrl"]
    status, _, _, body = call(e, denier)
    assert status == 403 and json.loads(body) == {"Message": "fn-own-403"}
    c.create_alias(FunctionName="audited", Name="live", FunctionVersion="$LATEST")
    iam = c.create_function_url_config(FunctionName="audited", AuthType="AWS_IAM")["FunctionUrl"]
    pub = c.create_function_url_config(FunctionName="audited", Qualifier="live",
                                       AuthType="NONE")["FunctionUrl"]
    assert call(e, iam)[0] == 403  # unsigned
    stranger = e.add_key("333333333333")
    assert call(e, iam, path="/s?q=1", key=stranger)[0] == 403  # signed, no grant
    assert call(e, pub)[0] == 403  # public URL without the grants
    make_public(c, "audited", "live")
    assert call(e, pub)[0] == 200
    assert call(e, iam, key=e.key)[0] == 200
    assert e.stop() == 0
    recs = [r for r in audit_list(e.data_dir)
            if r["type"] == "call" and r["operation"] == "InvokeFunctionUrl"]
    arn = "arn:aws:lambda:us-east-1:000000000000:function:audited"
    got = [(r["resource"], r["status"], r["message"], r["path"]) for r in recs]
    assert got == [(arn, 403, "Forbidden", "/"), (arn, 403, "Forbidden", "/s"),
                   (arn + ":live", 403, "Forbidden", "/")], got
    assert all(r["who"]["source"].startswith("127.0.0.1:") for r in recs)
    assert recs[1]["who"]["access_key_id"] == stranger["AccessKeyId"]
    assert recs[1]["who"]["account"] == "333333333333"
    assert recs[1]["params"]["query"] == {"q": "1"}
    assert recs[0]["who"]["access_key_id"] is None and recs[2]["who"]["account"] is None


def test_allowed_url_calls_are_audited_with_data_events(make_emberd):
    """With --audit-data-events (CloudTrail's data events for
    InvokeFunctionUrl and Invoke): every URL call and every Invoke is
    recorded, allowed ones included: who (principal, source), the
    function's ARN, the status; never the payload, nor what the function
    answered."""
    from test_audit import audit_list, calls
    e = url_emberd(make_emberd, ["--audit-data-events"])
    c = e.client()
    create(c, "audited", wasm("echo"))
    create(c, "denier", wasm("forbidden"))
    make_public(c, "audited")
    make_public(c, "denier")
    pub = c.create_function_url_config(FunctionName="audited", AuthType="NONE")["FunctionUrl"]
    c.create_alias(FunctionName="audited", Name="live", FunctionVersion="$LATEST")
    iam = c.create_function_url_config(FunctionName="audited", Qualifier="live",
                                       AuthType="AWS_IAM")["FunctionUrl"]
    denier = c.create_function_url_config(FunctionName="denier", AuthType="NONE")["FunctionUrl"]
    marker = b"payload-never-in-the-trail-5be1"
    text = {"Content-Type": "text/plain"}
    status, _, _, body = call(e, pub, method="POST", path="/p?n=1", body=marker, headers=text)
    assert status == 200 and marker in body
    assert call(e, iam, method="POST", body=marker, headers=text, key=e.key)[0] == 200
    assert call(e, iam)[0] == 403  # unsigned: refused by emberd
    assert call(e, denier)[0] == 403  # the function's own answer
    r = c.invoke(FunctionName="audited", Qualifier="live", Payload=json.dumps(marker.decode()))
    assert r["StatusCode"] == 200 and marker in r["Payload"].read()
    assert e.stop() == 0
    recs = [r for r in calls(audit_list(e.data_dir))
            if r["operation"] in ("InvokeFunctionUrl", "Invoke")]
    arn = "arn:aws:lambda:us-east-1:000000000000:function:"
    got = [(r["operation"], r["resource"], r["status"], r["message"], r["path"]) for r in recs]
    assert got == [
        ("InvokeFunctionUrl", arn + "audited", 200, None, "/p"),
        ("InvokeFunctionUrl", arn + "audited:live", 200, None, "/"),
        ("InvokeFunctionUrl", arn + "audited:live", 403, "Forbidden", "/"),
        ("InvokeFunctionUrl", arn + "denier", 403, None, "/"),
        ("Invoke", "audited", 200, None, "/2015-03-31/functions/audited/invocations"),
    ], got
    assert all(r["who"]["source"].startswith("127.0.0.1:") for r in recs)
    account = e.key.get("Account", "000000000000")
    assert recs[0]["who"]["access_key_id"] is None and recs[0]["who"]["account"] is None
    assert recs[0]["params"] == {"query": {"n": "1"}}
    for i in (1, 4):  # signed: the verified principal
        assert recs[i]["who"]["access_key_id"] == e.key["AccessKeyId"], recs[i]
        assert recs[i]["who"]["account"] == account, recs[i]
    assert recs[2]["who"]["access_key_id"] is None
    assert recs[4]["params"] == {"query": {"Qualifier": "live"}}
    raw = b"".join(open(os.path.join(e.data_dir, "audit", f), "rb").read()
                   for f in os.listdir(os.path.join(e.data_dir, "audit")) if f.endswith(".log"))
    assert marker not in raw and b"fn-own-403" not in raw


def test_an_emberd_without_a_url_listener_refuses_url_configs(emberd):
    c = emberd.client()
    create(c, "plain", wasm("echo"))
    with pytest.raises(c.exceptions.InvalidParameterValueException) as err:
        c.create_function_url_config(FunctionName="plain", AuthType="NONE")
    assert "--url-listen" in str(err.value)


def test_a_public_url_takes_both_grants_and_gets_the_v2_event(make_emberd):
    e = url_emberd(make_emberd)
    c = e.client()
    create(c, "pub", wasm("echo"))
    url = c.create_function_url_config(FunctionName="pub", AuthType="NONE")["FunctionUrl"]
    status, _, _, body = call(e, url)
    assert status == 403 and json.loads(body) == {"Message": "Forbidden"}
    c.add_permission(FunctionName="pub", StatementId="url", Action="lambda:InvokeFunctionUrl",
                     Principal="*", FunctionUrlAuthType="NONE")
    assert call(e, url)[0] == 403, "InvokeFunctionUrl alone must not open the URL"
    c.add_permission(FunctionName="pub", StatementId="url-invoke", Action="lambda:InvokeFunction",
                     Principal="*", InvokedViaFunctionUrl=True)
    policy = json.loads(c.get_policy(FunctionName="pub")["Policy"])
    conds = [s.get("Condition") for s in policy["Statement"]]
    assert {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}} in conds
    assert {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}} in conds
    status, headers, _, body = call(
        e, url, method="POST", path="/orders/7", body=b'{"qty": 2}',
        headers={"Content-Type": "application/json", "Cookie": "a=1; b=2", "X-Trace": "t1"})
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert headers["x-amzn-requestid"]
    ev = json.loads(body)
    assert ev["version"] == "2.0" and ev["routeKey"] == "$default"
    assert ev["rawPath"] == "/orders/7" and ev["body"] == '{"qty": 2}'
    assert ev["isBase64Encoded"] is False
    assert ev["cookies"] == ["a=1", "b=2"] and ev["headers"]["x-trace"] == "t1"
    ctx = ev["requestContext"]
    assert ctx["http"]["method"] == "POST" and ctx["http"]["sourceIp"] == "127.0.0.1"
    assert ctx["accountId"] == "anonymous" and ctx["requestId"] == headers["x-amzn-requestid"]
    assert ctx["domainPrefix"] == url.split("//")[1].split(".")[0]
    # The path form, for clients that cannot set Host; binary bodies as base64.
    status, _, _, body = call(e, url, method="PUT", path="/bin?x=1&x=2", body=b"\x00\xff",
                              headers={"Content-Type": "application/octet-stream"}, via_path=True)
    assert status == 200, body
    ev = json.loads(body)
    assert ev["rawPath"] == "/bin" and ev["queryStringParameters"] == {"x": "1,2"}
    assert ev["isBase64Encoded"] is True and ev["body"] == "AP8="
    # The public grant is for URL calls only: a direct Invoke by another
    # account is still refused.
    other = e.client(e.add_key("222222222222"))
    with pytest.raises(other.exceptions.ClientError) as err:
        other.invoke(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:pub")
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"
    if shutil.which("curl"):
        # curl resolves *.localhost to loopback: the FunctionUrl as given.
        out = subprocess.run(["curl", "-sS", "-m", "60", url + "curl?q=1"],
                             capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["rawPath"] == "/curl"


def test_an_iam_url_takes_only_valid_signatures_of_allowed_accounts(make_emberd):
    e = url_emberd(make_emberd)
    c = e.client()
    create(c, "private", wasm("echo"))
    url = c.create_function_url_config(FunctionName="private", AuthType="AWS_IAM")["FunctionUrl"]
    make_public(c, "private")  # grants for NONE do not open an AWS_IAM URL
    assert call(e, url)[0] == 403
    status, _, _, body = call(e, url, method="POST", path="/x", body=b"{}", key=e.key)
    assert status == 200, body
    iam = json.loads(body)["requestContext"]["authorizer"]["iam"]
    assert iam["accountId"] == "000000000000" and iam["accessKey"] == e.key["AccessKeyId"]
    # Signed by the path form too (the signature covers that path).
    assert call(e, url, path="/y", key=e.key, via_path=True)[0] == 200
    stranger = e.add_key("333333333333")
    assert call(e, url, key=stranger)[0] == 403
    c.add_permission(FunctionName="private", StatementId="s-url", Action="lambda:InvokeFunctionUrl",
                     Principal="333333333333", FunctionUrlAuthType="AWS_IAM")
    c.add_permission(FunctionName="private", StatementId="s-inv", Action="lambda:InvokeFunction",
                     Principal="333333333333", InvokedViaFunctionUrl=True)
    status, _, _, body = call(e, url, key=stranger)
    assert status == 200, body
    assert json.loads(body)["requestContext"]["accountId"] == "333333333333"
    # A body changed after signing is refused.
    host = urllib.parse.urlsplit(url).netloc
    req = AWSRequest(method="POST", url=url + "t", data=b'{"a":1}', headers={"Host": host})
    botocore.auth.SigV4Auth(Credentials(e.key["AccessKeyId"], e.key["SecretAccessKey"]),
                            "lambda", "us-east-1").add_auth(req)
    conn = http.client.HTTPConnection(e.url_addr, timeout=60)
    conn.request("POST", "/t", body=b'{"a":2}', headers=dict(req.headers.items()))
    assert conn.getresponse().status == 403
    conn.close()


def test_the_function_shapes_the_response_and_its_failure_is_a_502(make_emberd):
    e = url_emberd(make_emberd)
    c = e.client()
    create(c, "web", wasm("http"))
    create(c, "broken", wasm("fail"))
    for name in ("web", "broken"):
        make_public(c, name)
    web = c.create_function_url_config(FunctionName="web", AuthType="NONE")["FunctionUrl"]
    broken = c.create_function_url_config(FunctionName="broken", AuthType="NONE")["FunctionUrl"]
    status, headers, cookies, body = call(e, web)
    assert status == 201 and body == b"made by the function"
    assert headers["x-fn"] == "yes" and headers["content-type"] == "text/plain"
    assert cookies == ["session=abc; HttpOnly"]
    status, _, _, body = call(e, broken)
    assert status == 502 and json.loads(body) == {"Message": "Internal Server Error"}


def test_cors_preflights_are_answered_by_the_url_and_origins_are_checked(make_emberd):
    e = url_emberd(make_emberd)
    c = e.client()
    create(c, "api", wasm("http"))
    make_public(c, "api")
    url = c.create_function_url_config(
        FunctionName="api", AuthType="NONE",
        Cors={"AllowOrigins": ["https://app.example"], "AllowMethods": ["POST"],
              "AllowHeaders": ["x-custom"], "ExposeHeaders": ["x-fn"], "MaxAge": 600})["FunctionUrl"]
    status, headers, _, body = call(e, url, method="OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert status == 200 and body == b""
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-max-age"] == "600"
    assert not e.envs(), "a preflight must not start the function"
    status, headers, _, _ = call(e, url, method="POST", headers={"Origin": "https://app.example"})
    assert status == 201
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-expose-headers"] == "x-fn"
    status, headers, _, _ = call(e, url, method="POST", headers={"Origin": "https://evil.example"})
    assert status == 201 and "access-control-allow-origin" not in headers


def test_a_response_stream_url_splits_the_prelude_from_the_body(make_emberd):
    e = url_emberd(make_emberd)
    c = e.client()
    create(c, "streamer", wasm("stream"))
    make_public(c, "streamer")
    url = c.create_function_url_config(FunctionName="streamer", AuthType="NONE",
                                       InvokeMode="RESPONSE_STREAM")["FunctionUrl"]
    status, headers, _, body = call(e, url)
    assert status == 203 and headers["x-streamed"] == "1"
    assert body == b"first part\x00second part"


def test_unknown_urls_get_a_clear_404(make_emberd):
    e = url_emberd(make_emberd)
    conn = http.client.HTTPConnection(e.url_addr, timeout=30)
    conn.request("GET", "/", headers={"Host": "0" * 32 + ".lambda-url.us-east-1.localhost"})
    r = conn.getresponse()
    assert r.status == 404 and "No function URL" in json.loads(r.read())["Message"]
    conn.request("GET", "/nothing-here")
    r = conn.getresponse()
    assert r.status == 404
    r.read()
    conn.close()
