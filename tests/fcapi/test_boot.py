"""A kernel-less guest booted and run only through the API, the way
Firecracker's users do it: boot-source, machine-config, a drive, vsock,
logger and metrics, InstanceStart; then the vsock echo guest answers, PATCH
/vm pauses it (no echo while paused) and resumes it, FlushMetrics writes
Firecracker-style JSON, and the guest's exit ends the process with its
code. Also: `--config-file` together with `--api-sock` boots at once and
keeps serving; `--no-seccomp` is logged; `--version`."""
import json
import socket
import subprocess
import time

from conftest import bin_dir, fault

NOT_AFTER = "The requested operation is not supported after starting the microVM."


def vsock_connect(uds, port, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(uds)
            s.sendall(f"CONNECT {port}\n".encode())
            line = b""
            while not line.endswith(b"\n"):
                chunk = s.recv(1)
                if not chunk:
                    raise ConnectionError("closed before OK")
                line += chunk
            assert line.startswith(b"OK "), line
            return s
        except (OSError, ConnectionError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def echo(s, data, timeout):
    s.settimeout(timeout)
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_full_boot_through_the_api_then_pause_resume_and_exit(vmm, tmp_path, guests):
    uds = str(tmp_path / "v.sock")
    drive = tmp_path / "d.img"
    drive.write_bytes(b"\0" * 65536)
    metrics = tmp_path / "metrics.json"
    log = tmp_path / "vmm.log"
    steps = [
        ("PUT", "/logger", {"log_path": str(log), "level": "Debug"}),
        ("PUT", "/metrics", {"metrics_path": str(metrics)}),
        ("PUT", "/boot-source", {"kernel_image_path": str(guests / "vsock_echo"),
                                 "boot_args": "52 1"}),
        ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64}),
        ("PATCH", "/machine-config", {"vcpu_count": 1}),
        ("PUT", "/drives/scratch", {"drive_id": "scratch", "path_on_host": str(drive),
                                    "is_root_device": False, "is_read_only": True}),
        ("PUT", "/vsock", {"guest_cid": 3, "uds_path": uds}),
        ("PUT", "/serial", {"serial_out_path": str(tmp_path / "serial.out")}),
    ]
    for method, path, body in steps:
        r = vmm.session.request(method, vmm.url(path), json=body, timeout=10)
        assert r.status_code == 204, (path, r.text)
    assert vmm.get("/machine-config").json()["vcpu_count"] == 1
    r = vmm.put("/actions", {"action_type": "InstanceStart"})
    assert r.status_code == 204, r.text
    assert vmm.get("/").json()["state"] == "Running"

    conn = vsock_connect(uds, 52)
    assert echo(conn, b"ping", 5) == b"ping"

    assert vmm.patch("/vm", {"state": "Paused"}).status_code == 204
    assert vmm.get("/").json()["state"] == "Paused"
    conn.settimeout(0.3)
    conn.sendall(b"held")
    try:
        early = conn.recv(16)
    except socket.timeout:
        early = b""
    assert early == b"", "a paused guest answered"
    # Configuration is closed after boot; the API keeps answering.
    r = vmm.put("/boot-source", {"kernel_image_path": "/k"})
    assert r.status_code == 400 and fault(r) == NOT_AFTER
    assert vmm.patch("/vm", {"state": "Resumed"}).status_code == 204
    conn.settimeout(5)
    got = b""
    while len(got) < 4:
        got += conn.recv(16)
    assert got == b"held"

    assert vmm.put("/actions", {"action_type": "FlushMetrics"}).status_code == 204
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert lines, "FlushMetrics wrote nothing"
    put = lines[-1]["put_api_requests"]
    assert put["actions_count"] >= 2 and put["boot_source_count"] >= 1
    assert lines[-1]["patch_api_requests"]["vm_count"] == 2
    assert "utc_timestamp_ms" in lines[-1]

    # The guest exits after its one connection closes: so does the VMM.
    conn.close()
    assert vmm.wait(10) == 0, vmm.err()
    assert log.read_text(), "the log file configured through the API stayed empty"


def test_config_file_with_the_api_boots_at_once(vmm_factory, tmp_path, guests):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({
        "boot-source": {"kernel_image_path": str(guests / "spin")},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 32},
    }))
    v = vmm_factory("--config-file", str(cfg), "--id", "from-file", "--no-seccomp")
    deadline = time.monotonic() + 10
    while v.get("/").json()["state"] != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    info = v.get("/").json()
    assert info["id"] == "from-file"
    assert v.get("/vm/config").json()["machine-config"]["mem_size_mib"] == 32
    r = v.put("/actions", {"action_type": "InstanceStart"})
    assert r.status_code == 400 and fault(r) == NOT_AFTER
    assert "--no-seccomp" in v.err()


