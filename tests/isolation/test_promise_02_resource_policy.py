"""Promise 2, across accounts by consent: another account may invoke a
function only where the owner's resource-based policy allows it
(AddPermission), exactly as far as it allows it (principal, qualifier,
conditions), and not after RemovePermission. The control plane stays the
owner's alone. Everything through boto3 against a real emberd and real
microVMs."""
import json

import botocore.exceptions
import pytest

from conftest import create, env_of, wasm

pytestmark = pytest.mark.vm

B = "111111111111"


def error_of(fn):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn()
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Message"]


def count(c, name, **kw):
    r = c.invoke(FunctionName=name, Payload=b"0", **kw)
    assert "FunctionError" not in r, r
    return json.loads(r["Payload"].read())["calls"], int(env_of(r))


def test_other_accounts_invoke_only_what_a_policy_grants(emberd):
    a = emberd.client(emberd.add_key())
    b = emberd.client(emberd.add_key(account=B))
    c = emberd.client(emberd.add_key(account="222222222222"))
    create(a, "shared", wasm("counter"))
    arn = a.get_function(FunctionName="shared")["Configuration"]["FunctionArn"]
    owner = arn.split(":")[4]

    # No policy: denied, and a missing function is denied the same way (its
    # existence is not revealed).
    code, status, msg = error_of(lambda: b.invoke(FunctionName=arn, Payload=b"0"))
    assert (code, status) == ("AccessDeniedException", 403) and "lambda:InvokeFunction" in msg, msg
    assert error_of(lambda: b.invoke(FunctionName=arn + "-none", Payload=b"0"))[:2] == \
        ("AccessDeniedException", 403)
    assert error_of(lambda: a.get_policy(FunctionName="shared"))[:2] == ("ResourceNotFoundException", 404)

    # Grant B. B's invocations run A's function in A's environments.
    added = a.add_permission(FunctionName="shared", StatementId="let-b", Action="lambda:InvokeFunction",
                             Principal=B)
    st = json.loads(added["Statement"])
    assert st["Principal"] == {"AWS": f"arn:aws:iam::{B}:root"} and st["Resource"] == arn
    assert st["Effect"] == "Allow" and st["Sid"] == "let-b"
    n1, env = count(a, "shared")
    n2, env_b = count(b, arn)
    assert (n1, n2) == ("01", "02") and env_b == env
    # Partial ARNs name the owner too; B's own namespace has no "shared".
    assert count(b, f"{owner}:function:shared")[0] == "03"
    assert error_of(lambda: b.invoke(FunctionName="shared", Payload=b"0"))[0] == "ResourceNotFoundException"
    # Event invokes are granted the same way.
    assert b.invoke(FunctionName=arn, InvocationType="Event", Payload=b"0")["StatusCode"] == 202
    assert error_of(lambda: c.invoke(FunctionName=arn, InvocationType="Event", Payload=b"0"))[0] == \
        "AccessDeniedException"
    # The grant is for B only, for invoking only: C is denied, and B cannot
    # read, change or re-grant A's function.
    assert error_of(lambda: c.invoke(FunctionName=arn, Payload=b"0"))[:2] == ("AccessDeniedException", 403)
    assert error_of(lambda: b.get_function(FunctionName=arn))[0] == "ResourceNotFoundException"
    assert error_of(lambda: b.add_permission(FunctionName=arn, StatementId="x",
                                             Action="lambda:InvokeFunction", Principal="*"))[0] == \
        "ResourceNotFoundException"

    policy = a.get_policy(FunctionName="shared")
    doc = json.loads(policy["Policy"])
    assert doc["Version"] == "2012-10-17" and [s["Sid"] for s in doc["Statement"]] == ["let-b"]
    # A duplicate statement id and a stale RevisionId are refused.
    assert error_of(lambda: a.add_permission(FunctionName="shared", StatementId="let-b",
                                             Action="lambda:InvokeFunction", Principal=B))[:2] == \
        ("ResourceConflictException", 409)
    assert error_of(lambda: a.add_permission(FunctionName="shared", StatementId="s2", Principal="*",
                                             Action="lambda:InvokeFunction", RevisionId="stale"))[:2] == \
        ("PreconditionFailedException", 412)
    assert error_of(lambda: a.add_permission(FunctionName="shared", StatementId="bad",
                                             Action="s3:GetObject", Principal=B))[:2] == \
        ("InvalidParameterValueException", 400)

    # Revoked: B is denied again.
    a.remove_permission(FunctionName="shared", StatementId="let-b")
    assert error_of(lambda: b.invoke(FunctionName=arn, Payload=b"0"))[0] == "AccessDeniedException"
    assert error_of(lambda: a.remove_permission(FunctionName="shared", StatementId="let-b"))[:2] == \
        ("ResourceNotFoundException", 404)


def test_grants_follow_qualifier_and_conditions(emberd):
    a = emberd.client(emberd.add_key())
    b = emberd.client(emberd.add_key(account=B))
    create(a, "q", wasm("counter"))
    arn = a.get_function(FunctionName="q")["Configuration"]["FunctionArn"]
    v = a.publish_version(FunctionName="q")["Version"]
    a.create_alias(FunctionName="q", Name="live", FunctionVersion=v)

    # A grant on the alias covers the alias only.
    a.add_permission(FunctionName="q", Qualifier="live", StatementId="alias-only",
                     Action="lambda:InvokeFunction", Principal=f"arn:aws:iam::{B}:root")
    assert count(b, arn + ":live")[0] == "01"
    assert error_of(lambda: b.invoke(FunctionName=arn, Payload=b"0"))[0] == "AccessDeniedException"
    assert error_of(lambda: b.invoke(FunctionName=arn, Qualifier=v, Payload=b"0"))[0] == \
        "AccessDeniedException"
    assert [s["Sid"] for s in json.loads(a.get_policy(FunctionName="q", Qualifier="live")["Policy"])["Statement"]] == \
        ["alias-only"]
    assert error_of(lambda: a.get_policy(FunctionName="q"))[0] == "ResourceNotFoundException"

    # "*" with a SourceAccount condition: that account only. A statement
    # conditioned on a source ARN never matches a direct call.
    a.add_permission(FunctionName="q", StatementId="svc", Action="lambda:InvokeFunction",
                     Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::bucket")
    assert error_of(lambda: b.invoke(FunctionName=arn, Payload=b"0"))[0] == "AccessDeniedException"
    a.add_permission(FunctionName="q", StatementId="any-b", Action="lambda:*", Principal="*",
                     SourceAccount=B)
    assert count(b, arn)[0] == "01"
    other = emberd.client(emberd.add_key(account="333333333333"))
    assert error_of(lambda: other.invoke(FunctionName=arn, Payload=b"0"))[0] == "AccessDeniedException"
    doc = json.loads(a.get_policy(FunctionName="q")["Policy"])
    conds = {s["Sid"]: s.get("Condition") for s in doc["Statement"]}
    assert conds == {"svc": {"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::bucket"}},
                     "any-b": {"StringEquals": {"AWS:SourceAccount": B}}}
    # Deleting the function takes its policy with it.
    a.delete_function(FunctionName="q")
    create(a, "q", wasm("counter"))
    assert error_of(lambda: b.invoke(FunctionName=arn, Payload=b"0"))[0] == "AccessDeniedException"
