//! The Linux agent (`ember-agent`) as an ordinary host process with real
//! runtimes other than a shell: a compiled C `bootstrap`, and the python3.11
//! image's runtime (AWS's awslambdaric + boto3, images/build-images.sh)
//! under the host's python3.11; and their round-trip medians side by side.

mod linux_agent_common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use ember_host::env::{AgentError, FunctionError, LogStream};
use linux_agent_common::*;

/// A compiled runtime: raw sockets, one connection per request.
const C_BOOTSTRAP: &str = r#"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[8 << 20];

static int call(const char *req, size_t reqlen, const char *body, size_t bodylen) {
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    const char *colon = strrchr(api, ':');
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(colon + 1)) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) exit(10);
    if (write(fd, req, reqlen) != (ssize_t)reqlen) exit(11);
    if (bodylen && write(fd, body, bodylen) != (ssize_t)bodylen) exit(12);
    size_t n = 0; ssize_t r;
    while ((r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += r;
    buf[n] = 0;
    close(fd);
    return (int)n;
}

int main(void) {
    static char id[256], out[4096], req[1024];
    for (;;) {
        const char *next = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nConnection: close\r\n\r\n";
        call(next, strlen(next), 0, 0);
        char *h = strcasestr(buf, "Lambda-Runtime-Aws-Request-Id: ");
        char *body = strstr(buf, "\r\n\r\n");
        if (!h || !body) exit(13);
        sscanf(h + 31, "%255[^\r]", id);
        body += 4;
        printf("c runtime got %s\n", id);
        fflush(stdout);
        int len = snprintf(out, sizeof out, "{\"compiled\":true,\"event\":%s}", body);
        int rl = snprintf(req, sizeof req,
            "POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nConnection: close\r\n"
            "Content-Length: %d\r\n\r\n", id, len);
        call(req, rl, out, len);
    }
}
"#;

fn c_agent() -> Agent {
    let s = Scratch::new();
    let src = s.0.join("bootstrap.c");
    fs::write(&src, C_BOOTSTRAP).unwrap();
    let st = Command::new("cc")
        .args(["-O1", "-o"])
        .arg(s.task().join("bootstrap"))
        .arg(&src)
        .status()
        .expect("cc (build-essential) is needed");
    assert!(st.success(), "compiling the C bootstrap failed");
    Agent::start(s, &[])
}

#[test]
fn compiled_runtime_invokes() {
    let mut a = c_agent();
    a.init("h", 30_000).expect("init");
    for i in 0..3 {
        let id = format!("c-{i}");
        let inv = a.invoke(&id, format!("{{\"n\":{i}}}").as_bytes(), 30_000);
        let v: serde_json::Value =
            serde_json::from_slice(&inv.result.clone().expect("response")).unwrap();
        assert_eq!(v["compiled"], true);
        assert_eq!(v["event"]["n"], i);
        assert_eq!(
            lines(&inv, LogStream::Stdout),
            [format!("c runtime got {id}").as_str()]
        );
    }
    a.shutdown();
}

/// The python3.11 image's runtime directory (awslambdaric, boto3 and the
/// bootstrap, images/build-images.sh --python), unpacked once per test run.
fn python_runtime_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let images = ember_tests::linux_guest::build("images/build-images.sh", &["--python"]);
        let out = std::env::temp_dir().join(format!("ember-pyrt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        let st = Command::new("unsquashfs")
            .arg("-q")
            .arg("-d")
            .arg(&out)
            .arg(images.join("python3.11.squashfs"))
            .arg("var/runtime")
            .stdout(Stdio::null())
            .status()
            .expect("unsquashfs (squashfs-tools)");
        assert!(
            st.success(),
            "unpacking the python3.11 image's /var/runtime"
        );
        out.join("var/runtime")
    })
    .clone()
}

/// AWS's Python runtime client from the python3.11 image, under the host's
/// python3 (3.11, the image's ABI).
fn python_agent(app: &str) -> Agent {
    let s = Scratch::new();
    let rt = s.0.join("runtime");
    let st = Command::new("cp")
        .arg("-a")
        .arg(python_runtime_dir())
        .arg(&rt)
        .status()
        .expect("cp");
    assert!(st.success());
    fs::write(s.task().join("app.py"), app).unwrap();
    Agent::start(s, &[])
}

