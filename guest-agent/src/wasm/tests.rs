//! Host-side tests of the wasm runtime and agent state machine, with modules
//! written in WAT: echo, environment, reactor state, timeouts, traps, exits,
//! limits, hostile pointers, and the protocol edge cases. Included twice
//! (mod.rs): with `AOT` the modules are compiled by cranelift exactly as the
//! host's compiler does and run by the wasmtime engine; without, by wasmi.

use std::string::String;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use std::vec::Vec;

use super::*;
use ember_abi::protocol::{Code, LogStream, Message, MAX_PAYLOAD};

/// Whether `s` ends with `suffix` (in a const).
const fn ends_with(s: &str, suffix: &str) -> bool {
    let (s, x) = (s.as_bytes(), suffix.as_bytes());
    if x.len() > s.len() {
        return false;
    }
    let mut i = 0;
    while i < x.len() {
        if s[s.len() - x.len() + i] != x[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// This copy runs the compiled engine (module `tests_compiled`), else wasmi.
const AOT: bool = ends_with(module_path!(), "tests_compiled");

struct StdClock(Instant);

impl Clock for StdClock {
    fn realtime_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
    fn monotonic_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

fn clock() -> Arc<dyn Clock> {
    // The guest's secondary vCPU bumps the epoch; here a thread does.
    static TICKER: std::sync::Once = std::sync::Once::new();
    TICKER.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_millis(1));
            super::compiled::tick();
        });
    });
    Arc::new(StdClock(Instant::now()))
}

/// The code `Init` carries for `module`: compiled for this CPU (AOT), or inline.
fn code_of(module: &[u8], memory_mib: u32) -> Result<Code, InitFailure> {
    if !AOT {
        return Ok(Code::Inline(module.to_vec()));
    }
    let features = super::aot::features::detected();
    super::aot::compile::compile(module, memory_mib, features, [0; 32])
        .map(Code::Compiled)
        .map_err(|e| super::runtime::fail("Runtime.InvalidModule", format!("{e:#}")))
}

/// Loads `module` as the agent would (compiled first when AOT).
fn load(
    module: &[u8],
    cfg: FunctionConfig,
    clock: Arc<dyn Clock>,
) -> Result<(Runtime, Vec<(LogStream, String)>), InitFailure> {
    let code = code_of(module, cfg.memory_mib)?;
    Runtime::new(&code, cfg, clock)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

const IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
"#;

const HELPERS: &str = r#"
  (memory (export "memory") 2)
  ;; write(fd, ptr, len) -> errno, using an iovec at 0 and nwritten at 8
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
"#;

/// A module from WAT, with the shared imports and helpers spliced in.
fn module(body: &str) -> Vec<u8> {
    module_with("", body)
}

/// Same, with extra imports (which must precede every function).
fn module_with(imports: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {IMPORTS} {imports} {HELPERS} {body})")).unwrap()
}

const ECHO: &str = r#"
  (func (export "_start") (local $n i32)
    (loop $l
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 65536))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then (drop (call $write (i32.const 1) (i32.const 1024) (local.get $n))) (br $l)))))
"#;

fn config(memory_mib: u32) -> FunctionConfig {
    FunctionConfig {
        function_name: "fn".into(),
        function_version: "7".into(),
        handler: "handle".into(),
        memory_mib,
        timeout_ms: 300,
        env: vec![("GREETING".into(), "hi".into())],
        random_seed: [9; 32],
        trees: vec![],
        ephemeral_mib: 0,
    }
}

fn runtime(code: &[u8]) -> Runtime {
    load(code, config(16), clock()).unwrap().0
}

fn invoke(rt: &mut Runtime, payload: &[u8]) -> InvokeOutput {
    let req = InvokeContext {
        request_id: "req-1",
        payload,
        deadline_ms: now_ms() + 300,
        ..Default::default()
    };
    rt.invoke(&req)
}

