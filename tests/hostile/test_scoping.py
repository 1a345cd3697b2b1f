"""Host-wide views scoped to the caller's account (issue 13, item 7).

Before the fix `/metrics` and `/ember/async` showed every account's function
names and counts to any key holder. Now a tenant's key sees only its own
account in `/metrics` (and none of the host-wide families) and in every
`/ember/*` view; an operator key (the first key emberd created, or one added
with `ember creds add --operator`) sees all.
"""
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import create, wait_for, wasm

pytestmark = pytest.mark.vm

A, B = "111111111111", "222222222222"
# Family names as the parser gives them (counters without `_total`).
HOST_WIDE = {"ember_vmm_boot_seconds", "ember_log_lines_dropped",
             "ember_log_write_errors", "ember_audit_write_errors",
             "ember_memory_budget_bytes", "ember_memory_claimed_bytes"}


def scrape(e, key):
    status, _, text = e.raw("GET", "/metrics", key=key)
    assert status == 200, text
    families = {}
    for fam in text_string_to_metric_families(text.decode()):
        families[fam.name] = fam
    return families


def functions_in(families):
    return {s.labels["function"] for f in families.values() for s in f.samples
            if "function" in s.labels}


def get(e, path, key):
    status, _, d = e.raw("GET", path, key=key)
    return status, (json.loads(d) if d else None)


@pytest.fixture
def tenants(emberd):
    e = emberd
    ka, kb = e.add_key(account=A), e.add_key(account=B)
    ca, cb = e.client(ka), e.client(kb)
    create(ca, "fa", wasm("echo"))
    create(cb, "fb", wasm("echo"))
    assert ca.invoke(FunctionName="fa", Payload=b"{}")["StatusCode"] == 200
    assert cb.invoke(FunctionName="fb", Payload=b"{}")["StatusCode"] == 200
    # B's events stay queued: its function may run nowhere (reserved 0).
    create(cb, "held", wasm("echo"))
    cb.put_function_concurrency(FunctionName="held", ReservedConcurrentExecutions=0)
    for _ in range(3):
        assert cb.invoke(FunctionName="held", InvocationType="Event", Payload=b"{}")[
            "StatusCode"] == 202
    return e, ka, kb


def test_metrics_are_scoped_to_the_callers_account(tenants):
    e, ka, kb = tenants
    fa, fb = scrape(e, ka), scrape(e, kb)
    assert functions_in(fa) == {f"{A}:fa"}, functions_in(fa)
    assert functions_in(fb) == {f"{B}:fb", f"{B}:held"}, functions_in(fb)
    assert not HOST_WIDE & fa.keys(), HOST_WIDE & fa.keys()
    # The environment gauge counts the caller's own environments only.
    envs = sum(s.value for s in fa["ember_environments"].samples)
    assert envs == 1, fa["ember_environments"].samples
    op = scrape(e, e.key)
    assert {f"{A}:fa", f"{B}:fb", f"{B}:held"} <= functions_in(op)
    assert HOST_WIDE <= op.keys(), HOST_WIDE - op.keys()
    assert sum(s.value for s in op["ember_environments"].samples) >= 2


def test_ember_views_are_scoped_to_the_callers_account(tenants):
    e, ka, kb = tenants
    _, envs = get(e, "/ember/environments", ka)
    assert [(x["Account"], x["Function"]) for x in envs["Environments"]] == [(A, "fa")], envs
    _, envs = get(e, "/ember/environments", e.key)
    assert {(A, "fa"), (B, "fb")} <= {(x["Account"], x["Function"]) for x in envs["Environments"]}
    # The async queue's depth: B's three held events are B's alone.
    _, sa = get(e, "/ember/async", ka)
    _, sb = get(e, "/ember/async", kb)
    _, so = get(e, "/ember/async", e.key)
    assert (sa["Waiting"], sa["InFlight"], sa["Stored"]) == (0, 0, 0), sa
    assert sb["Stored"] == 3 and sb["Waiting"] + sb["InFlight"] == 3, sb
    assert so["Stored"] >= 3, so
    # The attempt log: A sees none of B's functions (the operator may).
    wait_for(lambda: get(e, "/ember/async/attempts", e.key)[1]["Attempts"], timeout=10)
    _, at = get(e, "/ember/async/attempts", ka)
    assert all(x["FunctionName"] == "fa" for x in at["Attempts"]), at
    # Code and logs of another account's function are not found.
    assert e.raw("GET", "/ember/code/fb/$LATEST", key=ka)[0] == 404
    assert e.raw("GET", "/ember/logs/fb?since=1h", key=ka)[0] == 404
    assert e.raw("GET", "/ember/code/fb/$LATEST", key=kb)[0] == 200


def test_operator_keys(tenants):
    e, ka, kb = tenants
    keys = e.keys()
    assert keys[0].get("Operator") is True, keys[0]
    assert not any(k.get("Operator") for k in keys[1:]), keys
    r = e.ember("creds", "add", "--json", "--operator", "--account", "333333333333")
    assert r.returncode == 0, r.stderr
    op2 = json.loads(r.stdout)
    assert op2["Operator"] is True
    assert {f"{A}:fa", f"{B}:fb"} <= functions_in(scrape(e, op2))
    # Revoking the first operator promotes no tenant key.
    r = e.ember("creds", "revoke", e.key["AccessKeyId"])
    assert r.returncode == 0, r.stderr
    assert functions_in(scrape(e, ka)) == {f"{A}:fa"}
    assert {f"{A}:fa", f"{B}:fb"} <= functions_in(scrape(e, op2))
