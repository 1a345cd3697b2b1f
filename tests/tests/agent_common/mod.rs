//! Shared helpers of the wasm-agent tests (`agent_*.rs`): the agent ELF
//! (built once per process by build.sh), WAT → wasm via `wat2wasm`, and
//! launching a real environment through `ember_host::env`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ember_host::env::{Code, Environment, InitSpec, InvokeRequest, LaunchConfig};

/// The kernel-less agent ELF, built on first use.
pub fn agent_elf() -> PathBuf {
    ember_tests::guests::guest("ember-wasm-agent")
}

/// `wat2wasm` of a WAT text (wabt is installed by scripts/setup.sh).
pub fn wasm(name: &str, wat: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("ember-agent-wat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.wat"));
    let out = dir.join(format!("{name}.wasm"));
    std::fs::write(&src, wat).unwrap();
    let st = Command::new("wat2wasm")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("wat2wasm (apt install wabt)");
    assert!(st.success(), "wat2wasm failed for {name}");
    std::fs::read(&out).unwrap()
}

/// WASI imports + a `$write(fd, ptr, len) -> errno` helper (iovec at 0, count at 8).
pub const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
"#;
pub const HELPERS: &str = r#"
  (memory (export "memory") 2)
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
"#;

/// A module: PRELUDE, extra imports, HELPERS, then `body`.
pub fn module(name: &str, imports: &str, body: &str) -> Vec<u8> {
    wasm(
        name,
        &format!("(module {PRELUDE} {imports} {HELPERS} {body})"),
    )
}

/// Echoes stdin to stdout, any size (64 KiB chunks at 1024).
pub fn echo() -> Vec<u8> {
    module(
        "echo",
        "",
        r#"(func (export "_start") (local $n i32)
    (loop $l
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 65536))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then (drop (call $write (i32.const 1) (i32.const 1024) (local.get $n))) (br $l)))))"#,
    )
}

pub fn config(memory_mib: u32) -> LaunchConfig {
    let mut cfg = LaunchConfig::kernelless(ember_tests::probes::ember_vmm(), agent_elf());
    cfg.mem_mib = ember_host::env::vm_memory_mib(memory_mib);
    cfg.work_root = std::env::temp_dir().join("ember-agent-tests");
    cfg.boot_timeout = Duration::from_secs(20);
    cfg
}

pub fn spec(code: Vec<u8>, memory_mib: u32, timeout_ms: u32) -> InitSpec {
    InitSpec {
        function_name: "test-fn".into(),
        function_version: "3".into(),
        handler: "handle".into(),
        code: Code::Inline(code),
        env: vec![("USER_VAR".into(), "user value".into())],
        memory_mib,
        timeout_ms,
        random_seed: None,
        trees: Vec::new(),
        ephemeral_mib: 0,
    }
}

/// `ember-wasm-compile`, built beside `ember-vmm` (`cargo build --release --bins`).
pub fn compiler() -> PathBuf {
    ember_tests::probes::ember_vmm().with_file_name("ember-wasm-compile")
}

/// `s` with its inline module compiled, as emberd does, for the CPU
/// features `env`'s guest announced in `Ready`.
pub fn compiled(env: &Environment, mut s: InitSpec) -> InitSpec {
    if let Code::Inline(m) = &s.code {
        let version = &env.ready().agent_version;
        let features = ember_host::aot::guest_features(version)
            .unwrap_or_else(|| panic!("{version} announces no CPU features"));
        let art = ember_host::aot::Aot::new(compiler())
            .compile(m, s.memory_mib, features)
            .expect("compile (is ember-wasm-compile built?)");
        s.code = Code::Compiled(art);
    }
    s
}

/// A launched and initialised environment running the module compiled
/// ahead of time (wasmtime), as emberd runs it.
pub fn environment(code: Vec<u8>, memory_mib: u32, timeout_ms: u32) -> Environment {
    let mut env = Environment::launch(&config(memory_mib)).expect("launch");
    let s = compiled(&env, spec(code, memory_mib, timeout_ms));
    env.init(&s).expect("init");
    env
}

/// The same with the module sent inline to the interpreter (wasmi).
pub fn environment_interp(code: Vec<u8>, memory_mib: u32, timeout_ms: u32) -> Environment {
    let mut env = Environment::launch(&config(memory_mib)).expect("launch");
    env.init(&spec(code, memory_mib, timeout_ms)).expect("init");
    env
}

pub fn request(id: &str, payload: &[u8], timeout_ms: u64) -> InvokeRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    InvokeRequest {
        request_id: id.into(),
        payload: payload.to_vec().into(),
        deadline_ms: now + timeout_ms,
        invoked_function_arn: "arn:aws:lambda:local:000000000000:function:test-fn".into(),
        trace_id: "Root=1-test".into(),
        ..Default::default()
    }
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
