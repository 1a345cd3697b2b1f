//! Compiled (wasmtime) modules in real kernel-less microVMs: the artefact
//! path from `ember-wasm-compile` through `Init` (truncated, corrupted,
//! mislabelled or inline-smuggled artefacts are clean Init errors: the guest
//! answers, it does not crash), and a long compute loop under both engines (wasmi built at
//! opt-level 3 must not grow its stack per executed instruction).

mod agent_common;

use agent_common::*;
use ember_abi::artefact::{self, Header};
use ember_host::env::{AgentError, Code, Environment, FunctionError};

/// A deterministic byte stream (xorshift) for the corruption cases.
fn noise(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Boots a fresh environment and sends it `code` as a compiled artefact:
/// the guest must answer with an Init error (the host retires an
/// environment after any Init error, so each case gets its own VM).
fn init_error(code: Vec<u8>) -> (String, String) {
    let mut env = Environment::launch(&config(32)).expect("launch");
    let mut s = spec(Vec::new(), 32, 5000);
    s.code = Code::Compiled(code);
    let r = match env.init(&s) {
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    ..
                },
            ..
        }) => (error_type, message),
        other => panic!("expected an Init error, got {other:?}"),
    };
    env.shutdown();
    r
}

#[test]
fn damaged_artefacts_are_clean_init_errors_and_the_vm_survives() {
    let mut env = Environment::launch(&config(32)).expect("launch");
    let good = match compiled(&env, spec(echo(), 32, 5000)).code {
        Code::Compiled(a) => a,
        other => panic!("{other:?}"),
    };
    let (h, payload) = artefact::open(&good).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for n in [
        0,
        7,
        artefact::HEADER_LEN - 1,
        artefact::HEADER_LEN,
        good.len() / 2,
        good.len() - 1,
    ] {
        cases.push((format!("truncated to {n}"), good[..n].to_vec()));
    }
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 100]);
    cases.push(("padded".into(), padded));
    let mut rnd = noise(0x5eed);
    for i in 0..24 {
        let mut bad = good.clone();
        let at = artefact::HEADER_LEN + (rnd() as usize) % (good.len() - artefact::HEADER_LEN);
        bad[at] ^= 1 << (rnd() % 8);
        if i % 3 == 0 {
            // A burst of garbage rather than one flipped bit.
            for b in bad.iter_mut().skip(at).take(64) {
                *b = rnd() as u8;
            }
        }
        cases.push((format!("payload damaged at {at}"), bad));
    }
    // Well-formed artefacts that claim what this guest cannot run.
    let relabel = |h: Header| artefact::seal(&h, payload);
    cases.push((
        "compiled for another memory size".into(),
        relabel(Header {
            memory_mib: 64,
            ..h.clone()
        }),
    ));
    cases.push((
        "compiled for CPU features the guest lacks".into(),
        relabel(Header {
            features: u64::MAX >> 1,
            ..h.clone()
        }),
    ));
    let mut wrong_version = good.clone();
    wrong_version[24..40].copy_from_slice(b"47.0.0\0\0\0\0\0\0\0\0\0\0");
    cases.push(("another wasmtime version".into(), wrong_version));
    // Valid header and checksum over a payload that is not wasmtime's.
    let mut rnd = noise(7);
    let junk: Vec<u8> = (0..payload.len()).map(|_| rnd() as u8).collect();
    cases.push(("sealed junk".into(), artefact::seal(&h, &junk)));

    env.shutdown();
    for (what, bytes) in cases {
        let (ty, msg) = init_error(bytes);
        assert!(
            ty == "Runtime.InvalidArtefact" || ty == "Runtime.ArtefactCpuMismatch",
            "{what}: {ty}: {msg}"
        );
    }
    // The intact artefact still loads and serves.
    let mut env = Environment::launch(&config(32)).expect("launch");
    let mut s = spec(Vec::new(), 32, 5000);
    s.code = Code::Compiled(good);
    env.init(&s).expect("init with the intact artefact");
    let inv = env.invoke(&request("after", b"still here", 5000)).unwrap();
    assert_eq!(inv.result.as_deref().ok(), Some(&b"still here"[..]));
}

#[test]
fn an_artefact_sent_inline_is_refused() {
    let mut env = Environment::launch(&config(32)).expect("launch");
    let art = match compiled(&env, spec(echo(), 32, 5000)).code {
        Code::Compiled(a) => a,
        other => panic!("{other:?}"),
    };
    // Inline code may be the user's bytes: an artefact there never runs.
    match env.init(&spec(art, 32, 5000)) {
        Err(AgentError::InitFailed {
            error:
                FunctionError {
                    error_type,
                    message,
                    ..
                },
            ..
        }) => {
            assert_eq!(error_type, "Runtime.InvalidModule");
            assert!(message.contains("compiler"), "{message}");
        }
        other => panic!("expected an Init error, got {other:?}"),
    }
}

/// 30 million iterations of integer mixing: returns the final value.
const LOOP: &str = r#"(func (export "_start") (local $i i32) (local $x i32)
    (local.set $x (i32.const 1))
    (loop $l
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1103515245)) (i32.const 12345)))
      (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 7))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 30000000))))
    (i32.store (i32.const 64) (local.get $x))
    (drop (call $write (i32.const 1) (i32.const 64) (i32.const 4))))"#;

fn expected_loop_value() -> i32 {
    let mut x: i32 = 1;
    for _ in 0..30_000_000 {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        x ^= ((x as u32) >> 7) as i32;
    }
    x
}

#[test]
fn a_long_compute_loop_finishes_in_both_engines() {
    let want = expected_loop_value();
    for (engine, mut env) in [
        (
            "wasmtime",
            environment(module("loop", "", LOOP), 32, 60_000),
        ),
        (
            "wasmi",
            environment_interp(module("loop", "", LOOP), 32, 60_000),
        ),
    ] {
        let inv = env.invoke(&request("loop", b"", 60_000)).unwrap();
        let out = match &inv.result {
            Ok(p) => p.clone(),
            Err(e) => panic!("{engine}: {}: {}", e.error_type, e.message),
        };
        assert_eq!(
            i32::from_le_bytes(out[..4].try_into().unwrap()),
            want,
            "{engine}"
        );
        assert!(env.is_usable(), "{engine}");
    }
}
