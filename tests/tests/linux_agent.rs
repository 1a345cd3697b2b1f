//! The Linux agent (`ember-agent`) as an ordinary host process with a shell
//! `bootstrap` runtime (curl against its Lambda Runtime API). Covers invoke,
//! function errors, init errors, timeouts (process tree killed, re-init),
//! crashes, 6 MiB payloads both ways, and a second concurrent `next` caller
//! being refused. The compiled C and python3.11 runtimes are in
//! `linux_agent_runtimes.rs`.

mod linux_agent_common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ember_host::env::{AgentError, Code, FunctionError, InitSpec, LogStream, MAX_PAYLOAD};
use linux_agent_common::*;

/// A shell runtime: curl against the Runtime API, one request per line of
/// the loop; payload words select behaviours.
const SHELL_BOOTSTRAP: &str = r#"#!/bin/sh
set -u
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
echo "init: handler=$_HANDLER greeting=$GREETING"
while true; do
  hdrs=$(mktemp); ev=$(mktemp)
  curl -sS -D "$hdrs" -o "$ev" "$api/invocation/next" || exit 9
  id=$(grep -i '^lambda-runtime-aws-request-id:' "$hdrs" | cut -d' ' -f2 | tr -d '\r')
  dl=$(grep -i '^lambda-runtime-deadline-ms:' "$hdrs" | cut -d' ' -f2 | tr -d '\r')
  arn=$(grep -i '^lambda-runtime-invoked-function-arn:' "$hdrs" | cut -d' ' -f2 | tr -d '\r')
  echo "handling $id"
  echo "to stderr $id" >&2
  case "$(head -c 16 "$ev")" in
    fail*) curl -sS -o /dev/null -H 'Lambda-Runtime-Function-Error-Type: Handled.Header' \
             --data-binary '{"errorMessage":"it failed","errorType":"Handled.Oops","stackTrace":["a"]}' \
             "$api/invocation/$id/error" ;;
    text*) curl -sS -o /dev/null -H 'Lambda-Runtime-Function-Error-Type: Handled.Text' \
             --data-binary 'plain words' "$api/invocation/$id/error" ;;
    sleep*) sleep 600 & echo $! > "$LAMBDA_TASK_ROOT/../child.pid"; sleep 600 ;;
    crash*) exit 3 ;;
    long*) head -c 100000 /dev/zero | tr '\0' L; echo
           curl -sS -o /dev/null --data-binary '{}' "$api/invocation/$id/response" ;;
    orphans*) for i in 1 2 3; do (sleep 2 &); done
              curl -sS -o /dev/null --data-binary '{}' "$api/invocation/$id/response" ;;
    echo*) curl -sS -o /dev/null --data-binary "@$ev" "$api/invocation/$id/response" ;;
    big*) head -c 6291457 /dev/zero | tr '\0' a > "$ev.big"
          curl -sS -o /dev/null -w '%{http_code}\n' --data-binary "@$ev.big" "$api/invocation/$id/response" ;;
    *) printf '{"id":"%s","fn":"%s","ver":"%s","mem":"%s","arn":"%s","dl":%s,"task":"%s"}' \
         "$id" "$AWS_LAMBDA_FUNCTION_NAME" "$AWS_LAMBDA_FUNCTION_VERSION" \
         "$AWS_LAMBDA_FUNCTION_MEMORY_SIZE" "$arn" "$dl" "$LAMBDA_TASK_ROOT" > "$ev.out"
       curl -sS -o /dev/null --data-binary "@$ev.out" "$api/invocation/$id/response" ;;
  esac
  rm -f "$hdrs" "$ev" "$ev.out" "$ev.big"
done
"#;

fn shell_agent() -> Agent {
    let s = Scratch::new();
    s.exec("bootstrap", SHELL_BOOTSTRAP);
    Agent::start(s, &[])
}

