"""The control plane through boto3 (and raw HTTP where an SDK would refuse to
send the request): functions, versions, aliases, layers, concurrency
settings, the exceptions the SDK expects, bad input refused with nothing
stored, and state surviving an emberd restart."""
import json
import os

import pytest
from botocore.exceptions import ClientError

from conftest import MODULE_HEADER, b64, create, zipped


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def test_create_get_update_publish_alias_delete(emberd):
    c = emberd.client()
    f = create(c, "hello", zipped({"fn.wasm": MODULE_HEADER}), MemorySize=256, Timeout=5,
               Environment={"Variables": {"GREETING": "hi"}})
    assert f["FunctionName"] == "hello" and f["Version"] == "$LATEST"
    assert f["MemorySize"] == 256 and f["Environment"]["Variables"] == {"GREETING": "hi"}
    got = c.get_function(FunctionName="hello")
    assert got["Configuration"]["CodeSha256"] == f["CodeSha256"]
    assert c.get_function_configuration(FunctionName="hello")["Timeout"] == 5

    v1 = c.publish_version(FunctionName="hello", Description="first")
    assert v1["Version"] == "1"
    updated = c.update_function_code(FunctionName="hello", ZipFile=MODULE_HEADER + b"\x00")
    assert updated["CodeSha256"] != f["CodeSha256"] and updated["RevisionId"] != f["RevisionId"]
    cfg = c.update_function_configuration(FunctionName="hello", MemorySize=512)
    assert cfg["MemorySize"] == 512
    v2 = c.publish_version(FunctionName="hello")
    assert v2["Version"] == "2" and v2["MemorySize"] == 512
    assert c.get_function_configuration(FunctionName="hello", Qualifier="1")["MemorySize"] == 256
    versions = [v["Version"] for v in c.list_versions_by_function(FunctionName="hello")["Versions"]]
    assert versions == ["$LATEST", "1", "2"]

    alias = c.create_alias(FunctionName="hello", Name="live", FunctionVersion="1")
    assert alias["AliasArn"].endswith(":function:hello:live")
    assert c.get_alias(FunctionName="hello", Name="live")["FunctionVersion"] == "1"
    assert c.update_alias(FunctionName="hello", Name="live", FunctionVersion="2")["FunctionVersion"] == "2"
    assert c.get_function_configuration(FunctionName="hello", Qualifier="live")["Version"] == "2"
    with pytest.raises(ClientError) as e:
        c.create_alias(FunctionName="hello", Name="live", FunctionVersion="1")
    assert error_code(e.value) == "ResourceConflictException"
    with pytest.raises(ClientError) as e:
        c.delete_function(FunctionName="hello", Qualifier="2")
    assert error_code(e.value) == "ResourceConflictException"
    c.delete_alias(FunctionName="hello", Name="live")
    c.delete_function(FunctionName="hello", Qualifier="1")
    versions = [v["Version"] for v in c.list_versions_by_function(FunctionName="hello")["Versions"]]
    assert versions == ["$LATEST", "2"]

    c.delete_function(FunctionName="hello")
    with pytest.raises(ClientError) as e:
        c.get_function(FunctionName="hello")
    assert error_code(e.value) == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_list_functions_paginates(emberd):
    c = emberd.client()
    names = [f"fn-{i:02d}" for i in range(7)]
    for n in names:
        create(c, n)
    seen, marker = [], None
    while True:
        kw = {"MaxItems": 3}
        if marker:
            kw["Marker"] = marker
        page = c.list_functions(**kw)
        assert len(page["Functions"]) <= 3
        seen += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert seen == names
    paginated = [f["FunctionName"] for p in c.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}) for f in p["Functions"]]
    assert paginated == names


