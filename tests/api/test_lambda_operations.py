"""Lambda operations deploy tools call after (or around) every create, through
boto3 with its own model: GetAccountSettings, TagResource/UntagResource/
ListTags (and Tags in CreateFunction/GetFunction), ListLayers,
GetLayerVersionByArn, ListProvisionedConcurrencyConfigs, the code-signing and
runtime-management reads; good and bad input; one account never sees
another's."""
import pytest
from botocore.exceptions import ClientError

from conftest import MODULE_HEADER, create, zipped

ARN = "arn:aws:lambda:us-east-1:{account}:function:{name}"


def err(fn):
    with pytest.raises(ClientError) as e:
        fn()
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Message"]


def account_of(client, name):
    return client.get_function(FunctionName=name)["Configuration"]["FunctionArn"].split(":")[4]


def test_tags_on_create_tag_untag_list_and_limits(emberd):
    c = emberd.client()
    create(c, "t", Tags={"team": "a", "env": "dev"})
    arn = c.get_function(FunctionName="t")["Configuration"]["FunctionArn"]
    assert c.get_function(FunctionName="t")["Tags"] == {"team": "a", "env": "dev"}
    assert c.list_tags(Resource=arn)["Tags"] == {"team": "a", "env": "dev"}

    c.tag_resource(Resource=arn, Tags={"env": "prod", "cost": "x y/z:1"})
    assert c.list_tags(Resource=arn)["Tags"] == {"team": "a", "env": "prod", "cost": "x y/z:1"}
    # Several tagKeys in one call (the query repeats the key).
    c.untag_resource(Resource=arn, TagKeys=["team", "cost", "absent"])
    assert c.list_tags(Resource=arn)["Tags"] == {"env": "prod"}
    assert c.get_function(FunctionName="t")["Tags"] == {"env": "prod"}

    # Lambda's limits, and nothing stored when refused.
    assert err(lambda: c.tag_resource(Resource=arn, Tags={"aws:x": "1"}))[:2] == \
        ("InvalidParameterValueException", 400)
    assert err(lambda: c.tag_resource(Resource=arn, Tags={"k" * 129: "1"}))[:2] == \
        ("InvalidParameterValueException", 400)
    assert err(lambda: c.tag_resource(Resource=arn, Tags={"k": "v" * 257}))[:2] == \
        ("InvalidParameterValueException", 400)
    c.tag_resource(Resource=arn, Tags={f"k{i}": "v" for i in range(49)})
    code, status, msg = err(lambda: c.tag_resource(Resource=arn, Tags={"one": "more"}))
    assert (code, status) == ("InvalidParameterValueException", 400) and "50" in msg, msg
    assert len(c.list_tags(Resource=arn)["Tags"]) == 50
    assert err(lambda: create(c, "bad", Tags={"aws:reserved": "1"}))[:2] == \
        ("InvalidParameterValueException", 400)
    assert err(lambda: c.get_function(FunctionName="bad"))[0] == "ResourceNotFoundException"

    # What is not a function, or is a version, takes no tags; a missing one is 404.
    assert err(lambda: c.list_tags(Resource=arn + ":1"))[:2] == ("InvalidParameterValueException", 400)
    assert err(lambda: c.list_tags(Resource="arn:aws:lambda:us-east-1:1:layer:L"))[:2] == \
        ("InvalidParameterValueException", 400)
    assert err(lambda: c.list_tags(Resource=arn + "-gone"))[:2] == ("ResourceNotFoundException", 404)


def test_tags_of_another_account_are_not_found(emberd):
    owner = emberd.client()
    create(owner, "private", Tags={"secret": "s"})
    arn = owner.get_function(FunctionName="private")["Configuration"]["FunctionArn"]
    other = emberd.client(emberd.add_key(account="222233334444"))
    for call in (lambda: other.list_tags(Resource=arn),
                 lambda: other.tag_resource(Resource=arn, Tags={"x": "y"}),
                 lambda: other.untag_resource(Resource=arn, TagKeys=["secret"])):
        assert err(call)[:2] == ("ResourceNotFoundException", 404)
    assert owner.list_tags(Resource=arn)["Tags"] == {"secret": "s"}


def test_account_settings_count_the_callers_account_only(emberd):
    c = emberd.client()
    before = c.get_account_settings()
    assert before["AccountUsage"] == {"TotalCodeSize": 0, "FunctionCount": 0}
    limit = before["AccountLimit"]
    assert limit["ConcurrentExecutions"] > 0
    assert limit["UnreservedConcurrentExecutions"] == limit["ConcurrentExecutions"]
    assert limit["CodeSizeUnzipped"] > 0 and limit["CodeSizeZipped"] > 0
    assert limit["TotalCodeSize"] > 0

    package = zipped({"fn.wasm": MODULE_HEADER})
    create(c, "a", code=package)
    create(c, "b", code=package)
    c.publish_version(FunctionName="b")
    c.put_function_concurrency(FunctionName="a", ReservedConcurrentExecutions=1)
    after = c.get_account_settings()
    assert after["AccountUsage"]["FunctionCount"] == 2
    # $LATEST of a and b, and b's version 1.
    assert after["AccountUsage"]["TotalCodeSize"] == 3 * len(package)
    assert after["AccountLimit"]["UnreservedConcurrentExecutions"] == limit["ConcurrentExecutions"] - 1

    other = emberd.client(emberd.add_key(account="222233334444"))
    assert other.get_account_settings()["AccountUsage"] == {"TotalCodeSize": 0, "FunctionCount": 0}


