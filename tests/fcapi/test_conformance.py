"""Walks every operation of Firecracker's OpenAPI description (the pinned
table in openapi_ops.py) against a real `ember-vmm --api-sock`, before and
after boot: each answers as the description says (its success status), or
with Firecracker's pre-boot/post-boot refusal, or — for what ember does not
implement — 400 with a `fault_message` naming the feature. Never a silent
accept, never a 404 or a dropped connection."""
import os

import pytest

from conftest import fault
from openapi_ops import OPERATIONS

NOT_BEFORE = "The requested operation is not supported before starting the microVM."
NOT_AFTER = "The requested operation is not supported after starting the microVM."

# operationId -> (path with ids filled in, a well-formed body or None)
REQUESTS = {
    "describeInstance": ("/", None),
    "createSyncAction": ("/actions", {"action_type": "FlushMetrics"}),
    "describeBalloonConfig": ("/balloon", None),
    "putBalloon": ("/balloon", {"amount_mib": 1, "deflate_on_oom": True}),
    "patchBalloon": ("/balloon", {"amount_mib": 2}),
    "describeBalloonStats": ("/balloon/statistics", None),
    "patchBalloonStatsInterval": ("/balloon/statistics", {"stats_polling_interval_s": 1}),
    "startBalloonHinting": ("/balloon/hinting/start", {"acknowledge_on_stop": True}),
    "describeBalloonHinting": ("/balloon/hinting/status", None),
    "stopBalloonHinting": ("/balloon/hinting/stop", None),
    "putGuestBootSource": ("/boot-source", "BOOT"),
    "putCpuConfiguration": ("/cpu-config", {"cpuid_modifiers": []}),
    "putGuestDriveByID": ("/drives/scratch", "DRIVE"),
    "patchGuestDriveByID": ("/drives/scratch", {"drive_id": "scratch", "path_on_host": "DRIVEPATH"}),
    "putGuestPmemByID": ("/pmem/pm0", {"id": "pm0", "path_on_host": "/dev/null"}),
    "patchGuestPmemByID": ("/pmem/pm0", {"id": "pm0"}),
    "putLogger": ("/logger", "LOGGER"),
    "getMachineConfiguration": ("/machine-config", None),
    "putMachineConfiguration": ("/machine-config", {"vcpu_count": 1, "mem_size_mib": 32}),
    "patchMachineConfiguration": ("/machine-config", {"mem_size_mib": 64}),
    "putMetrics": ("/metrics", "METRICS"),
    "putMmds": ("/mmds", {"latest": {}}),
    "patchMmds": ("/mmds", {"latest": {}}),
    "getMmds": ("/mmds", None),
    "putMmdsConfig": ("/mmds/config", {"network_interfaces": ["eth0"]}),
    "putEntropyDevice": ("/entropy", {"rate_limiter": {"ops": {"size": 100, "refill_time": 100}}}),
    "putSerialDevice": ("/serial", "SERIAL"),
    "putMemoryHotplug": ("/hotplug/memory", {"total_size_mib": 1024}),
    "patchMemoryHotplug": ("/hotplug/memory", {"requested_size_mib": 128}),
    "getMemoryHotplug": ("/hotplug/memory", None),
    "putGuestNetworkInterfaceByID": ("/network-interfaces/eth0",
                                     {"iface_id": "eth0", "host_dev_name": "TAP"}),
    "patchGuestNetworkInterfaceByID": ("/network-interfaces/eth0", {"iface_id": "eth0"}),
    "createSnapshot": ("/snapshot/create", {"snapshot_path": "SNAP", "mem_file_path": "MEM"}),
    "loadSnapshot": ("/snapshot/load", {"snapshot_path": "SNAP", "mem_file_path": "MEM"}),
    "getFirecrackerVersion": ("/version", None),
    "patchVm": ("/vm", {"state": "Paused"}),
    "getExportVmConfig": ("/vm/config", None),
    "putGuestVsock": ("/vsock", {"guest_cid": 3, "uds_path": "VSOCK"}),
}

BALLOON = "balloon"
MMDS = "MMDS"
HOTPLUG = "memory hotplug"
REFUSED_ALWAYS = {
    "describeBalloonConfig": BALLOON, "putBalloon": BALLOON, "patchBalloon": BALLOON,
    "describeBalloonStats": BALLOON, "patchBalloonStatsInterval": BALLOON,
    "startBalloonHinting": BALLOON, "describeBalloonHinting": BALLOON,
    "stopBalloonHinting": BALLOON, "putCpuConfiguration": "CPU templates",
    "putGuestPmemByID": "pmem", "patchGuestPmemByID": "pmem",
    "putMmds": MMDS, "patchMmds": MMDS, "getMmds": MMDS, "putMmdsConfig": MMDS,
    "putMemoryHotplug": HOTPLUG, "patchMemoryHotplug": HOTPLUG, "getMemoryHotplug": HOTPLUG,
}

# Before boot: refusals other than the features above (None: the success
# status of the description).
PRE_BOOT = {
    "createSyncAction": NOT_BEFORE,  # FlushMetrics needs a running VM
    "patchGuestDriveByID": NOT_BEFORE,
    "patchGuestNetworkInterfaceByID": NOT_BEFORE,
    "createSnapshot": NOT_BEFORE,
    "patchVm": NOT_BEFORE,
    "loadSnapshot": "after configuring boot-specific resources",
}

