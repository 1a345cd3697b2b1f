//! The wasm function file system in real microVMs (issue 19): trees sent in
//! `Init` as ZIPs made by the `zip` tool — the code at /var/task, two layers
//! merged at /opt — and the in-memory /tmp, read and written through WASI by
//! a module run compiled (wasmtime) and interpreted (wasmi); and a module
//! that tries every way out of its trees and gets errnos, not host files.

mod agent_common;

use std::path::Path;
use std::process::Command;

use agent_common::*;
use ember_abi::protocol::Tree;
use ember_host::env::{Environment, InitSpec};

/// `zip -r -y` of `files` (relative path, contents; a contents of
/// `@target` makes a symbolic link), as a user would pack a function.
fn zip_of(name: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("ember-agent-fs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, body) in files {
        let p = dir.join("t").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        match body.strip_prefix('@') {
            Some(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
            None => std::fs::write(&p, body).unwrap(),
        }
    }
    let out = dir.join("out.zip");
    let st = Command::new("zip")
        .current_dir(dir.join("t"))
        .args(["-q", "-r", "-y"])
        .arg(&out)
        .arg(".")
        .status()
        .expect("zip (apt install zip)");
    assert!(st.success(), "zip failed");
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(Path::new(&dir));
    bytes
}

fn tree(mount: &str, archive: Vec<u8>) -> Tree {
    Tree {
        mount: mount.into(),
        archive,
    }
}

fn launch(code: Vec<u8>, trees: Vec<Tree>, compiled_engine: bool) -> Environment {
    let mut env = Environment::launch(&config(32)).expect("launch");
    let mut s: InitSpec = spec(code, 32, 5000);
    s.trees = trees;
    s.ephemeral_mib = 512;
    let s = if compiled_engine {
        compiled(&env, s)
    } else {
        s
    };
    env.init(&s).expect("init");
    env
}

fn run(env: &mut Environment, id: &str) -> Vec<u8> {
    let inv = env.invoke(&request(id, b"", 5000)).unwrap();
    match inv.result {
        Ok(p) => p,
        Err(e) => panic!("function error {}: {}", e.error_type, e.message),
    }
}

/// The probe module the runtime's unit tests run too (see the file).
const PROBE: &str = include_str!("../../guest-agent/src/wasm/fs/probe.wat");

fn probe() -> Vec<u8> {
    let (imports, body) = PROBE.split_once(";; --- body ---").unwrap();
    module("fs-probe", imports, body)
}

fn probe_trees() -> Vec<Tree> {
    vec![
        tree(
            "/var/task",
            zip_of(
                "task",
                &[("data.txt", "task-data;"), ("lib/x.py", "X = 1\n")],
            ),
        ),
        tree(
            "/opt",
            zip_of(
                "layer1",
                &[("python/layer.txt", "layer-1;"), ("python/one.py", "")],
            ),
        ),
        tree(
            "/opt",
            zip_of("layer2", &[("python/layer.txt", "layer-2;")]),
        ),
    ]
}

#[test]
fn code_layers_and_tmp_in_a_microvm_both_engines() {
    let code = probe();
    for compiled_engine in [true, false] {
        let mut env = launch(code.clone(), probe_trees(), compiled_engine);
        // The later layer wins; /tmp keeps what the last invocation wrote;
        // `..` past the root is ENOTCAPABLE (76), a wild pointer EFAULT (21).
        assert_eq!(run(&mut env, "a"), b"task-data;layer-2;1\x4c\x15");
        assert_eq!(run(&mut env, "b"), b"task-data;layer-2;2\x4c\x15");
        assert_eq!(env.shutdown(), "exit status: 0");
        // A new environment of the same function starts with an empty /tmp.
        let mut other = launch(code.clone(), probe_trees(), compiled_engine);
        assert_eq!(run(&mut other, "c"), b"task-data;layer-2;1\x4c\x15");
        assert_eq!(other.shutdown(), "exit status: 0");
    }
}

const ESCAPE_IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
"#;

/// Opens each path (from the preopen fd given) and prints the errno of
/// each attempt as one byte.
const ESCAPES: &str = r#"
  (data (i32.const 256) "../../../etc/passwd")
  (data (i32.const 288) "/etc/passwd")
  (data (i32.const 320) "link")
  (data (i32.const 336) "link/passwd")
  (data (i32.const 352) "new.txt")
  (data (i32.const 368) "../var/task/data.txt")
  (data (i32.const 400) "lib/../../data.txt")
  (func $try (param $dir i32) (param $p i32) (param $l i32) (param $oflags i32) (param $rights i64) (param $at i32)
    (i32.store8 (local.get $at)
      (call $open (local.get $dir) (i32.const 0) (local.get $p) (local.get $l)
        (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 100))))
  (func (export "_start")
    (call $try (i32.const 3) (i32.const 256) (i32.const 19) (i32.const 0) (i64.const 2) (i32.const 600))
    (call $try (i32.const 3) (i32.const 288) (i32.const 11) (i32.const 0) (i64.const 2) (i32.const 601))
    (call $try (i32.const 3) (i32.const 320) (i32.const 4) (i32.const 0) (i64.const 2) (i32.const 602))
    (call $try (i32.const 3) (i32.const 336) (i32.const 11) (i32.const 0) (i64.const 2) (i32.const 603))
    (call $try (i32.const 99) (i32.const 352) (i32.const 7) (i32.const 0) (i64.const 2) (i32.const 604))
    (call $try (i32.const 3) (i32.const 352) (i32.const 7) (i32.const 1) (i64.const 66) (i32.const 605))
    (call $try (i32.const 4) (i32.const 368) (i32.const 20) (i32.const 0) (i64.const 2) (i32.const 606))
    (call $try (i32.const 3) (i32.const 400) (i32.const 18) (i32.const 0) (i64.const 2) (i32.const 607))
    (call $try (i32.const 3) (i32.const 0x7ffffff0) (i32.const 64) (i32.const 0) (i64.const 2) (i32.const 608))
    (drop (call $write (i32.const 1) (i32.const 600) (i32.const 9))))
"#;

#[test]
fn escapes_from_the_trees_get_errnos_in_a_microvm() {
    let code = module("fs-escape", ESCAPE_IMPORTS, ESCAPES);
    let task = zip_of(
        "escape",
        &[("data.txt", "task"), ("lib/a.py", ""), ("link", "@/etc")],
    );
    let mut env = launch(code, vec![tree("/var/task", task)], true);
    // ENOTCAPABLE (76) for `..` past the root and absolute paths, ELOOP (32)
    // for the link (never followed), EBADF (8) for a fd that is no
    // directory, EROFS (69) for creating in /var/task, ENOTCAPABLE from
    // /tmp (fd 4) up into /var/task, EFAULT (21) for a path outside memory.
    assert_eq!(run(&mut env, "e"), [76, 76, 32, 32, 8, 69, 76, 76, 21]);
    assert_eq!(env.shutdown(), "exit status: 0");
}
