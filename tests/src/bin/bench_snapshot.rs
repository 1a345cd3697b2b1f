//! Snapshot benchmark (issue 16), one run, medians and ratios:
//! - load → first port write: `ember-snapshot load` of a 128 MiB
//!   `snap_guest ready quiet` snapshot (File backend, resumed), timed inside
//!   the process from the start of the load to the guest's exit port write,
//!   against a fresh boot of the same guest (`snap_guest exit`, same code
//!   path: `ember-snapshot boot`), alternating, plus exec-to-exit wall time,
//!   and the median of each step of both (`ember_vmm::phases`: state file,
//!   memory map, KVM VM, memory registration, devices, vCPUs, start-info,
//!   threads, first KVM_RUN, the guest's run to its exit port write);
//! - create of a 128 MiB guest that touched 16 MiB (`snap_guest touch 16`):
//!   time inside `snapshot::create` (to new files) and the memory file's
//!   size on disk;
//! - with `--agent-module M` (a wasm module answering `{"hello": <event>}`):
//!   the wasm agent with its vsock device, through the API socket, from
//!   spawning `ember-vmm` to the first invocation's answer: `PUT
//!   /snapshot/load` of the agent snapshotted after Init (the agent
//!   reconnects after the transport reset, no Init) against a fresh boot +
//!   Init of the same agent and module, alternating.
//!
//! Usage: `bench_snapshot [RUNS] [--agent-module M]` (scripts/bench-snapshot.sh
//! builds and runs it).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn run(args: &[&str]) -> (Output, f64) {
    let t = Instant::now();
    let out = Command::new(ember_tests::probes::ember_snapshot())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ember-snapshot: {e}"));
    (out, t.elapsed().as_secs_f64() * 1000.0)
}

