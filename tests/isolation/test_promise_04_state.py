"""Promise 4: memory and process state persist across invocations within
one environment, and never cross environments (seed: "Inside an execution
environment, these multiple invocations are handled by a single process, so
any process-wide state ... can be available for future invocations"; "This
storage is not accessible or shared across execution environments").

Kernel-less wasm environments: a reactor module keeps one instance per
environment, so its linear memory (`stash.wat`) and globals (`counter.wat`) are the
environment's memory and process state; below that, each microVM's guest RAM
starts as zeros (the `memscan` guest). Their only writable file system is
an in-memory `/tmp` in the environment's own guest (`tmpmark.wat`: seen
within the environment, never across); Linux environments' /tmp lives in
their own microVM's guest memory or scratch disk (README "Isolation")."""
import concurrent.futures as cf
import json
import os
import re
import subprocess

import pytest

from conftest import bin_dir, create, env_of, iso_wasm, jailer_cmd, wait_for, wasm

pytestmark = pytest.mark.vm


def stash(c, name, payload=b'"get"', **kw):
    r = c.invoke(FunctionName=name, Payload=payload, **kw)
    assert "FunctionError" not in r, r
    return json.loads(r["Payload"].read()), int(env_of(r))


def test_memory_persists_within_an_environment(emberd):
    c = emberd.client()
    create(c, "mem", iso_wasm("stash"))
    assert stash(c, "mem")[0] == "stash="
    out, env = stash(c, "mem", b'"put:secret-of-env"')
    assert out == "stash=secret-of-env"
    for _ in range(3):
        assert stash(c, "mem") == ("stash=secret-of-env", env), "warm environment lost its memory"


def test_process_state_persists_within_an_environment(emberd):
    c = emberd.client()
    create(c, "state", wasm("counter"))
    got = [c.invoke(FunctionName="state", Payload=b"0") for _ in range(4)]
    assert [json.loads(r["Payload"].read())["calls"] for r in got] == ["01", "02", "03", "04"]
    assert len({env_of(r) for r in got}) == 1


def test_memory_never_crosses_environments(emberd):
    c = emberd.client()
    for name in ("mem", "other"):
        create(c, name, iso_wasm("stash"))
    c.publish_version(FunctionName="mem")
    _, env = stash(c, "mem", b'"put:secret-of-env"')
    # Another function, another version of the same function: fresh memory.
    assert stash(c, "other")[0] == "stash="
    out, env1 = stash(c, "mem", Qualifier="1")
    assert out == "stash=" and env1 != env
    # A second environment of the same version (while the first is busy):
    # the same code, a fresh instance, fresh memory.
    with cf.ThreadPoolExecutor(1) as pool:
        held = pool.submit(stash, emberd.client(), "mem", b'"hold"')
        assert wait_for(lambda: [x for x in emberd.envs() if x["Id"] == env and x["State"] == "busy"],
                        timeout=30), emberd.envs()
        out, env_b = stash(c, "mem")
        assert env_b != env and out == "stash=", (env_b, out)
        assert held.result(timeout=60) == ("stash=secret-of-env", env)
    # And the state is gone with its environment: a new revision starts fresh.
    c.update_function_configuration(FunctionName="mem", Description="new")
    out, env2 = stash(c, "mem")
    assert out == "stash=" and env2 != env


def test_process_state_never_crosses_environments(emberd):
    c = emberd.client()
    create(c, "state", wasm("counter"))
    create(c, "twin", wasm("counter"))
    for _ in range(3):
        c.invoke(FunctionName="state", Payload=b"0")
    r = c.invoke(FunctionName="twin", Payload=b"0")
    assert json.loads(r["Payload"].read()) == {"calls": "01"}, "twin saw state's counter"


def test_wasm_environments_share_no_filesystem(emberd):
    """A wasm function's only writable file system is its environment's
    in-memory /tmp (the first preopen): a mark one call leaves there is seen
    by the next call in the same environment, never by another function's
    environment nor by the function's next environment."""
    c = emberd.client()
    create(c, "tmpa", iso_wasm("tmpmark"))
    create(c, "tmpb", iso_wasm("tmpmark"))

    def call(name):
        r = c.invoke(FunctionName=name, Payload=b"{}")
        return r["Payload"].read(), env_of(r)

    first, env = call("tmpa")
    assert first == b"open errno=44", first  # ENOENT: a fresh /tmp
    again, env_again = call("tmpa")
    assert env_again == env and again == b"open errno=00", (again, env, env_again)
    other, env_other = call("tmpb")
    assert env_other != env and other == b"open errno=44", "another function saw tmpa's /tmp"
    c.update_function_configuration(FunctionName="tmpa", Description="new")
    fresh, env_new = call("tmpa")
    assert env_new != env and fresh == b"open errno=44", "a new environment saw the old one's /tmp"


def memscan(guests, run):
    """One jailed microVM of the memscan guest over 16 MiB of its heap."""
    r = subprocess.run(jailer_cmd(f"scan-{os.getpid()}-{run}", bin_dir() / "ember-vmm", guests["memscan"],
                                  (), ["--cmdline", "16", "--timeout-ms", "60000"]),
                       capture_output=True, text=True, timeout=180)
    m = re.search(r"memscan: words=(\d+) nonzero=(\d+) marked=(\d+)", r.stdout)
    assert r.returncode == 0 and m, (r.returncode, r.stdout, r.stderr)
    return [int(x) for x in m.groups()]


def test_a_new_microvm_never_sees_an_earlier_ones_memory(guests):
    """Below the wasm runtime: each microVM's guest RAM starts as zeros. The
    first VM marks 16 MiB of its RAM (and reads the marks back: the scan sees
    memory); the next VMs, on the same host right after it, find nothing."""
    for run in range(3):
        words, nonzero, marked = memscan(guests, run)
        assert words == 2 * 1024 * 1024 and marked == words, (words, marked)
        assert nonzero == 0, f"VM {run} found {nonzero} non-zero words in its fresh memory"
