//! The Linux agent (`ember-agent`) as an ordinary host process: its host
//! transport is a Unix socket driven by ember-host's `AgentConn` (the same
//! protocol code as over vsock), and real runtimes talk to its Lambda Runtime
//! API — a shell `bootstrap` using curl, a compiled C one, and the python3.11
//! image's runtime (AWS's awslambdaric + boto3, images/build-images.sh) under
//! the host's python3.11. Covers invoke, function errors,
//! init errors, timeouts (process tree killed, re-init), crashes, 6 MiB
//! payloads both ways, and a second concurrent `next` caller being refused.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ember_host::env::{
    AgentConn, AgentError, AgentKind, Code, InitSpec, InvokeReply, InvokeRequest, LogStream,
    MAX_PAYLOAD,
};
use ember_tests::linux_guest::{accept_agent, free_port};

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// `$EMBER_AGENT`, else `ember-agent` beside the test binary, else built
/// into a private target dir (so no cargo lock is shared with this run).
fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_AGENT") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let beside = dir.join("ember-agent");
    if beside.exists() {
        return beside;
    }
    let target = dir.join("ember-agent-build");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "ember-guest",
            "--features",
            "linux-agent",
        ])
        .args(["--bin", "ember-agent", "--target-dir"])
        .arg(&target)
        .status()
        .expect("run cargo build for ember-agent");
    assert!(status.success(), "building ember-agent failed");
    target.join("release/ember-agent")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ember-la-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("task")).unwrap();
        Scratch(dir)
    }
    fn task(&self) -> PathBuf {
        self.0.join("task")
    }
    /// Writes an executable file into the task root.
    fn exec(&self, name: &str, text: &str) {
        let p = self.task().join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running agent and the host end of its connection.
struct Agent {
    child: Child,
    conn: AgentConn<UnixStream>,
    api_port: u16,
    scratch: Scratch,
}

impl Agent {
    fn start(scratch: Scratch, extra: &[&str]) -> Agent {
        let sock = scratch.0.join("host.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let api_port = free_port();
        let stderr = fs::File::create(scratch.0.join("agent.stderr")).unwrap();
        let child = Command::new(agent_bin())
            .args(["--unix"])
            .arg(&sock)
            .args(["--runtime-api", &format!("127.0.0.1:{api_port}")])
            .args(["--runtime-dir"])
            .arg(scratch.0.join("runtime"))
            .args(extra)
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ember-agent");
        let conn = accept_agent(&listener, "agent");
        assert_eq!(conn.ready().agent, AgentKind::Linux);
        assert!(conn.ready().agent_version.starts_with("ember-agent "));
        Agent {
            child,
            conn,
            api_port,
            scratch,
        }
    }

    fn init(&mut self, handler: &str, timeout_ms: u32) -> Result<u64, AgentError> {
        let spec = InitSpec {
            function_name: "fn-under-test".into(),
            function_version: "7".into(),
            handler: handler.into(),
            code: Code::Path(self.scratch.task().display().to_string()),
            env: vec![("GREETING".into(), "hello".into())],
            memory_mib: 256,
            timeout_ms,
            random_seed: None,
            trees: Vec::new(),
            ephemeral_mib: 0,
        };
        self.conn
            .init(&spec, Duration::from_secs(20))
            .map(|r| r.init_us)
    }

    fn invoke(&mut self, id: &str, payload: &[u8], timeout_ms: u64) -> InvokeReply {
        let req = InvokeRequest {
            request_id: id.into(),
            payload: payload.to_vec().into(),
            deadline_ms: unix_ms() + timeout_ms,
            invoked_function_arn: "arn:aws:lambda:local:000000000000:function:fn-under-test".into(),
            trace_id: "Root=1-abc-def;Sampled=0".into(),
            client_context: String::new(),
            cognito_identity: String::new(),
        };
        self.conn
            .invoke(&req, Duration::from_millis(timeout_ms + 20_000))
            .unwrap_or_else(|e| panic!("invoke {id}: {e}; agent stderr: {}", self.stderr()))
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.scratch.0.join("agent.stderr")).unwrap_or_default()
    }

    /// Shutdown must make the agent exit 0 promptly.
    fn shutdown(mut self) {
        self.conn.shutdown().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "agent exit {st}; stderr: {}", self.stderr());
                return;
            }
            assert!(Instant::now() < until, "agent ignored Shutdown");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(inv: &InvokeReply, stream: LogStream) -> Vec<&str> {
    inv.logs
        .lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.line.as_str())
        .collect()
}

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
            error_type,
            message,
            logs,
            document,
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
            error_type,
            message,
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
            error_type,
            message,
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
            error_type,
            message,
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
            error_type,
            message,
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
            error_type,
            message,
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
        Err(AgentError::InitFailed { error_type, .. }) => {
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
