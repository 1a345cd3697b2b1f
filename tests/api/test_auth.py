"""Authentication: every request must carry a valid AWS Signature Version 4
from a key in emberd's credentials file. boto3 with the right keys works;
wrong secret, no signature, skewed clock, altered body/path/query, unknown
and revoked keys get 403 in the AWS error shape, and nothing happens."""
import datetime
import json
import os
import stat
import time

import botocore.exceptions
import pytest

from conftest import MODULE_HEADER, b64, create


def names(emberd):
    return sorted(f["FunctionName"] for f in emberd.client().list_functions()["Functions"])


def create_body(name):
    return {"FunctionName": name, "Runtime": "wasm", "Role": "arn:aws:iam::000000000000:role/x",
            "Handler": "h", "Code": {"ZipFile": b64(MODULE_HEADER)}}


def refused(emberd, status, headers, data, kind):
    assert status == 403, (status, data)
    assert headers.get("x-amzn-errortype") == kind, headers
    assert json.loads(data)["message"], data


def read_stdout_until(proc, needles, timeout=30.0):
    """What `proc` writes to stdout until every needle appeared or `timeout` passed."""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    out = ""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end and not all(n in out for n in needles):
            try:
                chunk = proc.stdout.read1(4096)
            except BlockingIOError:
                chunk = None
            if chunk:
                out += chunk.decode()
            else:
                time.sleep(0.05)
    finally:
        os.set_blocking(fd, True)
    return out


def test_credentials_file_is_private_and_printed_once(make_emberd, data_dir):
    e = make_emberd()
    path = os.path.join(data_dir, "credentials.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # The creating start printed the key after its "listening" line, maybe
    # a moment later: read what arrives (without blocking) until both show.
    printed = read_stdout_until(e.proc, [e.key["AccessKeyId"], e.key["SecretAccessKey"]])
    assert e.key["AccessKeyId"] in printed and e.key["SecretAccessKey"] in printed, printed
    e.stop()
    e2 = make_emberd()
    assert e2.key == e.key, "a restart keeps the key"
    e2.stop()
    assert e2.proc.stdout.read().decode() == "", "printed again on a later start"


def test_sdk_with_the_right_keys_works(emberd):
    c = emberd.client()
    create(c, "ok")
    assert c.get_function(FunctionName="ok")["Configuration"]["FunctionName"] == "ok"
    assert names(emberd) == ["ok"]


def test_wrong_secret_is_refused_and_nothing_is_created(emberd):
    bad = dict(emberd.key, SecretAccessKey="x" * 40)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        create(emberd.client(bad), "nope")
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert names(emberd) == []


def test_unsigned_request_is_refused(emberd):
    s, h, d = emberd.raw("POST", "/2015-03-31/functions", create_body("nope"), sign=False)
    refused(emberd, s, h, d, "MissingAuthenticationTokenException")
    s, h, d = emberd.raw("POST", "/2015-03-31/functions", create_body("nope"), sign=False,
                         headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIA"})
    refused(emberd, s, h, d, "IncompleteSignatureException")
    assert names(emberd) == []


@pytest.mark.parametrize("minutes", [-6, 6])
def test_skewed_clock_is_refused(emberd, minutes):
    at = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) \
        + datetime.timedelta(minutes=minutes)
    s, h, d = emberd.raw("POST", "/2015-03-31/functions", create_body("skew"), at=at)
    refused(emberd, s, h, d, "InvalidSignatureException")
    message = json.loads(d)["message"]
    assert message.startswith("Signature expired" if minutes < 0 else "Signature not yet current"), message
    assert names(emberd) == []
    # Within the window (4 minutes off) the same request is accepted.
    at = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) \
        + datetime.timedelta(minutes=4 if minutes > 0 else -4)
    s, _, d = emberd.raw("POST", "/2015-03-31/functions", create_body("skew"), at=at)
    assert s == 201, d


