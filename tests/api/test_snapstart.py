"""SnapStart (issue 18) through boto3 against a real emberd and real microVMs:
the API as Lambda's model has it (SnapStart on create/update, OptimizationStatus,
a version Pending while its snapshot is taken, then Active; Failed when its
Init fails; boto3's published_version_active waiter), cold invokes that
restore the snapshot (REPORT with Restore Duration, no Init Duration), warm
and error invokes after a restore, distinct random values in 20 environments
restored from one snapshot, snapshots sealed at rest (a flipped bit -> boot +
Init with an integrity error in the log) and deleted with their version."""
import base64
import json
import os
import re
import threading
import time

import botocore.exceptions
import pytest

from conftest import at_once, create, wait_for, wasm

pytestmark = pytest.mark.vm

SNAP = {"ApplyOn": "PublishedVersions"}


def publish_active(c, name):
    """Publishes `name` and waits (boto3's waiter) for the version to be Active."""
    v = c.publish_version(FunctionName=name)
    assert v["State"] == "Pending", v
    assert v["StateReasonCode"] == "Creating", v
    assert v["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    c.get_waiter("published_version_active").wait(
        FunctionName=name, Qualifier=v["Version"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return v["Version"]


def invoke(c, name, version, payload=b"{}"):
    r = c.invoke(FunctionName=name, Qualifier=version, Payload=payload, LogType="Tail")
    log = base64.b64decode(r["LogResult"]).decode()
    return r, r["Payload"].read(), log


def report(log):
    lines = [l for l in log.splitlines() if l.startswith("REPORT")]
    assert lines, log
    return lines[-1]


def metric(e, name):
    status, _, body = e.raw("GET", "/metrics")
    assert status == 200
    m = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def sealed_files(e):
    d = os.path.join(e.data_dir, "store", "snapshots")
    return sorted(f for f in os.listdir(d) if f != "tmp")


def test_api_validates_and_reports_snapstart(emberd):
    c = emberd.client()
    with pytest.raises(botocore.exceptions.ClientError) as err:
        create(c, "ss-bad", wasm("snapstart"), SnapStart={"ApplyOn": "Sometimes"})
    assert err.value.response["Error"]["Code"] == "InvalidParameterValueException"
    f = create(c, "ss-api", wasm("snapstart"))
    assert f["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    u = c.update_function_configuration(FunctionName="ss-api", SnapStart=SNAP)
    assert u["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    with pytest.raises(botocore.exceptions.ClientError) as err:
        c.update_function_configuration(FunctionName="ss-api", SnapStart={"ApplyOn": "Latest"})
    assert err.value.response["Error"]["Code"] == "InvalidParameterValueException"
    version = publish_active(c, "ss-api")
    g = c.get_function(FunctionName="ss-api", Qualifier=version)["Configuration"]
    assert g["State"] == "Active" and g["SnapStart"]["OptimizationStatus"] == "On", g
    latest = c.get_function_configuration(FunctionName="ss-api")
    assert latest["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    vs = c.list_versions_by_function(FunctionName="ss-api")["Versions"]
    assert [v["SnapStart"]["OptimizationStatus"] for v in vs] == ["Off", "On"], vs
    assert len(sealed_files(emberd)) == 1
    # Deleting the version deletes its snapshot.
    c.delete_function(FunctionName="ss-api", Qualifier=version)
    assert sealed_files(emberd) == []


def test_cold_invoke_restores_then_warm_and_errors(emberd):
    c = emberd.client()
    create(c, "ss-run", wasm("snapstart"), SnapStart=SNAP)
    version = publish_active(c, "ss-run")
    restores = metric(emberd, "ember_snapstart_restore_seconds_count")
    r, body, log = invoke(c, "ss-run", version)
    assert "FunctionError" not in r, (body, log)
    line = report(log)
    assert "Restore Duration: " in line and "Init Duration" not in line, line
    out = json.loads(body)
    # The snapshot was taken after ember_before_snapshot; this environment
    # ran ember_after_restore once, before its first invocation.
    assert (out["nb"], out["na"]) == (1, 1), out
    assert metric(emberd, "ember_snapstart_restore_seconds_count") == restores + 1
    # Warm: the same environment, no restore or init reported.
    r, body, log = invoke(c, "ss-run", version)
    line = report(log)
    assert "Restore Duration" not in line and "Init Duration" not in line, line
    warm = json.loads(body)
    assert warm["a"] == out["a"] and warm["r"] != out["r"], (out, warm)
    # A function error after a restore: Unhandled, and the environment serves on.
    r, body, log = invoke(c, "ss-run", version, b"-1")
    assert r.get("FunctionError") == "Unhandled", (body, log)
    r, body, _ = invoke(c, "ss-run", version)
    assert "FunctionError" not in r and json.loads(body)["a"] == out["a"]


def test_init_failure_fails_the_version(emberd):
    c = emberd.client()
    create(c, "ss-fail", wasm("initfail"), SnapStart=SNAP)
    v = c.publish_version(FunctionName="ss-fail")
    assert v["State"] == "Pending"
    with pytest.raises(botocore.exceptions.WaiterError):
        c.get_waiter("published_version_active").wait(
            FunctionName="ss-fail", Qualifier=v["Version"],
            WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    g = c.get_function_configuration(FunctionName="ss-fail", Qualifier=v["Version"])
    assert g["State"] == "Failed", g
    assert g["StateReasonCode"].startswith("FunctionError"), g
    assert "Init failed" in g["StateReason"], g
    with pytest.raises(botocore.exceptions.ClientError) as err:
        c.invoke(FunctionName="ss-fail", Qualifier=v["Version"], Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "ResourceConflictException"


def test_a_pending_version_is_not_invocable_until_active(emberd):
    c = emberd.client()
    # 250 ms in _initialize: the snapshot cannot be ready when publish answers.
    create(c, "ss-heavy", wasm("heavyinit"), SnapStart=SNAP)
    v = c.publish_version(FunctionName="ss-heavy")
    assert v["State"] == "Pending"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        c.invoke(FunctionName="ss-heavy", Qualifier=v["Version"], Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "SnapStartNotReadyException"
    c.get_waiter("published_version_active").wait(
        FunctionName="ss-heavy", Qualifier=v["Version"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    r, body, log = invoke(c, "ss-heavy", v["Version"])
    assert body == b"{}" and "Restore Duration" in report(log), (body, log)


def test_twenty_restored_environments_draw_distinct_randoms(make_emberd):
    e = make_emberd(["--max-concurrency", "24"])
    c = e.client(read_timeout=300)
    create(c, "ss-rand", wasm("snapstart"), SnapStart=SNAP)
    version = publish_active(c, "ss-rand")
    before = metric(e, "ember_snapstart_restore_seconds_count")
    # All 20 requests leave together and each holds its environment 900 ms,
    # so none can land on an environment another one just freed (a warm
    # call: no Restore Duration; seen once when the threads started late).
    clients = [e.client(read_timeout=300) for _ in range(20)]

    def one(client):
        r, body, log = invoke(client, "ss-rand", version, b"9")
        assert "FunctionError" not in r, (body, log)
        assert "Restore Duration" in report(log), log
        return json.loads(body)

    outs, errors = at_once([lambda cl=cl: one(cl) for cl in clients])
    assert not errors, (errors, e.log())
    assert len(outs) == 20
    # 20 environments, each restored from the one snapshot.
    assert metric(e, "ember_snapstart_restore_seconds_count") == before + 20
    # What each drew after its restore is its own...
    assert len({o["a"] for o in outs}) == 20, outs
    assert len({o["r"] for o in outs}) == 20, outs
    # ...while a value drawn during Init is the snapshot's, shared by all
    # (Lambda's documented pitfall: re-draw it in the after-restore hook).
    assert len({o["i"] for o in outs}) == 1, outs


def test_tampered_snapshot_falls_back_to_boot(emberd):
    c = emberd.client()
    create(c, "ss-tamper", wasm("snapstart"), SnapStart=SNAP)
    version = publish_active(c, "ss-tamper")
    [name] = sealed_files(emberd)
    path = os.path.join(emberd.data_dir, "store", "snapshots", name)
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0x10
    open(path, "wb").write(bytes(raw))
    failures = metric(emberd, "ember_snapstart_restore_failures_total")
    r, body, log = invoke(c, "ss-tamper", version)
    assert "FunctionError" not in r, (body, log)
    line = report(log)
    assert "Init Duration" in line and "Restore Duration" not in line, line
    # Booted + Init in this environment: its own init draw, no hooks.
    assert json.loads(body)["na"] == 0
    assert metric(emberd, "ember_snapstart_restore_failures_total") == failures + 1
    assert wait_for(lambda: "integrity error" in emberd.log(), timeout=5), emberd.log()


def test_a_restarted_emberd_restores_from_the_sealed_snapshot(make_emberd):
    e = make_emberd()
    c = e.client()
    create(c, "ss-restart", wasm("snapstart"), SnapStart=SNAP)
    version = publish_active(c, "ss-restart")
    assert e.stop() == 0
    # The decrypted copy went with the old emberd; the sealed file stays.
    assert not os.path.exists(f"/dev/shm/ember-ss-{e.proc.pid}")
    e2 = make_emberd()
    r, body, log = invoke(e2.client(), "ss-restart", version)
    assert "FunctionError" not in r, (body, log)
    assert "Restore Duration" in report(log), log
    assert json.loads(body)["na"] == 1


def env_of(r):
    return r["ResponseMetadata"]["HTTPHeaders"]["x-amz-ember-environment"]


def test_events_never_start_a_pending_version(make_emberd):
    """Invoke(Event) of a Pending version is refused as Lambda refuses it
    (SnapStartNotReadyException, nothing queued); an event queued for an
    alias that then moves to a Pending version waits for the snapshot and
    runs restored, never booted + initialised beside it."""
    e = make_emberd(["--async-backoff-ms", "50,100"])
    c = e.client()
    create(c, "ss-async", wasm("heavyinit"), SnapStart=SNAP)
    v1 = publish_active(c, "ss-async")
    c.create_alias(FunctionName="ss-async", Name="live", FunctionVersion=v1)
    c.update_function_configuration(FunctionName="ss-async", Description="v2")
    c.get_waiter("function_updated_v2").wait(FunctionName="ss-async")
    v2 = c.publish_version(FunctionName="ss-async")
    assert v2["State"] == "Pending"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        c.invoke(FunctionName="ss-async", Qualifier=v2["Version"], InvocationType="Event",
                 Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "SnapStartNotReadyException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    c.get_waiter("published_version_active").wait(
        FunctionName="ss-async", Qualifier=v2["Version"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    # An event for `live` waits behind reserved concurrency 0 ...
    c.put_function_concurrency(FunctionName="ss-async", ReservedConcurrentExecutions=0)
    c.invoke(FunctionName="ss-async", Qualifier="live", InvocationType="Event", Payload=b"{}")
    c.update_function_configuration(FunctionName="ss-async", Description="v3")
    c.get_waiter("function_updated_v2").wait(FunctionName="ss-async")
    v3 = c.publish_version(FunctionName="ss-async")
    assert v3["State"] == "Pending"
    # ... then `live` moves to the Pending v3 and the event may run.
    c.update_alias(FunctionName="ss-async", Name="live", FunctionVersion=v3["Version"])
    c.delete_function_concurrency(FunctionName="ss-async")
    restores = metric(e, "ember_snapstart_restore_seconds_count")
    assert wait_for(lambda: metric(e, "ember_snapstart_restore_seconds_count") == restores + 1,
                    timeout=60), e.log()
    assert c.get_function_configuration(FunctionName="ss-async", Qualifier=v3["Version"])["State"] == "Active"
    time.sleep(0.5)
    logs = e.ember("logs", "ss-async").stdout
    reports = [l for l in logs.splitlines() if "REPORT RequestId:" in l]
    assert len(reports) == 1 and "Restore Duration" in reports[0], logs
    assert "Init Duration" not in logs, logs


def test_the_after_restore_hooks_lines_are_logged_before_start(emberd):
    c = emberd.client()
    create(c, "ss-hooklog", wasm("snapstart"), SnapStart=SNAP)
    version = publish_active(c, "ss-hooklog")
    r, body, log = invoke(c, "ss-hooklog", version)
    assert "FunctionError" not in r, (body, log)
    lines = log.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("START RequestId:"))
    # The restore phase's line, before START, as Init's lines are.
    assert "after-restore: re-drew a" in lines[:start], log
    assert "Restore Duration" in report(log)
    # Warm: no restore, no hook line.
    r, body, log = invoke(c, "ss-hooklog", version)
    assert "after-restore" not in log, log
    time.sleep(0.5)
    out = emberd.ember("logs", "ss-hooklog")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("after-restore: re-drew a") == 1, out.stdout


def test_a_timeout_after_restore_is_a_timeout(emberd):
    c = emberd.client()
    create(c, "ss-late", wasm("snapstart"), SnapStart=SNAP, Timeout=1)
    version = publish_active(c, "ss-late")
    r, body, log = invoke(c, "ss-late", version, b"true")  # spins past its timeout
    assert r.get("FunctionError") == "Unhandled", (body, log)
    doc = json.loads(body)
    assert doc["errorType"] == "Sandbox.Timedout", doc
    assert "Task timed out after 1.00 seconds" in doc["errorMessage"], doc
    assert "Restore Duration" in report(log), log
    first = env_of(r)
    # The timed-out environment is gone; the next call restores a new one.
    r, body, log = invoke(c, "ss-late", version)
    assert "FunctionError" not in r, (body, log)
    assert "Restore Duration" in report(log), log
    assert env_of(r) != first, "a timed-out environment was reused"
    assert json.loads(body)["na"] == 1


def test_the_snapshot_environment_counts_in_the_memory_budget(make_emberd):
    """The VM a snapshot is taken from holds a claim on the memory budget
    like any environment: with room for one 128 MB environment, a publish
    waits while another function's call holds it, then evicts that idle
    environment, and gives its claim back once Active."""
    e = make_emberd(["--memory-budget-mib", "144"])
    one = 144 << 20
    c = e.client()
    create(c, "ss-hold", wasm("slow"))  # 1.5 s per call
    create(c, "ss-budget", wasm("heavyinit"), SnapStart=SNAP)
    held = threading.Thread(target=lambda: e.client().invoke(FunctionName="ss-hold"))
    held.start()
    assert wait_for(lambda: metric(e, "ember_memory_claimed_bytes") == one, timeout=30), e.log()
    v = c.publish_version(FunctionName="ss-budget")["Version"]
    held.join()
    # The busy environment held the budget: no snapshot VM could start.
    g = c.get_function_configuration(FunctionName="ss-budget", Qualifier=v)
    assert g["State"] == "Pending", g
    c.get_waiter("published_version_active").wait(
        FunctionName="ss-budget", Qualifier=v, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    assert "to make room for the SnapStart snapshot of ss-budget:" in e.log(), e.log()
    assert wait_for(lambda: metric(e, "ember_memory_claimed_bytes") == 0, timeout=10), e.log()
    r, body, log = invoke(c, "ss-budget", v)
    assert "Restore Duration" in report(log), log


def spares_emberd(make_emberd, name, extra=()):
    """An emberd keeping one restored spare per version, a SnapStart version
    of `name` published, and its first (restored) cold start: emberd,
    client, version and the first call's body."""
    e = make_emberd(["--snapstart-spares", "1", *extra])
    c = e.client()
    create(c, name, wasm("snapstart"), SnapStart=SNAP)
    version = publish_active(c, name)
    _, body, log = invoke(c, name, version)
    assert "Restore Duration" in report(log), log
    return e, c, version, body


def test_a_restored_spare_serves_the_next_cold_start(make_emberd):
    """--snapstart-spares 1: once a version had a cold start, one environment
    is restored ahead of need (holding its memory claim while it waits); the
    next cold start takes it instead of starting a VMM and loading the
    snapshot: a restored environment of its own (after-restore draw, hooks
    once), Restore Duration reported, and the next spare restored behind it."""
    e, c, version, body = spares_emberd(make_emberd, "ss-spare")
    one = (128 + 16) << 20
    first = json.loads(body)
    # The warm environment, and the spare restored beside it.
    assert wait_for(lambda: metric(e, "ember_memory_claimed_bytes") == 2 * one, timeout=30), e.log()
    taken = metric(e, "ember_snapstart_spares_taken_total")
    # Two calls at once: one takes the warm environment, the other the spare.
    clients = [e.client() for _ in range(2)]
    outs, errors = at_once([lambda cl=cl: invoke(cl, "ss-spare", version, b"5") for cl in clients])
    assert not errors, (errors, e.log())
    cold = [(r, body, log) for r, body, log in outs if "Restore Duration" in report(log)]
    assert len(cold) == 1, [report(log) for _, _, log in outs]
    spare = json.loads(cold[0][1])
    assert spare["na"] == 1 and spare["nb"] == 1, spare
    assert spare["a"] != first["a"] and spare["i"] == first["i"], (first, spare)
    assert metric(e, "ember_snapstart_spares_taken_total") == taken + 1
    # Both environments stay warm; a new spare is restored behind them.
    assert wait_for(lambda: metric(e, "ember_memory_claimed_bytes") == 3 * one, timeout=30), e.log()


def test_the_next_restored_spare_waits_for_the_taken_ones_first_call(make_emberd):
    """A restore started at once beside the cold start that took the spare
    competes with its first invocation for the CPUs (restored-spare cold
    start 5.25 ms p50 vs 3.55 ms with the wait, scripts/bench-snapstart.py):
    the next spare's claim (and restore) comes only 100 ms after the take,
    and then it does come."""
    e, c, version, _ = spares_emberd(make_emberd, "ss-wait", ["--idle-timeout", "0"])
    one = (128 + 16) << 20
    # The environment is reaped (idle timeout 0); the spare waits alone.
    assert wait_for(lambda: metric(e, "ember_memory_claimed_bytes") == one, timeout=30), e.log()
    taken = metric(e, "ember_snapstart_spares_taken_total")
    tries = 0
    while True:
        t = time.monotonic()
        _, _, log = invoke(c, "ss-wait", version)
        claimed = metric(e, "ember_memory_claimed_bytes")
        took = time.monotonic() - t
        assert "Restore Duration" in report(log), log
        assert metric(e, "ember_snapstart_spares_taken_total") == taken + 1 + tries
        if took < 0.08:
            break
        # Too slow a round to tell (a loaded host): once the next spare is
        # in, again.
        tries += 1
        assert tries < 5, f"5 rounds over 80 ms ({took * 1000:.0f} ms)"
        time.sleep(1.0)
        assert wait_for(lambda: metric(e, "ember_memory_claimed_bytes") == one, timeout=30)
    # Only the taken environment's claim: no spare claimed beside it yet.
    assert claimed == one, (claimed, took)
    # ... and then it is restored (after the taken environment is reaped,
    # only the new spare's claim is left).
    time.sleep(1.0)
    assert wait_for(lambda: metric(e, "ember_memory_claimed_bytes") == one, timeout=30), e.log()
    _, _, log = invoke(c, "ss-wait", version)
    assert metric(e, "ember_snapstart_spares_taken_total") == taken + 2 + tries, e.log()