#[test]
fn shell_runtime_invokes_with_lambda_environment_and_logs() {
    let mut a = shell_agent();
    a.init("function.handler", 30_000).expect("init");
    let before = unix_ms();
    let inv = a.invoke("req-1", b"{}", 30_000);
    let body = inv.result.clone().expect("response");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json response");
    assert_eq!(v["id"], "req-1");
    assert_eq!(v["fn"], "fn-under-test");
    assert_eq!(v["ver"], "7");
    assert_eq!(v["mem"], "256");
    assert_eq!(
        v["arn"],
        "arn:aws:lambda:local:000000000000:function:fn-under-test"
    );
    assert_eq!(v["task"], a.scratch.task().display().to_string());
    let dl = v["dl"].as_u64().unwrap();
    assert!(
        dl >= before + 29_000 && dl <= unix_ms() + 30_000,
        "deadline header {dl}"
    );
    assert_eq!(lines(&inv, LogStream::Stdout), ["handling req-1"]);
    assert_eq!(lines(&inv, LogStream::Stderr), ["to stderr req-1"]);
    let agent = lines(&inv, LogStream::Agent);
    assert!(
        agent
            .iter()
            .any(|l| l.starts_with("START RequestId: req-1")),
        "{agent:?}"
    );
    assert!(
        agent
            .iter()
            .any(|l| l.starts_with("REPORT RequestId: req-1")),
        "{agent:?}"
    );
    assert!(inv.max_memory_kib > 0, "Max Memory Used measured");

    // A function error keeps the environment.
    let inv = a.invoke("req-2", b"fail please", 30_000);
    let err = inv.result.expect_err("function error");
    // AWS's rules: the body's errorType wins over the header, and the
    // runtime's document reaches the caller byte for byte.
    assert_eq!(err.error_type, "Handled.Oops");
    assert_eq!(err.message, "it failed");
    assert_eq!(
        err.document,
        br#"{"errorMessage":"it failed","errorType":"Handled.Oops","stackTrace":["a"]}"#
    );
    assert!(!err.fatal);
    // A body that is not JSON: the header names the error, no document.
    let err = a
        .invoke("req-2b", b"text please", 30_000)
        .result
        .expect_err("text error");
    assert_eq!(
        (err.error_type.as_str(), err.message.as_str()),
        ("Handled.Text", "plain words")
    );
    assert!(err.document.is_empty());
    let inv = a.invoke("req-3", b"{}", 30_000);
    assert!(inv.result.is_ok());
    a.shutdown();
}

#[test]
fn long_output_lines_are_split_into_bounded_log_frames() {
    let mut a = shell_agent();
    a.init("h", 30_000).expect("init");
    let inv = a.invoke("long", b"long", 30_000);
    assert!(inv.result.is_ok());
    let out = lines(&inv, LogStream::Stdout);
    assert_eq!(out.len(), 3, "handling line + 64 KiB + rest");
    assert_eq!(out[1].len(), 64 * 1024);
    assert_eq!(out[2].len(), 100_000 - 64 * 1024);
    assert!(out[1..].iter().all(|l| l.bytes().all(|b| b == b'L')));
    a.shutdown();
}

#[test]
fn six_mib_payloads_both_ways_and_oversize_response() {
    let mut a = shell_agent();
    a.init("h", 60_000).expect("init");
    let mut payload = b"echo".to_vec();
    payload.resize(MAX_PAYLOAD, b'x');
    let inv = a.invoke("big-echo", &payload, 60_000);
    let body = inv.result.expect("6 MiB echo");
    assert_eq!(body.len(), MAX_PAYLOAD);
    assert!(body == payload, "payload came back changed");
    let inv = a.invoke("too-big", b"big", 60_000);
    let err = inv.result.clone().expect_err("oversize response refused");
    assert_eq!(err.error_type, "Function.ResponseSizeTooLarge");
    assert!(a.invoke("after", b"{}", 30_000).result.is_ok());
    a.shutdown();
}

fn alive(pid: i32) -> bool {
    // A zombie still "exists" for kill(0); the reaper must have reaped it.
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn timeout_kills_the_process_tree_and_reinitialises() {
    let mut a = shell_agent();
    a.init("h", 1_000).expect("init");
    let t = Instant::now();
    let inv = a.invoke("slow", b"sleep", 1_000);
    let took = t.elapsed();
    let err = inv.result.as_ref().expect_err("timeout");
    assert_eq!(err.error_type, "Sandbox.Timedout");
    assert_eq!(err.message, "Task timed out after 1.00 seconds");
    assert!(!err.fatal, "re-init succeeded, so the environment stays");
    // Lambda's log line: `<ISO 8601 time> <request id> Task timed out ...`.
    let line = lines(&inv, LogStream::Agent)
        .into_iter()
        .find(|l| l.ends_with("slow Task timed out after 1.00 seconds"))
        .unwrap_or_else(|| panic!("{:?}", inv.logs.lines));
    let stamp = line.split(' ').next().unwrap_or_default();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{line}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let pid: i32 = fs::read_to_string(a.scratch.0.join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(pid),
        "background child {pid} of the timed-out runtime survived"
    );
    let inv = a.invoke("after-timeout", b"{}", 30_000);
    assert!(inv.result.is_ok(), "{:?}", inv.result);
    a.shutdown();
}

/// Children of `pid` in `state` (e.g. "Z" zombie, "S" sleeping), from /proc.
fn children_in_state(pid: u32, state: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 1 && f[0] == state && f[1] == pid.to_string() {
            found.push(stat);
        }
    }
    found
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    let mut a = shell_agent();
    a.init("h", 30_000).expect("init");
    let inv = a.invoke("orphans", b"orphans", 30_000);
    assert!(inv.result.is_ok());
    // The sleeps are re-parented to the agent (child subreaper)...
    let agent = a.child.id();
    let sleeps = |state: &str| {
        children_in_state(agent, state)
            .iter()
            .filter(|s| s.contains("(sleep)"))
            .count()
    };
    let until = Instant::now() + Duration::from_millis(1800);
    while sleeps("S") < 3 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        sleeps("S") >= 3,
        "orphans not adopted: {:?}",
        children_in_state(agent, "S")
    );
    // ...exit after 2 s, and the reaper must collect them (a zombie stays
    // a child in state Z until reaped).
    let until = Instant::now() + Duration::from_secs(15);
    while sleeps("S") + sleeps("Z") > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let zombies = children_in_state(agent, "Z");
    assert!(zombies.is_empty(), "unreaped: {zombies:?}");
    assert_eq!(sleeps("S"), 0, "orphans still running after 15 s");
    a.shutdown();
}

