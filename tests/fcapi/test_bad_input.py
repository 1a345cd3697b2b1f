"""Bad input on the API socket gets Firecracker's answer and the VMM keeps
serving: unknown fields, malformed JSON, wrong values, wrong order, bad ids,
oversize bodies and headers, garbage bytes, a client that sends half a
request and stalls, more clients than connection slots."""
import json
import socket
import time

import pytest

from conftest import fault

NOT_BEFORE = "The requested operation is not supported before starting the microVM."


def still_serving(vmm):
    assert vmm.alive(), vmm.err()
    r = vmm.get("/")
    assert r.status_code == 200 and r.json()["state"] == "Not started"


@pytest.mark.parametrize("method,path,body", [
    ("PUT", "/boot-source", {"kernel_image_path": "/k", "kernel": "/k"}),
    ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64, "cpus": 2}),
    ("PATCH", "/machine-config", {"memory": 64}),
    ("PUT", "/drives/d0", {"drive_id": "d0", "path_on_host": "/x", "is_root_device": False,
                           "is_read_only": True, "readonly": True}),
    ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "t0", "mac": "x"}),
    ("PUT", "/vsock", {"guest_cid": 3, "uds_path": "/tmp/v", "cid": 3}),
    ("PUT", "/logger", {"log_path": "/tmp/l", "verbose": True}),
    ("PUT", "/metrics", {"metrics_path": "/tmp/m", "period": 1}),
    ("PUT", "/serial", {"serial_out_path": "/tmp/s", "baud": 9600}),
    ("PUT", "/actions", {"action_type": "InstanceStart", "now": True}),
    ("PATCH", "/vm", {"state": "Paused", "why": "x"}),
])
def test_unknown_fields_are_refused(vmm, method, path, body):
    r = vmm.session.request(method, vmm.url(path), json=body, timeout=10)
    assert r.status_code == 400, r.text
    msg = fault(r)
    assert msg.startswith("An error occurred when deserializing the json body of a request: ")
    assert "unknown field" in msg, msg
    still_serving(vmm)
    # Nothing of the refused request was applied.
    cfg = vmm.get("/vm/config").json()
    assert cfg["boot-source"] is None and cfg["drives"] == [] and cfg["vsock"] is None
    assert cfg["machine-config"]["vcpu_count"] == 1 and cfg["machine-config"]["mem_size_mib"] == 128


@pytest.mark.parametrize("body", [b"{", b"[]", b"null", b"\xff\xfe", b'{"vcpu_count": "one"}'])
def test_malformed_json(vmm, body):
    r = vmm.session.put(vmm.url("/machine-config"), data=body, timeout=10)
    assert r.status_code == 400
    assert "deserializing the json body" in fault(r)
    still_serving(vmm)


@pytest.mark.parametrize("body,words", [
    ({"vcpu_count": 0, "mem_size_mib": 64}, "vCPU number is invalid"),
    ({"vcpu_count": 33, "mem_size_mib": 64}, "vCPU number is invalid"),
    ({"vcpu_count": 3, "mem_size_mib": 64, "smt": True}, "vCPU number is invalid"),
    ({"vcpu_count": 1, "mem_size_mib": 0}, "memory size (MiB) is invalid"),
    ({"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"}, "huge_pages"),
    ({"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": "T2"}, "CPU templates"),
    ({"vcpu_count": -1, "mem_size_mib": 64}, "deserializing"),
])
def test_bad_machine_config(vmm, body, words):
    r = vmm.put("/machine-config", body)
    assert r.status_code == 400 and words in fault(r), r.text
    assert vmm.get("/machine-config").json() == {
        "vcpu_count": 1, "mem_size_mib": 128, "smt": False, "track_dirty_pages": False,
        "huge_pages": "None"}


def test_ids_and_device_bodies(vmm):
    r = vmm.put("/drives/a", {"drive_id": "b", "path_on_host": "/x", "is_root_device": False})
    assert fault(r) == "The id from the path [a] does not match the id from the body [b]!"
    r = vmm.put("/drives/a-b", {"drive_id": "a-b", "path_on_host": "/x", "is_root_device": False})
    assert "alphanumeric" in fault(r)
    r = vmm.put("/drives/", {"drive_id": "", "path_on_host": "/x", "is_root_device": False})
    assert fault(r) == "The ID cannot be empty."
    # Two root devices: the second is refused, the first stays.
    ok = vmm.put("/drives/r1", {"drive_id": "r1", "path_on_host": "/x", "is_root_device": True})
    assert ok.status_code == 204
    r = vmm.put("/drives/r2", {"drive_id": "r2", "path_on_host": "/y", "is_root_device": True})
    assert r.status_code == 400, r.text
    # Replacing r1 by id keeps one entry.
    ok = vmm.put("/drives/r1", {"drive_id": "r1", "path_on_host": "/z", "is_root_device": True})
    assert ok.status_code == 204
    assert [d["path_on_host"] for d in vmm.get("/vm/config").json()["drives"]] == ["/z"]
    r = vmm.put("/vsock", {"guest_cid": 2, "uds_path": "/tmp/v"})
    assert r.status_code == 400 and "vsock" in fault(r)


