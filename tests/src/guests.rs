//! The kernel-less guest ELFs of `guest-agent/kernelless/src/bin` (the test
//! guests and the wasm agent), built once per test process by its
//! `build.sh` (a no-op when they are up to date).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn kernelless_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-agent/kernelless")
}

/// Builds every kernel-less guest once per process; returns their directory.
fn built() -> &'static Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = kernelless_dir();
        let out = Command::new("bash")
            .arg(dir.join("build.sh"))
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

/// The path of kernel-less guest `name` (all are built on first use).
pub fn guest(name: &str) -> PathBuf {
    match built() {
        Ok(dir) => {
            let p = dir.join(name);
            assert!(
                p.is_file(),
                "no kernel-less guest {name} in {}",
                dir.display()
            );
            p
        }
        Err(e) => panic!("kernel-less guests unavailable: {e}"),
    }
}