fn response(out: &InvokeOutput) -> &[u8] {
    match &out.outcome {
        Outcome::Response(p) => p,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn error_of(out: &InvokeOutput) -> (&'static str, String, bool) {
    match &out.outcome {
        Outcome::Error {
            error_type,
            message,
            fatal,
            ..
        } => (error_type, message.clone(), *fatal),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn echo_command_any_size_and_fresh_instance() {
    let mut rt = runtime(&module(ECHO));
    assert_eq!(rt.kind(), &ModuleKind::Command);
    assert_eq!(
        response(&invoke(&mut rt, b"{\"hello\":1}")),
        b"{\"hello\":1}"
    );
    assert_eq!(response(&invoke(&mut rt, b"")), b"");
    let big: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i % 251) as u8).collect();
    let out = invoke(&mut rt, &big);
    assert_eq!(response(&out), &big[..]);
    assert!(
        out.max_memory_kib >= 128,
        "memory reported: {}",
        out.max_memory_kib
    );
}

#[test]
fn environment_has_user_and_lambda_variables() {
    let code = module_with(
        r#"
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
"#,
        r#"
  (func (export "_start")
    (drop (call $sizes (i32.const 16) (i32.const 20)))
    (drop (call $get (i32.const 4096) (i32.const 8192)))
    (drop (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 20)))))
"#,
    );
    let mut rt = runtime(&code);
    let req = InvokeContext {
        request_id: "abc-123",
        deadline_ms: now_ms() + 300,
        trace_id: "Root=1",
        ..Default::default()
    };
    let out = rt.invoke(&req);
    let text = String::from_utf8(response(&out).to_vec()).unwrap();
    let vars: Vec<&str> = text.split('\0').collect();
    for want in [
        "GREETING=hi",
        "AWS_LAMBDA_FUNCTION_NAME=fn",
        "AWS_LAMBDA_FUNCTION_VERSION=7",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=16",
        "AWS_LAMBDA_REQUEST_ID=abc-123",
        "_X_AMZN_TRACE_ID=Root=1",
    ] {
        assert!(vars.contains(&want), "{want} missing from {vars:?}");
    }
    assert!(vars
        .iter()
        .any(|v| v.starts_with("AWS_LAMBDA_DEADLINE_MS=")));
}

const COUNTER: &str = r#"
  (global $count (mut i32) (i32.const 0))
  (func (export "_initialize") (global.set $count (i32.const 100)))
  (func (export "handle")
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store (i32.const 64) (global.get $count))
    (drop (call $write (i32.const 1) (i32.const 64) (i32.const 4))))
"#;

#[test]
fn reactor_state_persists_in_one_environment_only() {
    let mut a = runtime(&module(COUNTER));
    assert_eq!(
        a.kind(),
        &ModuleKind::Reactor {
            handler: "handle".into()
        }
    );
    let count =
        |rt: &mut Runtime| u32::from_le_bytes(response(&invoke(rt, b"")).try_into().unwrap());
    assert_eq!(count(&mut a), 101);
    assert_eq!(count(&mut a), 102);
    assert_eq!(count(&mut a), 103);
    let mut b = runtime(&module(COUNTER));
    assert_eq!(count(&mut b), 101, "a new environment starts from scratch");
    assert_eq!(count(&mut a), 104);
}

#[test]
fn infinite_loop_times_out_and_is_fatal() {
    let mut rt = runtime(&module(r#"(func (export "_start") (loop $l (br $l)))"#));
    let t = Instant::now();
    let out = invoke(&mut rt, b"");
    let (ty, msg, fatal) = error_of(&out);
    assert_eq!(
        (ty, msg.as_str(), fatal),
        (
            "Sandbox.Timedout",
            "Task timed out after 0.30 seconds",
            true
        )
    );
    let late = t.elapsed().as_millis();
    assert!((250..2000).contains(&late), "timed out after {late} ms");
}

#[test]
fn traps_are_function_errors_and_serving_continues() {
    let code = module(
        r#"
  (func $deep (param i32) (result i32) (i32.add (call $deep (local.get 0)) (i32.const 1)))
  (func (export "handle")
    (i32.store (i32.const 0) (i32.const 0))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 32))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (i32.eq (i32.load8_u (i32.const 32)) (i32.const 117)) (then unreachable))        ;; 'u'
    (if (i32.eq (i32.load8_u (i32.const 32)) (i32.const 111)) (then (drop (i32.load (i32.const -1)))))  ;; 'o'
    (if (i32.eq (i32.load8_u (i32.const 32)) (i32.const 115)) (then (drop (call $deep (i32.const 0)))))  ;; 's'
    (if (i32.eq (i32.load8_u (i32.const 32)) (i32.const 120)) (then (call $proc_exit (i32.const 3))))    ;; 'x'
    (drop (call $write (i32.const 1) (i32.const 32) (i32.const 1))))
"#,
    );
    let mut rt = runtime(&code);
    let (ty, msg, fatal) = error_of(&invoke(&mut rt, b"u"));
    assert_eq!((ty, fatal), ("Runtime.Trap", false));
    assert!(msg.contains("unreachable"), "{msg}");
    assert_eq!(response(&invoke(&mut rt, b"k")), b"k");
    let (_, msg, _) = error_of(&invoke(&mut rt, b"o"));
    assert!(msg.contains("out of bounds"), "{msg}");
    let (_, msg, _) = error_of(&invoke(&mut rt, b"s"));
    assert!(msg.contains("stack"), "{msg}");
    let (ty, msg, _) = error_of(&invoke(&mut rt, b"x"));
    assert_eq!((ty, msg.as_str()), ("Runtime.ExitError", "exit status 3"));
    // A reactor that exited is re-instantiated for the next invocation.
    assert_eq!(response(&invoke(&mut rt, b"k")), b"k");
}

