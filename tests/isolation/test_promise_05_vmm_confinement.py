"""Promise 5: the jailed ember-vmm cannot open host files outside its jail,
cannot exec, cannot create network sockets and cannot see host processes
(seed: namespaces, seccomp-bpf, chroot). Shown both ways on environments a
real emberd starts: from outside (/proc: uid, capabilities, no_new_privs,
seccomp on every thread, namespaces, cgroups, its root), and from inside
(the test-hooks VMM tries each forbidden thing on its device thread when an
invocation's payload carries the trigger; emberd's hidden --vmm-test-hook).
Each layer alone (jail, Landlock, seccomp) is shown by
tests/tests/isolation_jail.rs."""
import json
import os
import re

import pytest

from conftest import create, env_dir, status, vmm_alive, vmm_of, wait_for, wasm

pytestmark = pytest.mark.vm

TRIGGER = b'"ember-test-hook:fire"'


def environments(e, n=2):
    c = e.client()
    for i in range(n):
        create(c, f"f{i}", wasm("echo"))
        c.invoke(FunctionName=f"f{i}", Payload=b"{}")
    return [x["Pid"] for x in e.envs()]


def assert_confined(jailer, files):
    """The from-outside checks on one environment's jailed VMM; `files`: what
    its jail root must hold besides the VMM, /run and /dev. Returns its uid."""
    me = os.getpid()
    vmm = vmm_of(jailer)
    st = status(vmm)
    for ids in (set(st["Uid"].split()), set(st["Gid"].split())):
        assert len(ids) == 1 and "0" not in ids, ids
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"] == "1"
    tasks = os.listdir(f"/proc/{vmm}/task")
    assert len(tasks) >= 3, tasks  # main, vCPU, event loop
    for t in tasks:
        ts = status(vmm, t)
        assert ts["Seccomp"] == "2" and int(ts["Seccomp_filters"]) >= 1, (t, ts["Seccomp"])
    for ns in ("mnt", "pid", "net", "ipc", "uts", "cgroup"):
        assert os.readlink(f"/proc/{vmm}/ns/{ns}") != os.readlink(f"/proc/{me}/ns/{ns}"), ns
    assert st["NSpid"].split()[-1] == "1", st["NSpid"]  # sees no other process
    with open(f"/proc/{vmm}/cgroup") as f:
        cg = f.read()
    jail_id = env_dir(jailer).name
    assert f"/ember/{jail_id}" in cg, cg
    root = set(os.listdir(f"/proc/{vmm}/root"))
    assert {"ember-vmm", "run", "dev", *files} <= root, root
    assert not root & {"etc", "proc", "sys", "home", "root", "tmp", "bin", "usr", "var"}, root
    return st["Uid"].split()[0]


def test_from_outside_each_vmm_is_unprivileged_filtered_and_alone(emberd):
    jailers = environments(emberd)
    uids = {assert_confined(j, {"agent"}) for j in jailers}
    assert len(uids) == len(jailers), f"environments share a uid: {uids}"


def cgroup_limit(controller, jail_id, v1, v2):
    p1 = f"/sys/fs/cgroup/{controller}/ember/{jail_id}/{v1}"
    p = p1 if os.path.exists(p1) else f"/sys/fs/cgroup/ember/{jail_id}/{v2}"
    return open(p).read().split()[0]


