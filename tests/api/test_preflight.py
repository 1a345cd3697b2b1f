"""emberd refuses to start, with the reason and the way out, when it could
not run a single environment (issue 17: as a normal user it printed
`listening` and then failed every invoke); --control-plane-only starts
anyway and says why invokes will fail."""
import os
import subprocess
import tempfile

from conftest import agent_path, bin_dir


def run_emberd(args, user=None, timeout=20):
    cmd = [str(bin_dir() / "emberd"), "--listen", "127.0.0.1:0", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_a_normal_user_without_no_jail_is_refused_with_the_reason():
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)
        r = run_emberd(["--data-dir", d, "--vmm", str(bin_dir() / "ember-vmm"),
                        "--wasm-agent", str(agent_path())], user=65534)
        assert r.returncode != 0, r.stdout
        assert "listening" not in r.stdout
        assert "jailer needs root" in r.stderr and "--no-jail" in r.stderr, r.stderr


def test_missing_binaries_are_named_and_control_plane_only_starts_anyway():
    with tempfile.TemporaryDirectory() as d:
        r = run_emberd(["--data-dir", d, "--vmm", "/nonexistent/ember-vmm",
                        "--wasm-agent", str(agent_path())])
        assert r.returncode != 0, r.stdout
        assert "/nonexistent/ember-vmm" in r.stderr, r.stderr
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen(
            [str(bin_dir() / "emberd"), "--listen", "127.0.0.1:0", "--data-dir", d,
             "--vmm", "/nonexistent/ember-vmm", "--wasm-agent", str(agent_path()),
             "--control-plane-only"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            assert "listening on http" in line, (line, p.stderr.read() if p.poll() is not None else "")
        finally:
            p.terminate()
            _, err = p.communicate(timeout=30)
        assert "/nonexistent/ember-vmm" in err and "control plane only" in err, err