#[test]
fn stderr_lines_become_logs_and_proc_exit_zero_is_success() {
    let code = module(
        r#"
  (data (i32.const 100) "line one\nline two\npartial")
  (func (export "_start")
    (drop (call $write (i32.const 2) (i32.const 100) (i32.const 25)))
    (drop (call $write (i32.const 1) (i32.const 100) (i32.const 4)))
    (call $proc_exit (i32.const 0)))
"#,
    );
    let mut rt = runtime(&code);
    let out = invoke(&mut rt, b"");
    assert_eq!(response(&out), b"line");
    // A failing exit carries what the function printed.
    let failing = module(
        r#"
  (data (i32.const 100) "{\"error\":\"bad input\"}")
  (func (export "_start")
    (drop (call $write (i32.const 1) (i32.const 100) (i32.const 21)))
    (call $proc_exit (i32.const 1)))
"#,
    );
    let (ty, msg, _) = error_of(&invoke(&mut runtime(&failing), b""));
    assert_eq!(
        (ty, msg.as_str()),
        (
            "Runtime.ExitError",
            "exit status 1: {\"error\":\"bad input\"}"
        )
    );
    let lines: Vec<&str> = out
        .logs
        .iter()
        .map(|(s, l)| {
            assert_eq!(*s, LogStream::Stderr);
            l.as_str()
        })
        .collect();
    assert_eq!(lines, ["line one", "line two", "partial"]);
}

#[test]
fn oversize_response_and_memory_cap() {
    // Writes 1 MiB of memory to stdout 7 times: over the 6 MiB limit.
    let code = module(
        r#"
  (func (export "_start") (local $i i32)
    (drop (memory.grow (i32.const 16)))
    (loop $l
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1048576)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 7)))))
"#,
    );
    let mut rt = runtime(&code);
    assert_eq!(
        error_of(&invoke(&mut rt, b"")).0,
        "Function.ResponseSizeTooLarge"
    );
    // memory.grow past the function's memory size fails (returns -1).
    let code = module(
        r#"
  (func (export "_start")
    (i32.store (i32.const 64) (memory.grow (i32.const 1000)))
    (i32.store (i32.const 68) (memory.grow (i32.const 10)))
    (drop (call $write (i32.const 1) (i32.const 64) (i32.const 8))))
"#,
    );
    let mut rt = runtime(&code);
    let out = invoke(&mut rt, b"");
    let r = response(&out);
    assert_eq!(
        i32::from_le_bytes(r[..4].try_into().unwrap()),
        -1,
        "64 MiB growth refused under a 16 MiB cap"
    );
    assert_eq!(
        i32::from_le_bytes(r[4..].try_into().unwrap()),
        2,
        "small growth allowed"
    );
    // A module whose initial memory exceeds the cap fails at init.
    let big =
        wat::parse_str(r#"(module (memory (export "memory") 1000) (func (export "_start")))"#)
            .unwrap();
    let err = load(&big, config(16), clock()).err().unwrap();
    assert_eq!(err.error_type, "Runtime.InvalidModule");
}

