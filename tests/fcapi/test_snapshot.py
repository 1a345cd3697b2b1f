"""Snapshots through the API (PUT /snapshot/create, PUT /snapshot/load) of a
kernel-less guest, with the VMM's sandbox on: boot `snap_guest ready`
through the API, pause, create; load in a new `ember-vmm --api-sock` and
the restored guest runs on (it sees the generation the load bumped) and
exits 0 (from a Diff snapshot over the Full one, loaded paused as
Firecracker's default `resume_vm: false` asks, then resumed). Plus Firecracker's rules around them: create needs a paused VM,
load needs a fresh VMM, paths outside the API socket's directory are
refused by the sandbox and the VMM keeps serving."""
import time

from conftest import fault


def wait_for(path, text, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return path.read_text(errors="replace")
        time.sleep(0.01)
    raise AssertionError(f"{text!r} never appeared in {path}")


def boot_ready_guest(vmm, tmp_path, guests, serial):
    assert vmm.put("/serial", {"serial_out_path": str(serial)}).status_code == 204
    assert vmm.put("/boot-source", {"kernel_image_path": str(guests / "snap_guest"),
                                    "boot_args": "ready"}).status_code == 204
    assert vmm.put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 64,
                                       "track_dirty_pages": True}).status_code == 204
    r = vmm.put("/actions", {"action_type": "InstanceStart"})
    assert r.status_code == 204, r.text
    wait_for(serial, "ready before=")


def test_create_then_load_in_a_new_vmm(vmm_factory, tmp_path, guests):
    v1 = vmm_factory(name="first")
    boot_ready_guest(v1, tmp_path, guests, tmp_path / "first.serial")
    state, mem = tmp_path / "vm.state", tmp_path / "vm.mem"
    body = {"snapshot_path": str(state), "mem_file_path": str(mem), "snapshot_type": "Full"}
    r = v1.put("/snapshot/create", body)
    assert r.status_code == 400 and "must be paused" in fault(r), r.text
    assert v1.patch("/vm", {"state": "Paused"}).status_code == 204
    # Outside the API socket's directory: the sandbox refuses, the VMM serves on.
    r = v1.put("/snapshot/create", {"snapshot_path": "/var/tmp/fcapi-escape.state",
                                    "mem_file_path": "/var/tmp/fcapi-escape.mem"})
    assert r.status_code == 400 and "Snapshot:" in fault(r), r.text
    assert v1.alive(), v1.err()
    r = v1.put("/snapshot/create", body)
    assert r.status_code == 204, r.text
    assert state.stat().st_size > 0 and mem.exists()
    assert v1.get("/").json()["state"] == "Paused"
    # A diff on top (track_dirty_pages was set through machine-config).
    assert v1.get("/machine-config").json()["track_dirty_pages"] is True
    diff_state = tmp_path / "vm.diff.state"
    r = v1.put("/snapshot/create", {**body, "snapshot_path": str(diff_state),
                                    "snapshot_type": "Diff"})
    assert r.status_code == 204, r.text
    v1.close()
    state = diff_state

    v2 = vmm_factory(name="second")
    serial2 = tmp_path / "second.serial"
    assert v2.put("/serial", {"serial_out_path": str(serial2)}).status_code == 204
    load = {"snapshot_path": str(state), "mem_backend": {"backend_type": "File",
                                                          "backend_path": str(mem)},
            "resume_vm": True}
    # Uffd: the path must be a page-fault handler's socket.
    r = v2.put("/snapshot/load", {**load, "mem_backend": {"backend_type": "Uffd",
                                                          "backend_path": str(mem)}})
    assert r.status_code == 400 and fault(r).startswith("Snapshot: "), r.text
    r = v2.put("/snapshot/load", {**load, "mem_file_path": str(mem)})
    assert r.status_code == 400 and "exactly one of" in fault(r)
    # Without resume_vm (Firecracker's default: false) the VM loads paused
    # and runs on PATCH /vm Resumed.
    paused_load = {k: v for k, v in load.items() if k != "resume_vm"}
    r = v2.put("/snapshot/load", paused_load)
    assert r.status_code == 204, r.text
    assert v2.get("/").json()["state"] == "Paused"
    # GET /vm/config describes the restored VM; the boot source is empty.
    cfg = v2.get("/vm/config").json()
    assert cfg["machine-config"]["mem_size_mib"] == 64, cfg
    assert cfg["machine-config"]["track_dirty_pages"] is False, cfg
    assert cfg["boot-source"] is None, cfg
    time.sleep(0.3)
    assert "generation=" not in (serial2.read_text() if serial2.exists() else "")
    # (The guest prints and exits at once: the answer must still arrive.)
    assert v2.patch("/vm", {"state": "Resumed"}).status_code == 204
    out = wait_for(serial2, "generation=")
    assert "generation=1" in out, out
    assert v2.wait(10) == 0, v2.err()


def test_load_needs_a_fresh_vmm_and_good_files(vmm, tmp_path, guests):
    (tmp_path / "bad.state").write_bytes(b"not a snapshot")
    (tmp_path / "bad.mem").write_bytes(b"")
    load = {"snapshot_path": str(tmp_path / "bad.state"),
            "mem_file_path": str(tmp_path / "bad.mem"), "resume_vm": True}
    r = vmm.put("/snapshot/load", load)
    assert r.status_code == 400 and fault(r).startswith("Snapshot: "), r.text
    assert vmm.get("/").json()["state"] == "Not started"
    r = vmm.put("/snapshot/load", {**load, "snapshot_path": str(tmp_path / "missing")})
    assert r.status_code == 400 and "missing" in fault(r)
    assert vmm.put("/boot-source", {"kernel_image_path": str(guests / "spin")}).status_code == 204
    r = vmm.put("/snapshot/load", load)
    assert r.status_code == 400 and "after configuring boot-specific resources" in fault(r)
    r = vmm.put("/snapshot/load", {**load, "bogus": 1})
    assert r.status_code == 400 and "unknown field `bogus`" in fault(r)
    assert vmm.alive()
