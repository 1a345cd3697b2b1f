"""Promise 7: cgroup limits hold: a VMM cannot exceed its memory or pid
limits (seed: "cgroups – Used to constrain the function's access to CPU and
memory"). emberd puts every VMM in its own memory and pids cgroups (guest
memory + 64 MiB; 64 tasks); the limits are then enforced by the kernel on a
jailed VMM whose guest wants more (the `memhog` guest touches N MiB; four
vCPUs need six tasks)."""
import itertools
import os
import signal
import subprocess

import pytest

from conftest import argv, bin_dir, create, env_dir, jailer_cmd, vmm_of, wasm

pytestmark = pytest.mark.vm

CG = "/sys/fs/cgroup"


def cgroup_file(controller, jail_id, v1, v2):
    """The limit file of `controller` for jail `jail_id` (v1 here, v2 where
    it is the only hierarchy)."""
    p1 = f"{CG}/{controller}/ember/{jail_id}/{v1}"
    return p1 if os.path.exists(p1) else f"{CG}/ember/{jail_id}/{v2}"


def test_emberd_gives_every_vmm_its_own_memory_and_pids_limits(emberd):
    c = emberd.client()
    create(c, "small", wasm("echo"), MemorySize=128)
    create(c, "big", wasm("echo"), MemorySize=256)
    for name in ("small", "big"):
        c.invoke(FunctionName=name, Payload=b"{}")
    for env in emberd.envs():
        jail_id = env_dir(env["Pid"]).name
        vmm = vmm_of(env["Pid"])
        with open(f"/proc/{vmm}/cgroup") as f:
            groups = f.read()
        # The limit: the VM's guest memory (the function's MemorySize) plus
        # 64 MiB for the VMM itself.
        vmm_argv = argv(vmm)
        guest_mib = int(vmm_argv[vmm_argv.index("--mem-mib") + 1])
        assert guest_mib == (128 if env["Function"] == "small" else 256), vmm_argv
        want = (guest_mib + 64) << 20
        mem = cgroup_file("memory", jail_id, "memory.limit_in_bytes", "memory.max")
        assert int(open(mem).read()) == want, (mem, open(mem).read(), want)
        pids = cgroup_file("pids", jail_id, "pids.max", "pids.max")
        assert open(pids).read().strip() == "64"
        assert f"/ember/{jail_id}" in groups and str(vmm) in open(os.path.join(os.path.dirname(pids), "cgroup.procs")).read().split()


_runs = itertools.count()


def jailed(guests, guest, jail_args, vmm_args):
    jid = f"cg-{os.getpid()}-{next(_runs)}"
    return subprocess.run(jailer_cmd(jid, bin_dir() / "ember-vmm", guests[guest], jail_args, vmm_args),
                          capture_output=True, text=True, timeout=180)


def test_a_vmm_cannot_exceed_its_memory_limit(guests):
    # 64 MiB of guest memory; the guest touches 48 MiB of it.
    over = jailed(guests, "memhog", ["--mem-limit-mib", "40"], ["--cmdline", "48"])
    assert over.returncode == -signal.SIGKILL, (over.returncode, over.stderr)
    assert "touched" not in over.stdout
    under = jailed(guests, "memhog", ["--mem-limit-mib", "96"], ["--cmdline", "48"])
    assert under.returncode == 0 and "memhog: touched 48 MiB" in under.stdout, (under.returncode, under.stderr)


def test_a_vmm_cannot_exceed_its_pids_limit(guests):
    # main + event loop + 4 vCPU threads = 6 tasks.
    over = jailed(guests, "hello", ["--pids-max", "3"], ["--vcpus", "4"])
    assert over.returncode == 1 and "hello from ember" not in over.stdout, (over.returncode, over.stderr)
    under = jailed(guests, "hello", ["--pids-max", "16"], ["--vcpus", "4"])
    assert under.returncode == 0 and "hello from ember" in under.stdout, (under.returncode, under.stderr)
