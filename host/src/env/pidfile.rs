//! Crash leftovers: the pid file listing every live `ember-vmm` child, and
//! the cleanup a new `emberd` does of a previous run's children and work
//! directories before it starts any environment of its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `<run_dir>/vmm.pids`: one pid per line, rewritten (atomically, by
/// rename) whenever the set of children changes.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn new(run_dir: &Path) -> Self {
        Self::named(run_dir, "vmm.pids")
    }

    /// Another pid file in `run_dir` (the launcher's spare VMs use `spare.pids`).
    pub fn named(run_dir: &Path, name: &str) -> Self {
        Self {
            path: run_dir.join(name),
        }
    }

    pub fn write(&self, pids: &[u32]) {
        let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
        let tmp = self.path.with_extension("tmp");
        // Best effort: a failed write only weakens crash cleanup.
        if fs::write(&tmp, text).is_ok() {
            let _ = fs::rename(&tmp, &self.path);
        }
    }

    pub fn read(&self) -> Vec<u32> {
        fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// Whether `pid` is a live `ember-vmm` or `ember-jailer` (so a recycled pid
/// is never killed). Killing a jailer kills its VMM (parent-death signal).
fn is_vmm(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0).next().is_some_and(|argv0| {
                argv0.ends_with(b"ember-vmm") || argv0.ends_with(b"ember-jailer")
            })
        })
        .unwrap_or(false)
}

/// Kills the `ember-vmm` children a previous, crashed `emberd` left behind
/// (from its pid file) and removes its work directories. Returns how many
/// processes were killed.
pub fn clean_previous_run(run_dir: &Path) -> usize {
    let files = [
        PidFile::new(run_dir),
        PidFile::named(run_dir, "spare.pids"),
        PidFile::named(run_dir, "restored.pids"),
        PidFile::named(run_dir, "slots.pids"),
    ];
    let mut killed = Vec::new();
    for pid in files.iter().flat_map(PidFile::read) {
        if is_vmm(pid) {
            // SAFETY: kill(2) with a pid we just checked is an ember-vmm (or jailer);
            // no memory is involved.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            killed.push(pid);
        }
    }
    // Orphans were re-parented (to init or a subreaper) which reaps them;
    // wait briefly so the caller sees them gone.
    let until = Instant::now() + Duration::from_secs(2);
    while killed.iter().any(|p| is_vmm(*p)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = fs::remove_dir_all(run_dir.join("envs"));
    let _ = fs::remove_dir_all(run_dir.join("spares"));
    let _ = fs::remove_dir_all(run_dir.join("restored"));
    let _ = fs::remove_dir_all(run_dir.join("slots"));
    for f in &files {
        f.write(&[]);
    }
    killed.len()
}
