//! Helpers for the VMM-core tests: running kernel-less test guests
//! ([`crate::guests`]) under `ember-vmm` with a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::guests::guest;
use crate::probes::{ember_vmm, run_with_deadline, RunOutput};

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
