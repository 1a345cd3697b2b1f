"""Issue 8: every environment emberd starts is jailed by default. Checked from
outside on the live processes: the environment's pid is an `ember-jailer`
whose only child is the `ember-vmm`, running unprivileged, seccomp-filtered
on every thread, in its own mount and PID namespaces. `--no-jail` (debugging)
is the counter-check that these observations can fail."""
import json
import os

import pytest

from conftest import create, wasm

pytestmark = pytest.mark.vm


def status(path):
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def argv0(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0]


def one_environment(e):
    c = e.client()
    create(c, "echo", wasm("echo"))
    r = c.invoke(FunctionName="echo", Payload=b'{"a":1}')
    assert json.loads(r["Payload"].read()) == {"a": 1}
    [env] = e.envs()
    return env["Pid"]


def test_every_environment_emberd_starts_is_jailed(emberd):
    pid = one_environment(emberd)
    assert argv0(pid).endswith(b"ember-jailer"), argv0(pid)
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        [vmm] = [int(p) for p in f.read().split()]
    assert argv0(vmm).endswith(b"ember-vmm"), argv0(vmm)
    st = status(f"/proc/{vmm}/status")
    uids, gids = st["Uid"].split(), st["Gid"].split()
    assert all(u != "0" for u in uids) and all(g != "0" for g in gids), (uids, gids)
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0, st
    assert st["NoNewPrivs"] == "1", st
    tasks = os.listdir(f"/proc/{vmm}/task")
    assert len(tasks) >= 2, tasks  # main + vCPU (+ event loop): each filtered
    for t in tasks:
        assert status(f"/proc/{vmm}/task/{t}/status")["Seccomp"] == "2", t
    me = emberd.proc.pid
    for ns in ("mnt", "pid", "ipc", "uts", "net"):
        assert os.readlink(f"/proc/{vmm}/ns/{ns}") != os.readlink(f"/proc/{me}/ns/{ns}"), ns
    # The VMM is PID 1 of its own PID namespace.
    assert st["NSpid"].split()[-1] == "1", st["NSpid"]


def test_no_jail_runs_the_vmm_unjailed_as_the_counter_check(make_emberd):
    e = make_emberd(["--no-jail"])
    pid = one_environment(e)
    assert argv0(pid).endswith(b"ember-vmm"), argv0(pid)
    st = status(f"/proc/{pid}/status")
    assert st["Uid"].split()[0] == str(os.geteuid())
    assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(f"/proc/{e.proc.pid}/ns/mnt")
    assert "--no-jail" in e.log() and "NOT isolated" in e.log()
