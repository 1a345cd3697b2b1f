//! Boot benchmark: the PVH null guest on `ember-vmm` and on QEMU `-M microvm`,
//! and the kernel-less null guest on `ember-vmm`, run alternately (≥ 20 runs
//! each): exec-to-exit wall time (median, p90), the boot-timer figure, peak RSS
//! (wait4 rusage), and ratios against QEMU from the same run.
//! Usage: `bench_boot [RUNS]` (scripts/bench-boot.sh builds and runs it).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_tests::probes;

/// A run still going after this is killed and counted as a failure.
const RUN_DEADLINE: Duration = Duration::from_secs(10);

/// One measured run.
struct Sample {
    wall_ms: f64,
    rss_kib: u64,
    exit: i32,
    boot_timer_us: Option<u64>,
}

/// A guest/VMM pair to measure.
struct Case {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    /// The exit status that proves the guest ran to its end.
    expect_exit: i32,
    samples: Vec<Sample>,
    failures: usize,
}

/// Runs `program args` once with output to files; rusage from wait4.
fn run_once(program: &Path, args: &[String], scratch: &Path) -> std::io::Result<Sample> {
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    let start = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    // A hung VMM must not hang the benchmark: kill it after RUN_DEADLINE.
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < RUN_DEADLINE {
                std::thread::sleep(Duration::from_millis(50));
                if done.load(Ordering::Acquire) {
                    return;
                }
            }
            if !done.load(Ordering::Acquire) {
                // SAFETY: plain kill(2) of our own, not yet reaped child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        })
    };
    let mut status = 0;
    // SAFETY: all-zero is a valid `rusage` (plain integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (std's `Child` is never
    // waited on); `status` and `usage` are valid, writable locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    done.store(true, Ordering::Release);
    let _ = watchdog.join();
    if r != pid {
        return Err(std::io::Error::last_os_error());
    }
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default()
        + &std::fs::read_to_string(&err_path).unwrap_or_default();
    Ok(Sample {
        wall_ms: wall.as_secs_f64() * 1e3,
        rss_kib: usage.ru_maxrss as u64,
        exit,
        boot_timer_us: parse_boot_timer(&text),
    })
}

