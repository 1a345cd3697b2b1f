"""SnapStart for python3.11 on the kernel-less guest (issue 18) through boto3
against a real emberd: the version publishes Pending then Active, a cold
invoke restores the snapshot (Restore Duration, no Init Duration), the
runtime hooks of Lambda's `snapshot_restore_py` run as Lambda documents
(before-snapshot hooks last registered first, once, before the snapshot;
after-restore hooks in registration order, once per restored environment,
before its first invocation, their output in the log before START), and two
environments restored from one snapshot draw distinct random values after
restore while sharing what Init drew (Lambda's documented pitfall, including
a `random.Random` seeded during Init).

One emberd for the module: the python runtime is compiled once per emberd."""
import base64
import json
import shutil
import tempfile

import botocore.exceptions
import pytest

from conftest import Emberd, at_once, python_wasm_dir, zipped

pytestmark = pytest.mark.vm

ROLE = "arn:aws:iam::000000000000:role/ember"
SNAP = {"ApplyOn": "PublishedVersions"}

HANDLER = r'''
import os, random, time
from snapshot_restore_py import register_before_snapshot, register_after_restore

INIT_DRAW = os.urandom(8).hex()
RNG = random.Random()  # seeded from os.urandom during Init: the snapshot's
ORDER = []
STATE = {"after": None}

@register_before_snapshot
def first_before():
    ORDER.append("before-1")

@register_before_snapshot
def second_before():
    ORDER.append("before-2")

def redraw(tag, loud=False):
    STATE["after"] = os.urandom(8).hex()
    ORDER.append("after-" + tag)
    if loud:
        print("after-restore hook: re-drew", STATE["after"])

register_after_restore(redraw, "a", loud=True)

@register_after_restore
def second_after():
    ORDER.append("after-b")

def handler(event, context):
    end = time.time() + event.get("hold", 0)
    while time.time() < end:
        pass
    return {"init": INIT_DRAW, "after": STATE["after"], "call": os.urandom(8).hex(),
            "mt": RNG.random(), "order": ORDER,
            "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")}
'''

FAILING_HOOK = r'''
from snapshot_restore_py import register_after_restore

@register_after_restore
def broken():
    raise RuntimeError("the hook broke")

def handler(event, context):
    return "never"
'''


@pytest.fixture(scope="module")
def ember():
    d = tempfile.mkdtemp(prefix="epyss", dir="/tmp")
    e = Emberd(d, ["--python-wasm-dir", python_wasm_dir(), "--spare-vms", "0",
                   "--max-concurrency", "8"]).start()
    yield e
    e.stop()
    shutil.rmtree(d, ignore_errors=True)


def create(c, name, source, **kw):
    return c.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                             Handler="app.handler", Code={"ZipFile": zipped({"app.py": source})},
                             MemorySize=256, Timeout=30, SnapStart=SNAP, **kw)


def publish_active(c, name):
    v = c.publish_version(FunctionName=name)
    assert v["State"] == "Pending" and v["SnapStart"]["OptimizationStatus"] == "On", v
    c.get_waiter("published_version_active").wait(
        FunctionName=name, Qualifier=v["Version"], WaiterConfig={"Delay": 1, "MaxAttempts": 180})
    return v["Version"]


def invoke(c, name, version, event):
    r = c.invoke(FunctionName=name, Qualifier=version, Payload=json.dumps(event), LogType="Tail")
    return r, r["Payload"].read(), base64.b64decode(r["LogResult"]).decode()


def report(log):
    [line] = [l for l in log.splitlines() if l.startswith("REPORT")]
    return line


def test_a_python_snapstart_version_restores_with_its_hooks_and_distinct_randoms(ember):
    c = ember.client(read_timeout=300)
    cfg = create(c, "pyss", HANDLER)
    assert cfg["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    version = publish_active(c, "pyss")
    # Two cold invokes at once: two environments restored from one snapshot.
    clients = [ember.client(read_timeout=300) for _ in range(2)]
    outs, errors = at_once([lambda cl=cl: invoke(cl, "pyss", version, {"hold": 1.5})
                            for cl in clients])
    assert not errors, (errors, ember.log())
    bodies = []
    for r, body, log in outs:
        assert "FunctionError" not in r, (body, log)
        line = report(log)
        assert "Restore Duration: " in line and "Init Duration" not in line, line
        v = json.loads(body)
        # Before-snapshot hooks ran once, last registered first, before the
        # snapshot; after-restore hooks once here, in registration order.
        assert v["order"] == ["before-2", "before-1", "after-a", "after-b"], v
        assert v["init_type"] == "snap-start", v
        lines = log.splitlines()
        start = next(i for i, l in enumerate(lines) if l.startswith("START RequestId:"))
        assert f"after-restore hook: re-drew {v['after']}" in lines[:start], log
        bodies.append(v)
    a, b = bodies
    assert a["after"] != b["after"] and a["call"] != b["call"], bodies
    # What Init drew is the snapshot's, in both: re-draw it in a hook.
    assert a["init"] == b["init"] and a["mt"] == b["mt"], bodies
    # Warm: the same environment, no restore, no hooks again.
    r, body, log = invoke(c, "pyss", version, {})
    line = report(log)
    assert "Restore Duration" not in line and "Init Duration" not in line, line
    assert json.loads(body)["order"] == ["before-2", "before-1", "after-a", "after-b"]


def test_a_failing_after_restore_hook_is_the_functions_error(ember):
    c = ember.client(read_timeout=300)
    create(c, "pyss-broken", FAILING_HOOK)
    version = publish_active(c, "pyss-broken")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        invoke(c, "pyss-broken", version, {})
    assert err.value.response["Error"]["Code"] == "SnapStartException", err.value.response
