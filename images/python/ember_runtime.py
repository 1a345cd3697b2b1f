"""ember's Lambda runtime loop for Python: imports the handler named by
_HANDLER ("module.function") from LAMBDA_TASK_ROOT, then repeatedly asks the
Runtime API for the next invocation and calls handler(event, context),
posting the JSON result or an error document, as AWS Lambda's Python runtime
does. Standard library only."""

import http.client
import importlib
import json
import os
import sys
import time
import traceback

API = os.environ.get("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
BASE = "/2018-06-01/runtime"


class Connection:
    """One keep-alive HTTP connection to the Runtime API, reopened on failure."""

    def __init__(self):
        host, _, port = API.rpartition(":")
        self.host, self.port = host, int(port)
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port)
            try:
                self.conn.request(method, BASE + path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp.status, dict(resp.getheaders()), resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def error_doc(exc, error_type=None):
    tb = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": "",
        "stackTrace": [line.rstrip("\n") for line in tb],
    }


def post_error(api, path, doc):
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json",
               "Lambda-Runtime-Function-Error-Type": doc["errorType"]}
    print("[ERROR] %s: %s" % (doc["errorType"], doc["errorMessage"]), file=sys.stderr, flush=True)
    api.request("POST", path, body, headers)


class Context:
    """The `context` argument of a Python Lambda handler."""

    def __init__(self, headers):
        h = {k.lower(): v for k, v in headers.items()}
        self.aws_request_id = h.get("lambda-runtime-aws-request-id", "")
        self.invoked_function_arn = h.get("lambda-runtime-invoked-function-arn", "")
        self._deadline_ms = int(h.get("lambda-runtime-deadline-ms", "0") or 0)
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        cc = h.get("lambda-runtime-client-context")
        self.client_context = json.loads(cc) if cc else None
        ident = h.get("lambda-runtime-cognito-identity")
        self.identity = json.loads(ident) if ident else None
        trace = h.get("lambda-runtime-trace-id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))


def load_handler(api):
    """Imports the handler; on failure reports an init error and exits."""
    spec = os.environ.get("_HANDLER", "")
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    sys.path[0:0] = [task_root, "/opt/python"]
    module_name, _, func_name = spec.rpartition(".")
    try:
        if not module_name:
            raise ValueError("Bad handler '%s': not enough values to unpack" % spec)
        module = importlib.import_module(module_name.replace("/", "."))
    except ValueError as e:
        post_error(api, "/init/error", error_doc(e, "Runtime.MalformedHandlerName"))
        sys.exit(1)
    except ImportError as e:
        doc = error_doc(e, "Runtime.ImportModuleError")
        doc["errorMessage"] = "Unable to import module '%s': %s" % (module_name, e)
        post_error(api, "/init/error", doc)
        sys.exit(1)
    except Exception as e:  # a user module that raises while importing
        post_error(api, "/init/error", error_doc(e, "Runtime.UserCodeSyntaxError"
                                                 if isinstance(e, SyntaxError) else None))
        sys.exit(1)
    handler = getattr(module, func_name, None)
    if not callable(handler):
        exc = AttributeError("Handler '%s' missing on module '%s'" % (func_name, module_name))
        post_error(api, "/init/error", error_doc(exc, "Runtime.HandlerNotFound"))
        sys.exit(1)
    return handler


def main():
    api = Connection()
    handler = load_handler(api)
    while True:
        status, headers, body = api.request("GET", "/invocation/next")
        if status != 200:
            print("[ERROR] /next answered %d: %r" % (status, body[:200]), file=sys.stderr, flush=True)
            time.sleep(0.1)
            continue
        ctx = Context(headers)
        rid = ctx.aws_request_id
        try:
            event = json.loads(body) if body else {}
            result = handler(event, ctx)
        except Exception as e:
            doc = error_doc(e)
            doc["requestId"] = rid
            post_error(api, "/invocation/%s/error" % rid, doc)
            continue
        try:
            out = json.dumps(result).encode()
        except (TypeError, ValueError) as e:
            doc = error_doc(e, "Runtime.MarshalError")
            doc["errorMessage"] = "Unable to marshal response: %s" % e
            post_error(api, "/invocation/%s/error" % rid, doc)
            continue
        status, _, body = api.request("POST", "/invocation/%s/response" % rid, out,
                                      {"Content-Type": "application/json"})
        if status == 413:
            print("[ERROR] response too large: %r" % body[:200], file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