def test_wrong_state_and_wrong_order(vmm, tmp_path):
    r = vmm.put("/actions", {"action_type": "InstanceStart"})
    assert fault(r) == "Cannot start microvm without kernel configuration."
    for method, path, body in [
        ("PATCH", "/vm", {"state": "Paused"}), ("PATCH", "/vm", {"state": "Resumed"}),
        ("PUT", "/actions", {"action_type": "FlushMetrics"}),
        ("PUT", "/actions", {"action_type": "SendCtrlAltDel"}),
        ("PATCH", "/drives/d0", {"drive_id": "d0"}),
        ("PUT", "/snapshot/create", {"snapshot_path": "/s", "mem_file_path": "/m"}),
    ]:
        r = vmm.session.request(method, vmm.url(path), json=body, timeout=10)
        assert r.status_code == 400 and fault(r) == NOT_BEFORE, (path, r.text)
    r = vmm.put("/boot-source", {"kernel_image_path": str(tmp_path / "missing")})
    assert r.status_code == 204
    r = vmm.put("/actions", {"action_type": "InstanceStart"})
    assert r.status_code == 400 and "missing" in fault(r), r.text
    # A failed start leaves the VMM configurable.
    still_serving(vmm)
    assert vmm.put("/metrics", {"metrics_path": str(tmp_path / "m.json")}).status_code == 204
    r = vmm.put("/metrics", {"metrics_path": str(tmp_path / "m2.json")})
    assert r.status_code == 400 and "Reinitialization" in fault(r)


def test_oversize_body_is_refused_and_serving_goes_on(vmm, tmp_path):
    body = json.dumps({"kernel_image_path": "/k", "boot_args": "x" * 60_000}).encode()
    raw = vmm.raw(b"PUT /boot-source HTTP/1.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:200]
    assert (b"Request payload with size %d is larger than the limit of 51200 allowed by server."
            % len(body)) in raw
    big = tmp_path / "big.json"
    big.write_bytes(body)
    out = vmm.curl("-X", "PUT", "http://localhost/boot-source", "--data-binary", f"@{big}")
    assert out.stdout.startswith("HTTP/1.1 400"), out.stdout[:300]
    assert "is larger than the limit of 51200" in out.stdout
    still_serving(vmm)
    assert vmm.get("/vm/config").json()["boot-source"] is None


def test_bodies_up_to_the_limit_work_with_curl(vmm):
    # curl sends `Expect: 100-continue` for bodies over 1 KiB and waits for it.
    args = "a" * 40_000
    body = json.dumps({"kernel_image_path": "/k", "boot_args": args})
    start = time.monotonic()
    out = vmm.curl("-X", "PUT", "http://localhost/boot-source", "-H",
                   "Content-Type: application/json", "-d", body)
    assert "HTTP/1.1 204" in out.stdout, out.stdout[:300]
    assert time.monotonic() - start < 0.9, "curl waited for a 100 Continue it never got"
    assert vmm.get("/vm/config").json()["boot-source"]["boot_args"] == args


@pytest.mark.parametrize("raw", [
    b"\x00\xff\xfe garbage\r\n\r\n",
    b"POST / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    b"PUT /boot-source HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"PUT /boot-source HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"a" * 20000,
])
def test_garbage_gets_400_and_a_closed_connection(vmm, raw):
    out = vmm.raw(raw)
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert b"All previous unanswered requests will be dropped." in out
    still_serving(vmm)


def test_pipelined_requests_are_answered_in_order(vmm):
    out = vmm.raw(b"GET /version HTTP/1.1\r\n\r\nGET /machine-config HTTP/1.1\r\n\r\n"
                  b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 ") == 3, out
    assert out.index(b"firecracker_version") < out.index(b"mem_size_mib") < out.index(b"Not started")


def test_a_stalled_half_request_blocks_nobody_and_is_dropped(vmm):
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(vmm.sock)
    stalled.sendall(b"PUT /machine-config HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"vcpu")
    half_head = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    half_head.connect(vmm.sock)
    half_head.sendall(b"GET / HTTP/1.1\r\nHost: loc")
    try:
        start = time.monotonic()
        for _ in range(50):
            assert vmm.get("/vm/config").status_code == 200
        assert time.monotonic() - start < 5, "other clients were slowed by the stalled ones"
        # The server drops them after its stall timeout (5 s): recv sees EOF.
        for s in (stalled, half_head):
            s.settimeout(15)
            assert s.recv(100) == b""
        assert time.monotonic() - start < 15
        still_serving(vmm)
    finally:
        stalled.close()
        half_head.close()


def test_more_clients_than_connection_slots(vmm):
    idle = []
    try:
        for _ in range(40):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(vmm.sock)
            idle.append(s)
        # Slots are bounded; the newest clients still get answers.
        for _ in range(5):
            out = vmm.raw(b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200 "), out
    finally:
        for s in idle:
            s.close()
    still_serving(vmm)


def test_a_client_that_leaves_before_its_answer(vmm):
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(vmm.sock)
        s.sendall(b"GET /vm/config HTTP/1.1\r\n\r\n")
        s.close()
    still_serving(vmm)
