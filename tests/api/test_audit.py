"""The audit trail with a real emberd and boto3: control-plane calls are
recorded with who/what/outcome and without code or secrets; invocations are
not; then the files are tampered with every way (with emberd stopped) and
`ember audit verify` must fail naming the first bad record."""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

import pytest
from botocore.exceptions import ClientError

from conftest import bin_dir, create, wait_for, wasm, zipped

SECRET = "s3cr3t-value-8d1f"
CODE_MARKER = b"CODE-MARKER-5e2a"


def ember(*args):
    r = subprocess.run([str(bin_dir() / "ember"), *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def audit_list(data_dir, *extra):
    rc, out, err = ember("audit", "list", "--data-dir", data_dir, "--json", *extra)
    assert rc == 0, err
    return json.loads(out)


def verify(data_dir):
    rc, out, err = ember("audit", "verify", "--data-dir", data_dir, "--json")
    assert rc in (0, 1), (rc, out, err)
    report = json.loads(out)
    assert (rc == 0) == (report["first_bad"] is None), report
    return report


def key_id(client):
    return client._request_signer._credentials.access_key


def calls(records):
    return [r for r in records if r["type"] == "call"]


def caller_key(who):
    # A verified key id; for a refused request, the one it claimed.
    return who.get("access_key_id") or who.get("claimed_access_key_id")


def test_control_plane_calls_are_recorded_redacted_and_invocations_are_not(emberd):
    c = emberd.client()
    code = zipped({"main.wasm": b"\0asm\x01\0\0\0", "notes.txt": CODE_MARKER})
    create(c, "aud", code, Environment={"Variables": {"API_TOKEN": SECRET, "MODE": SECRET + "2"}})
    c.update_function_configuration(FunctionName="aud", Timeout=5)
    v = c.publish_version(FunctionName="aud")["Version"]
    c.create_alias(FunctionName="aud", Name="live", FunctionVersion=v)
    c.put_function_concurrency(FunctionName="aud", ReservedConcurrentExecutions=3)
    with pytest.raises(ClientError) as e:
        c.get_function(FunctionName="no-such-fn")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    status, _, _ = emberd.raw("POST", "/2015-03-31/functions", b"{not json")
    assert status == 400
    # Data plane: not audited (this one fails before any VM is needed).
    with pytest.raises(ClientError):
        c.invoke(FunctionName="no-such-fn", Payload=b"{}")
    c.delete_function(FunctionName="aud")
    assert emberd.stop() == 0

    records = audit_list(emberd.data_dir)
    got = [(r["operation"], r["resource"], r["status"], r["error"]) for r in calls(records)]
    assert got == [
        ("CreateFunction", "aud", 201, None),
        ("UpdateFunctionConfiguration", "aud", 200, None),
        ("PublishVersion", "aud", 201, None),
        ("CreateAlias", "aud", 201, None),
        ("PutFunctionConcurrency", "aud", 200, None),
        ("GetFunction", "no-such-fn", 404, "ResourceNotFoundException"),
        ("CreateFunction", None, 400, "InvalidParameterValueException"),
        ("DeleteFunction", "aud", 204, None),
    ], got
    me = key_id(c)
    for i, r in enumerate(calls(records)):
        assert r["who"]["source"].startswith("127.0.0.1:"), r
        if i != 6:  # the raw request, not sent by this client
            assert caller_key(r["who"]) == me, r
    create_rec = calls(records)[0]
    body = create_rec["params"]["body"]
    assert body["Environment"]["Variables"] == {"API_TOKEN": "(redacted)", "MODE": "(redacted)"}
    assert body["Code"]["ZipFile"].startswith("(redacted")
    assert body["FunctionName"] == "aud" and body["Runtime"] == "wasm"
    assert calls(records)[1]["params"]["body"] == {"Timeout": 5}
    # Neither the secret nor the code reaches the files in any form.
    audit_dir = os.path.join(emberd.data_dir, "audit")
    raw = b"".join(open(os.path.join(emberd.data_dir, "audit", f), "rb").read()
                   for f in os.listdir(os.path.join(emberd.data_dir, "audit")) if f.endswith(".log"))
    assert SECRET.encode() not in raw and CODE_MARKER not in raw
    assert base64.b64encode(code)[:40] not in raw
    assert not [r for r in calls(records) if r["operation"] == "Invoke"]
    # Start, stop and a final digest bracket the calls; the trail verifies.
    assert records[0]["event"] == "start" and records[-1]["event"] == "stop"
    assert audit_list(emberd.data_dir, "--all")[-1]["type"] == "digest"
    report = verify(emberd.data_dir)
    assert report["first_bad"] is None and report["head_seq"] == report["last_seq"]
    assert audit_list(emberd.data_dir, "--since", "2099-01-01T00:00:00") == []
    assert len(audit_list(emberd.data_dir, "--since", "1h")) == len(records)
    st = os.stat(os.path.join(emberd.data_dir, "audit", "audit.key"))
    assert st.st_mode & 0o777 == 0o600


@pytest.mark.vm
def test_successful_invocations_are_not_audited(emberd):
    c = emberd.client()
    create(c, "aud-echo", wasm("echo"))
    for _ in range(3):
        r = c.invoke(FunctionName="aud-echo", Payload=b'{"x":1}')
        assert r["StatusCode"] == 200
    emberd.stop()
    ops = [r["operation"] for r in calls(audit_list(emberd.data_dir))]
    assert ops == ["CreateFunction"]


def test_every_acknowledged_call_survives_sigkill_and_restart(make_emberd):
    e = make_emberd()
    c = e.client()
    for i in range(12):
        create(c, f"k{i}")
    e.kill()  # no stop event, no final digest
    r = verify(e.data_dir)
    assert r["first_bad"] is None, r
    assert [x["resource"] for x in calls(audit_list(e.data_dir))] == [f"k{i}" for i in range(12)]
    e2 = make_emberd()
    e2.client().delete_function(FunctionName="k0")
    e2.stop()
    records = audit_list(e2.data_dir)
    assert [x["event"] for x in records if x.get("event") in ("start", "stop")] == ["start", "start", "stop"]
    assert [x["seq"] for x in audit_list(e2.data_dir, "--all")] == list(range(1, len(audit_list(e2.data_dir, "--all")) + 1))
    assert verify(e2.data_dir)["first_bad"] is None


def test_write_failure_refuses_further_calls_and_is_recorded(make_emberd):
    e = make_emberd()
    c = e.client()
    create(c, "w1")
    log = os.path.join(e.data_dir, "audit", "audit-000001.log")
    if subprocess.run(["chattr", "+i", log], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here (needs root on ext4/xfs/btrfs)")
    try:
        # The call runs (its record cannot be written: logged, not failed)...
        create(c, "w2")
        # ...and from then on control-plane calls are refused before they run.
        with pytest.raises(ClientError) as err:
            create(c, "w3")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert err.value.response["Error"]["Code"] == "ServiceException"
        assert err.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"
        assert "audit trail cannot be written" in err.value.response["Error"]["Message"]
    finally:
        subprocess.run(["chattr", "-i", log], check=True)
    c.get_function(FunctionName="w2")
    with pytest.raises(ClientError):
        c.get_function(FunctionName="w3")
    status, _, metrics = e.raw("GET", "/metrics")
    assert status == 200
    errors = [l for l in metrics.decode().splitlines() if l.startswith("ember_audit_write_errors_total")]
    assert errors == ["ember_audit_write_errors_total 2"], errors
    e.stop()
    assert "audit record not written" in e.log()
    events = [r for r in audit_list(e.data_dir) if r["type"] == "event"]
    gap = [r for r in events if r["event"] == "write-failures"]
    assert len(gap) == 1 and gap[0]["detail"].startswith("2 call record(s) could not be written"), events
    r = verify(e.data_dir)
    assert r["first_bad"]["seq"] == gap[0]["seq"] and "damage" in r["first_bad"]["reason"], r


# --- tampering -------------------------------------------------------------

def lines_of(path):
    with open(path) as f:
        return f.read().splitlines()


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def rehash(line):
    """A keyless forger fixes a record's own hash after editing it."""
    body = line[: -len(',"hash":"' + "0" * 64 + '"}')] + "}"
    h = hashlib.sha256(body.encode()).hexdigest()
    return body[:-1] + f',"hash":"{h}"' + "}"


@pytest.fixture(scope="module")
def pristine():
    """A trail of two files (rotation) with digests in the middle, built by a
    real emberd; each tamper test works on its own copy."""
    from conftest import Emberd
    d = tempfile.mkdtemp(prefix="ea", dir="/tmp")
    e = Emberd(d, ["--audit-digest-every", "4", "--audit-rotate-bytes", "4096"]).start()
    c = e.client()
    for i in range(8):
        create(c, f"t{i}", Environment={"Variables": {"K": "v"}})
        c.get_function(FunctionName=f"t{i}")
    assert e.stop() == 0
    files = sorted(f for f in os.listdir(os.path.join(d, "audit")) if f.endswith(".log"))
    assert len(files) >= 2, files
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def trail(pristine):
    d = tempfile.mkdtemp(prefix="ea", dir="/tmp")
    shutil.copytree(os.path.join(pristine, "audit"), os.path.join(d, "audit"))
    yield d, os.path.join(d, "audit", "audit-000002.log")
    shutil.rmtree(d, ignore_errors=True)


def last_file(d):
    return sorted(f for f in os.listdir(os.path.join(d, "audit")) if f.endswith(".log"))[-1]


def seq(line):
    return json.loads(line)["seq"]


def expect_bad(d, line_no, seq_no, words, file="audit-000002.log"):
    r = verify(d)
    bad = r["first_bad"]
    assert bad is not None, r
    assert (bad["file"], bad["line"], bad["seq"]) == (file, line_no, seq_no), r
    assert words in bad["reason"], r


def first_call(lines):
    return next(i for i, l in enumerate(lines) if '"type":"call"' in l and i > 0)


def test_untampered_copy_verifies(trail):
    d, _ = trail
    r = verify(d)
    assert r["first_bad"] is None and r["files"] >= 2 and r["digests"] >= 3, r


def test_changed_field_is_named(trail):
    d, f = trail
    lines = lines_of(f)
    i = first_call(lines)
    lines[i] = lines[i].replace('"status":', '"status":1', 1)
    write_lines(f, lines)
    expect_bad(d, i + 1, seq(lines[i]), "changed")


def test_changed_field_with_recomputed_hash_is_named(trail):
    d, f = trail
    lines = lines_of(f)
    i = first_call(lines)
    lines[i] = rehash(lines[i].replace('"source":"127.0.0.1:', '"source":"10.6.6.6:', 1))
    write_lines(f, lines)
    expect_bad(d, i + 1, seq(lines[i]), "changed")


def test_removed_record_is_named(trail):
    d, f = trail
    lines = lines_of(f)
    i = first_call(lines)
    gone = seq(lines[i])
    del lines[i]
    write_lines(f, lines)
    expect_bad(d, i + 1, gone, "missing")


def test_inserted_forged_record_is_named(trail):
    d, f = trail
    lines = lines_of(f)
    i = first_call(lines)
    rec = json.loads(lines[i])
    after = lines[i][-66:-2]  # hash of record i
    forged = (lines[i].replace(f'"seq":{rec["seq"]},', f'"seq":{rec["seq"] + 1},', 1)
              .replace(rec["prev"], after, 1)
              .replace(f'"operation":"{rec["operation"]}"', '"operation":"DeleteFunction"', 1))
    lines.insert(i + 1, rehash(forged))
    write_lines(f, lines)
    expect_bad(d, i + 2, rec["seq"] + 1, "inserted")


def test_reordered_records_are_named(trail):
    d, f = trail
    lines = lines_of(f)
    i = first_call(lines)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    write_lines(f, lines)
    expect_bad(d, i + 1, seq(lines[i + 1]), "reordered")


def test_truncated_tail_is_detected(trail):
    d, _ = trail
    name = last_file(d)
    f = os.path.join(d, "audit", name)
    lines = lines_of(f)
    last = seq(lines[-1])
    write_lines(f, lines[:-3])
    expect_bad(d, len(lines) - 3, last - 2, "cut off", file=name)


def test_forged_digest_is_named(trail):
    d, f = trail
    lines = lines_of(f)
    i = next(i for i, l in enumerate(lines) if '"type":"digest"' in l)
    mac = json.loads(lines[i])["mac"]
    lines[i] = rehash(lines[i].replace(mac, hashlib.sha256(b"forged").hexdigest()))
    write_lines(f, lines)
    expect_bad(d, i + 1, seq(lines[i]), "HMAC")


def test_removed_file_or_head_is_detected(trail):
    d, f = trail
    first_gone = seq(lines_of(f)[0])
    after = "audit-000003.log" if last_file(d) != "audit-000002.log" else None
    os.rename(f, f + ".moved")
    if after:
        expect_bad(d, 1, first_gone, "missing", file=after)
    else:
        assert "cut off" in verify(d)["first_bad"]["reason"]
    os.rename(f + ".moved", f)
    assert verify(d)["first_bad"] is None
    os.remove(os.path.join(d, "audit", "head"))
    assert "signed head" in verify(d)["first_bad"]["reason"]


def test_refused_requests_are_recorded_with_who_tried(emberd):
    good = emberd.key
    bad = dict(good, SecretAccessKey="x" * 40)
    with pytest.raises(ClientError) as e:
        create(emberd.client(bad), "forged")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    s, _, _ = emberd.raw("POST", "/2015-03-31/functions", b"{}", sign=False)
    assert s == 403
    s, _, _ = emberd.raw("POST", "/2015-03-31/functions/x/invocations", b"{}", sign=False)
    assert s == 403
    other = emberd.add_key(account="111111111111")
    # `ember creds` edits the file; emberd records the change it sees.
    changed = wait_for(lambda: [r for r in audit_list(emberd.data_dir)
                                if r.get("event") == "credentials-changed"])
    assert changed and other["AccessKeyId"] in changed[0]["detail"], changed
    assert other["SecretAccessKey"] not in json.dumps(audit_list(emberd.data_dir))
    create(emberd.client(), "mine")
    with pytest.raises(ClientError):
        emberd.client(other).delete_function(FunctionName="mine")
    emberd.stop()
    got = [(r["operation"], r["status"], r["error"], r["who"]["access_key_id"],
            r["who"].get("claimed_access_key_id"), r["who"]["account"])
           for r in calls(audit_list(emberd.data_dir))]
    assert got == [
        ("CreateFunction", 403, "InvalidSignatureException", None, good["AccessKeyId"], None),
        ("CreateFunction", 403, "MissingAuthenticationTokenException", None, None, None),
        ("Invoke", 403, "MissingAuthenticationTokenException", None, None, None),
        ("CreateFunction", 201, None, good["AccessKeyId"], None, good.get("Account", "000000000000")),
        ("DeleteFunction", 404, "ResourceNotFoundException", other["AccessKeyId"], None, "111111111111"),
    ], got
    assert verify(emberd.data_dir)["first_bad"] is None
