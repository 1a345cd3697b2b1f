"""ember's Lambda Python runtime for the kernel-less guest (issue 19): the
contract of AWS's own client (awslambdaric's bootstrap.py), case by case,
without its HTTP loop. emberd sends this file at /var/runtime beside the
stdlib; the reactor (images/python-wasm/reactor.c) calls `init()` once in
_initialize and `invoke(env)` per invocation with that invocation's
environment. The event is stdin; stdout is the response (status 0) or
Lambda's error document (status 1); print and logging go to stderr, one log
line per line, as Lambda's log stream shows them. With SnapStart the reactor
also calls `before_snapshot()` (after init, before the snapshot) and
`after_restore()` (in each restored environment): the hooks registered with
snapshot_restore_py, with the same status and document convention."""
import decimal
import importlib
import json
import logging
import math
import os
import sys
import time
import traceback
import uuid

_handler = None
_request_id = None

# awslambdaric's names (lambda_runtime_exception.FaultException).
MARSHAL_ERROR = "Runtime.MarshalError"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
ERROR_LOG_LINE_TERMINATE = "\r"
ERROR_LOG_IDENT = "\u00a0"
UNHANDLED_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function code. "
    "However, in rare cases, a Lambda runtime update can cause unexpected function behavior. "
    "For functions using managed runtimes, runtime updates can be triggered by a function change, "
    "or can be applied automatically. To determine if the runtime has been updated, check the "
    "runtime version in the INIT_START log entry. If this error correlates with a change in the "
    "runtime version, you may be able to mitigate this error by temporarily rolling back to the "
    "previous runtime version. For more information, see "
    "https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html\r")


class FaultException(Exception):
    def __init__(self, exception_type, msg, trace=None):
        self.msg = msg
        self.exception_type = exception_type
        self.trace = trace


class LambdaContext:
    """awslambdaric's LambdaContext: the same attributes and methods."""

    def __init__(self, env):
        self.aws_request_id = env.get("AWS_LAMBDA_REQUEST_ID", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = env.get("AWS_LAMBDA_INVOKED_FUNCTION_ARN")
        self.tenant_id = None
        cc = env.get("AWS_LAMBDA_CLIENT_CONTEXT")
        self.client_context = _obj(json.loads(cc)) if cc else None
        self.identity = _obj({})
        self._epoch_deadline_time_in_ms = int(env.get("AWS_LAMBDA_DEADLINE_MS", "0") or 0)

    def get_remaining_time_in_millis(self):
        delta_ms = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta_ms if delta_ms > 0 else 0

    def log(self, msg):
        sys.stderr.write(str(msg))

    def __repr__(self):
        return (f"LambdaContext([aws_request_id={self.aws_request_id},"
                f"log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},"
                f"function_name={self.function_name},memory_limit_in_mb={self.memory_limit_in_mb},"
                f"function_version={self.function_version},"
                f"invoked_function_arn={self.invoked_function_arn},"
                f"client_context={self.client_context},identity={self.identity}])")


class _Obj:
    def __repr__(self):
        return repr(self.__dict__)


def _obj(d):
    if not isinstance(d, dict):
        return None
    o = _Obj()
    for k, v in d.items():
        setattr(o, k, v)
    return o


class _LambdaLoggerFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _request_id or ""
        return True


class _LambdaLoggerHandler(logging.Handler):
    def emit(self, record):
        sys.stderr.write(self.format(record))


def _setup_logging():
    logging.Formatter.converter = time.gmtime
    h = _LambdaLoggerHandler()
    h.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
        "%Y-%m-%dT%H:%M:%S"))
    h.addFilter(_LambdaLoggerFilter())
    root = logging.getLogger()
    root.addHandler(h)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    if level in logging._nameToLevel:
        root.setLevel(level)


def _get_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException(MALFORMED_HANDLER_NAME,
                             "Bad handler '{}': {}".format(handler, str(e)))
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultException(
                BUILT_IN_MODULE_CONFLICT,
                "Cannot use built-in module {} as a handler module".format(modname))
        m = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultException(IMPORT_MODULE_ERROR,
                             "Unable to import module '{}': {}".format(modname, str(e)))
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultException(USER_CODE_SYNTAX_ERROR,
                             "Syntax error in module '{}': {}".format(modname, str(e)), trace)
    try:
        return getattr(m, fname)
    except AttributeError:
        raise FaultException(HANDLER_NOT_FOUND,
                             "Handler '{}' missing on module '{}'".format(fname, modname))