def test_altered_body_path_or_query_is_refused(emberd):
    create(emberd.client(), "f")

    def body(b, p):
        return b.replace(b'"g"', b'"h"'), p
    s, h, d = emberd.raw("POST", "/2015-03-31/functions", create_body("g"), tamper=body)
    refused(emberd, s, h, d, "InvalidSignatureException")

    def path(b, p):
        return b, p.replace("functions/f", "functions/g")
    s, h, d = emberd.raw("DELETE", "/2015-03-31/functions/f", tamper=path)
    refused(emberd, s, h, d, "InvalidSignatureException")

    def query(b, p):
        return b, p + "&Qualifier=1"
    s, h, d = emberd.raw("DELETE", "/2015-03-31/functions/f?Marker=x", tamper=query)
    refused(emberd, s, h, d, "InvalidSignatureException")
    assert names(emberd) == ["f"]
    # Untampered, the same delete works.
    s, _, d = emberd.raw("DELETE", "/2015-03-31/functions/f")
    assert s == 204, d
    assert names(emberd) == []


def test_signed_payload_hash_must_match_the_body(emberd):
    create(emberd.client(), "f")
    body = json.dumps({"MemorySize": 256}).encode()
    import hashlib
    declared = {"x-amz-content-sha256": hashlib.sha256(body).hexdigest()}

    def swap(b, p):
        return json.dumps({"MemorySize": 512}).encode(), p
    s, h, d = emberd.raw("PUT", "/2015-03-31/functions/f/configuration", body,
                         headers=declared, tamper=swap)
    refused(emberd, s, h, d, "InvalidSignatureException")
    assert emberd.client().get_function_configuration(FunctionName="f")["MemorySize"] == 128
    s, h, d = emberd.raw("PUT", "/2015-03-31/functions/f/configuration", body,
                         headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    refused(emberd, s, h, d, "InvalidSignatureException")
    s, _, d = emberd.raw("PUT", "/2015-03-31/functions/f/configuration", body, headers=declared)
    assert s == 200, d
    assert emberd.client().get_function_configuration(FunctionName="f")["MemorySize"] == 256


def test_unknown_and_revoked_keys_are_refused(emberd):
    unknown = dict(emberd.key, AccessKeyId="AKIA" + "Z" * 16)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        create(emberd.client(unknown), "nope")
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    extra = emberd.add_key()
    create(emberd.client(extra), "by-extra")
    listed = emberd.ember("creds", "list", "--json")
    assert extra["AccessKeyId"] in listed.stdout and extra["SecretAccessKey"] not in listed.stdout
    r = emberd.ember("creds", "revoke", extra["AccessKeyId"])
    assert r.returncode == 0, r.stderr
    # emberd picks the change up without a restart.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        emberd.client(extra).delete_function(FunctionName="by-extra")
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert names(emberd) == ["by-extra"]


@pytest.mark.vm
def test_invoke_is_authenticated_before_anything_runs(emberd):
    from conftest import wasm
    create(emberd.client(), "echo", code=wasm("echo"))
    inv = "/2015-03-31/functions/echo/invocations"
    s, h, d = emberd.raw("POST", inv, b'{"a":1}', sign=False)
    refused(emberd, s, h, d, "MissingAuthenticationTokenException")

    def body(b, p):
        return b'{"a":2}', p
    s, h, d = emberd.raw("POST", inv, b'{"a":1}', tamper=body)
    refused(emberd, s, h, d, "InvalidSignatureException")
    # A signed x-amz-content-sha256 lets emberd start the environment during
    # the upload; a body that does not match it is still refused.
    import hashlib
    declared = {"x-amz-content-sha256": hashlib.sha256(b'{"a":1}').hexdigest()}
    s, h, d = emberd.raw("POST", inv, b'{"a":1}', headers=declared, tamper=body)
    refused(emberd, s, h, d, "InvalidSignatureException")
    s, _, d = emberd.raw("POST", inv, b'{"a":1}', headers=declared)
    assert s == 200 and json.loads(d) == {"a": 1}, d
    out = emberd.client().invoke(FunctionName="echo", Payload=b'{"b":2}')
    assert json.loads(out["Payload"].read()) == {"b": 2}


def test_ember_cli_signs_with_the_data_dirs_key(emberd):
    r = emberd.ember("fn", "list", "--json")
    assert r.returncode == 0, r.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ACCESS_KEY_ID"] = emberd.key["AccessKeyId"]
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    import subprocess
    from conftest import bin_dir
    r = subprocess.run([str(bin_dir() / "ember"), "--endpoint", emberd.endpoint, "fn", "list"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and "InvalidSignatureException" in r.stderr, r.stderr


def not_found(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException", e.value.response
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_accounts_see_only_their_own_functions_and_layers(emberd):
    a = emberd.client()
    other = emberd.add_key(account="111111111111")
    assert other["Account"] == "111111111111"
    b = emberd.client(other)
    arn = create(a, "mine")["FunctionArn"]
    assert arn == "arn:aws:lambda:us-east-1:000000000000:function:mine"
    not_found(lambda: b.get_function(FunctionName="mine"))
    not_found(lambda: b.get_function(FunctionName=arn))
    not_found(lambda: b.delete_function(FunctionName="mine"))
    not_found(lambda: b.update_function_configuration(FunctionName="mine", MemorySize=256))
    not_found(lambda: b.publish_version(FunctionName="mine"))
    not_found(lambda: b.invoke(FunctionName="mine", Payload=b"{}"))
    assert b.list_functions()["Functions"] == []
    # The same name in the other account is another function, with its own ARN.
    theirs = create(b, "mine", MemorySize=256)
    assert theirs["FunctionArn"] == "arn:aws:lambda:us-east-1:111111111111:function:mine"
    assert a.get_function_configuration(FunctionName="mine")["MemorySize"] == 128
    assert b.get_function_configuration(FunctionName=theirs["FunctionArn"])["MemorySize"] == 256
    not_found(lambda: a.get_function(FunctionName=theirs["FunctionArn"]))
    assert [f["FunctionName"] for f in a.list_functions()["Functions"]] == ["mine"]
    assert [f["FunctionArn"] for f in b.list_functions()["Functions"]] == [theirs["FunctionArn"]]
    # Layers too: B cannot see A's layer, nor use it in a function.
    from conftest import zipped
    layer = a.publish_layer_version(LayerName="shared", Content={"ZipFile": zipped({"lib/x": b"1"})})
    assert ":000000000000:layer:shared:1" in layer["LayerVersionArn"]
    not_found(lambda: b.get_layer_version(LayerName="shared", VersionNumber=1))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        create(b, "uses-layer", Layers=[layer["LayerVersionArn"]])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    # Deleting in B leaves A's function alone.
    b.delete_function(FunctionName="mine")
    assert a.get_function(FunctionName="mine")["Configuration"]["FunctionArn"] == arn


@pytest.mark.vm
def test_accounts_never_share_environments(emberd):
    from conftest import wasm
    # Two tenant keys: emberd's first key is the operator's, which lists
    # every account's environments.
    mine = emberd.add_key()
    a = emberd.client(mine)
    other = emberd.add_key(account="222222222222")
    b = emberd.client(other)
    for c in (a, b):
        create(c, "same", code=wasm("echo"))
    out_a = a.invoke(FunctionName="same", Payload=b'{"who":"a"}')
    out_b = b.invoke(FunctionName="same", Payload=b'{"who":"b"}')
    assert json.loads(out_a["Payload"].read()) == {"who": "a"}
    assert json.loads(out_b["Payload"].read()) == {"who": "b"}
    env_a = out_a["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"]
    env_b = out_b["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"]
    assert env_a != env_b, "two accounts' functions of one name shared an environment"
    # Warm again: each account gets its own environment back, never the other's.
    for _ in range(3):
        ra = a.invoke(FunctionName="same", Payload=b"{}")
        rb = b.invoke(FunctionName="same", Payload=b"{}")
        assert ra["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"] == env_a
        assert rb["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"] == env_b
    # Each account lists only its own environments.
    def listed(key):
        s, _, d = emberd.raw("GET", "/ember/environments", key=key)
        assert s == 200, d
        return {str(e["Id"]) for e in json.loads(d)["Environments"]}
    assert env_a in listed(mine) and env_b not in listed(mine)
    assert env_b in listed(other) and env_a not in listed(other)
    assert {env_a, env_b} <= listed(None)


def test_metrics_unsigned_only_on_loopback_and_only_when_configured(make_emberd):
    e = make_emberd()
    s, h, d = e.raw("GET", "/metrics", sign=False)
    refused(e, s, h, d, "MissingAuthenticationTokenException")
    assert e.raw("GET", "/metrics")[0] == 200
    e.stop()
    e = make_emberd(["--metrics-no-auth-on-loopback"])
    s, _, d = e.raw("GET", "/metrics", sign=False)
    assert s == 200, d
    # Only /metrics: everything else still needs a signature.
    s, h, d = e.raw("GET", "/2015-03-31/functions", sign=False)
    refused(e, s, h, d, "MissingAuthenticationTokenException")


def test_tls_with_a_given_certificate(make_emberd, data_dir):
    import subprocess
    import boto3
    import http.client
    from botocore.config import Config
    # A throw-away CA and a server certificate for 127.0.0.1 signed by it.
    p = lambda n: os.path.join(data_dir, n)  # noqa: E731
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "1",
         "-subj", "/CN=emberd-test-ca"],
        ["openssl", "req", *ec, "-keyout", p("key.pem"), "-out", p("srv.csr"), "-subj", "/CN=emberd"],
    ):
        subprocess.run(cmd, check=True, capture_output=True)
    with open(p("ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n")
    subprocess.run(["openssl", "x509", "-req", "-in", p("srv.csr"), "-CA", p("ca.pem"),
                    "-CAkey", p("ca.key"), "-CAcreateserial", "-out", p("cert.pem"), "-days", "1",
                    "-extfile", p("ext.cnf")], check=True, capture_output=True)
    ca = p("ca.pem")
    e = make_emberd(["--tls-cert", p("cert.pem"), "--tls-key", p("key.pem")])
    assert e.endpoint.startswith("https://127.0.0.1:"), e.endpoint
    c = boto3.client("lambda", endpoint_url=e.endpoint, region_name="us-east-1", verify=ca,
                     aws_access_key_id=e.key["AccessKeyId"],
                     aws_secret_access_key=e.key["SecretAccessKey"],
                     config=Config(retries={"total_max_attempts": 1}))
    create(c, "over-tls")
    assert [f["FunctionName"] for f in c.list_functions()["Functions"]] == ["over-tls"]
    # Signatures are still required over TLS.
    bad = boto3.client("lambda", endpoint_url=e.endpoint, region_name="us-east-1", verify=ca,
                       aws_access_key_id=e.key["AccessKeyId"], aws_secret_access_key="x" * 40,
                       config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError) as err:
        bad.list_functions()
    assert err.value.response["Error"]["Code"] == "InvalidSignatureException"
    # The ember CLI too, checking the certificate against the given CA.
    r = e.ember("--ca-cert", ca, "fn", "list", "--json")
    assert r.returncode == 0 and "over-tls" in r.stdout, r.stderr
    r = e.ember("fn", "list")  # the system CAs do not vouch for this certificate
    assert r.returncode != 0, r.stdout
    # Plain HTTP to the TLS port gets no API answer.
    conn = http.client.HTTPConnection(e.endpoint.removeprefix("https://"), timeout=15)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/2015-03-31/functions")
        conn.getresponse()


def test_ember_cli_without_credentials_says_so_and_is_refused(emberd, data_dir):
    import subprocess
    from conftest import bin_dir
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    missing = os.path.join(data_dir, "no-such-credentials.json")
    r = subprocess.run([str(bin_dir() / "ember"), "--endpoint", emberd.endpoint,
                        "--credentials", missing, "fn", "list"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0
    assert "no credentials" in r.stderr and "MissingAuthenticationTokenException" in r.stderr, r.stderr
