"""python3.11 through emberd on the kernel-less guest (issue 19): boto3
against a real emberd on a host that cannot run Linux guests (this PVM
machine), so CPython for WebAssembly runs the function. The Lambda Python
contract is checked case by case against what awslambdaric does: context
fields and AWS_LAMBDA_* variables, error documents with
X-Amz-Function-Error: Unhandled, the Runtime.* init errors, MarshalError,
print/logging in the log tail, the timeout message; the file system: the
ZIP at /var/task with a vendored package, a layer at /opt/python, /tmp per
environment, nothing of the host's readable.

One emberd for the whole module: the python runtime is compiled once per
emberd (and memory size), not per test; every function uses 256 MB."""
import base64
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile

import pytest

from conftest import Emberd, python_wasm_dir, wait_for

pytestmark = pytest.mark.vm

ROLE = "arn:aws:iam::000000000000:role/ember"
MEM = 256

HANDLER = r'''
import base64, datetime, decimal, hashlib, json, logging, os, re, uuid, zlib
import vendored_pkg
from layer_helper import shout

logger = logging.getLogger()
logger.setLevel(logging.INFO)
COUNT = 0

def lambda_handler(event, context):
    global COUNT
    COUNT += 1
    print("print line", COUNT)
    logger.info("logging line %s", COUNT)
    return {
        "count": COUNT,
        "event": event,
        "json": json.loads('{"a": [1, 2]}'),
        "re": re.findall(r"\d+", "a1b22c333"),
        "date": datetime.date(2026, 12, 7).isoformat(),
        "decimal": str(decimal.Decimal("1.10") * 3),
        "sha": hashlib.sha256(b"ember").hexdigest()[:12],
        "b64": base64.b64encode(b"ember").decode(),
        "zlib": zlib.decompress(zlib.compress(b"z" * 1000)) == b"z" * 1000,
        "uuid": str(uuid.UUID(int=1)),
        "vendored": vendored_pkg.VALUE,
        "layer": shout("hi"),
        "version": os.sys.version.split()[0],
        "ctx": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
        },
        "env": {k: v for k, v in os.environ.items()
                if k.startswith("AWS_") or k in ("_HANDLER", "LAMBDA_TASK_ROOT", "MY_VAR")},
    }
'''

PROBE = r'''
import os, time

def tmp(event, context):
    marks = sorted(os.listdir("/tmp"))
    with open("/tmp/mark-" + context.aws_request_id, "w") as f:
        f.write("x")
    return marks

def escape(event, context):
    out = {}
    for p in ["/etc/passwd", "/var/task/../../etc/passwd", "../../etc/passwd",
              "/proc/self/environ", "/var/runtime/../../../root"]:
        try:
            with open(p) as f:
                out[p] = "READ " + f.read(40)
        except OSError as e:
            out[p] = type(e).__name__
    try:
        os.listdir("/")
        out["/"] = "LISTED"
    except OSError as e:
        out["/"] = type(e).__name__
    try:
        with open("/var/task/new.txt", "w") as f:
            f.write("x")
        out["write_task"] = "WROTE"
    except OSError as e:
        out["write_task"] = type(e).__name__
    return out

def fail(event, context):
    raise ValueError("bad value: " + str(event.get("n")))

def unserialisable(event, context):
    return {"s": {1, 2}}

def decimals(event, context):
    import decimal
    return {"d": decimal.Decimal("1.10"), "b": None, "t": True}

def raw_bytes(event, context):
    return b"raw \x00 bytes"

def sleep(event, context):
    time.sleep(10)
    return "never"

def nap(event, context):
    t = time.monotonic()
    time.sleep(0.2)
    return time.monotonic() - t

def spin(event, context):
    while True:
        pass
'''


def zip_bytes(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def ember():
    d = tempfile.mkdtemp(prefix="epy", dir="/tmp")
    e = Emberd(d, ["--python-wasm-dir", python_wasm_dir(), "--spare-vms", "0"]).start()
    yield e
    e.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def lam(ember):
    return ember.client()


def create(lam, name, code, handler, **kw):
    args = dict(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler=handler,
                Code={"ZipFile": code}, MemorySize=MEM, Timeout=30)
    args.update(kw)
    return lam.create_function(**args)


def invoke(lam, name, event=None, tail=False):
    r = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}),
                   LogType="Tail" if tail else "None")
    body = r["Payload"].read()
    assert not tail or "LogResult" in r, (r, body)
    logs = base64.b64decode(r["LogResult"]).decode() if tail else ""
    return r.get("FunctionError"), body, logs


@pytest.fixture(scope="module")
def probe(lam):
    create(lam, "probe", zip_bytes({"probe.py": PROBE}), "probe.tmp")
    return "probe"


