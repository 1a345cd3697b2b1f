//! The machine a benchmark ran on, recorded with its results: CPU model and
//! cores, kernel, KVM kind (PVM or hardware), memory, load average before and
//! after, and a loud warning when the machine was busy.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::linux::caps::KvmKind;

/// 1-minute load per core above which the results carry a warning.
pub const HIGH_LOAD_PER_CORE: f64 = 0.5;

/// The machine's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    pub kernel: String,
    pub kvm: KvmKind,
    pub mem_total_mib: u64,
    pub mem_available_mib: u64,
    /// 1, 5 and 15-minute load averages when the benchmark started.
    pub load_before: [f64; 3],
    /// ... and when it ended.
    pub load_after: Option<[f64; 3]>,
    /// Seconds since the epoch at the start.
    pub started_unix: u64,
    pub ember_version: String,
    /// The command line, as given.
    pub command: Vec<String>,
    /// Loud warnings (high load, ...), also printed to stderr.
    pub warnings: Vec<String>,
}

impl Context {
    /// Reads the live system's context now.
    pub fn capture() -> Context {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mut c = Context {
            cpu_model: cpu_model(&cpuinfo),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            kvm: KvmKind::detect(Path::new("/")),
            mem_total_mib: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) / 1024,
            mem_available_mib: meminfo_kib(&meminfo, "MemAvailable").unwrap_or(0) / 1024,
            load_before: loadavg().unwrap_or([f64::NAN; 3]),
            load_after: None,
            started_unix: crate::util::unix_ms() / 1000,
            ember_version: env!("CARGO_PKG_VERSION").to_string(),
            command: std::env::args().collect(),
            warnings: Vec::new(),
        };
        c.check_load(c.load_before, "before the runs");
        c
    }

    /// Records the load average at the end (and warns if it was high).
    pub fn finish(&mut self) {
        if let Some(l) = loadavg() {
            self.load_after = Some(l);
            self.check_load(l, "after the runs");
        }
    }

    fn check_load(&mut self, load: [f64; 3], when: &str) {
        if let Some(w) = load_warning(load, self.cores, when) {
            eprintln!("{}", banner(&w));
            self.warnings.push(w);
        }
    }

    /// One line for the terminal and the Markdown summary.
    pub fn one_line(&self) -> String {
        let after = self
            .load_after
            .map(|l| format!("{:.2}", l[0]))
            .unwrap_or_else(|| "-".into());
        format!(
            "{} · {} cores · kernel {} · KVM {:?} · {} MiB RAM ({} MiB free) · load {:.2} before, {} after",
            self.cpu_model,
            self.cores,
            self.kernel,
            self.kvm,
            self.mem_total_mib,
            self.mem_available_mib,
            self.load_before[0],
            after
        )
    }
}

/// A loud warning when the 1-minute load exceeds [`HIGH_LOAD_PER_CORE`]
/// per core.
pub fn load_warning(load: [f64; 3], cores: usize, when: &str) -> Option<String> {
    let per_core = load[0] / cores.max(1) as f64;
    (per_core > HIGH_LOAD_PER_CORE).then(|| {
        format!(
            "HIGH LOAD {when}: 1-min load average {:.2} on {cores} cores ({per_core:.2} per core > {HIGH_LOAD_PER_CORE}); \
             other work competes with the runs, so absolute times are inflated and noisy — trust the same-run ratios, not the numbers",
            load[0]
        )
    })
}

/// The warning framed so it cannot be missed in a log.
fn banner(w: &str) -> String {
    let bar = "!".repeat(78);
    format!("{bar}\n!! WARNING: {w}\n{bar}")
}

fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn loadavg() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(
            parse_loadavg("0.52 1.10 2.00 3/400 1234\n"),
            Some([0.52, 1.10, 2.0])
        );
        assert_eq!(parse_loadavg("x"), None);
        assert_eq!(
            meminfo_kib(
                "MemTotal:       24000000 kB\nMemAvailable: 1024 kB\n",
                "MemAvailable"
            ),
            Some(1024)
        );
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"),
            "AMD EPYC 7B13"
        );
    }

    #[test]
    fn kvm_kind_follows_the_loaded_module() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(KvmKind::detect(d.path()), KvmKind::None);
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/kvm"), b"").unwrap();
        assert_eq!(KvmKind::detect(d.path()), KvmKind::Unknown);
        std::fs::create_dir_all(d.path().join("sys/module/kvm_intel")).unwrap();
        assert_eq!(KvmKind::detect(d.path()), KvmKind::HardwareVmx);
        std::fs::create_dir_all(d.path().join("sys/module/kvm_pvm")).unwrap();
        assert_eq!(KvmKind::detect(d.path()), KvmKind::Pvm);
    }

    #[test]
    fn high_load_warns() {
        assert!(load_warning([0.4, 0.0, 0.0], 2, "x").is_none());
        let w = load_warning([3.0, 0.0, 0.0], 2, "before the runs").unwrap();
        assert!(w.contains("HIGH LOAD") && w.contains("3.00"), "{w}");
    }
}
