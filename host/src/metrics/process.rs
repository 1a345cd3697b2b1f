//! emberd's own process metrics under the names every Prometheus client
//! library exports (`process_*`), and `ember_build_info`, so stock dashboards
//! and alerts work on emberd as on any other target.

use super::expo::{Encoder, Kind};

/// What `/proc/self` says about emberd (None: unreadable field).
#[derive(Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    /// Heap bytes in use (`crate::heap::in_use_bytes`).
    pub heap_bytes: Option<u64>,
}

impl Usage {
    /// Reads this process's usage now.
    pub fn collect() -> Self {
        // SAFETY: sysconf has no preconditions and touches no memory.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let mut u = parse_stat(&stat, &boot, ticks, page);
        u.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into `lim`, which we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            u.max_fds = Some(lim.rlim_cur);
        }
        u.heap_bytes = crate::heap::in_use_bytes();
        u
    }

    pub fn render(&self, e: &mut Encoder) {
        let mut one = |name: &str, kind: Kind, help: &str, v: Option<f64>| {
            if let Some(v) = v {
                e.family(name, kind, help);
                e.sample(name, &[], v);
            }
        };
        let f = |v: Option<u64>| v.map(|v| v as f64);
        one(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        one(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        );
        one(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            f(self.resident_bytes),
        );
        one(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
            f(self.virtual_bytes),
        );
        one(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            f(self.open_fds),
        );
        one(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            f(self.max_fds),
        );
        one(
            "ember_process_heap_bytes",
            Kind::Gauge,
            "Heap bytes emberd's allocator has handed out and not taken back (RSS minus freed pages, stacks and code).",
            f(self.heap_bytes),
        );
    }
}

/// `/proc/self/stat` (fields after the command name's last `)`) and the
/// `btime` line of `/proc/stat`.
fn parse_stat(stat: &str, proc_stat: &str, ticks: f64, page: u64) -> Usage {
    let mut u = Usage::default();
    let Some(fields) = crate::procfs::fields_after_comm(stat) else {
        return u;
    };
    // The fields start at field 3 (state): utime is field 14, stime 15,
    // starttime 22, vsize 23, rss (pages) 24.
    let f: Vec<&str> = fields.collect();
    let num = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    if ticks > 0.0 {
        u.cpu_seconds = num(14).zip(num(15)).map(|(a, b)| (a + b) as f64 / ticks);
        let btime = proc_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        u.start_time_seconds = num(22).zip(btime).map(|(s, b)| b as f64 + s as f64 / ticks);
    }
    u.virtual_bytes = num(23);
    u.resident_bytes = num(24).map(|p| p * page);
    u
}

/// `ember_build_info{version}`: always 1; the labels carry the build.
pub fn render_build_info(e: &mut Encoder) {
    e.family(
        "ember_build_info",
        Kind::Gauge,
        "emberd's build: always 1, with its version as a label.",
    );
    e.sample(
        "ember_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as comm allows.
        let stat = "4242 (ember d) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 \
                    1000 123456789 300 18446744073709551615";
        let u = parse_stat(stat, "cpu 1 2 3\nbtime 1700000000\n", 100.0, 4096);
        assert_eq!(u.cpu_seconds, Some(3.0));
        assert_eq!(u.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(u.virtual_bytes, Some(123_456_789));
        assert_eq!(u.resident_bytes, Some(300 * 4096));
    }

    #[test]
    fn this_process_is_read_and_rendered() {
        let u = Usage::collect();
        assert!(u.resident_bytes.unwrap() > 0);
        assert!(u.open_fds.unwrap() >= 3);
        let mut e = Encoder::new();
        u.render(&mut e);
        render_build_info(&mut e);
        let text = e.finish();
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.contains("ember_process_heap_bytes "));
        assert!(text.contains(&format!(
            "ember_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
