//! The kernel-less wasm agent in real microVMs, driven through the host-side
//! library (`ember_host::env`): echo (small and 6 MiB), environment
//! variables, reactor state per environment, timeout, traps, oversize
//! payloads, hostile modules, init errors, memory growth past the VM, and a
//! VM killed mid-invocation.

mod agent_common;

use std::time::{Duration, Instant};

use agent_common::*;
use ember_host::env::{AgentError, Environment, FunctionError, MAX_PAYLOAD};

fn ok(inv: &ember_host::env::InvokeReply) -> &[u8] {
    match &inv.result {
        Ok(p) => p,
        Err(e) => panic!("function error {}: {}", e.error_type, e.message),
    }
}

fn err(inv: &ember_host::env::InvokeReply) -> &ember_host::env::FunctionError {
    match &inv.result {
        Ok(p) => panic!("expected an error, got {:?}", String::from_utf8_lossy(p)),
        Err(e) => e,
    }
}

#[test]
fn echo_small_and_six_mib_payloads() {
    let mut env = environment(echo(), 64, 10_000);
    assert_eq!(env.ready().agent, ember_host::env::AgentKind::Wasm);
    let inv = env
        .invoke(&request("r1", b"{\"ping\":true}", 5000))
        .unwrap();
    assert_eq!(ok(&inv), b"{\"ping\":true}");
    let inv = env.invoke(&request("r2", b"", 5000)).unwrap();
    assert_eq!(ok(&inv), b"");
    let big: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i * 7 % 253) as u8).collect();
    let inv = env.invoke(&request("r3", &big, 10_000)).unwrap();
    assert!(ok(&inv) == &big[..], "6 MiB echo differs");
    assert_eq!(env.shutdown(), "exit status: 0");
}

#[test]
fn environment_variables_reach_the_function() {
    let code = module(
        "environ",
        r#"(import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))"#,
        r#"(func (export "_start")
    (drop (call $sizes (i32.const 16) (i32.const 20)))
    (drop (call $get (i32.const 4096) (i32.const 16384)))
    (drop (call $write (i32.const 1) (i32.const 16384) (i32.load (i32.const 20)))))"#,
    );
    let mut env = environment(code, 32, 5000);
    let inv = env.invoke(&request("req-env-42", b"", 5000)).unwrap();
    let text = String::from_utf8(ok(&inv).to_vec()).unwrap();
    let vars: Vec<&str> = text.split('\0').collect();
    for want in [
        "USER_VAR=user value",
        "AWS_LAMBDA_FUNCTION_NAME=test-fn",
        "AWS_LAMBDA_FUNCTION_VERSION=3",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=32",
        "AWS_LAMBDA_REQUEST_ID=req-env-42",
        "_X_AMZN_TRACE_ID=Root=1-test",
    ] {
        assert!(vars.contains(&want), "{want} missing in {vars:?}");
    }
}

const COUNTER: &str = r#"
  (global $count (mut i32) (i32.const 0))
  (func (export "handle")
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store (i32.const 64) (global.get $count))
    (drop (call $write (i32.const 1) (i32.const 64) (i32.const 4))))
"#;

#[test]
fn reactor_state_persists_per_environment_never_across() {
    let code = module("counter", "", COUNTER);
    let count = |env: &mut Environment| {
        let inv = env.invoke(&request("c", b"", 5000)).unwrap();
        u32::from_le_bytes(ok(&inv).try_into().unwrap())
    };
    let mut a = environment(code.clone(), 16, 5000);
    assert_eq!((count(&mut a), count(&mut a), count(&mut a)), (1, 2, 3));
    let mut b = environment(code, 16, 5000);
    assert_eq!(count(&mut b), 1, "a second environment starts fresh");
    assert_eq!(count(&mut a), 4);
}