/// The number after `key=` in the stderr report, or the `"key":N` of the
/// create report.
fn number(text: &str, key: &str) -> Option<f64> {
    let start = text
        .find(&format!("{key}="))
        .map(|i| i + key.len() + 1)
        .or_else(|| text.find(&format!("\"{key}\":")).map(|i| i + key.len() + 3))?;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn summary(label: &str, unit: &str, v: &mut [f64]) -> f64 {
    let median = percentile(v, 0.5);
    println!(
        "{label:<44} median {median:>9.3} {unit}  p90 {:>9.3} {unit}  (n={})",
        percentile(v, 0.9),
        v.len()
    );
    median
}

/// The `phases:` split of a `--report` line: step name and microseconds.
fn phases(text: &str) -> Vec<(String, f64)> {
    let Some(tail) = text.split("phases:").nth(1) else {
        return Vec::new();
    };
    tail.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Adds one run's split to the samples of each step.
fn collect(into: &mut Vec<(String, Vec<f64>)>, text: &str) {
    for (name, us) in phases(text) {
        match into.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push(us),
            None => into.push((name, vec![us])),
        }
    }
}

/// Median per step of the load and the boot, side by side, in run order
/// (load's steps first, then the boot's own).
fn print_split(load: &mut [(String, Vec<f64>)], boot: &mut [(String, Vec<f64>)]) {
    println!("split, median us per step             load      boot");
    let mut names: Vec<String> = load.iter().map(|(n, _)| n.clone()).collect();
    for (n, _) in boot.iter() {
        if !names.contains(n) {
            let at = names.len().min(3);
            names.insert(at, n.clone());
        }
    }
    let (mut lt, mut bt) = (0.0, 0.0);
    for name in names {
        let cell = |set: &mut [(String, Vec<f64>)], total: &mut f64| match set
            .iter_mut()
            .find(|(n, _)| *n == name)
        {
            Some((_, v)) if !v.is_empty() => {
                let m = percentile(v, 0.5);
                *total += m;
                format!("{m:>9.0}")
            }
            _ => format!("{:>9}", "-"),
        };
        let (l, b) = (cell(load, &mut lt), cell(boot, &mut bt));
        println!("  {name:<34} {l} {b}");
    }
    println!("  {:<34} {lt:>9.0} {bt:>9.0}", "sum of step medians");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let module = args
        .iter()
        .position(|a| a == "--agent-module")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let guest = ember_tests::guests::guest("snap_guest");
    let dir = std::env::temp_dir().join(format!("ember-bench-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (state, mem, console) = (dir.join("s"), dir.join("m"), dir.join("c"));

    // The snapshot every load restores: spinning just before its exit.
    let (out, _) = run(&[
        "create",
        "--kernel",
        path(&guest),
        "--cmdline",
        "ready quiet",
        "--mem-mib",
        "128",
        "--state",
        path(&state),
        "--mem-file",
        path(&mem),
        "--at-line",
        "ready",
        "--console",
        path(&console),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut load_us, mut boot_us, mut load_wall, mut boot_wall) = (vec![], vec![], vec![], vec![]);
    let (mut load_split, mut boot_split) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (out, wall) = run(&[
            "load",
            "--state",
            path(&state),
            "--mem-file",
            path(&mem),
            "--console",
            "off",
            "--report",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "load: {err}");
        load_us.push(number(&err, "load_to_exit_us").expect("load report") / 1000.0);
        collect(&mut load_split, &err);
        load_wall.push(wall);
        let (out, wall) = run(&[
            "boot",
            "--kernel",
            path(&guest),
            "--cmdline",
            "exit",
            "--mem-mib",
            "128",
            "--console",
            "off",
            "--report",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "boot: {err}");
        boot_us.push(number(&err, "boot_to_exit_us").expect("boot report") / 1000.0);
        collect(&mut boot_split, &err);
        boot_wall.push(wall);
    }

    let (mut create_ms, mut file_mib) = (vec![], vec![]);
    for _ in 0..runs {
        // A new snapshot each time: overwriting the last one would also time
        // the file system freeing its blocks (O_TRUNC).
        for f in [&console, &state, &mem] {
            let _ = std::fs::remove_file(f);
        }
        let (out, _) = run(&[
            "create",
            "--kernel",
            path(&guest),
            "--cmdline",
            "touch 16",
            "--mem-mib",
            "128",
            "--state",
            path(&state),
            "--mem-file",
            path(&mem),
            "--at-line",
            "touched",
            "--console",
            path(&console),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        create_ms.push(number(&text, "create_us").expect("create report") / 1000.0);
        let blocks = std::fs::metadata(&mem).map(|m| m.blocks()).unwrap_or(0);
        file_mib.push(blocks as f64 * 512.0 / (1 << 20) as f64);
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "snapshot benchmark, 128 MiB kernel-less guest, {runs} runs each (alternating load/boot)"
    );
    let load = summary(
        "load (File, resumed) -> first port write",
        "ms",
        &mut load_us,
    );
    let boot = summary(
        "fresh boot of the same guest -> first port write",
        "ms",
        &mut boot_us,
    );
    println!(
        "{:<44} {:.2}x",
        "ratio load / fresh boot (medians)",
        load / boot
    );
    print_split(&mut load_split, &mut boot_split);
    let lw = summary("exec -> exit wall, load", "ms", &mut load_wall);
    let bw = summary("exec -> exit wall, fresh boot", "ms", &mut boot_wall);
    println!("{:<44} {:.2}x", "ratio (wall, medians)", lw / bw);
    summary(
        "create, 128 MiB guest that touched 16 MiB",
        "ms",
        &mut create_ms,
    );
    summary("memory file on disk", "MiB", &mut file_mib);
    if let Some(m) = module {
        agent_case(runs, &m);
    }
}

/// Spawn → first answer of the wasm agent: restored from a snapshot taken
/// after Init vs booted and Init'ed, alternating.
fn agent_case(runs: usize, module: &Path) {
    use ember_host::env::{Code, InitSpec, InvokeRequest};
    use ember_tests::agent_snapshot as snap;
    let code = std::fs::read(module).expect("the agent module");
    let dir = std::env::temp_dir().join(format!("ember-bench-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let elf = ember_tests::guests::guest("ember-wasm-agent");
    let fn_mib = 16;
    let mem = ember_host::env::vm_memory_mib(fn_mib);
    let spec = InitSpec {
        function_name: "bench".into(),
        function_version: "1".into(),
        handler: "handle".into(),
        code: Code::Inline(code),
        env: Vec::new(),
        memory_mib: fn_mib,
        timeout_ms: 10_000,
        random_seed: None,
        trees: Vec::new(),
        ephemeral_mib: 0,
    };
    let req = |i: usize| InvokeRequest {
        request_id: format!("r{i}"),
        payload: format!("\"{i}\"").into_bytes().into(),
        deadline_ms: ember_tests::linux_guest::unix_ms() + 10_000,
        ..Default::default()
    };
    let answer = |i: usize| format!("{{\"hello\":\"{i}\"}}").into_bytes();
    let mut source = snap::boot(&dir, "source", &elf, mem);
    snap::init(&mut source.conn, &spec);
    assert_eq!(snap::invoke(&mut source.conn, &req(0)), answer(0));
    let shot = snap::take(&source, &dir, "snap");
    drop(source);
    let (mut restored_ms, mut booted_ms, mut ready_ms) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let t = Instant::now();
        let mut clone = snap::restore(&shot, &format!("clone{i}"));
        assert_eq!(snap::invoke(&mut clone.conn, &req(i)), answer(i));
        restored_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        ready_ms.push(clone.ready_after.as_secs_f64() * 1000.0);
        drop(clone);
        let t = Instant::now();
        let mut fresh = snap::boot(&dir, &format!("boot{i}"), &elf, mem);
        snap::init(&mut fresh.conn, &spec);
        assert_eq!(snap::invoke(&mut fresh.conn, &req(i)), answer(i));
        booted_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "wasm agent with vsock ({mem} MiB VM, {} module), spawn -> first answer, {runs} runs each (alternating)",
        module.display()
    );
    let r = summary(
        "load snapshot taken after Init -> answer",
        "ms",
        &mut restored_ms,
    );
    summary(
        "  of which load -> agent reconnected (Ready)",
        "ms",
        &mut ready_ms,
    );
    let b = summary("fresh boot + Init -> answer", "ms", &mut booted_ms);
    println!(
        "{:<44} {:.2}x",
        "ratio restored / fresh boot + Init (medians)",
        r / b
    );
}