def test_a_python_function_runs_cold_and_warm_with_stdlib_vendored_code_and_a_layer(ember, lam):
    layer = lam.publish_layer_version(
        LayerName="helpers",
        Content={"ZipFile": zip_bytes({"python/layer_helper.py":
                                       "def shout(s):\n    return s.upper() + '!'\n"})})
    code = zip_bytes({"lambda_function.py": HANDLER,
                      "vendored_pkg/__init__.py": "VALUE = 'vendored ok'\n"})
    cfg = create(lam, "hello", code, "lambda_function.lambda_handler",
                 Layers=[layer["LayerVersionArn"]], Environment={"Variables": {"MY_VAR": "mine"}})
    assert cfg["Runtime"] == "python3.11"
    got = lam.get_function(FunctionName="hello")
    assert got["Configuration"]["Runtime"] == "python3.11"
    # botocore drops members its model does not know: read ours raw.
    status, _, raw = ember.raw("GET", "/2015-03-31/functions/hello")
    assert status == 200 and json.loads(raw)["Configuration"]["EmberGuest"] == "wasm", raw
    for n in (1, 2, 3):
        err, body, logs = invoke(lam, "hello", {"n": n}, tail=True)
        assert err is None, body
        v = json.loads(body)
        assert v["count"] == n, v  # one environment, module state kept warm
        assert v["event"] == {"n": n}
        assert v["json"] == {"a": [1, 2]} and v["re"] == ["1", "22", "333"]
        assert v["date"] == "2026-12-07" and v["decimal"] == "3.30"
        assert v["sha"] == hashlib.sha256(b"ember").hexdigest()[:12]
        assert v["b64"] == "ZW1iZXI=" and v["zlib"] is True
        assert v["uuid"] == "00000000-0000-0000-0000-000000000001"
        assert v["vendored"] == "vendored ok" and v["layer"] == "HI!"
        assert v["version"] == "3.11.2"
        ctx = v["ctx"]
        assert ctx["function_name"] == "hello" and ctx["function_version"] == "$LATEST"
        assert ctx["invoked_function_arn"].endswith(":function:hello"), ctx
        assert ctx["memory_limit_in_mb"] == str(MEM)
        assert 0 < ctx["remaining"] <= 30000, ctx
        assert ctx["log_group_name"] == "/aws/lambda/hello"
        assert ctx["log_stream_name"], ctx
        assert len(ctx["aws_request_id"]) == 36
        env = v["env"]
        assert env["AWS_LAMBDA_FUNCTION_NAME"] == "hello"
        assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == str(MEM)
        assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.11"
        assert env["_HANDLER"] == "lambda_function.lambda_handler"
        assert env["LAMBDA_TASK_ROOT"] == "/var/task" and env["MY_VAR"] == "mine"
        assert f"print line {n}\n" in logs, logs
        rid = ctx["aws_request_id"]
        assert f"[INFO]\t" in logs and f"\t{rid}\tlogging line {n}" in logs, logs
        assert f"START RequestId: {rid}" in logs
        if n == 1:
            assert "Init Duration" in logs, logs
    # The same lines in `ember logs`.
    r = ember.ember("logs", "hello")
    assert r.returncode == 0, r.stderr
    assert "print line 3" in r.stdout and "logging line 3" in r.stdout, r.stdout


def test_a_handler_exception_is_lambdas_error_document(lam):
    create(lam, "fails", zip_bytes({"probe.py": PROBE}), "probe.fail")
    err, body, logs = invoke(lam, "fails", {"n": 7}, tail=True)
    assert err == "Unhandled"
    doc = json.loads(body)
    assert doc["errorType"] == "ValueError" and doc["errorMessage"] == "bad value: 7", doc
    assert len(doc["requestId"]) == 36
    assert any('probe.py", line' in f and "in fail" in f for f in doc["stackTrace"]), doc
    assert not any("ember_bootstrap" in f for f in doc["stackTrace"]), doc
    assert "[ERROR] ValueError: bad value: 7\rTraceback (most recent call last):" in logs, logs
    # The environment survives a handled exception (as under awslambdaric).
    err2, body2, _ = invoke(lam, "fails", {"n": 8})
    assert err2 == "Unhandled" and json.loads(body2)["errorMessage"] == "bad value: 8"


