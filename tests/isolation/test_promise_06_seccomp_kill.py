"""Promise 6: a syscall outside a thread's seccomp allowlist kills the VMM
(SIGSYS), the caller of Invoke gets a clean error, emberd reports an
environment fault, and the next call succeeds on a fresh environment.

The trigger is test-only: emberd's hidden `--vmm-test-hook
forbidden-syscall@payload` hands every VMM `--test-hook`, which only an
ember-vmm built with the `test-hooks` feature accepts (the release build
refuses it: see the last test). Such a VMM's device thread makes a syscall
no allowlist has (sysinfo) when the host sends the guest the bytes
`ember-test-hook:fire` — here inside one invocation's payload."""
import json
import subprocess

import pytest

from conftest import bin_dir, create, env_of, vmm_alive, vmm_of, wait_for, wasm

pytestmark = pytest.mark.vm

TRIGGER = b'{"x":"ember-test-hook:fire"}'


def test_forbidden_syscall_kills_the_vmm_and_the_caller_gets_a_clean_error(hooks_emberd):
    e = hooks_emberd(["--vmm-test-hook", "forbidden-syscall@payload", "--spare-vms", "0"])
    c = e.client()
    create(c, "victim", wasm("echo"))
    # A normal call: the armed hook does nothing.
    r = c.invoke(FunctionName="victim", Payload=b'{"n":1}')
    assert "FunctionError" not in r and json.loads(r["Payload"].read()) == {"n": 1}
    first = env_of(r)
    [env] = e.envs()
    jailer, vmm = env["Pid"], vmm_of(env["Pid"])
    # The trigger: the device thread's forbidden syscall kills the VMM mid-call.
    r = c.invoke(FunctionName="victim", Payload=TRIGGER)
    assert r["StatusCode"] == 200 and r["FunctionError"] == "Unhandled", r
    body = json.loads(r["Payload"].read())
    assert body["errorType"] == "Runtime.ExitError", body
    assert "SIGSYS" in body["errorMessage"], body
    assert env_of(r) == first
    assert wait_for(lambda: not vmm_alive(jailer) and not vmm_alive(vmm), timeout=10)
    # emberd's log names the fault and the environment.
    assert wait_for(lambda: f"environment {first} " in e.log() and "SIGSYS" in e.log(), timeout=10), e.log()
    line = [l for l in e.log().splitlines() if f"environment {first} " in l][-1]
    assert "fault" in line and "victim" in line, line
    # The next call: a fresh environment, served normally.
    r = c.invoke(FunctionName="victim", Payload=b'{"n":2}')
    assert "FunctionError" not in r and json.loads(r["Payload"].read()) == {"n": 2}
    assert env_of(r) != first
    assert [x["Id"] for x in e.envs()] == [int(env_of(r))]


def test_the_kill_comes_from_seccomp_not_from_the_hook(hooks_emberd):
    """Counter-check: the same trigger with a hook that only reports what an
    allowed thread sees (`host-procs`) leaves the VMM alive and the call fine."""
    e = hooks_emberd(["--vmm-test-hook", "host-procs@payload", "--spare-vms", "0"])
    c = e.client()
    create(c, "fine", wasm("echo"))
    r = c.invoke(FunctionName="fine", Payload=TRIGGER)
    assert "FunctionError" not in r and r["Payload"].read() == TRIGGER
    [env] = e.envs()
    assert vmm_alive(env["Pid"])


def test_a_release_vmm_refuses_the_test_hook(tmp_path):
    """No production build can be armed: the release ember-vmm refuses the
    flag before it builds a VM."""
    r = subprocess.run([str(bin_dir() / "ember-vmm"), "--test-hook", "forbidden-syscall@payload",
                        "--kernel", "/nonexistent"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "test-hooks" in r.stderr, (r.returncode, r.stderr)