def ready_slots(e):
    _, _, body = e.raw("GET", "/metrics")
    m = re.search(r"^ember_restore_slots_ready (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def test_a_vmm_restored_in_a_restore_slot_is_jailed_like_every_other(make_emberd):
    """A restore slot's VMM was jailed before any function was known: the
    restored environment has the same uid, capabilities, seccomp,
    namespaces, cgroup and root as any other, its snapshot directory /snap
    is a read-only mount left empty after the load, and its cgroup has the
    function's memory limit and CPU quota (set when the slot was taken)."""
    # 256 MiB per core: the 256 MiB function gets a core (100 ms per 100
    # ms); the slot started with the least (half a core).
    e = make_emberd(["--restore-slots", "1", "--mib-per-vcpu", "256"])
    c = e.client()
    create(c, "slotted", wasm("snapstart"), MemorySize=256,
           SnapStart={"ApplyOn": "PublishedVersions"})
    v = c.publish_version(FunctionName="slotted")["Version"]
    assert wait_for(lambda: c.get_function_configuration(
        FunctionName="slotted", Qualifier=v)["State"] != "Pending", timeout=120)
    g = c.get_function_configuration(FunctionName="slotted", Qualifier=v)
    assert g["State"] == "Active", (g, e.log())
    slots = os.path.join(e.data_dir, "run", "slots.pids")
    assert wait_for(lambda: ready_slots(e) == 1, timeout=30), e.log()
    [slot] = [int(p) for p in open(slots).read().split()]
    r = c.invoke(FunctionName="slotted", Qualifier=v, Payload=b"{}")
    assert "FunctionError" not in r, r["Payload"].read()
    [env] = e.envs()
    assert env["Pid"] == slot, (env, slot)
    assert_confined(slot, {"snap"})
    vmm = vmm_of(slot)
    assert os.listdir(f"/proc/{vmm}/root/snap") == []
    with open(f"/proc/{vmm}/mountinfo") as f:
        [snap] = [l.split() for l in f if l.split()[4] == "/snap"]
    assert "ro" in snap[5].split(","), snap
    jail_id = env_dir(slot).name
    mem = int(cgroup_limit("memory", jail_id, "memory.limit_in_bytes", "memory.max"))
    assert mem == (256 + 64) << 20, mem
    quota = cgroup_limit("cpu", jail_id, "cpu.cfs_quota_us", "cpu.max")
    assert quota == "100000", quota


def hook_line(e, action):
    """Starts an emberd whose VMMs carry ACTION@payload, fires it in one
    invocation and returns (the VMM's hook line or None, the response)."""
    c = e.client()
    create(c, "probe", wasm("echo"))
    c.invoke(FunctionName="probe", Payload=b"{}")
    [env] = e.envs()
    log = env_dir(env["Pid"]) / "vmm.log"
    r = c.invoke(FunctionName="probe", Payload=TRIGGER)
    lines = [l for l in open(log).read().splitlines() if l.startswith("ember-vmm test-hook:")] \
        if log.exists() else []
    return (lines[-1] if lines else None), r, env


@pytest.mark.parametrize("action", ["open-host-file", "host-procs"])
def test_from_inside_host_files_and_processes_are_out_of_reach(hooks_emberd, action):
    e = hooks_emberd(["--vmm-test-hook", f"{action}@payload", "--spare-vms", "0"])
    line, r, env = hook_line(e, action)
    assert line is not None, "the hook did not run"
    if action == "open-host-file":
        # seccomp answers every open with EACCES (Landlock and the jail would
        # say the same / ENOENT without it: isolation_jail.rs).
        for path in ("/etc/passwd", "/proc/1/status", "/ember-vmm"):
            assert f"{path} denied (" in line, line
    else:
        assert "/proc denied (" in line, line
    # The VMM survived its failed attempt, and the call was answered.
    assert "FunctionError" not in r and r["Payload"].read() == TRIGGER
    assert vmm_alive(env["Pid"])


@pytest.mark.parametrize("action", ["exec", "inet-socket"])
def test_from_inside_exec_and_network_sockets_kill_the_vmm(hooks_emberd, action):
    e = hooks_emberd(["--vmm-test-hook", f"{action}@payload", "--spare-vms", "0"])
    line, r, env = hook_line(e, action)
    # execve / socket(AF_INET) are on no allowlist: SIGSYS before the hook
    # could print anything.
    assert line is None, line
    body = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled" and "SIGSYS" in body["errorMessage"], body
    assert wait_for(lambda: not vmm_alive(env["Pid"]), timeout=10)
