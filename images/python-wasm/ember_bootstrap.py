"""ember's Lambda Python runtime for the kernel-less guest (issue 19;
a first cut, not yet wired into emberd): `init()` runs once, from the
reactor's _initialize (images/python-wasm/reactor.c), and imports the
handler named by _HANDLER; `invoke(env)` runs one invocation with that
invocation's environment (read from WASI by the reactor). The event is
stdin, the response stdout; print/logging go to stderr (log lines)."""
import importlib, json, os, sys, time, traceback

_handler = None


class LambdaContext:
    def __init__(self, env):
        self.aws_request_id = env.get("AWS_LAMBDA_REQUEST_ID", "")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "")
        self.invoked_function_arn = env.get("AWS_LAMBDA_INVOKED_FUNCTION_ARN", "")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = "/aws/lambda/" + self.function_name
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline_ms = int(env.get("AWS_LAMBDA_DEADLINE_MS", "0") or 0)

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)


_response = None


def init():
    global _handler, _response
    # What the handler prints is a log line, never part of the response.
    _response = sys.stdout
    sys.stdout = sys.stderr
    spec = os.environ.get("_HANDLER", "lambda_function.lambda_handler")
    mod, _, fn = spec.rpartition(".")
    _handler = getattr(importlib.import_module(mod), fn)


def _read_event():
    chunks = []
    while True:
        c = os.read(0, 1 << 16)
        if not c:
            break
        chunks.append(c)
    data = b"".join(chunks)
    return json.loads(data) if data else None


def invoke(env):
    ctx = LambdaContext(env)
    try:
        out = json.dumps(_handler(_read_event(), ctx)).encode()
    except Exception as e:
        out = json.dumps({"errorMessage": str(e), "errorType": type(e).__name__,
                          "stackTrace": traceback.format_tb(e.__traceback__)}).encode()
    sys.stderr.flush()
    os.write(1, out)