# After boot.
POST_BOOT = {
    "createSyncAction": None,
    "putGuestBootSource": NOT_AFTER, "putGuestDriveByID": NOT_AFTER, "putLogger": NOT_AFTER,
    "putMachineConfiguration": NOT_AFTER, "patchMachineConfiguration": NOT_AFTER,
    "putMetrics": NOT_AFTER, "putEntropyDevice": NOT_AFTER, "putSerialDevice": NOT_AFTER,
    "putGuestNetworkInterfaceByID": NOT_AFTER, "putGuestVsock": NOT_AFTER,
    "loadSnapshot": NOT_AFTER,
    "patchGuestDriveByID": "updating a drive after boot",
    "patchGuestNetworkInterfaceByID": "updating a network interface after boot",
    "createSnapshot": "must be paused",
    "patchVm": None,
}


def test_the_table_covers_the_description():
    ids = [op for _, _, op, _ in OPERATIONS]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(REQUESTS), set(ids) ^ set(REQUESTS)


def fill(body, tmp_path, guests):
    drive = tmp_path / "scratch.img"
    drive.write_bytes(b"\0" * 4096)
    values = {
        "BOOT": {"kernel_image_path": str(guests / "spin")},
        "DRIVE": {"drive_id": "scratch", "path_on_host": str(drive), "is_root_device": False,
                  "is_read_only": True},
        "DRIVEPATH": str(drive),
        "LOGGER": {"log_path": str(tmp_path / "vmm.log"), "level": "Info"},
        "METRICS": {"metrics_path": str(tmp_path / "metrics.json")},
        "SERIAL": {"serial_out_path": str(tmp_path / "serial.out")},
        "SNAP": str(tmp_path / "snap"),
        "MEM": str(tmp_path / "mem"),
        "VSOCK": str(tmp_path / "v.sock"),
        "TAP": f"fcapi{os.getpid() % 100000}",
    }
    if isinstance(body, str):
        return values[body]
    if isinstance(body, dict):
        return {k: fill(v, tmp_path, guests) if isinstance(v, str) and v in values else v
                for k, v in body.items()}
    return body


def call(vmm, method, path, body):
    return vmm.session.request(method, vmm.url(path), json=body, timeout=10)


def check(resp, op, want_status, expect):
    if expect is None:
        assert resp.status_code == want_status, (op, resp.status_code, resp.text)
        if want_status == 200:
            assert resp.headers["Content-Type"] == "application/json"
            assert isinstance(resp.json(), dict)
        else:
            assert resp.content == b""
    else:
        assert resp.status_code == 400, (op, resp.status_code, resp.text)
        assert expect in fault(resp), (op, resp.text)


def walk(vmm, table, tmp_path, guests, skip=()):
    for method, _, op, status in OPERATIONS:
        if op in skip:
            continue
        path, body = REQUESTS[op]
        resp = call(vmm, method, path, fill(body, tmp_path, guests))
        expect = REFUSED_ALWAYS.get(op, table.get(op))
        check(resp, op, status, expect)
        assert vmm.alive(), vmm.err()


def test_every_operation_before_and_after_boot(vmm, tmp_path, guests):
    walk(vmm, PRE_BOOT, tmp_path, guests)
    # What the walk configured is what the VM reports.
    cfg = vmm.get("/vm/config").json()
    # FullVmConfiguration's keys, all of them (what ember lacks is empty).
    assert set(cfg) == {"balloon", "drives", "boot-source", "cpu-config", "logger",
                        "machine-config", "metrics", "memory-hotplug", "mmds-config",
                        "network-interfaces", "pmem", "vsock", "entropy"}, set(cfg)
    assert cfg["pmem"] == [] and cfg["memory-hotplug"] is None and cfg["balloon"] is None
    assert cfg["machine-config"]["mem_size_mib"] == 64
    assert cfg["boot-source"]["kernel_image_path"].endswith("/spin")
    assert [d["drive_id"] for d in cfg["drives"]] == ["scratch"]
    assert cfg["metrics"]["metrics_path"].endswith("metrics.json")
    assert cfg["entropy"] == {"rate_limiter": {"ops": {"size": 100, "refill_time": 100}}}
    # (InstanceStart creates the interface's TAP: the tests run as root.)
    r = vmm.put("/actions", {"action_type": "InstanceStart"})
    assert r.status_code == 204, r.text
    assert vmm.get("/").json()["state"] == "Running"
    walk(vmm, POST_BOOT, tmp_path, guests, skip={"patchVm"})
    r = vmm.patch("/vm", {"state": "Paused"})
    assert r.status_code == 204, r.text
    assert vmm.get("/").json()["state"] == "Paused"
    assert vmm.patch("/vm", {"state": "Resumed"}).status_code == 204
    assert vmm.get("/").json()["state"] == "Running"
    r = vmm.put("/actions", {"action_type": "InstanceStart"})
    assert r.status_code == 400 and fault(r) == NOT_AFTER
    assert vmm.alive(), vmm.err()


@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"), ("PUT", "/nope"), ("PATCH", "/machine"), ("GET", "/vm/nope"),
    ("PATCH", "/boot-source"), ("GET", "/actions"), ("PUT", "/version"),
])
def test_paths_and_methods_outside_the_description(vmm, method, path):
    body = None if method == "GET" else {}
    r = call(vmm, method, path, body)
    assert r.status_code == 400, r.text
    assert fault(r).startswith("Invalid request method and/or path: ")
    assert vmm.alive()
