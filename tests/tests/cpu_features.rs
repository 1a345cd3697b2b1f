//! The CPU a kernel-less guest gets (issue 15): the host's vector and bit
//! instructions (AVX, AVX2, AVX-512, LZCNT — PVM's supported CPUID leaves
//! out XSAVE and LZCNT, so until ember-vmm added them guests had SSE only
//! and compiled wasm ran without AVX), and vector registers that stay each
//! VM's own while several VMs share the host's cores.

use std::thread;

use ember_tests::probes::run_with_deadline;
use ember_tests::vmm::{code, guest, path_str, run_guest, scratch, DEADLINE};

/// Feature names as the guest prints them (`cpu_state: features=0x.. [a,b]`).
fn guest_features() -> Vec<String> {
    let out = run_guest("cpu_state", "", &[]);
    assert_eq!(code(&out), Some(0), "{}{}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("cpu_state: features="))
        .unwrap_or_else(|| panic!("no features line: {}", out.stdout));
    let names = line
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(names, _)| names)
        .unwrap_or_default();
    names.split(',').map(str::to_string).collect()
}

#[test]
fn the_guest_sees_the_hosts_avx_avx512_and_lzcnt() {
    let seen = guest_features();
    let host = [
        ("avx", std::is_x86_feature_detected!("avx")),
        ("avx2", std::is_x86_feature_detected!("avx2")),
        ("fma", std::is_x86_feature_detected!("fma")),
        ("lzcnt", std::is_x86_feature_detected!("lzcnt")),
        ("avx512f", std::is_x86_feature_detected!("avx512f")),
    ];
    for (name, on_host) in host {
        assert_eq!(
            seen.iter().any(|s| s == name),
            on_host,
            "{name}: host has it: {on_host}; guest sees {seen:?}"
        );
    }
}

/// Six VMs on two cores, each holding its own pattern in every YMM (or all
/// 32 ZMM) registers across 5,000 sleeps: a register that came back with
/// another VM's (or the host's) contents, or lost its upper half, fails.
#[test]
fn vector_registers_stay_each_vms_own() {
    let avx512 = std::is_x86_feature_detected!("avx512f");
    let avx = std::is_x86_feature_detected!("avx");
    let runs: Vec<_> = (1..=6u32)
        .map(|seed| {
            let mode = if avx512 && seed % 2 == 0 {
                "avx512"
            } else {
                "avx"
            };
            thread::spawn(move || {
                let out = run_guest("cpu_state", &format!("{mode} {seed} 5000"), &[]);
                (mode, code(&out), out.stdout)
            })
        })
        .collect();
    for run in runs {
        let (mode, exit, stdout) = run.join().expect("guest thread");
        // Without AVX on the host, the guest must say so (3), not crash.
        let want = if avx { 0 } else { 3 };
        assert_eq!(exit, Some(want), "{mode}: {stdout}");
        if avx {
            assert!(
                stdout.contains(&format!("{mode} registers intact after 5000 exits")),
                "{stdout}"
            );
        }
    }
}

/// A guest snapshotted while its vector registers hold its pattern (0.4 s
/// into 40,000 rounds) and loaded in a new process finds them intact: the
/// snapshot keeps XCR0 and the XSAVE area (the AVX and AVX-512 state), not
/// only the SSE registers.
#[test]
fn vector_registers_survive_a_snapshot_and_load() {
    let mode = if std::is_x86_feature_detected!("avx512f") {
        "avx512"
    } else if std::is_x86_feature_detected!("avx") {
        "avx"
    } else {
        // No AVX state to keep: the other tests cover what such a guest sees.
        eprintln!("no AVX on this host: nothing beyond SSE to snapshot");
        return;
    };
    let snapshot = ember_tests::probes::ember_snapshot();
    let (state, mem) = (scratch("cpu.state"), scratch("cpu.mem"));
    let g = guest("cpu_state");
    let cmdline = format!("{mode} 11 40000");
    let create = run_with_deadline(
        &snapshot,
        &[
            "create",
            "--kernel",
            path_str(&g),
            "--cmdline",
            &cmdline,
            "--mem-mib",
            "64",
            "--state",
            path_str(&state),
            "--mem-file",
            path_str(&mem),
            "--after-ms",
            "400",
        ]
        .map(String::from),
        DEADLINE,
    )
    .expect("spawn ember-snapshot create");
    assert_eq!(code(&create), Some(0), "create: {}", create.stderr);
    let load = run_with_deadline(
        &snapshot,
        &[
            "load",
            "--state",
            path_str(&state),
            "--mem-file",
            path_str(&mem),
            "--timeout-ms",
            "20000",
        ]
        .map(String::from),
        DEADLINE,
    )
    .expect("spawn ember-snapshot load");
    let _ = (std::fs::remove_file(&state), std::fs::remove_file(&mem));
    assert_eq!(code(&load), Some(0), "load: {}{}", load.stdout, load.stderr);
    assert!(
        load.stdout
            .contains(&format!("{mode} registers intact after 40000 exits")),
        "{}",
        load.stdout
    );
}
