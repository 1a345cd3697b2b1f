//! Kernel-less guests through `ember-vmm` on /dev/kvm: serial output and
//! arguments, exit codes, faults reported with their RIP, timeouts, several
//! vCPUs, console routing, the boot timer, and the Firecracker config file.

use ember_tests::vmm::{code, guest, path_str, run_guest, scratch, vmm};

#[test]
fn hello_prints_its_arguments_and_exits_zero() {
    let out = run_guest("hello", "one two  three", &[]);
    assert_eq!(code(&out), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout
            .contains("hello from ember: args=[one two  three] vcpus=1 mem=128MiB"),
        "{}",
        out.stdout
    );
}

#[test]
fn exit_codes_pass_through() {
    for (arg, want) in [
        ("0", 0),
        ("7", 7),
        ("42", 42),
        ("255", 255),
        ("300", 300 & 0xff),
    ] {
        let out = run_guest("exit_code", arg, &[]);
        assert_eq!(code(&out), Some(want), "arg {arg}; stderr: {}", out.stderr);
    }
}

#[test]
fn unmapped_access_is_reported_with_rip_and_address() {
    let out = run_guest("fault", "unmapped", &[]);
    assert_eq!(code(&out), Some(125), "stderr: {}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("guest crashed"))
        .unwrap_or_default();
    assert!(line.contains("vCPU 0"), "{line}");
    assert!(line.contains("KVM_EXIT_SHUTDOWN"), "{line}");
    assert!(line.contains("CR2 0x10000000000"), "{line}");
    let rip = line
        .rsplit("RIP 0x")
        .next()
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
    // The RIP is inside the guest image (linked at 2 MiB and up).
    assert!(
        rip.is_some_and(|r| (0x20_0000..0x100_0000).contains(&r)),
        "{line}"
    );
    assert!(out.stdout.contains("fault: unmapped"));
}

#[test]
fn invalid_opcode_triple_faults_cleanly() {
    let out = run_guest("fault", "ud2", &[]);
    assert_eq!(code(&out), Some(125), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("triple fault"), "{}", out.stderr);
    assert!(out.stderr.contains("at RIP 0x"), "{}", out.stderr);
}

#[test]
fn guest_panic_prints_and_exits_101() {
    let out = run_guest("fault", "panic", &[]);
    assert_eq!(code(&out), Some(101), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("guest panic: panicked at"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("asked to"), "{}", out.stdout);
}

#[test]
fn spinning_guest_is_stopped_by_the_timeout() {
    let out = run_guest("spin", "", &["--timeout-ms", "300"]);
    assert_eq!(code(&out), Some(124), "stderr: {}", out.stderr);
    assert!(out.stdout.contains("spin: spinning"));
    assert!(out.stderr.contains("timeout"), "{}", out.stderr);
    assert!(out.elapsed.as_millis() >= 300, "{:?}", out.elapsed);
    assert!(out.elapsed.as_secs() < 10, "{:?}", out.elapsed);
}

#[test]
fn several_vcpus_start_and_secondaries_park() {
    for n in ["2", "4", "32"] {
        let out = run_guest("hello", "smp", &["--vcpus", n, "--mem-mib", "256"]);
        assert_eq!(code(&out), Some(0), "{n} vCPUs; stderr: {}", out.stderr);
        assert!(
            out.stdout.contains(&format!("vcpus={n} ")),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn console_can_go_to_a_file_or_nowhere() {
    let out = run_guest("hello", "quiet", &["--console", "off"]);
    assert_eq!(code(&out), Some(0));
    assert_eq!(out.stdout, "");
    let file = scratch("console");
    let out = run_guest("hello", "to-file", &["--console", path_str(&file)]);
    assert_eq!(code(&out), Some(0));
    assert_eq!(out.stdout, "");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    assert!(text.contains("args=[to-file]"), "{text}");
}

#[test]
fn boot_timer_is_logged_only_when_enabled() {
    let out = run_guest("null", "", &["--boot-timer"]);
    assert_eq!(code(&out), Some(0), "stderr: {}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("Guest-boot-time = "))
        .unwrap_or_default();
    let us: Option<u64> = line
        .split("Guest-boot-time = ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok());
    // From process start to the guest's write: more than zero, less than the run.
    assert!(
        us.is_some_and(|us| us > 0 && us <= out.elapsed.as_micros() as u64),
        "{line}"
    );
    let out = run_guest("null", "", &[]);
    assert_eq!(code(&out), Some(0));
    assert!(!out.stderr.contains("Guest-boot-time"), "{}", out.stderr);
}

#[test]
fn firecracker_config_file_and_log_path() {
    let cfg = scratch("vm.json");
    let log = scratch("vm.log");
    let json = serde_json::json!({
        "boot-source": { "kernel_image_path": guest("hello"), "boot_args": "from-json" },
        "machine-config": { "vcpu_count": 2, "mem_size_mib": 64, "smt": false },
        "drives": [],
        "network-interfaces": []
    });
    std::fs::write(&cfg, json.to_string()).expect("write config");
    let out = vmm(&[
        "--no-api",
        "--config-file",
        path_str(&cfg),
        "--boot-timer",
        "--log-path",
        path_str(&log),
        "--level",
        "debug",
    ]);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = (std::fs::remove_file(&cfg), std::fs::remove_file(&log));
    assert_eq!(code(&out), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("args=[from-json] vcpus=2 mem=64MiB"),
        "{}",
        out.stdout
    );
    assert!(logged.contains("host: "), "{logged}");
    assert!(logged.contains("guest exited with code 0"), "{logged}");
    assert_eq!(out.stderr, "", "log lines go to the file");
}
