"""Seed promise 4 for Linux guests: a function's /tmp (and everything else it
leaves behind) persists within one execution environment and is never seen by
another — a second concurrent environment of the same function, another
version, another function. Each Linux environment's /tmp is a tmpfs in its
own microVM. Boots Linux guests: needs hardware-backed KVM, so it is run by
tests/hvhost (suite emberd-linux), deselected (-m 'not linux_guest') elsewhere.
"""
import json
import os
import threading
import time

import pytest

from api_conftest import built, create, linux_boot_flags, linux_flags, zipped

pytestmark = [pytest.mark.vm, pytest.mark.linux_guest]

# Leaves /tmp/mark-<request id>, reports the marks it found first and the
# kernel's boot id (one per microVM), then holds the environment a while.
APP = """import os, time
def handler(event, context):
    before = sorted(f for f in os.listdir('/tmp') if f.startswith('mark-'))
    open('/tmp/mark-' + context.aws_request_id, 'w').write('x')
    time.sleep(event.get('hold', 0))
    return {'before': before, 'mine': 'mark-' + context.aws_request_id,
            'boot': open('/proc/sys/kernel/random/boot_id').read().strip()}
"""


def test_linux_tmp_is_never_shared_between_environments(make_emberd):
    kernel = built("kernel-config/build.sh")
    images = built("images/build-images.sh", "--python")
    e = make_emberd(linux_flags("auto", kernel, images) + linux_boot_flags())
    c = e.client(read_timeout=600)  # cold starts under nested TCG
    create(c, "tmpfn", code=zipped({"app.py": APP}), Runtime="python3.11",
           Handler="app.handler", MemorySize=256, Timeout=120)
    create(c, "other", code=zipped({"app.py": APP}), Runtime="python3.11",
           Handler="app.handler", MemorySize=256, Timeout=120)

    def call(name, event, out, key=None):
        t0 = time.monotonic()
        r = e.client(read_timeout=600).invoke(FunctionName=name, Payload=json.dumps(event).encode())
        assert "FunctionError" not in r, r["Payload"].read()
        out[key or name] = json.loads(r["Payload"].read())
        print(f"{key or name}: {time.monotonic() - t0:.1f} s (nested TCG: functional evidence only)")

    # Warm one environment, then two invocations at once: one takes the warm
    # environment, the other must get a second, fresh one.
    first = {}
    call("tmpfn", {}, first, "a")
    both = {}
    threads = [threading.Thread(target=call, args=("tmpfn", {"hold": 8}, both, k)) for k in "bc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b, c2 = first["a"], both["b"], both["c"]
    assert a["before"] == []
    assert b["boot"] != c2["boot"], "the concurrent invocations must run in two microVMs"
    warm, fresh = (b, c2) if b["boot"] == a["boot"] else (c2, b)
    assert warm["boot"] == a["boot"]
    assert warm["before"] == [a["mine"]], "/tmp persists within an environment"
    assert fresh["before"] == [], f"a new environment saw another's /tmp: {fresh['before']}"

    # Another function and another version start with an empty /tmp.
    out = {}
    call("other", {}, out)
    assert out["other"]["before"] == [] and out["other"]["boot"] not in (a["boot"], fresh["boot"])
    v = c.publish_version(FunctionName="tmpfn")["Version"]
    call(f"tmpfn:{v}", {}, out, "v1")
    assert out["v1"]["before"] == [], "a version's environment saw $LATEST's /tmp"
    assert out["v1"]["boot"] not in (a["boot"], fresh["boot"])
