//! Snapshot benchmark (issue 16), one run, medians and ratios:
//! - load → first port write: `ember-snapshot load` of a 128 MiB
//!   `snap_guest ready quiet` snapshot (File backend, resumed), timed inside
//!   the process from the start of the load to the guest's exit port write,
//!   against a fresh boot of the same guest (`snap_guest exit`, same code
//!   path: `ember-snapshot boot`), alternating, plus exec-to-exit wall time;
//! - create of a 128 MiB guest that touched 16 MiB (`snap_guest touch 16`):
//!   time inside `snapshot::create` (to new files) and the memory file's
//!   size on disk.
//!
//! Usage: `bench_snapshot [RUNS]` (scripts/bench-snapshot.sh builds and runs it).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn snapshot_bin() -> PathBuf {
    ember_tests::probes::ember_vmm().with_file_name("ember-snapshot")
}

fn run(args: &[&str]) -> (Output, f64) {
    let t = Instant::now();
    let out = Command::new(snapshot_bin())
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

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
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
    let lw = summary("exec -> exit wall, load", "ms", &mut load_wall);
    let bw = summary("exec -> exit wall, fresh boot", "ms", &mut boot_wall);
    println!("{:<44} {:.2}x", "ratio (wall, medians)", lw / bw);
    summary(
        "create, 128 MiB guest that touched 16 MiB",
        "ms",
        &mut create_ms,
    );
    summary("memory file on disk", "MiB", &mut file_mib);
}