#[test]
fn runtime_crash_is_reported_and_the_runtime_restarted() {
    let mut a = shell_agent();
    a.init("h", 30_000).expect("init");
    let inv = a.invoke("boom", b"crash", 30_000);
    let err = inv.result.clone().expect_err("crash");
    assert_eq!(err.error_type, "Runtime.ExitError");
    assert!(
        err.message
            .contains("RequestId: boom Error: Runtime exited with error: exit status 3"),
        "{}",
        err.message
    );
    assert!(!err.fatal);
    assert_eq!(
        lines(&inv, LogStream::Stdout),
        ["handling boom"],
        "output before the crash is kept"
    );
    assert!(a.invoke("after-crash", b"{}", 30_000).result.is_ok());
    a.shutdown();
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

#[test]
fn second_concurrent_next_caller_is_refused() {
    let mut a = shell_agent();
    a.init("h", 30_000).expect("init");
    // The runtime's own `next` is now blocked waiting for work.
    let (status, body) = http_get(a.api_port, "/2018-06-01/runtime/invocation/next");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("InvalidStateTransition"), "{body}");
    let (status, _) = http_get(a.api_port, "/2018-06-01/runtime/nope");
    assert_eq!(status, 404);
    // The refused caller did not disturb the real one.
    assert!(a.invoke("still-fine", b"{}", 30_000).result.is_ok());
    a.shutdown();
}

#[test]
fn init_errors_are_reported() {
    let s = Scratch::new();
    s.exec(
        "bootstrap",
        "#!/bin/sh\necho starting\ncurl -sS -o /dev/null -H 'Lambda-Runtime-Function-Error-Type: Runtime.Custom' \
         --data-binary '{\"errorMessage\":\"no config\",\"errorType\":\"Runtime.Custom\"}' \
         \"http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/init/error\"\nsleep 600\n",
    );
    let mut a = Agent::start(s, &[]);
    match a.init("h", 3000) {
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    document,
                    ..
                },
            logs,
            ..
        }) => {
            assert_eq!(error_type, "Runtime.Custom");
            assert_eq!(message, "no config");
            assert_eq!(
                document,
                br#"{"errorMessage":"no config","errorType":"Runtime.Custom"}"#
            );
            assert!(
                logs.lines.iter().any(|l| l.line == "starting"),
                "{:?}",
                logs.lines
            );
        }
        other => panic!("expected InitFailed, got {other:?}"),
    }

    // A bootstrap that exits during init, and a missing bootstrap.
    let s = Scratch::new();
    s.exec("bootstrap", "#!/bin/sh\nexit 5\n");
    let mut a = Agent::start(s, &[]);
    match a.init("h", 3000) {
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    ..
                },
            ..
        }) => {
            assert_eq!(error_type, "Runtime.ExitError");
            assert!(message.contains("exit status 5"), "{message}");
        }
        other => panic!("expected InitFailed, got {other:?}"),
    }
    // Inline code (what the kernel-less agent takes) is refused clearly.
    let mut a = Agent::start(Scratch::new(), &[]);
    let inline = InitSpec {
        function_name: "f".into(),
        function_version: "1".into(),
        handler: "h".into(),
        code: Code::Inline(b"PK\x05\x06 a zip".to_vec()),
        env: vec![],
        memory_mib: 128,
        timeout_ms: 3000,
        random_seed: None,
        trees: Vec::new(),
        ephemeral_mib: 0,
    };
    match a.conn.init(&inline, Duration::from_secs(20)) {
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    ..
                },
            ..
        }) => {
            assert_eq!(error_type, "Runtime.InvalidCode");
            assert!(
                message.contains("10 bytes of code inline") && message.contains("code image"),
                "{message}"
            );
        }
        other => panic!("expected InitFailed, got {other:?}"),
    }
    let mut a = Agent::start(Scratch::new(), &[]);
    match a.init("h", 3000) {
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    ..
                },
            ..
        }) => {
            assert_eq!(error_type, "Runtime.InvalidEntrypoint");
            assert!(
                message.contains("Couldn't find valid bootstrap"),
                "{message}"
            );
        }
        other => panic!("expected InitFailed, got {other:?}"),
    }

    // A runtime that never calls `next` hits the init timeout.
    let s = Scratch::new();
    s.exec("bootstrap", "#!/bin/sh\nsleep 600\n");
    let mut a = Agent::start(s, &["--init-timeout-ms", "500"]);
    match a.init("h", 3000) {
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    ..
                },
            ..
        }) => {
            assert_eq!(error_type, "Sandbox.Timedout");
            assert!(
                message.contains("Init timed out after 0.50 seconds"),
                "{message}"
            );
        }
        other => panic!("expected InitFailed, got {other:?}"),
    }
}
