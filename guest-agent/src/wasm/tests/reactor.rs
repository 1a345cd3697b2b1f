//! The reactor's contract beyond one invocation, per engine (a child of
//! `tests.rs`): its own error documents from `handle` and `_initialize`,
//! and the SnapStart hooks with the random stream re-keyed after restore.

use super::*;

/// The reactor error ABI: `handle` returning non-zero makes stdout the
/// function's error document (not a response) and keeps the instance; an
/// `_initialize` that exits non-zero after writing a document reports it.
#[test]
fn a_reactor_reports_its_own_error_documents() {
    let code = module(
        r#"
  (data (i32.const 256) "{\"errorType\":\"E\"}")
  (global $n (mut i32) (i32.const 0))
  (func (export "handle") (result i32)
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (drop (call $write (i32.const 1) (i32.const 256) (i32.const 17)))
    (i32.and (global.get $n) (i32.const 1)))
"#,
    );
    let mut rt = runtime(&code);
    match invoke(&mut rt, b"").outcome {
        Outcome::Error {
            error_type,
            document,
            fatal,
            ..
        } => {
            assert_eq!(error_type, "Unhandled");
            assert_eq!(document, br#"{"errorType":"E"}"#);
            assert!(!fatal);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(response(&invoke(&mut rt, b"")), br#"{"errorType":"E"}"#);
    assert!(matches!(
        invoke(&mut rt, b"").outcome,
        Outcome::Error { .. }
    ));
    let init = module(
        r#"
  (data (i32.const 256) "{\"errorType\":\"I\"}")
  (func (export "_initialize")
    (drop (call $write (i32.const 1) (i32.const 256) (i32.const 17)))
    (call $proc_exit (i32.const 1)))
  (func (export "handle"))
"#,
    );
    let err = load(&init, config(16), clock()).err().unwrap();
    assert_eq!(err.error_type, "Runtime.ExitError");
    assert_eq!(err.document, br#"{"errorType":"I"}"#);
}

/// SnapStart: with `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start` the reactor's
/// `ember_before_snapshot` runs after `_initialize`; `after_restore` re-keys
/// the random stream (two "clones" of one state given different seeds draw
/// different bytes) and runs `ember_after_restore`; a failing hook is an error.
#[test]
fn snapstart_hooks_run_and_restores_rekey_the_random_stream() {
    let m = module_with(
        r#"(import "wasi_snapshot_preview1" "random_get" (func $rnd (param i32 i32) (result i32)))"#,
        r#"
  (global $b (mut i32) (i32.const 0))
  (global $a (mut i32) (i32.const 0))
  (func (export "ember_before_snapshot") (global.set $b (i32.add (global.get $b) (i32.const 1))))
  (func (export "ember_after_restore")
    (if (i32.eq (global.get $b) (i32.const 0)) (then unreachable))
    (global.set $a (i32.add (global.get $a) (i32.const 1))))
  (func (export "handle")
    (drop (call $rnd (i32.const 2048) (i32.const 8)))
    (i32.store8 (i32.const 2056) (i32.add (i32.const 48) (global.get $b)))
    (i32.store8 (i32.const 2057) (i32.add (i32.const 48) (global.get $a)))
    (drop (call $write (i32.const 1) (i32.const 2048) (i32.const 10))))
"#,
    );
    let mut cfg = config(16);
    cfg.env
        .push(("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "snap-start".into()));
    let clone = |seed: u8| {
        let (mut rt, _) = load(&m, cfg.clone(), clock()).unwrap();
        rt.after_restore(&[seed; 32]).unwrap();
        response(&invoke(&mut rt, b"")).to_vec()
    };
    let (one, two) = (clone(1), clone(2));
    assert_eq!(
        &one[8..],
        b"11",
        "before_snapshot and after_restore ran once"
    );
    assert_ne!(
        one[..8],
        two[..8],
        "clones given other seeds draw other bytes"
    );
    assert_eq!(
        one,
        clone(1),
        "the stream depends only on the state and the seed"
    );
    // Without snap-start the before-snapshot hook never runs, so this
    // module's after-restore hook traps: an error, not a panic.
    let (mut rt, _) = load(&m, config(16), clock()).unwrap();
    let e = rt.after_restore(&[3; 32]).unwrap_err();
    assert_eq!(e.error_type, "Runtime.InitError");
    assert!(e.message.contains("ember_after_restore"), "{}", e.message);
}
