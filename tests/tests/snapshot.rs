//! Snapshots of kernel-less microVMs across processes (`ember-snapshot`,
//! the snapshot library's command-line driver, and the `snap_guest` test
//! guest): a guest snapshotted mid-computation and loaded in a new process
//! ends with the uninterrupted result; 20 concurrent clones of one snapshot
//! draw different random numbers and share the memory file's pages; a
//! restored 512 MiB guest that touched 8 MiB stays near 8 MiB resident;
//! hostile state files end the loader with a clear error, never a crash.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_tests::probes::{run_with_deadline, RunOutput};
use ember_tests::vmm::{code, guest, path_str, scratch, vmm, DEADLINE};

fn snap(args: &[&str]) -> RunOutput {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = run_with_deadline(&ember_tests::probes::ember_snapshot(), &args, DEADLINE)
        .expect("spawn ember-snapshot");
    assert!(
        !out.timed_out,
        "ember-snapshot {args:?} hung: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out
}

/// A snapshot's two files, removed at drop.
struct Snapshot {
    state: PathBuf,
    mem: PathBuf,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.state);
        let _ = std::fs::remove_file(&self.mem);
    }
}

/// Boots `snap_guest` with `cmdline` and snapshots it `when` (the
/// `create` flags that say when).
fn take(tag: &str, cmdline: &str, mem_mib: u64, when: &[&str]) -> Snapshot {
    let s = Snapshot {
        state: scratch(&format!("{tag}.state")),
        mem: scratch(&format!("{tag}.mem")),
    };
    let g = guest("snap_guest");
    let mib = mem_mib.to_string();
    let mut args = vec![
        "create",
        "--kernel",
        path_str(&g),
        "--cmdline",
        cmdline,
        "--mem-mib",
        &mib,
        "--state",
        path_str(&s.state),
        "--mem-file",
        path_str(&s.mem),
    ];
    args.extend_from_slice(when);
    let out = snap(&args);
    assert_eq!(code(&out), Some(0), "create: {}", out.stderr);
    s
}

/// Takes a snapshot once `snap_guest` printed `line`.
fn take_at_line(tag: &str, cmdline: &str, mem_mib: u64, line: &str) -> Snapshot {
    let console = scratch(&format!("{tag}.console"));
    let s = take(
        tag,
        cmdline,
        mem_mib,
        &["--at-line", line, "--console", path_str(&console)],
    );
    let _ = std::fs::remove_file(console);
    s
}

fn load_args(s: &Snapshot) -> Vec<String> {
    vec![
        "load".into(),
        "--state".into(),
        path_str(&s.state).into(),
        "--mem-file".into(),
        path_str(&s.mem).into(),
        "--timeout-ms".into(),
        "20000".into(),
    ]
}

/// `key=value` from a guest line.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn a_guest_snapshotted_mid_computation_ends_with_the_uninterrupted_result() {
    // ~0.5 s of LCG rounds; the snapshot is taken just after they start
    // (at the `computing` line: robust to a loaded machine's scheduling).
    let cmdline = "compute 400000000";
    let g = guest("snap_guest");
    let whole = vmm(&["--kernel", path_str(&g), "--cmdline", cmdline]);
    assert_eq!(code(&whole), Some(0), "{}", whole.stderr);
    let want = field(&whole.stdout, "result").expect("uninterrupted result");
    assert_eq!(field(&whole.stdout, "generation"), Some("0"));

    let s = take_at_line("compute", cmdline, 128, "computing");
    let args = load_args(&s);
    let a = run_with_deadline(&ember_tests::probes::ember_snapshot(), &args, DEADLINE).unwrap();
    let b = run_with_deadline(&ember_tests::probes::ember_snapshot(), &args, DEADLINE).unwrap();
    for out in [&a, &b] {
        assert_eq!(code(out), Some(0), "load: {}", out.stderr);
        assert_eq!(field(&out.stdout, "result"), Some(want), "{}", out.stdout);
        assert_eq!(field(&out.stdout, "generation"), Some("1"));
    }
    // Drawn before the snapshot: shared by the clones. Drawn after: not.
    assert_eq!(field(&a.stdout, "before"), field(&b.stdout, "before"));
    assert_ne!(field(&a.stdout, "random"), field(&b.stdout, "random"));
}

/// Spawns a load of `s` with its console in `console`.
fn spawn_load(s: &Snapshot, console: &Path) -> Child {
    let mut args = load_args(s);
    args.extend(["--console".into(), path_str(console).into()]);
    Command::new(ember_tests::probes::ember_snapshot())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ember-snapshot load")
}

/// Waits until the console file has a whole line containing `text`.
fn wait_for(path: &Path, text: &str, deadline: Instant) -> String {
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.find(text).is_some_and(|i| s[i..].contains('\n')) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed {text:?}: {s}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Rss and Pss (KiB) of the mapping of `file` in process `pid`.
fn mapping_kib(pid: u32, file: &Path) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let name = path_str(file);
    let (mut rss, mut pss, mut inside) = (0, 0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(name);
        } else if inside {
            let kib = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("Rss:") {
                rss += kib();
            } else if line.starts_with("Pss:") {
                pss += kib();
            }
        }
    }
    (rss, pss)
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn twenty_concurrent_clones_draw_different_numbers() {
    let s = take_at_line("clones", "ready", 128, "ready");
    let consoles: Vec<PathBuf> = (0..20).map(|i| scratch(&format!("clone{i}"))).collect();
    let mut children: Vec<Child> = consoles.iter().map(|c| spawn_load(&s, c)).collect();
    let mut randoms = std::collections::HashSet::new();
    let mut before = std::collections::HashSet::new();
    for (child, console) in children.iter_mut().zip(&consoles) {
        let status = child.wait().unwrap();
        let out = std::fs::read_to_string(console).unwrap_or_default();
        assert!(status.success(), "clone failed: {out}");
        assert_eq!(field(&out, "generation"), Some("1"), "{out}");
        assert!(
            randoms.insert(field(&out, "random").unwrap_or("").to_string()),
            "two clones drew the same number: {out}"
        );
        before.insert(field(&out, "before").unwrap_or("").to_string());
        let _ = std::fs::remove_file(console);
    }
    assert_eq!(randoms.len(), 20);
    assert_eq!(before.len(), 1, "the clones do not share their past");
}