#[test]
fn infinite_loop_times_out_and_environment_is_replaced() {
    let code = module("spin", "", r#"(func (export "_start") (loop $l (br $l)))"#);
    let mut env = environment(code, 16, 500);
    let t = Instant::now();
    let inv = env.invoke(&request("slow", b"", 500)).unwrap();
    let e = err(&inv);
    assert_eq!(e.error_type, "Sandbox.Timedout");
    assert_eq!(e.message, "Task timed out after 0.50 seconds");
    assert!(e.fatal);
    assert!(
        t.elapsed() >= Duration::from_millis(450) && t.elapsed() < Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    assert!(
        !env.is_usable(),
        "a timed-out environment is marked for replacement"
    );
}

#[test]
fn traps_are_reported_and_the_environment_keeps_serving() {
    let code = module(
        "trappy",
        "",
        r#"(func (export "handle")
    (i32.store (i32.const 0) (i32.const 32))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (i32.eq (i32.load8_u (i32.const 32)) (i32.const 117)) (then unreachable))
    (if (i32.eq (i32.load8_u (i32.const 32)) (i32.const 100))
      (then (drop (i32.div_u (i32.const 1) (i32.sub (i32.const 1) (i32.const 1))))))
    (drop (call $write (i32.const 1) (i32.const 32) (i32.const 1))))"#,
    );
    let mut env = environment(code, 16, 5000);
    let inv = env.invoke(&request("t1", b"u", 5000)).unwrap();
    let e = err(&inv);
    assert_eq!((e.error_type.as_str(), e.fatal), ("Runtime.Trap", false));
    assert!(e.message.contains("unreachable"), "{}", e.message);
    let inv = env.invoke(&request("t2", b"d", 5000)).unwrap();
    assert!(
        err(&inv).message.contains("divide by zero"),
        "{}",
        err(&inv).message
    );
    let inv = env.invoke(&request("t3", b"k", 5000)).unwrap();
    assert_eq!(ok(&inv), b"k");
    assert!(env.is_usable());
}

#[test]
fn oversize_request_and_response_are_refused() {
    let mut env = environment(echo(), 64, 10_000);
    let too_big = vec![b'x'; MAX_PAYLOAD + 1];
    match env.invoke(&request("big-in", &too_big, 5000)) {
        Err(AgentError::Request(_)) => {}
        other => panic!("expected a request error, got {other:?}"),
    }
    assert!(
        env.is_usable(),
        "refusing a request does not spoil the environment"
    );
    // A function that writes 7 MiB of output.
    let code = module(
        "flood",
        "",
        r#"(func (export "_start") (local $i i32)
    (drop (memory.grow (i32.const 16)))
    (loop $l
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1048576)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 7)))))"#,
    );
    let mut env = environment(code, 64, 5000);
    let inv = env.invoke(&request("big-out", b"", 5000)).unwrap();
    assert_eq!(err(&inv).error_type, "Function.ResponseSizeTooLarge");
}

#[test]
fn hostile_module_cannot_reach_outside_its_linear_memory() {
    // Loads beyond linear memory trap; WASI calls with out-of-range pointers
    // get EFAULT (21) instead of agent memory; growth beyond the function's
    // memory size fails.
    let code = module(
        "hostile",
        r#"(import "wasi_snapshot_preview1" "random_get" (func $rand (param i32 i32) (result i32)))"#,
        r#"(func (export "handle")
    (i32.store (i32.const 0) (i32.const 32))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (i32.eq (i32.load8_u (i32.const 32)) (i32.const 108))          ;; 'l': wild load
      (then (drop (i64.load (i32.const 0x7ffffff0)))))
    (i32.store (i32.const 100) (call $write (i32.const 1) (i32.const 131000) (i32.const 65536)))
    (i32.store (i32.const 104) (call $write (i32.const 1) (i32.const -8) (i32.const 16)))
    (i32.store (i32.const 108) (call $rand (i32.const 131060) (i32.const 64)))
    (i32.store (i32.const 112) (memory.grow (i32.const 4096)))
    (drop (call $write (i32.const 1) (i32.const 100) (i32.const 16))))"#,
    );
    let mut env = environment(code, 16, 5000);
    let inv = env.invoke(&request("wild", b"l", 5000)).unwrap();
    assert!(
        err(&inv).message.contains("out of bounds"),
        "{}",
        err(&inv).message
    );
    let inv = env.invoke(&request("ptrs", b"p", 5000)).unwrap();
    let words: Vec<i32> = ok(&inv)
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(words, [21, 21, 21, -1]);
}