const PY_APP: &str = r#"
import os
calls = 0
def handler(event, context):
    global calls
    calls += 1
    print("py handling", context.aws_request_id)
    if event.get("fail"):
        raise ValueError("bad input: %s" % event["fail"])
    if event.get("unserialisable"):
        return {1, 2}
    return {"calls": calls, "event": event, "fn": context.function_name,
            "mem": context.memory_limit_in_mb, "arn": context.invoked_function_arn,
            "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 30000,
            "trace": os.environ.get("_X_AMZN_TRACE_ID"), "greeting": os.environ["GREETING"]}
"#;

#[test]
fn python_runtime_loop_calls_the_handler() {
    if Command::new("python3").arg("--version").output().is_err() {
        panic!("python3 is needed on the host for this test");
    }
    let mut a = python_agent(PY_APP);
    a.init("app.handler", 30_000).expect("init");
    let inv = a.invoke("py-1", br#"{"k": [1, 2]}"#, 30_000);
    let v: serde_json::Value =
        serde_json::from_slice(&inv.result.clone().expect("response")).unwrap();
    assert_eq!(v["calls"], 1);
    assert_eq!(v["event"]["k"][1], 2);
    assert_eq!(v["fn"], "fn-under-test");
    assert_eq!(v["mem"], "256");
    assert_eq!(v["remaining_ok"], true);
    assert_eq!(v["trace"], "Root=1-abc-def;Sampled=0");
    assert_eq!(v["greeting"], "hello");
    assert_eq!(lines(&inv, LogStream::Stdout), ["py handling py-1"]);
    // Module state survives between invocations of one environment.
    let inv = a.invoke("py-2", b"{}", 30_000);
    let v: serde_json::Value = serde_json::from_slice(&inv.result.unwrap()).unwrap();
    assert_eq!(v["calls"], 2);
    let err = a
        .invoke("py-3", br#"{"fail": "x"}"#, 30_000)
        .result
        .expect_err("exception");
    assert_eq!(err.error_type, "ValueError");
    assert_eq!(err.message, "bad input: x");
    let doc: serde_json::Value = serde_json::from_slice(&err.document).unwrap();
    assert_eq!(doc["errorMessage"], "bad input: x");
    assert!(doc["stackTrace"].as_array().is_some_and(|t| !t.is_empty()));
    let err = a
        .invoke("py-4", br#"{"unserialisable": 1}"#, 30_000)
        .result
        .expect_err("marshal");
    assert_eq!(err.error_type, "Runtime.MarshalError");
    a.shutdown();

    let mut a = python_agent("import no_such_module_anywhere\n");
    match a.init("app.handler", 30_000) {
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    ..
                },
            ..
        }) => {
            assert_eq!(error_type, "Runtime.ImportModuleError");
            assert!(
                message.contains("Unable to import module 'app'"),
                "{message}"
            );
        }
        other => panic!("expected InitFailed, got {other:?}"),
    }
    let mut a = python_agent(PY_APP);
    match a.init("app.nope", 30_000) {
        Err(AgentError::InitFailed {
            error: FunctionError { error_type, .. },
            ..
        }) => {
            assert_eq!(error_type, "Runtime.HandlerNotFound")
        }
        other => panic!("expected InitFailed, got {other:?}"),
    }
}

fn median_round_trip(a: &mut Agent, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let inv = a.invoke(&format!("bench-{i}"), b"{}", 30_000);
            assert!(inv.result.is_ok());
            inv.round_trip
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// Not a speed check: prints the median host-side invoke round trip through
/// the agent for the compiled runtime and awslambdaric, side by side.
#[test]
fn round_trip_medians_compiled_vs_python() {
    let mut c = c_agent();
    c.init("h", 30_000).expect("init");
    let mut py = python_agent("def handler(event, context):\n    return event\n");
    py.init("app.handler", 30_000).expect("init");
    let (mc, mp) = (
        median_round_trip(&mut c, 30),
        median_round_trip(&mut py, 30),
    );
    eprintln!(
        "agent round trip, median of 30: compiled C runtime {mc:?}, awslambdaric {mp:?} (ratio {:.2})",
        mp.as_secs_f64() / mc.as_secs_f64()
    );
    c.shutdown();
    py.shutdown();
}
