"""Function logs on a real emberd with real microVMs: START / END / REPORT
framing per invocation with the right request ids, LogType Tail = the tail
of the same framed text, rotation and retention on disk, `ember logs
--since` and `--follow`, bad queries, and log IO failures that never fail an
invocation."""
import base64
import json
import math
import os
import re
import select
import subprocess
import time
from datetime import datetime, timezone

import pytest

from conftest import bin_dir, create, wait_for, wasm

pytestmark = pytest.mark.vm

REPORT = re.compile(
    r"^REPORT RequestId: (\S+)\tDuration: (\d+\.\d\d) ms\tBilled Duration: (\d+) ms\t"
    r"Memory Size: (\d+) MB\tMax Memory Used: (\d+) MB\t(?:Init Duration: (\d+\.\d\d) ms\t)?$")


def invoke(c, name, payload, **kw):
    r = c.invoke(FunctionName=name, Payload=json.dumps(payload).encode(), **kw)
    body = r["Payload"].read()
    return r, body, r["ResponseMetadata"]["RequestId"]


def events(emberd, name, **query):
    q = "&".join(f"{k}={v}" for k, v in {"since": "1h", **query}.items())
    status, _, body = emberd.raw("GET", f"/ember/logs/{name}?{q}")
    assert status == 200, body
    return json.loads(body)["Events"]


def block(evs, rid):
    """The messages of one invocation, START through REPORT."""
    msgs = [e["Message"] for e in evs]
    start = msgs.index(next(m for m in msgs if m.startswith(f"START RequestId: {rid} ")))
    end = msgs.index(next(m for m in msgs if m.startswith(f"REPORT RequestId: {rid}\t")))
    return msgs[start:end + 1]


def logged(emberd, name, rids):
    """Waits until every request id's REPORT line is readable."""
    def ready():
        evs = events(emberd, name)
        text = "\n".join(e["Message"] for e in evs)
        return evs if all(f"REPORT RequestId: {r}\t" in text for r in rids) else None
    evs = wait_for(ready, timeout=30)
    assert evs, f"REPORT lines of {rids} never appeared"
    return evs


def test_each_invocation_is_framed_with_its_request_id(emberd):
    c = emberd.client()
    create(c, "lg", wasm("logger"), MemorySize=128)
    rids = []
    for i in range(3):
        r, body, rid = invoke(c, "lg", {"tag": f"inv-{i}"})
        assert json.loads(body) == {"tag": f"inv-{i}"}
        rids.append(rid)
    assert len(set(rids)) == 3
    evs = logged(emberd, "lg", rids)
    for i, rid in enumerate(rids):
        b = block(evs, rid)
        assert b[0] == f"START RequestId: {rid} Version: $LATEST"
        assert json.loads(b[1]) == {"tag": f"inv-{i}"}, "the function's own line, inside its frame"
        assert b[2] == f"END RequestId: {rid}" and len(b) == 4, b
        m = REPORT.match(b[3])
        assert m, b[3]
        assert m.group(1) == rid and m.group(4) == "128" and int(m.group(5)) >= 1
        assert int(m.group(3)) == max(1, math.ceil(float(m.group(2)))), "1 ms billing granularity"
        assert (m.group(6) is not None) == (i == 0), "Init Duration on the cold start only"
    stamps = [datetime.fromisoformat(e["Timestamp"].replace("Z", "+00:00")) for e in evs]
    assert stamps == sorted(stamps) and all(s.tzinfo == timezone.utc for s in stamps)
    assert len({e["Stream"] for e in evs}) == 1, "one environment, one stream"
    # The same lines are on disk, timestamped, under <data>/logs/<fn>/<version>/.
    vdir = os.path.join(emberd.data_dir, "logs", "lg", "latest")
    disk = "".join(open(os.path.join(vdir, f)).read() for f in sorted(os.listdir(vdir)))
    for rid in rids:
        assert re.search(rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{6}}Z\tSTART RequestId: {rid} ", disk, re.M)


def test_tail_header_is_the_tail_of_the_framed_log(emberd):
    c = emberd.client()
    create(c, "tl", wasm("logger"))
    r, _, rid = invoke(c, "tl", {"small": True}, LogType="Tail")
    tail = base64.b64decode(r["LogResult"]).decode()
    framed = "\n".join(block(logged(emberd, "tl", [rid]), rid)) + "\n"
    assert tail == framed
    # A log bigger than 4 KB: the header carries exactly its last 4096 bytes.
    big = "z" * 6000
    r, _, rid = invoke(c, "tl", {"big": big}, LogType="Tail")
    raw = base64.b64decode(r["LogResult"])
    framed = ("\n".join(block(logged(emberd, "tl", [rid]), rid)) + "\n").encode()
    assert len(framed) > 4096 and raw == framed[-4096:]