def test_expected_exceptions(emberd):
    c = emberd.client()
    create(c, "dup")
    cases = [
        (lambda: create(c, "dup"), "ResourceConflictException", 409),
        (lambda: c.get_function(FunctionName="missing"), "ResourceNotFoundException", 404),
        (lambda: c.get_alias(FunctionName="dup", Name="nope"), "ResourceNotFoundException", 404),
        (lambda: create(c, "py", Runtime="python3.11"), "InvalidParameterValueException", 400),
        (lambda: create(c, "big", MemorySize=20000), "InvalidParameterValueException", 400),
        (lambda: c.put_provisioned_concurrency_config(FunctionName="dup", Qualifier="$LATEST", ProvisionedConcurrentExecutions=1), "InvalidParameterValueException", 400),
        (lambda: c.get_layer_version(LayerName="nolayer", VersionNumber=1), "ResourceNotFoundException", 404),
        (lambda: c.update_function_code(FunctionName="dup", ZipFile=b"not a module"), "InvalidParameterValueException", 400),
    ]
    for call, code, status in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e.value) == code, e.value.response
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    with pytest.raises(ClientError) as e:
        create(c, "py", Runtime="python3.11")
    # Not a ZIP: AWS's answer (this host runs python3.11 in the kernel-less guest).
    assert e.value.response["Error"]["Message"].startswith("Could not unzip uploaded file.")


def test_layers(emberd):
    c = emberd.client()
    content = zipped({"lib/data.txt": b"shared"})
    l1 = c.publish_layer_version(LayerName="shared", Content={"ZipFile": content}, CompatibleRuntimes=["wasm"])
    l2 = c.publish_layer_version(LayerName="shared", Content={"ZipFile": content})
    assert (l1["Version"], l2["Version"]) == (1, 2)
    assert c.get_layer_version(LayerName="shared", VersionNumber=1)["Content"]["CodeSize"] == len(content)
    assert [v["Version"] for v in c.list_layer_versions(LayerName="shared")["LayerVersions"]] == [2, 1]
    # A wasm function takes a layer: its environments see it at /opt
    # (test_python_wasm.py reads one; Linux functions: test_linux.py).
    f = create(c, "layered", Layers=[l1["LayerVersionArn"]])
    assert [l["Arn"] for l in f["Layers"]] == [l1["LayerVersionArn"]]
    c.delete_function(FunctionName="layered")
    c.delete_layer_version(LayerName="shared", VersionNumber=2)
    assert [v["Version"] for v in c.list_layer_versions(LayerName="shared")["LayerVersions"]] == [1]


def test_concurrency_settings(emberd):
    c = emberd.client()
    create(c, "limited")
    assert c.put_function_concurrency(FunctionName="limited", ReservedConcurrentExecutions=2)["ReservedConcurrentExecutions"] == 2
    assert c.get_function_concurrency(FunctionName="limited")["ReservedConcurrentExecutions"] == 2
    assert c.get_function(FunctionName="limited")["Concurrency"]["ReservedConcurrentExecutions"] == 2
    c.delete_function_concurrency(FunctionName="limited")
    assert "ReservedConcurrentExecutions" not in c.get_function_concurrency(FunctionName="limited")
    with pytest.raises(ClientError) as e:
        c.put_function_concurrency(FunctionName="limited", ReservedConcurrentExecutions=100000)
    assert error_code(e.value) == "InvalidParameterValueException"


def stored_blobs(emberd):
    d = os.path.join(emberd.data_dir, "store", "blobs")
    return sorted(n for n in os.listdir(d) if len(n) == 64)