/// Firecracker's boot-timer line: `Guest-boot-time = <N> us`.
fn parse_boot_timer(text: &str) -> Option<u64> {
    let rest = &text[text.find("Guest-boot-time")?..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Nearest-rank percentile of an unsorted list.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn qemu_args(accel: &str, kernel: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "-M",
        "microvm",
        "-accel",
        accel,
        "-m",
        "128",
        "-nodefaults",
        "-no-user-config",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(
        ["-no-reboot", "-display", "none", "-serial", "stdio"]
            .iter()
            .map(|s| s.to_string()),
    );
    a.extend(
        ["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel"]
            .iter()
            .map(|s| s.to_string()),
    );
    a.push(kernel.display().to_string());
    a
}

fn ember_args(kernel: &Path) -> Vec<String> {
    let k = kernel.display().to_string();
    [
        "--kernel",
        &k,
        "--mem-mib",
        "128",
        "--vcpus",
        "1",
        "--console",
        "off",
        "--boot-timer",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// QEMU's accelerator: KVM if it runs the null guest to its end here, else TCG.
fn pick_qemu_accel(qemu: &Path, null: &Path, scratch: &Path) -> Option<&'static str> {
    for accel in ["kvm", "tcg"] {
        match run_once(qemu, &qemu_args(accel, null), scratch) {
            Ok(s) if s.exit == 99 => return Some(accel),
            Ok(s) => eprintln!(
                "bench: QEMU -accel {accel} ended with status {} (not the guest's exit)",
                s.exit
            ),
            Err(e) => eprintln!("bench: QEMU -accel {accel}: {e}"),
        }
    }
    None
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(1);
    let scratch = std::env::temp_dir().join(format!("ember-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        eprintln!("bench: cannot create {}: {e}", scratch.display());
        std::process::exit(1);
    }
    let null_pvh = match probes::build("null_pvh") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench: cannot assemble the PVH null guest: {e}");
            std::process::exit(1);
        }
    };
    let vmm = probes::ember_vmm();
    let mut cases = vec![Case {
        label: "ember-vmm, PVH null".into(),
        program: vmm.clone(),
        args: ember_args(&null_pvh),
        expect_exit: 0,
        samples: Vec::new(),
        failures: 0,
    }];
    let kernelless = std::env::var_os("EMBER_NULL_KERNELLESS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            probes::source_dir().join(
                "../../../guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/null",
            )
        });
    if kernelless.exists() {
        cases.push(Case {
            label: "ember-vmm, kernel-less null".into(),
            program: vmm.clone(),
            args: ember_args(&kernelless),
            expect_exit: 0,
            samples: Vec::new(),
            failures: 0,
        });
    } else {
        println!(
            "note: no kernel-less null guest at {} (build guest-agent/kernelless)",
            kernelless.display()
        );
    }
    let qemu = PathBuf::from("qemu-system-x86_64");
    let accel = pick_qemu_accel(&qemu, &null_pvh, &scratch);
    match accel {
        Some(a) => cases.push(Case {
            label: format!("QEMU microvm -accel {a}, PVH null"),
            program: qemu.clone(),
            args: qemu_args(a, &null_pvh),
            expect_exit: 99,
            samples: Vec::new(),
            failures: 0,
        }),
        None => println!("note: QEMU could not run the null guest with KVM or TCG: no QEMU column"),
    }
    if accel == Some("tcg") {
        println!("note: QEMU -accel kvm failed on this host (PVM); QEMU figures are TCG");
    }

    // Alternate: one run of each case per round, so drift hits all alike.
    for _ in 0..runs {
        for c in cases.iter_mut() {
            match run_once(&c.program, &c.args, &scratch) {
                Ok(s) if s.exit == c.expect_exit => c.samples.push(s),
                Ok(s) => {
                    if c.failures == 0 {
                        eprintln!(
                            "bench: {}: exit {} (expected {})",
                            c.label, s.exit, c.expect_exit
                        );
                    }
                    c.failures += 1;
                }
                Err(e) => {
                    eprintln!("bench: {}: {e}", c.label);
                    c.failures += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    report(&cases, runs);
}

struct Summary {
    median: f64,
    p90: f64,
    boot_timer: Option<f64>,
    rss_mib: f64,
    rss_max_mib: f64,
}

fn summarize(c: &Case) -> Option<Summary> {
    if c.samples.is_empty() {
        return None;
    }
    let walls: Vec<f64> = c.samples.iter().map(|s| s.wall_ms).collect();
    let rss: Vec<f64> = c
        .samples
        .iter()
        .map(|s| s.rss_kib as f64 / 1024.0)
        .collect();
    let timers: Vec<f64> = c
        .samples
        .iter()
        .filter_map(|s| s.boot_timer_us)
        .map(|u| u as f64 / 1e3)
        .collect();
    Some(Summary {
        median: percentile(&walls, 50.0),
        p90: percentile(&walls, 90.0),
        boot_timer: (!timers.is_empty()).then(|| percentile(&timers, 50.0)),
        rss_mib: percentile(&rss, 50.0),
        rss_max_mib: rss.iter().cloned().fold(0.0, f64::max),
    })
}

fn report(cases: &[Case], runs: usize) {
    println!("\nember boot benchmark: {runs} rounds, cases alternating; wall = exec to exit");
    println!(
        "| {:<36} | {:>4} | {:>9} | {:>9} | {:>15} | {:>14} | {:>8} |",
        "case", "ok", "median ms", "p90 ms", "boot-timer ms", "RSS MiB (max)", "failures"
    );
    println!(
        "|{:-<38}|{:-<6}|{:-<11}|{:-<11}|{:-<17}|{:-<16}|{:-<10}|",
        "", "", "", "", "", "", ""
    );
    let summaries: Vec<Option<Summary>> = cases.iter().map(summarize).collect();
    for (c, s) in cases.iter().zip(&summaries) {
        match s {
            Some(s) => println!(
                "| {:<36} | {:>4} | {:>9.2} | {:>9.2} | {:>15} | {:>6.2} ({:>5.2}) | {:>8} |",
                c.label,
                c.samples.len(),
                s.median,
                s.p90,
                s.boot_timer.map_or("-".into(), |t| format!("{t:.2}")),
                s.rss_mib,
                s.rss_max_mib,
                c.failures
            ),
            None => println!(
                "| {:<36} | {:>4} | {:>9} | {:>9} | {:>15} | {:>14} | {:>8} |",
                c.label, 0, "-", "-", "-", "-", c.failures
            ),
        }
    }
    let qemu = cases
        .iter()
        .zip(&summaries)
        .find(|(c, _)| c.label.starts_with("QEMU"))
        .and_then(|(_, s)| s.as_ref());
    for (c, s) in cases.iter().zip(&summaries) {
        let (Some(s), Some(q)) = (s, qemu) else {
            continue;
        };
        if c.label.starts_with("QEMU") {
            continue;
        }
        println!(
            "ratio {} / QEMU: wall median {:.2}x, p90 {:.2}x, RSS {:.2}x",
            c.label,
            s.median / q.median,
            s.p90 / q.p90,
            s.rss_mib / q.rss_mib
        );
    }
    for (c, s) in cases.iter().zip(&summaries) {
        let Some(s) = s else { continue };
        if c.label.starts_with("ember") {
            let wall = if s.median <= 12.0 { "met" } else { "MISSED" };
            let rss = if s.rss_mib <= 3.0 { "met" } else { "MISSED" };
            println!(
                "targets, {}: exec-to-exit <= 12 ms median {wall}; RSS <= 3 MiB {rss}",
                c.label
            );
        }
    }
}