#[test]
fn init_errors_and_memory_growth_past_the_vm_are_handled() {
    let mut env = Environment::launch(&config(16)).unwrap();
    match env.init(&spec(b"\0asm\x01\0\0\0garbage".to_vec(), 16, 1000)) {
        Err(AgentError::InitFailed {
            error: FunctionError { error_type, .. },
            ..
        }) => {
            assert_eq!(error_type, "Runtime.InvalidModule")
        }
        other => panic!("{other:?}"),
    }
    // A function allowed 256 MiB of linear memory in a VM with far less:
    // growth fails inside the guest (memory.grow = -1), the agent survives.
    let code = module(
        "hog",
        "",
        r#"(func (export "_start") (local $i i32) (local $fails i32)
    (loop $l
      (if (i32.eq (memory.grow (i32.const 256)) (i32.const -1))
        (then (local.set $fails (i32.add (local.get $fails) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 16))))
    (i32.store (i32.const 64) (local.get $fails))
    (drop (call $write (i32.const 1) (i32.const 64) (i32.const 4))))"#,
    );
    let mut cfg = config(256);
    cfg.mem_mib = 64;
    let mut env = Environment::launch(&cfg).unwrap();
    env.init(&spec(code, 256, 5000)).unwrap();
    let inv = env.invoke(&request("hog", b"", 5000)).unwrap();
    let fails = u32::from_le_bytes(ok(&inv).try_into().unwrap());
    assert!(fails > 0, "some growth must fail in a 64 MiB VM");
    assert!(inv.max_memory_kib < 64 * 1024, "{}", inv.max_memory_kib);
    assert_eq!(
        ok(&env.invoke(&request("again", b"", 5000)).unwrap()).len(),
        4
    );
}

#[test]
fn a_vm_killed_mid_invocation_is_an_environment_fault() {
    let code = module("spin2", "", r#"(func (export "_start") (loop $l (br $l)))"#);
    let mut env = environment(code, 16, 20_000);
    let pid = env.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on the ember-vmm child this test launched.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let t = Instant::now();
    match env.invoke(&request("doomed", b"", 20_000)) {
        Err(AgentError::VmExited { status, .. }) => assert!(status.contains("9"), "{status}"),
        other => panic!("expected VmExited, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!env.is_usable());
    killer.join().unwrap();
}

#[test]
fn json_c_example_compiled_from_c_answers_json() {
    let dir = std::env::temp_dir().join(format!("ember-json-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("handler.wasm");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/json-c/build.sh");
    let st = std::process::Command::new("bash")
        .arg(script)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "examples/json-c/build.sh failed");
    let mut env = environment(std::fs::read(&out).unwrap(), 32, 5000);
    let inv = env
        .invoke(&request(
            "json-1",
            br#"{"name":"Ada","numbers":[1,2,3.5],"x":[{}]}"#,
            5000,
        ))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(ok(&inv)).unwrap();
    assert_eq!(v["greeting"], "Hello, Ada!");
    assert_eq!(v["count"], 3);
    assert_eq!(v["sum"], 6.5);
    assert_eq!(v["function"], "test-fn");
    assert_eq!(v["request_id"], "json-1");
    assert!(
        inv.logs
            .lines
            .iter()
            .any(|l| l.line.contains("json-c: got a")),
        "{:?}",
        inv.logs.lines
    );
    let inv = env
        .invoke(&request("json-2", b"{\"unterminated\": [1,", 5000))
        .unwrap();
    let e = err(&inv);
    assert_eq!(e.error_type, "Runtime.ExitError");
    assert!(e.message.contains("\"error\""), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
}