def test_bad_input_is_refused_and_nothing_is_stored(emberd):
    path = "/2015-03-31/functions"
    ok_code = {"ZipFile": b64(MODULE_HEADER)}
    bomb = zipped({"f.wasm": MODULE_HEADER + b"\0" * (32 << 20)})
    bad = [
        (b"{not json", 400),
        (json.dumps({"FunctionName": "x", "Code": ok_code, "Surprise": True}).encode(), 400),
        (json.dumps({"FunctionName": "../../etc/passwd", "Code": ok_code}).encode(), 400),
        (json.dumps({"FunctionName": "a/b", "Code": ok_code}).encode(), 400),
        (json.dumps({"FunctionName": "x", "Code": {"ZipFile": b64(zipped({"../escape.wasm": MODULE_HEADER}))}}).encode(), 400),
        (json.dumps({"FunctionName": "x", "Code": {"ZipFile": b64(zipped({"/abs/f.wasm": MODULE_HEADER}))}}).encode(), 400),
        (json.dumps({"FunctionName": "x", "Code": {"ZipFile": b64(bomb)}}).encode(), 400),
        (json.dumps({"FunctionName": "x", "Code": {"ZipFile": "@@not-base64@@"}}).encode(), 400),
        (json.dumps({"FunctionName": "x", "Code": {"S3Bucket": "b", "S3Key": "k"}}).encode(), 400),
    ]
    for body, status in bad:
        got, headers, data = emberd.raw("POST", path, body, {"content-type": "application/json"})
        assert got == status, (body[:80], data)
        assert headers.get("x-amzn-errortype", "").endswith("Exception"), headers
        assert json.loads(data)["message"]
    assert emberd.client().list_functions()["Functions"] == []
    assert stored_blobs(emberd) == []
    status, _, _ = emberd.raw("GET", "/2015-03-31/functions/..%2F..%2Fetc%2Fpasswd")
    assert status == 400
    status, headers, _ = emberd.raw("POST", "/2015-03-31/functions/..%2Fx/invocations", b"{}")
    assert status == 400


def test_oversized_and_malformed_payloads(emberd):
    create(emberd.client(), "p")
    inv = "/2015-03-31/functions/p/invocations"
    status, headers, _ = emberd.raw("POST", inv, b"1" * (6 * 1024 * 1024 + 1))
    assert (status, headers["x-amzn-errortype"]) == (413, "RequestTooLargeException")
    status, headers, _ = emberd.raw("POST", inv, b"{broken")
    assert (status, headers["x-amzn-errortype"]) == (400, "InvalidRequestContentException")
    r = emberd.client().invoke(FunctionName="p", InvocationType="DryRun")
    assert r["StatusCode"] == 204


def test_restart_keeps_functions_versions_and_code(make_emberd):
    e = make_emberd()
    c = e.client()
    create(c, "durable", zipped({"f.wasm": MODULE_HEADER}))
    c.publish_version(FunctionName="durable")
    c.create_alias(FunctionName="durable", Name="prod", FunctionVersion="1")
    sha = c.get_function(FunctionName="durable")["Configuration"]["CodeSha256"]
    e.kill()  # a crash, not a clean stop
    e2 = make_emberd()
    c2 = e2.client()
    assert c2.get_function(FunctionName="durable")["Configuration"]["CodeSha256"] == sha
    assert [v["Version"] for v in c2.list_versions_by_function(FunctionName="durable")["Versions"]] == ["$LATEST", "1"]
    assert c2.get_alias(FunctionName="durable", Name="prod")["FunctionVersion"] == "1"
    status, _, code = e2.raw("GET", "/ember/code/durable/1")
    assert status == 200 and code == MODULE_HEADER


def test_tampered_code_blob_never_served(emberd):
    c = emberd.client()
    create(c, "t", MODULE_HEADER + b"\x01")
    [blob] = stored_blobs(emberd)
    p = os.path.join(emberd.data_dir, "store", "blobs", blob)
    raw = bytearray(open(p, "rb").read())
    raw[-1] ^= 0xFF
    open(p, "wb").write(bytes(raw))
    status, headers, _ = emberd.raw("GET", "/ember/code/t/$LATEST")
    assert status == 500 and headers["x-amzn-errortype"] == "ServiceException"
    # An invocation needing a new environment loads (and verifies) the code
    # first: the tampered module never reaches a VM.
    status, headers, body = emberd.raw("POST", "/2015-03-31/functions/t/invocations", b"{}")
    assert status == 500 and headers["x-amzn-errortype"] == "ServiceException"
    assert "integrity" in json.loads(body)["message"]
    assert emberd.envs() == []
    assert b"\x01" not in open(p, "rb").read()[:4]  # stored encrypted, not as the module