@pytest.mark.parametrize("files,handler,etype,message", [
    ({"probe.py": PROBE}, "missing_module.handler", "Runtime.ImportModuleError",
     "Unable to import module 'missing_module': No module named 'missing_module'"),
    ({"probe.py": PROBE}, "probe.no_such_function", "Runtime.HandlerNotFound",
     "Handler 'no_such_function' missing on module 'probe'"),
    ({"broken.py": "def handler(e, c)\n    return 1\n"}, "broken.handler",
     "Runtime.UserCodeSyntaxError", "Syntax error in module 'broken': "),
    ({"imports.py": "import not_installed_anywhere\n"}, "imports.handler",
     "Runtime.ImportModuleError",
     "Unable to import module 'imports': No module named 'not_installed_anywhere'"),
    ({"probe.py": PROBE}, "nodots", "Runtime.MalformedHandlerName", "Bad handler 'nodots'"),
])
def test_init_errors_are_the_runtime_errors_awslambdaric_reports(lam, files, handler, etype,
                                                                   message):
    name = "init-" + handler.replace(".", "-").replace("_", "-")
    create(lam, name, zip_bytes(files), handler)
    err, body, _ = invoke(lam, name)
    assert err == "Unhandled", body
    doc = json.loads(body)
    assert doc["errorType"] == etype, doc
    assert doc["errorMessage"].startswith(message), doc
    if etype == "Runtime.UserCodeSyntaxError":
        assert doc["stackTrace"] and "broken.py" in doc["stackTrace"][0], doc


def test_results_are_marshalled_as_awslambdaric_does(lam):
    code = zip_bytes({"probe.py": PROBE})
    create(lam, "marshal", code, "probe.unserialisable")
    err, body, _ = invoke(lam, "marshal")
    doc = json.loads(body)
    assert err == "Unhandled" and doc["errorType"] == "Runtime.MarshalError", doc
    assert doc["errorMessage"] == \
        "Unable to marshal response: Object of type set is not JSON serializable", doc
    create(lam, "decimals", code, "probe.decimals")
    err, body, _ = invoke(lam, "decimals")
    assert err is None and body == b'{"d": 1.10, "b": null, "t": true}', body
    create(lam, "rawbytes", code, "probe.raw_bytes")
    err, body, _ = invoke(lam, "rawbytes")
    assert err is None and body == b"raw \x00 bytes", body


@pytest.mark.parametrize("handler", ["probe.sleep", "probe.spin"])
def test_a_timeout_ends_the_invocation_with_lambdas_message(ember, lam, handler):
    name = handler.replace("probe.", "timeout-")
    create(lam, name, zip_bytes({"probe.py": PROBE}), handler, Timeout=2)
    t = time.monotonic()
    err, body, _ = invoke(lam, name)
    took = time.monotonic() - t
    doc = json.loads(body)
    assert took < 15, (took, doc, ember.log()[-1500:])
    assert err == "Unhandled" and doc["errorMessage"] == "Task timed out after 2.00 seconds", doc


def test_time_sleep_waits(lam):
    create(lam, "nap", zip_bytes({"probe.py": PROBE}), "probe.nap")
    err, body, _ = invoke(lam, "nap")
    assert err is None and 0.2 <= json.loads(body) < 1.0, body


def test_tmp_persists_within_an_environment_and_never_across(ember, lam, probe):
    _, first, _ = invoke(lam, probe)
    _, second, _ = invoke(lam, probe)
    assert json.loads(first) == [], first
    assert len(json.loads(second)) == 1, second  # the first call's mark, same environment
    # A new revision gets new environments: nothing of the old /tmp.
    lam.update_function_configuration(FunctionName=probe, Description="rev 2")
    wait_for(lambda: lam.get_function_configuration(FunctionName=probe)["LastUpdateStatus"]
             == "Successful")
    _, third, _ = invoke(lam, probe)
    assert json.loads(third) == [], third


def test_reading_outside_the_trees_gets_an_error_not_the_hosts_files(lam):
    create(lam, "escape", zip_bytes({"probe.py": PROBE}), "probe.escape")
    err, body, _ = invoke(lam, "escape")
    assert err is None, body
    out = json.loads(body)
    for path, what in out.items():
        assert not what.startswith("READ") and what != "LISTED" and what != "WROTE", (path, out)
    assert out["/etc/passwd"] in ("FileNotFoundError", "PermissionError", "OSError"), out


def test_native_extensions_are_refused_at_create_naming_the_files(lam):
    code = zip_bytes({"lambda_function.py": "import fast\n",
                      "fast/_speedups.cpython-311-x86_64-linux-gnu.so": b"\x7fELF",
                      "lib/libz.so.1": b"\x7fELF"})
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, "native", code, "lambda_function.handler")
    msg = str(e.value)
    assert "fast/_speedups.cpython-311-x86_64-linux-gnu.so" in msg and "lib/libz.so.1" in msg
    assert "cannot run Linux guests" in msg, msg
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="native")


def test_a_package_that_is_not_a_zip_gets_awss_answer(lam):
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, "notzip", b"print('hello')\n", "lambda_function.handler")
    assert e.value.response["Error"]["Message"] == (
        "Could not unzip uploaded file. Please check your file, then try to upload again.")
