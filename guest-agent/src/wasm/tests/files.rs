//! The wasm runtime's file system through WASI, per engine (a child of
//! `tests.rs`): the function's and layers' trees, `/tmp` per environment,
//! escapes refused, and a malformed tree failing Init.

use super::*;

/// The file-system probe module (fs/probe.wat): its imports and its body.
fn fs_probe() -> Vec<u8> {
    let wat = include_str!("../fs/probe.wat");
    let (imports, body) = wat.split_once(";; --- body ---").unwrap();
    module_with(imports, body)
}

/// The trees the probe expects: a function ZIP and two layers.
pub(crate) fn probe_trees() -> Vec<(String, Vec<u8>)> {
    use crate::wasm::fs::tests::{zip, Member};
    vec![
        (
            "/var/task".into(),
            zip(&[Member("data.txt", b"task-data;", true, false)]),
        ),
        (
            "/opt".into(),
            zip(&[Member("python/layer.txt", b"layer-1;", false, false)]),
        ),
        (
            "/opt".into(),
            zip(&[Member("python/layer.txt", b"layer-2;", true, false)]),
        ),
    ]
}

#[test]
fn files_from_trees_and_tmp_through_wasi() {
    let mut cfg = config(16);
    cfg.trees = probe_trees();
    cfg.ephemeral_mib = 512;
    let code = fs_probe();
    let (mut rt, _) = load(&code, cfg, clock()).unwrap();
    // /tmp persists across this environment's invocations (a fresh
    // instance each time); the escape is ENOTCAPABLE (76), the wild
    // pointer EFAULT (21).
    assert_eq!(
        response(&invoke(&mut rt, b"")),
        b"task-data;layer-2;1\x4c\x15"
    );
    assert_eq!(
        response(&invoke(&mut rt, b"")),
        b"task-data;layer-2;2\x4c\x15"
    );
    // Another environment starts with an empty /tmp.
    let mut cfg = config(16);
    cfg.trees = probe_trees();
    cfg.ephemeral_mib = 512;
    let (mut other, _) = load(&code, cfg, clock()).unwrap();
    assert_eq!(
        response(&invoke(&mut other, b"")),
        b"task-data;layer-2;1\x4c\x15"
    );
}

#[test]
fn a_malformed_tree_fails_init() {
    let mut cfg = config(16);
    cfg.trees = vec![("/var/task".into(), b"PK not really".to_vec())];
    let Err(e) = load(&module(ECHO), cfg, clock()) else {
        panic!("a bad archive was mounted");
    };
    assert_eq!(e.error_type, "Runtime.InvalidCode");
    assert!(e.message.contains("ZIP"), "{}", e.message);
}