def log_files(vdir):
    return {f: os.path.getsize(os.path.join(vdir, f)) for f in os.listdir(vdir)}


def test_rotation_at_the_size_limit_and_retention(make_emberd):
    limit, keep = 2048, 8192
    emberd = make_emberd(["--log-max-file-bytes", str(limit), "--log-retention-bytes", str(keep)])
    c = emberd.client()
    create(c, "rot", wasm("logger"))
    rids = [invoke(c, "rot", {"i": i, "pad": "p" * 300})[2] for i in range(40)]
    vdir = os.path.join(emberd.data_dir, "logs", "rot", "latest")
    last = rids[-1]

    def has_last():
        return any(last in open(os.path.join(vdir, f)).read() for f in os.listdir(vdir))
    assert wait_for(has_last, timeout=30)
    files = log_files(vdir)
    assert all(size <= limit for size in files.values()), files
    assert sum(files.values()) <= keep + limit, files
    seqs = sorted(int(f.split(".")[-2]) for f in files)
    assert len(seqs) >= 3 and seqs[0] > 0, f"rotated and the oldest deleted: {files}"
    text = "".join(open(os.path.join(vdir, f)).read() for f in files)
    assert rids[0] not in text, "retention kept the oldest invocation"
    assert f"REPORT RequestId: {last}\t" in text


def ember(emberd, *args):
    return emberd.ember(*args)


def test_cli_since_filters(emberd):
    c = emberd.client()
    create(c, "since", wasm("logger"))
    _, _, old = invoke(c, "since", {"n": "old"})
    logged(emberd, "since", [old])
    cut = datetime.now(timezone.utc)
    time.sleep(0.01)  # strictly later timestamps for the next invocation
    _, _, new = invoke(c, "since", {"n": "new"})
    logged(emberd, "since", [new])
    out = ember(emberd, "logs", "since", "--since", cut.isoformat())
    assert out.returncode == 0, out.stderr
    assert f"START RequestId: {new} " in out.stdout and old not in out.stdout, out.stdout
    out = ember(emberd, "logs", "since", "--since", "10m")
    assert old in out.stdout and new in out.stdout
    out = ember(emberd, "--json", "logs", "since", "--version", "$LATEST")
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert {e["Version"] for e in lines} == {"$LATEST"} and any(new in e["Message"] for e in lines)
    future = ember(emberd, "logs", "since", "--since", "2999-01-01T00:00:00Z")
    assert future.returncode == 0 and future.stdout == ""
    bad = ember(emberd, "logs", "since", "--since", "yesterday")
    assert bad.returncode == 2 and '"yesterday" is not a time' in bad.stderr, bad.stderr


def test_one_since_grammar_for_every_subcommand(emberd):
    """`ember logs` and `ember audit list` take the same --since forms
    (durations up to weeks, RFC 3339 with or without a zone, @seconds) and
    refuse the same bad ones with the same message, as a usage error."""
    import test_audit
    c = emberd.client()
    create(c, "grammar", wasm("logger"))
    _, _, rid = invoke(c, "grammar", {"n": "x"})
    logged(emberd, "grammar", [rid])
    start = int(time.time()) - 600
    for since in ["90s", "1w", f"@{start}", "2000-01-01T00:00:00", "2000-01-01 00:30:00+01:00"]:
        out = ember(emberd, "logs", "grammar", "--since", since)
        assert out.returncode == 0 and rid in out.stdout, (since, out.stderr)
        ops = [r.get("operation") for r in test_audit.audit_list(emberd.data_dir, "--since", since)]
        assert "CreateFunction" in ops, (since, ops)
    for bad in ["yesterday", "10x", "123", "1.5h", "@-5", "2000-01-01T00:00:00ZZ"]:
        logs = ember(emberd, "logs", "grammar", "--since", bad)
        rc, _, err = test_audit.ember("audit", "list", "--data-dir", emberd.data_dir,
                                      "--since", bad)
        assert logs.returncode == rc == 2, (bad, logs.stderr, err)
        said = [e[e.index(f'"{bad}" is not a time'):].splitlines()[0] for e in (logs.stderr, err)]
        assert said[0] == said[1], said


