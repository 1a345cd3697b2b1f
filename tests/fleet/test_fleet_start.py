"""emberd --cluster refuses to start, with a clear error and a non-zero
exit, when the cluster cannot be reached or the fleet key is missing."""
import os
import shutil
import subprocess
import tempfile
import time

from conftest import api, free_port, key_file


def start(extra, timeout=30):
    d = tempfile.mkdtemp(prefix="fs", dir="/tmp")
    cmd = [str(api.bin_dir() / "emberd"), "--listen", "127.0.0.1:0", "--data-dir", d,
           "--control-plane-only", *extra]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return r, time.monotonic() - t0


def test_unreachable_cluster_is_a_clear_error():
    port = free_port()  # nothing listens there
    with tempfile.TemporaryDirectory() as k:
        key = key_file(os.path.join(k, "fleet.key"))
        r, took = start(["--cluster", f"nats://127.0.0.1:{port}", "--node-id", "n1",
                            "--cluster-key", key])
    assert r.returncode != 0
    assert f"cannot reach the NATS cluster nats://127.0.0.1:{port}" in r.stderr, r.stderr
    assert "listening" not in r.stdout
    assert took < 15, took


def test_bad_node_id_and_missing_key_are_clear_errors(tmp_path):
    """Checked before any connection is tried (nothing listens at `urls`)."""
    urls = f"nats://127.0.0.1:{free_port()}"
    key = key_file(str(tmp_path / "fleet.key"))
    r, _ = start(["--cluster", urls, "--node-id", "bad name", "--cluster-key", key])
    assert r.returncode != 0 and "--node-id" in r.stderr, r.stderr
    r, _ = start(["--cluster", urls, "--node-id", "n1",
                  "--cluster-key", "/nonexistent/fleet.key"])
    assert r.returncode != 0 and "fleet's code key" in r.stderr, r.stderr
    r, _ = start(["--node-id", "n1", "--cluster", "not a url::", "--cluster-key", key])
    assert r.returncode != 0 and "--cluster" in r.stderr, r.stderr