#[test]
fn hostile_pointers_get_efault_not_agent_memory() {
    // fd_write with an iovec pointing past linear memory, fd_read into it,
    // random_get/clock_time_get/environ_get out of bounds, huge iovec count:
    // all return errno codes; the module reports them.
    let code = module_with(
        r#"
  (import "wasi_snapshot_preview1" "random_get" (func $rand (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env (param i32 i32) (result i32)))
"#,
        r#"
  (func (export "_start")
    (i32.store (i32.const 100) (call $write (i32.const 1) (i32.const 131000) (i32.const 100000)))
    (i32.store (i32.const 104) (call $write (i32.const 1) (i32.const -16) (i32.const 32)))
    (i32.store (i32.const 0) (i32.const -1))
    (i32.store (i32.const 4) (i32.const 16))
    (i32.store (i32.const 108) (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 112) (call $rand (i32.const 131070) (i32.const 16)))
    (i32.store (i32.const 116) (call $clock (i32.const 0) (i64.const 0) (i32.const 131068)))
    (i32.store (i32.const 120) (call $env (i32.const 131068) (i32.const 0)))
    (i32.store (i32.const 124) (call $fd_write (i32.const 1) (i32.const 0) (i32.const 100000) (i32.const 8)))
    (i32.store (i32.const 128) (call $write (i32.const 7) (i32.const 0) (i32.const 1)))
    (drop (call $write (i32.const 1) (i32.const 100) (i32.const 32))))
"#,
    );
    let mut rt = runtime(&code);
    let out = invoke(&mut rt, b"secret?");
    let r = response(&out);
    let errnos: Vec<i32> = r
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(errnos, [21, 21, 21, 21, 21, 21, 28, 8]);
}

#[test]
fn unknown_wasi_calls_get_enosys_and_other_imports_are_refused() {
    let code = module_with(
        r#"
  (import "wasi_snapshot_preview1" "sock_accept"
    (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
"#,
        r#"
  (func (export "_start")
    (i32.store (i32.const 64)
      (call $accept (i32.const 3) (i32.const 0) (i32.const 0)))
    ;; path_open is implemented; with no trees there is no preopen (EBADF).
    (i32.store (i32.const 68)
      (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                  (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)))
    (drop (call $write (i32.const 1) (i32.const 64) (i32.const 8))))
"#,
    );
    let mut rt = runtime(&code);
    assert_eq!(response(&invoke(&mut rt, b"")), [52, 0, 0, 0, 8, 0, 0, 0]);
    let bad = wat::parse_str(r#"(module (import "env" "system" (func)) (func (export "_start")))"#)
        .unwrap();
    let err = load(&bad, config(16), clock()).err().unwrap();
    assert_eq!(err.error_type, "Runtime.InvalidModule");
    assert!(err.message.contains("env.system"), "{}", err.message);
    let err = load(b"\0asm garbage", config(16), clock()).err().unwrap();
    assert_eq!(err.error_type, "Runtime.InvalidModule");
    let no_handler = wat::parse_str(r#"(module (func (export "other")))"#).unwrap();
    assert_eq!(
        load(&no_handler, config(16), clock())
            .err()
            .unwrap()
            .error_type,
        "Runtime.HandlerNotFound"
    );
}

#[test]
fn randomness_is_per_environment_and_clock_is_sane() {
    let code = module_with(
        r#"
  (import "wasi_snapshot_preview1" "random_get" (func $rand (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
"#,
        r#"
  (func (export "_start")
    (drop (call $rand (i32.const 64) (i32.const 16)))
    (drop (call $clock (i32.const 0) (i64.const 0) (i32.const 80)))
    (drop (call $write (i32.const 1) (i32.const 64) (i32.const 24))))
"#,
    );
    let run = |seed: u8| {
        let mut cfg = config(16);
        cfg.random_seed = [seed; 32];
        let mut rt = load(&code, cfg, clock()).unwrap().0;
        (
            response(&invoke(&mut rt, b"")).to_vec(),
            response(&invoke(&mut rt, b"")).to_vec(),
        )
    };
    let (a1, a2) = run(1);
    let (b1, _) = run(2);
    assert_ne!(
        a1[..16],
        a2[..16],
        "the stream advances between invocations"
    );
    assert_ne!(a1[..16], b1[..16], "different seeds, different streams");
    let t = u64::from_le_bytes(a1[16..24].try_into().unwrap());
    // now_ms() truncates to the millisecond, so the guest's nanosecond clock,
    // read earlier, may still lie inside that millisecond: compare with its end.
    let now = (now_ms() + 1) * 1_000_000;
    assert!(t <= now && now - t < 10_000_000_000, "clock {t} vs {now}");
}

#[test]
fn agent_state_machine_handles_the_protocol_and_a_confused_host() {
    let mut agent = WasmAgent::new(clock());
    let mut out = Vec::new();
    let invoke_msg = |id: &str, payload: &[u8]| Message::Invoke {
        request_id: id.into(),
        payload: payload.to_vec(),
        deadline_ms: now_ms() + 1000,
        invoked_function_arn: String::new(),
        trace_id: String::new(),
        client_context: String::new(),
        cognito_identity: String::new(),
    };
    // Invoke before Init, agent-only messages: error replies, no crash.
    assert_eq!(
        agent.handle(invoke_msg("early", b"x"), &mut out),
        Control::Continue
    );
    assert!(
        matches!(&out[0], Message::Error { error_type, .. } if error_type == "Runtime.NotInitialized")
    );
    agent.handle(Message::InitDone { init_us: 0 }, &mut out);
    assert!(matches!(
        &out[1],
        Message::Log {
            stream: LogStream::Agent,
            ..
        }
    ));
    out.clear();
    let init_with = |code: Code| Message::Init {
        function_name: "f".into(),
        function_version: "1".into(),
        handler: String::new(),
        code,
        env: vec![],
        memory_mib: 16,
        timeout_ms: 1000,
        random_seed: [3; 32],
        trees: vec![],
        ephemeral_mib: 0,
    };
    let init = |code: Vec<u8>| init_with(code_of(&code, 16).unwrap());
    agent.handle(init(module(ECHO)), &mut out);
    assert!(matches!(out[0], Message::InitDone { .. }), "{out:?}");
    agent.handle(init(module(ECHO)), &mut out);
    assert!(
        matches!(&out[1], Message::InitError { error_type, .. } if error_type == "Runtime.AlreadyInitialized")
    );
    out.clear();
    agent.handle(invoke_msg("r1", b"ping"), &mut out);
    assert!(
        matches!(&out[0], Message::Result { request_id, payload, .. } if request_id == "r1" && payload == b"ping")
    );
    assert_eq!(agent.handle(Message::Shutdown, &mut out), Control::Shutdown);
    // A bad module is an InitError, and the agent stays up.
    let mut agent = WasmAgent::new(clock());
    out.clear();
    let (bad, why) = if AOT {
        (
            Code::Compiled(b"not an artefact".to_vec()),
            "Runtime.InvalidArtefact",
        )
    } else {
        (Code::Inline(b"not wasm".to_vec()), "Runtime.InvalidModule")
    };
    agent.handle(init_with(bad), &mut out);
    assert!(
        matches!(&out[0], Message::InitError { error_type, .. } if error_type == why),
        "{out:?}"
    );
    out.clear();
    agent.handle(init_with(Code::Path("/x".into())), &mut out);
    assert!(
        matches!(&out[0], Message::InitError { error_type, .. } if error_type == "Runtime.InvalidCode")
    );
}

#[test]
fn each_copy_of_these_tests_runs_its_own_engine() {
    let rt = runtime(&module(ECHO));
    assert_eq!(matches!(rt, Runtime::Compiled(_)), AOT);
    assert_eq!(AOT, module_path!().ends_with("::tests_compiled"));
}

/// `poll_oneoff` with one relative clock subscription (what `time.sleep`
/// becomes) waits that long and reports the clock event.
#[test]
fn poll_oneoff_sleeps_on_a_clock() {
    let code = module_with(
        r#"
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
"#,
        r#"
  (func (export "_start")
    ;; subscription at 512: userdata 7, tag 0 (clock), id 1, timeout 30 ms
    (i64.store (i32.const 512) (i64.const 7))
    (i32.store8 (i32.const 520) (i32.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 536) (i64.const 30000000))
    (i32.store (i32.const 64) (call $poll (i32.const 512) (i32.const 640) (i32.const 1) (i32.const 68)))
    ;; errno, nevents, the event's userdata (low 4 bytes)
    (i32.store (i32.const 72) (i32.load (i32.const 640)))
    (drop (call $write (i32.const 1) (i32.const 64) (i32.const 12))))
"#,
    );
    let mut rt = runtime(&code);
    let t = std::time::Instant::now();
    let out = invoke(&mut rt, b"");
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(30),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(response(&out), [0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0]);
}

/// A sleep past the invocation's deadline ends at the deadline as a timeout.
#[test]
fn poll_oneoff_stops_at_the_deadline() {
    let code = module_with(
        r#"
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
"#,
        r#"
  (func (export "_start")
    (i32.store8 (i32.const 520) (i32.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 536) (i64.const 10000000000))
    (loop $l
      (drop (call $poll (i32.const 512) (i32.const 640) (i32.const 1) (i32.const 68)))
      (br $l)))
"#,
    );
    let mut rt = runtime(&code);
    let t = std::time::Instant::now();
    let out = invoke(&mut rt, b"");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(error_of(&out).0, "Sandbox.Timedout");
}

// Split by what they test; the same two engines run them (paths relative
// to this file, which mod.rs includes twice).
#[path = "tests/files.rs"]
mod files;
#[path = "tests/reactor.rs"]
mod reactor;
#[path = "tests/wasi_surface.rs"]
mod wasi_surface;