def test_follow_sees_a_new_invocation(emberd):
    c = emberd.client()
    create(c, "fol", wasm("logger"))
    proc = subprocess.Popen([str(bin_dir() / "ember"), "--endpoint", emberd.endpoint,
                             "--credentials", os.path.join(emberd.data_dir, "credentials.json"),
                             "logs", "fol", "--follow", "--since", "1m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Give it time to be following (it prints nothing yet: no logs).
        wait_for(lambda: proc.poll() is not None, timeout=1)
        assert proc.poll() is None, proc.stderr.read()
        _, _, rid = invoke(c, "fol", {"follow": "me"})
        seen = b""
        end = time.monotonic() + 60
        while f"REPORT RequestId: {rid}".encode() not in seen and time.monotonic() < end:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"ember logs --follow exited: {proc.stderr.read()}"
                seen += chunk
        text = seen.decode()
        assert f"START RequestId: {rid} Version: $LATEST" in text, text
        assert f"REPORT RequestId: {rid}" in text and '{"follow": "me"}' in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bad_log_queries_are_clean_4xx(emberd):
    c = emberd.client()
    create(c, "q", wasm("logger"))
    cases = [
        ("/ember/logs/q?since=yesterday", 400),
        ("/ember/logs/q?version=abc", 400),
        ("/ember/logs/q?limit=0", 400),
        ("/ember/logs/q?wait=999", 400),
        ("/ember/logs/q?next=notatoken", 400),
        ("/ember/logs/bad%2Fname", 400),
        ("/ember/logs/..", 400),
        ("/ember/logs/nosuchfunction", 404),
    ]
    for path, code in cases:
        status, headers, body = emberd.raw("GET", path)
        assert status == code, (path, status, body)
        assert headers.get("x-amzn-errortype") and json.loads(body)["message"], path
    assert events(emberd, "q") == []
    # Another account neither sees this function's logs nor learns they exist.
    _, _, rid = invoke(c, "q", {"secret": 1})
    logged(emberd, "q", [rid])
    other = emberd.add_key(account="111111111111")
    status, _, body = emberd.raw("GET", "/ember/logs/q?since=1h", key=other)
    assert status == 404, body


def test_log_write_failures_never_fail_an_invocation(emberd):
    c = emberd.client()
    create(c, "brk", wasm("logger"))
    # A plain file where the function's log directory should be.
    os.makedirs(os.path.join(emberd.data_dir, "logs"), exist_ok=True)
    open(os.path.join(emberd.data_dir, "logs", "brk"), "w").close()
    for i in range(3):
        r, body, _ = invoke(c, "brk", {"i": i}, LogType="Tail")
        assert "FunctionError" not in r and json.loads(body) == {"i": i}
        assert "START RequestId: " in base64.b64decode(r["LogResult"]).decode()

    def errors():
        _, _, text = emberd.raw("GET", "/metrics")
        m = re.search(rb"^ember_log_write_errors_total (\S+)$", text, re.M)
        return m and float(m.group(1)) >= 3
    assert wait_for(errors, timeout=30), "log write errors were not counted"


def test_init_phase_output_comes_before_the_first_start(emberd):
    c = emberd.client()
    create(c, "il", wasm("init_logger"), MemorySize=128)
    _, body, first = invoke(c, "il", {})
    assert json.loads(body) == {}
    _, _, second = invoke(c, "il", {})
    evs = logged(emberd, "il", [first, second])
    msgs = [e["Message"] for e in evs]
    start = msgs.index(next(m for m in msgs if m.startswith(f"START RequestId: {first} ")))
    # Lambda's order: the init phase's lines, then the first START.
    assert msgs[start - 1] == "init: warming up", msgs
    assert msgs.count("init: warming up") == 1, msgs
    assert block(evs, first)[1] == "handle: called"
    assert block(evs, second)[1] == "handle: called"
    assert "Init Duration" in block(evs, first)[-1] and "Init Duration" not in block(evs, second)[-1]


def test_init_failure_output_reaches_the_function_log(emberd):
    """What a failing Init printed is in the caller's log tail and in the
    function's log, before the failed invocation's START, as on Lambda."""
    c = emberd.client()
    create(c, "ilf", wasm("initfail_logger"), MemorySize=128)
    r, body, rid = invoke(c, "ilf", {}, LogType="Tail")
    assert r.get("FunctionError") == "Unhandled", body
    assert json.loads(body)["errorType"].startswith("Runtime."), body
    assert "init: config missing" in base64.b64decode(r["LogResult"]).decode()
    evs = logged(emberd, "ilf", [rid])
    msgs = [e["Message"] for e in evs]
    assert msgs.count("init: config missing") == 1, msgs
    start = msgs.index(next(m for m in msgs if m.startswith(f"START RequestId: {rid} ")))
    assert msgs.index("init: config missing") < start, msgs
