"""Restore slots (issues 16 and 18) against a real emberd and real jailed
microVMs: with a SnapStart snapshot sealed, emberd keeps a jailed ember-vmm
started ahead in API-socket mode, bound to no function (`--restore-slots`,
default 1); a cold start that finds no restored spare loads the snapshot
into it (ember_restore_slots_taken_total, EMBER_TRACE_COLD's "slot" line),
a new slot is started behind it, and a slot whose VMM died is discarded
while the restore still succeeds in a fresh VMM. The isolation suite
(test_promise_05_vmm_confinement.py) checks that a slot-restored VMM is
jailed like every other."""
import json
import os
import signal

import pytest

from conftest import create, wait_for, wasm
from test_snapstart import SNAP, invoke, metric, publish_active, report

pytestmark = pytest.mark.vm


def slot_pids(e):
    """The live jailers of the slots waiting (run/slots.pids)."""
    try:
        pids = [int(p) for p in open(os.path.join(e.data_dir, "run", "slots.pids")).read().split()]
    except FileNotFoundError:
        return []
    return [p for p in pids if os.path.exists(f"/proc/{p}/task/{p}/children")
            and open(f"/proc/{p}/task/{p}/children").read().split()]


def slot_ready(e):
    """Waits until one slot is ready (started and answering)."""
    return wait_for(lambda: metric(e, "ember_restore_slots_ready") == 1
                    and len(slot_pids(e)) == 1, timeout=30)


def test_a_cold_restore_loads_into_a_slot(make_emberd, monkeypatch):
    monkeypatch.setenv("EMBER_TRACE_COLD", "1")
    e = make_emberd(["--restore-slots", "1"])
    c = e.client()
    create(c, "sl-take", wasm("snapstart"), SnapStart=SNAP)
    version = publish_active(c, "sl-take")
    assert slot_ready(e), e.log()
    [slot] = slot_pids(e)
    r, body, log = invoke(c, "sl-take", version)
    assert "FunctionError" not in r, (body, log)
    line = report(log)
    assert "Restore Duration" in line and "Init Duration" not in line, line
    out = json.loads(body)
    assert (out["nb"], out["na"]) == (1, 1), out
    assert metric(e, "ember_restore_slots_taken_total") == 1, e.log()
    assert metric(e, "ember_restore_slots_discarded_total") == 0
    # The environment is the slot's VMM (its jailer's pid).
    assert [x["Pid"] for x in e.envs()] == [slot]
    assert "slot, spawned ahead in" in e.log(), e.log()


def test_a_taken_slot_is_refilled(make_emberd):
    e = make_emberd(["--restore-slots", "1"])
    c = e.client()
    for name in ("sl-a", "sl-b"):
        create(c, name, wasm("snapstart"), SnapStart=SNAP)
    va = publish_active(c, "sl-a")
    vb = publish_active(c, "sl-b")
    assert slot_ready(e), e.log()
    [first] = slot_pids(e)
    _, _, log = invoke(c, "sl-a", va)
    assert "Restore Duration" in report(log), log
    # A new slot, another process, is started behind the take ...
    assert wait_for(lambda: slot_pids(e) not in ([], [first]), timeout=30), e.log()
    assert slot_ready(e), e.log()
    [second] = slot_pids(e)
    # ... and serves the next cold restore, of another function.
    r, body, log = invoke(c, "sl-b", vb)
    assert "FunctionError" not in r and "Restore Duration" in report(log), (body, log)
    assert json.loads(body)["na"] == 1
    assert metric(e, "ember_restore_slots_taken_total") == 2, e.log()
    assert second in [x["Pid"] for x in e.envs()]


def test_a_dead_slot_is_discarded_and_the_restore_succeeds(make_emberd):
    e = make_emberd(["--restore-slots", "1"])
    c = e.client()
    create(c, "sl-dead", wasm("snapstart"), SnapStart=SNAP)
    version = publish_active(c, "sl-dead")
    assert slot_ready(e), e.log()
    [slot] = slot_pids(e)
    [vmm] = [int(p) for p in open(f"/proc/{slot}/task/{slot}/children").read().split()]
    os.kill(vmm, signal.SIGKILL)
    r, body, log = invoke(c, "sl-dead", version)
    assert "FunctionError" not in r, (body, log)
    assert "Restore Duration" in report(log), log
    assert json.loads(body)["na"] == 1
    assert metric(e, "ember_restore_slots_discarded_total") == 1, e.log()
    assert metric(e, "ember_snapstart_restore_failures_total") == 0
    assert slot not in [x["Pid"] for x in e.envs()]