#[test]
fn restored_guests_stay_at_what_they_touch_and_clones_share_it() {
    // 512 MiB guest that touched 8 MiB: the memory file holds ~8 MiB.
    let s = take_at_line("touch", "touch 8", 512, "touched");
    let file_kib = std::fs::metadata(&s.mem).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.blocks() / 2
    });
    let file_kib = file_kib.unwrap();
    assert!(
        (8 * 1024..10 * 1024).contains(&file_kib),
        "memory file {file_kib} KiB"
    );

    let consoles: Vec<PathBuf> = (0..20).map(|i| scratch(&format!("touch{i}"))).collect();
    let mut children: Vec<Child> = consoles.iter().map(|c| spawn_load(&s, c)).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sums = std::collections::HashSet::new();
    for c in &consoles {
        let out = wait_for(c, "resumed", deadline);
        sums.insert(field(&out, "sum").unwrap_or("").to_string());
    }
    assert_eq!(sums.len(), 1, "clones read different memory: {sums:?}");
    // All 20 are now sleeping with their 8 MiB read back.
    let (mut pss_total, mut rss_max, mut vm_rss_max) = (0, 0, 0);
    for child in &children {
        let (rss, pss) = mapping_kib(child.id(), &s.mem);
        rss_max = rss_max.max(rss);
        pss_total += pss;
        vm_rss_max = vm_rss_max.max(vm_rss_kib(child.id()));
    }
    eprintln!(
        "guest memory mapping: max Rss {rss_max} KiB, total Pss of 20 clones {pss_total} KiB; \
         max process VmRSS {vm_rss_max} KiB"
    );
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    for c in &consoles {
        let _ = std::fs::remove_file(c);
    }
    // Each restored 512 MiB guest has ~8 MiB of its memory resident...
    assert!(
        (8 * 1024..10 * 1024).contains(&rss_max),
        "guest memory Rss {rss_max} KiB"
    );
    assert!(vm_rss_max < 24 * 1024, "process VmRSS {vm_rss_max} KiB");
    // ...and the 20 share it: together well under 20 private copies.
    assert!(pss_total < 4 * 10 * 1024, "total Pss {pss_total} KiB");
}

#[test]
fn hostile_state_files_end_the_loader_with_a_clear_error() {
    let s = take_at_line("hostile", "ready", 16, "ready");
    let good = std::fs::read(&s.state).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
    ];
    let mut flipped = good.clone();
    flipped[good.len() - 100] ^= 0x10;
    cases.push(("checksum", flipped));
    let mut version = good.clone();
    version[8] = 9;
    cases.push(("version 9", version));
    for (what, bytes) in cases {
        std::fs::write(&s.state, &bytes).unwrap();
        let out = snap(&load_args(&s).iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code(&out), Some(1), "{what}: {}", out.stderr);
        assert!(
            out.stderr.contains("ember-snapshot: error: ") && out.stderr.contains("state file"),
            "{what}: {}",
            out.stderr
        );
    }
    // A memory file of another size.
    std::fs::write(&s.state, &good).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&s.mem)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let out = snap(&load_args(&s).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code(&out), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("memory file is 8388608 bytes"),
        "{}",
        out.stderr
    );
}

/// `load --report` splits the load → first port write (the benchmark's
/// split, issue 16): every step from reading the state file to the guest's
/// exit, in time order, adding up to no more than the whole.
#[test]
fn the_load_report_splits_the_time_to_the_first_port_write() {
    let s = take_at_line("split", "ready quiet", 128, "ready");
    let mut args = load_args(&s);
    args.extend(["--console".into(), "off".into(), "--report".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = snap(&args);
    assert_eq!(code(&out), Some(7), "load: {}", out.stderr);
    let total: u64 = field(&out.stderr, "load_to_exit_us")
        .and_then(|v| v.parse().ok())
        .expect("load_to_exit_us");
    let split = out.stderr.split("phases:").nth(1).expect("phases");
    let steps: Vec<(&str, u64)> = split
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    let names: Vec<&str> = steps.iter().map(|(k, _)| *k).collect();
    for want in [
        "state_read",
        "state_parse",
        "memory_map",
        "kvm_create_vm",
        "memory",
        "vcpus",
        "start_info",
        "event_loop_thread",
        "vcpu_threads",
        "first_kvm_run",
        "exit_reported",
    ] {
        assert!(names.contains(&want), "no {want} in {names:?}");
    }
    assert_eq!(names.first(), Some(&"state_read"), "{names:?}");
    assert_eq!(names.last(), Some(&"exit_reported"), "{names:?}");
    let sum: u64 = steps.iter().map(|(_, us)| us).sum();
    assert!(sum <= total, "steps {sum} us > whole {total} us: {steps:?}");
}