def layer(c, name, runtimes):
    r = c.publish_layer_version(LayerName=name, Content={"ZipFile": zipped({"lib/x": name})},
                                CompatibleRuntimes=runtimes)
    return r["LayerVersionArn"]


def test_list_layers_and_get_layer_version_by_arn(emberd):
    c = emberd.client()
    assert c.list_layers()["Layers"] == []
    a1 = layer(c, "alpha", ["python3.11"])
    a2 = layer(c, "alpha", ["provided.al2023"])
    b1 = layer(c, "beta", ["python3.11"])
    listed = c.list_layers()["Layers"]
    assert [(x["LayerName"], x["LatestMatchingVersion"]["LayerVersionArn"]) for x in listed] == \
        [("alpha", a2), ("beta", b1)]
    assert listed[0]["LayerArn"] == a2.rsplit(":", 1)[0]
    # The newest version that matches the runtime filter.
    py = c.list_layers(CompatibleRuntime="python3.11")["Layers"]
    assert [x["LatestMatchingVersion"]["LayerVersionArn"] for x in py] == [a1, b1]
    assert c.list_layers(CompatibleArchitecture="arm64")["Layers"] == []
    # Pagination through the paginator boto3 users call.
    pages = list(c.get_paginator("list_layers").paginate(PaginationConfig={"PageSize": 1}))
    assert [x["LayerName"] for p in pages for x in p["Layers"]] == ["alpha", "beta"]

    got = c.get_layer_version_by_arn(Arn=a1)
    assert got["LayerVersionArn"] == a1 and got["Version"] == 1
    assert got["CompatibleRuntimes"] == ["python3.11"]
    assert err(lambda: c.get_layer_version_by_arn(Arn=a1[:-1] + "9"))[:2] == \
        ("ResourceNotFoundException", 404)
    # Not a layer version ARN: boto3 validates the pattern itself, so raw HTTP.
    status, _, _ = emberd.raw("GET", "/2018-10-31/layers?find=LayerVersion&Arn=nope")
    assert status == 400

    other = emberd.client(emberd.add_key(account="222233334444"))
    assert other.list_layers()["Layers"] == []
    assert err(lambda: other.get_layer_version_by_arn(Arn=a1))[:2] == ("ResourceNotFoundException", 404)


def test_list_provisioned_concurrency_configs(emberd):
    c = emberd.client()
    create(c, "p")
    assert c.list_provisioned_concurrency_configs(FunctionName="p")["ProvisionedConcurrencyConfigs"] == []
    v = c.publish_version(FunctionName="p")["Version"]
    c.create_alias(FunctionName="p", Name="live", FunctionVersion=v)
    c.put_provisioned_concurrency_config(FunctionName="p", Qualifier="live",
                                         ProvisionedConcurrentExecutions=1)
    configs = c.list_provisioned_concurrency_configs(FunctionName="p")["ProvisionedConcurrencyConfigs"]
    assert len(configs) == 1
    assert configs[0]["FunctionArn"].endswith(":function:p:live")
    assert configs[0]["RequestedProvisionedConcurrentExecutions"] == 1
    assert configs[0]["Status"] in ("IN_PROGRESS", "READY")
    assert err(lambda: c.list_provisioned_concurrency_configs(FunctionName="gone"))[:2] == \
        ("ResourceNotFoundException", 404)
    c.delete_provisioned_concurrency_config(FunctionName="p", Qualifier="live")


def test_code_signing_and_runtime_management_reads(emberd):
    c = emberd.client()
    create(c, "s")
    got = c.get_function_code_signing_config(FunctionName="s")
    assert got["FunctionName"] == "s" and got["CodeSigningConfigArn"] == ""
    assert c.list_code_signing_configs()["CodeSigningConfigs"] == []
    csc = "arn:aws:lambda:us-east-1:123456789012:code-signing-config:csc-0123456789abcdef0"
    code, status, msg = err(lambda: c.put_function_code_signing_config(
        FunctionName="s", CodeSigningConfigArn=csc))
    assert (code, status) == ("CodeSigningConfigNotFoundException", 404), msg
    c.delete_function_code_signing_config(FunctionName="s")
    assert err(lambda: c.get_function_code_signing_config(FunctionName="gone"))[0] == \
        "ResourceNotFoundException"

    rm = c.get_runtime_management_config(FunctionName="s")
    assert rm["UpdateRuntimeOn"] == "Auto" and rm["FunctionArn"].endswith(":function:s")
    assert c.put_runtime_management_config(FunctionName="s", UpdateRuntimeOn="Auto")["UpdateRuntimeOn"] == "Auto"
    code, status, msg = err(lambda: c.put_runtime_management_config(
        FunctionName="s", UpdateRuntimeOn="FunctionUpdate"))
    assert (code, status) == ("InvalidParameterValueException", 400) and "Auto" in msg, msg
    assert err(lambda: c.get_runtime_management_config(FunctionName="s", Qualifier="7"))[0] == \
        "ResourceNotFoundException"


def test_an_operation_emberd_lacks_is_named_unknown(emberd):
    c = emberd.client()
    code, status, msg = err(lambda: c.list_event_source_mappings())
    assert (code, status) == ("UnknownOperationException", 404) and "event-source-mappings" in msg, msg
