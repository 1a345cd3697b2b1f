//! Helpers for the VMM-core tests: the kernel-less test guests (built on
//! demand, once per test process, by `guest-agent/kernelless/build.sh`) and
//! running `ember-vmm` with a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::probes::{ember_vmm, run_with_deadline, RunOutput};

/// The test guests of `guest-agent/kernelless/src/bin` the VMM tests use.
const GUESTS: &[&str] = &["hello", "exit_code", "fault", "spin", "null"];

fn kernelless_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-agent/kernelless")
}

/// Builds the VMM test guests once per process; returns their directory.
fn built() -> &'static Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = kernelless_dir();
        let mut cmd = Command::new("bash");
        cmd.arg(dir.join("build.sh"));
        for g in GUESTS {
            cmd.args(["--bin", g]);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run build.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "build.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir.join("target/x86_64-unknown-linux-gnu/release"))
    })
}

/// The path of kernel-less test guest `name` (built on first use).
pub fn guest(name: &str) -> PathBuf {
    match built() {
        Ok(dir) => dir.join(name),
        Err(e) => panic!("kernel-less guests unavailable: {e}"),
    }
}

/// How long any single VM in these tests may take before it counts as hung.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `ember-vmm args` with [`DEADLINE`]; panics if it hangs.
pub fn vmm(args: &[&str]) -> RunOutput {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let vmm = ember_vmm();
    assert!(
        vmm.exists(),
        "{} missing: cargo build --release --bins first",
        vmm.display()
    );
    let out = run_with_deadline(&vmm, &args, DEADLINE).expect("spawn ember-vmm");
    assert!(
        !out.timed_out,
        "ember-vmm {args:?} hung; stderr: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("panicked"),
        "ember-vmm panicked: {}",
        out.stderr
    );
    out
}

/// Runs the kernel-less guest `name` with `args` as its command line, plus `extra` flags.
pub fn run_guest(name: &str, args: &str, extra: &[&str]) -> RunOutput {
    let g = guest(name);
    let mut all = vec!["--kernel", path_str(&g), "--cmdline", args];
    all.extend_from_slice(extra);
    vmm(&all)
}

/// The exit code (None if killed by a signal).
pub fn code(out: &RunOutput) -> Option<i32> {
    out.status.and_then(|s| s.code())
}

/// A path as &str (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A unique scratch path under the temp dir.
pub fn scratch(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("ember-vmm-test-{}-{n}-{tag}", std::process::id()))
}
