"""emberd with `--wasm-engine wasmtime` (issue 15): functions run as
compiled code, and the compiled-artefact caches (in memory and on disk)
follow the live functions: the artefacts of deleted code are forgotten, so
emberd's memory and disk do not grow with every function ever created
(issue 13's soak: with wasmtime they grew by 3.2 MiB/min before)."""
import json
import os
import re

import pytest

from conftest import create, wait_for, wasm

pytestmark = pytest.mark.vm


def unique(module: bytes, tag: str) -> bytes:
    """`module` plus a custom section: the same code, another blob."""
    name = b"ember-test"
    payload = bytes([len(name)]) + name + tag.encode()
    assert len(payload) < 128
    return module + b"\x00" + bytes([len(payload)]) + payload


def artefacts(e):
    """(bytes, entries) of the in-memory artefact cache, from /metrics."""
    status, _, body = e.raw("GET", "/metrics")
    assert status == 200
    text = body.decode()
    got = {}
    for name in ("bytes", "entries"):
        m = re.search(rf"^ember_wasm_artefact_cache_{name} (\S+)$", text, re.M)
        assert m, f"no ember_wasm_artefact_cache_{name} in /metrics"
        got[name] = float(m.group(1))
    return int(got["bytes"]), int(got["entries"])


def index_files(e):
    index = os.path.join(e.data_dir, "store", "aot", "index")
    return sorted(f for f in os.listdir(index) if not f.endswith(".tmp"))


def test_compiled_functions_run_and_the_caches_forget_deleted_code(make_emberd):
    e = make_emberd(["--wasm-engine", "wasmtime"])
    c = e.client()
    names = [f"w{i}" for i in range(6)]
    for n in names:
        create(c, n, unique(wasm("echo"), n))
    # Each create compiles in the background.
    assert wait_for(lambda: artefacts(e)[1] == 6 and len(index_files(e)) == 6, timeout=120, interval=0.2), \
        (artefacts(e), index_files(e), e.log())
    size_of_six = artefacts(e)[0]
    for n in names[1:]:
        c.delete_function(FunctionName=n)
    # The next create's compile forgets what the deletes left behind.
    create(c, "w-new", unique(wasm("echo"), "w-new"))
    assert wait_for(lambda: artefacts(e)[1] == 2 and len(index_files(e)) == 2, timeout=120, interval=0.2), \
        (artefacts(e), index_files(e), e.log())
    assert artefacts(e)[0] < size_of_six
    # The survivors run, compiled (the guest then asks for its own CPU mask).
    for n in ("w0", "w-new"):
        r = c.invoke(FunctionName=n, Payload=json.dumps({"who": n}).encode())
        assert "FunctionError" not in r, r
        assert json.loads(r["Payload"].read()) == {"who": n}
    e.stop()
    assert "compiling code" not in e.log(), e.log()


def test_wasmtime_is_the_default_and_wasmi_stays_available(make_emberd):
    # Without --wasm-engine the code is compiled at create (issue 15).
    e = make_emberd([])
    c = e.client()
    create(c, "d", unique(wasm("echo"), "default"))
    assert wait_for(lambda: artefacts(e)[1] == 1, timeout=120, interval=0.2), (artefacts(e), e.log())
    r = c.invoke(FunctionName="d", Payload=b'{"engine": "default"}')
    assert "FunctionError" not in r, r
    assert json.loads(r["Payload"].read()) == {"engine": "default"}
    assert "interpreted" not in e.log(), e.log()
    e.stop()
    # The interpreter, chosen by name: nothing is compiled, the call works.
    i = make_emberd(["--wasm-engine", "wasmi"])
    c = i.client()
    create(c, "i", unique(wasm("echo"), "wasmi"))
    r = c.invoke(FunctionName="i", Payload=b'{"engine": "wasmi"}')
    assert "FunctionError" not in r, r
    assert json.loads(r["Payload"].read()) == {"engine": "wasmi"}
    assert "--wasm-engine wasmi: wasm functions are interpreted" in i.log(), i.log()
    # (Same data directory: the first daemon's one artefact, no new one.)
    assert len(index_files(i)) == 1, index_files(i)