def test_flags():
    out = subprocess.run([str(bin_dir() / "ember-vmm"), "--version"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith("ember-vmm ")
    out = subprocess.run([str(bin_dir() / "ember-vmm"), "--api-sock", "/tmp/x", "--no-api"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode != 0 and "exclude each other" in out.stderr


def test_an_existing_socket_path_is_refused(tmp_path):
    sock = tmp_path / "taken.sock"
    sock.write_text("")
    out = subprocess.run([str(bin_dir() / "ember-vmm"), "--api-sock", str(sock)],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode != 0 and "cannot bind the API socket" in out.stderr


def test_config_file_metrics_and_serial_sections(tmp_path, guests):
    cfg = tmp_path / "vm.json"
    metrics, serial = tmp_path / "metrics.json", tmp_path / "serial.out"
    cfg.write_text(json.dumps({
        "boot-source": {"kernel_image_path": str(guests / "hello"), "boot_args": "from file"},
        "metrics": {"metrics_path": str(metrics)},
        "serial": {"serial_out_path": str(serial)},
    }))
    out = subprocess.run([str(bin_dir() / "ember-vmm"), "--no-api", "--config-file", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "args=[from file]" in serial.read_text()
    assert "hello from ember" not in out.stdout
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(lines) == 1 and "utc_timestamp_ms" in lines[0]
    # The entropy section as Firecracker spells it: accepted, the device
    # attached (the rng guest reads from it); a bad one refused by name.
    cfg.write_text(json.dumps({
        "boot-source": {"kernel_image_path": str(guests / "rng_test"), "boot_args": "read 64 4"},
        "entropy": {"rate_limiter": {"bandwidth": {"size": 4096, "refill_time": 100}}}}))
    out = subprocess.run([str(bin_dir() / "ember-vmm"), "--no-api", "--config-file", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rng: read requests=4 bytes=256 zero_requests=0 repeats=0" in out.stdout, out.stdout
    cfg.write_text(json.dumps({
        "boot-source": {"kernel_image_path": str(guests / "hello")},
        "entropy": {"rate_limiter": {"bandwidth": {"size": "big", "refill_time": 1}}}}))
    out = subprocess.run([str(bin_dir() / "ember-vmm"), "--no-api", "--config-file", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "entropy" in out.stderr, out.stderr


def test_entropy_device_through_the_api(vmm, guests):
    for body in [{"rate": 1}, {"rate_limiter": {"bandwidth": {"size": -1, "refill_time": 1}}},
                 {"rate_limiter": {"bandwidth": {"refill_time": 100}}}]:
        r = vmm.put("/entropy", body)
        assert r.status_code == 400, r.text
        assert fault(r).startswith("An error occurred when deserializing the json body"), r.text
    assert vmm.get("/vm/config").json()["entropy"] is None
    limiter = {"bandwidth": {"size": 8192, "one_time_burst": 0, "refill_time": 100}}
    assert vmm.put("/entropy", {"rate_limiter": limiter}).status_code == 204
    # A second PUT replaces the first (one device).
    assert vmm.put("/entropy", {}).status_code == 204
    assert vmm.get("/vm/config").json()["entropy"] == {}
    assert vmm.put("/entropy", {"rate_limiter": limiter}).status_code == 204
    assert vmm.get("/vm/config").json()["entropy"] == {"rate_limiter": limiter}
    r = vmm.put("/boot-source", {"kernel_image_path": str(guests / "rng_test"),
                                 "boot_args": "read 1024 16"})
    assert r.status_code == 204
    assert vmm.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
    r = vmm.put("/entropy", {})
    assert r.status_code == 400 and fault(r) == NOT_AFTER
    assert vmm.wait(30) == 0, vmm.err()
    assert "rng: read requests=16 bytes=16384 zero_requests=0 repeats=0" in vmm.out(), vmm.out()


def test_boot_timer_through_the_api_logs_to_stderr(vmm_factory, guests):
    # No --level/--log-path: PUT /logger stays possible, and until then
    # Info lines (the boot timer's) go to stderr, as Firecracker's do.
    v = vmm_factory("--boot-timer")
    assert v.put("/boot-source", {"kernel_image_path": str(guests / "null")}).status_code == 204
    assert v.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
    assert v.wait(10) == 0
    assert "Guest-boot-time = " in v.err(), v.err()


def test_send_ctrl_alt_del_types_into_the_i8042(vmm, guests):
    # Before boot: Firecracker's pre-boot refusal.
    r = vmm.put("/actions", {"action_type": "SendCtrlAltDel"})
    assert r.status_code == 400 and "before starting" in fault(r)
    r = vmm.put("/boot-source", {"kernel_image_path": str(guests / "spin")})
    assert r.status_code == 204
    assert vmm.put("/actions", {"action_type": "InstanceStart"}).status_code == 204
    # The kernel-less guest never reads the keyboard: four sequences (4
    # bytes each) fill the controller's 16-byte buffer, the fifth is refused
    # whole with the i8042's error, and the VMM serves on.
    for _ in range(4):
        r = vmm.put("/actions", {"action_type": "SendCtrlAltDel"})
        assert r.status_code == 204, r.text
    r = vmm.put("/actions", {"action_type": "SendCtrlAltDel"})
    assert r.status_code == 400
    assert fault(r) == "Failed to send CTRL+ALT+DEL: i8042 internal buffer full.", r.text
    assert vmm.alive() and vmm.get("/").json()["state"] == "Running"
