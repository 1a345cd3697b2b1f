"""Promise 2 (tenants; versions and functions: test_promise_02_versions_functions.py):
execution environments are never reused across accounts (seed: "...cannot be
reused across function versions, functions, or AWS accounts"). In emberd an
account is what an access key belongs to; two accounts may each have a
function of the same name, with identical code and configuration, and still
never share an environment, see each other's, or reach each other's."""
import json

import botocore.exceptions
import pytest

from conftest import create, env_of, vmm_of, wasm

pytestmark = pytest.mark.vm


def calls(c, name):
    r = c.invoke(FunctionName=name, Payload=b"0")
    assert "FunctionError" not in r, r
    return json.loads(r["Payload"].read())["calls"], int(env_of(r))


def test_environments_are_never_shared_across_tenants(emberd):
    # Two tenant keys (emberd's first key is the operator's, which sees
    # every account's environments).
    key_a, key_b = emberd.add_key(), emberd.add_key(account="111111111111")
    a, b = emberd.client(key_a), emberd.client(key_b)
    # Identical functions: same name, code and configuration; only the account differs.
    for c in (a, b):
        create(c, "twin", wasm("counter"))
    # Interleaved calls: each environment counts its own account's calls only.
    seen = {"a": [], "b": []}
    for _ in range(3):
        seen["a"].append(calls(a, "twin"))
        seen["b"].append(calls(b, "twin"))
    assert [n for n, _ in seen["a"]] == ["01", "02", "03"], seen
    assert [n for n, _ in seen["b"]] == ["01", "02", "03"], seen
    env_a, env_b = {e for _, e in seen["a"]}, {e for _, e in seen["b"]}
    assert len(env_a) == 1 and len(env_b) == 1 and env_a != env_b, seen
    # From outside: two ember-vmm processes, and each account's listing shows
    # only its own environment.
    def listed(key=None):
        s, _, d = emberd.raw("GET", "/ember/environments", key=key)
        assert s == 200, d
        return {e["Id"]: e for e in json.loads(d)["Environments"]}
    mine, theirs = listed(key_a), listed(key_b)
    [ea], [eb] = env_a, env_b
    assert ea in mine and eb not in mine, mine
    assert eb in theirs and ea not in theirs, theirs
    assert vmm_of(mine[ea]["Pid"]) != vmm_of(theirs[eb]["Pid"])
    # The operator sees both, each with its account.
    everything = listed()
    assert (everything[ea]["Account"], everything[eb]["Account"]) == (
        "000000000000", "111111111111")
    # B cannot invoke A's function by ARN either: no policy of A's grants it
    # (test_promise_02_resource_policy.py has the grants).
    arn = a.get_function(FunctionName="twin")["Configuration"]["FunctionArn"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        b.invoke(FunctionName=arn, Payload=b"0")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    # A's environment is still A's alone: its count continues where it was.
    assert calls(a, "twin") == ("04", ea)