def make_error(error_message, error_type, stack_trace, invoke_id=None):
    return {
        "errorMessage": error_message if error_message else "",
        "errorType": error_type if error_type else "",
        "requestId": invoke_id if invoke_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def _replace_line_indentation(line, indent_char, new_indent_char):
    n = len(line) - len(line.lstrip(indent_char))
    return new_indent_char * n + line[n:]


def log_error(error_result):
    """awslambdaric's text-format error log: one record, lines joined by \\r."""
    desc = "[ERROR]"
    if error_result.get("errorType"):
        desc += " " + error_result["errorType"]
    if error_result.get("errorMessage"):
        if error_result.get("errorType"):
            desc += ":"
        desc += " " + error_result["errorMessage"]
    lines = [desc]
    stack_trace = error_result.get("stackTrace")
    if stack_trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack_trace:
            if element == "":
                lines.append("")
            else:
                for tl in element.splitlines():
                    lines.append(_replace_line_indentation(tl, " ", ERROR_LOG_IDENT))
    sys.stderr.write(ERROR_LOG_LINE_TERMINATE.join(lines) + "\n")


def _user_frames(tb):
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    for i in range(len(frames)):
        if "/ember_bootstrap.py" not in frames[i][0]:
            return frames[i:]
    return frames


def _fault_result(exc_info):
    etype, value, tb = exc_info
    return make_error(str(value), etype.__name__, traceback.format_list(_user_frames(tb)))


class _Encoder(json.JSONEncoder):
    """awslambdaric's marshaller: Decimals as JSON numbers (their own
    digits), NaN allowed."""

    def __init__(self, mark):
        super().__init__(allow_nan=True)
        self._mark = mark

    def default(self, obj):
        if isinstance(obj, decimal.Decimal):
            if obj.is_nan():
                return math.nan
            # Emitted as a marked string, unquoted after encoding.
            return self._mark + str(obj) + self._mark
        return super().default(obj)


def to_json(obj):
    mark = "\u0000" + uuid.uuid4().hex
    s = _Encoder(mark).encode(obj)
    q = json.dumps(mark)[1:-1]
    if q in s:
        s = s.replace('"' + q, "").replace(q + '"', "")
    return s


def _write_out(data):
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def _report(error_result):
    """Logs an error as awslambdaric does and writes its document to stdout;
    the status that says so (1)."""
    log_error(error_result)
    sys.stderr.flush()
    _write_out(to_json(error_result).encode())
    return 1


def init():
    """Imports the handler. 0 = ready; 1 = the init error's document is on stdout."""
    global _handler
    # What the handler prints is a log line, never part of the response.
    sys.stdout = sys.stderr
    error_result = None
    try:
        _setup_logging()
        _handler = _get_handler(os.environ.get("_HANDLER", ""))
    except FaultException as e:
        error_result = make_error(e.msg, e.exception_type, e.trace)
    except Exception:
        error_result = _fault_result(sys.exc_info())
    if error_result is None:
        return 0
    logging.warning(UNHANDLED_WARNING)
    return _report(error_result)


def _run_hooks(hooks):
    """Runs (func, args, kwargs) hooks in order. 0 = all ran; 1 = one raised:
    its error is logged and its document is on stdout (the rest are skipped)."""
    try:
        for func, args, kwargs in hooks:
            func(*args, **kwargs)
        return 0
    except Exception:
        error_result = _fault_result(sys.exc_info())
    return _report(error_result)


def before_snapshot():
    """SnapStart: the before-snapshot hooks, last registered first."""
    import snapshot_restore_py
    status = _run_hooks(list(reversed(snapshot_restore_py.get_before_snapshot())))
    sys.stderr.flush()
    return status


def after_restore():
    """SnapStart: the after-restore hooks, in order of registration."""
    import snapshot_restore_py
    status = _run_hooks(list(snapshot_restore_py.get_after_restore()))
    sys.stderr.flush()
    return status


def _read_event():
    chunks = []
    while True:
        c = os.read(0, 1 << 16)
        if not c:
            break
        chunks.append(c)
    return b"".join(chunks)


def invoke(env):
    """One invocation. 0 = the response is on stdout; 1 = an error document is."""
    global _request_id
    _request_id = env.get("AWS_LAMBDA_REQUEST_ID", "")
    trace = env.get("_X_AMZN_TRACE_ID")
    if trace:
        os.environ["_X_AMZN_TRACE_ID"] = trace
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    error_result = None
    try:
        ctx = LambdaContext(env)
        body = _read_event()
        try:
            event = json.loads(body)
        except Exception as e:
            raise FaultException(UNMARSHAL_ERROR, "Unable to unmarshal input: {}".format(str(e)))
        response = _handler(event, ctx)
        if isinstance(response, bytes):
            result = response
        else:
            try:
                result = to_json(response).encode()
            except Exception as e:
                raise FaultException(MARSHAL_ERROR, "Unable to marshal response: {}".format(str(e)))
    except FaultException as e:
        error_result = make_error(e.msg, e.exception_type, e.trace, _request_id)
    except Exception:
        etype, value, tb = sys.exc_info()
        error_result = make_error(str(value), etype.__name__,
                                  traceback.format_list(_user_frames(tb)), _request_id)
    sys.stderr.flush()
    if error_result is not None:
        return _report(error_result)
    _write_out(result)
    return 0
