//! Rate limiter on a real microVM: a drive limited to 10 MiB/s (1 MiB bucket
//! refilled every 100 ms) takes a 50 MiB write from the `blk_test` guest at
//! 10 MiB/s ±15%; the same write without a limit runs in the same test as
//! the reference that shows the limit, not the machine, set the pace.

use std::time::{Duration, Instant};

use ember_tests::blknet::{field, guest, TempFile, Vm};

const MIB: u64 = 1 << 20;

/// Runs a 50 MiB write-only bench; returns seconds (guest clock, else host).
fn timed_write(limit: Option<serde_json::Value>) -> f64 {
    let bytes = 50 * MIB;
    let disk = TempFile::new("rl", &vec![0u8; bytes as usize]);
    let mut drive = serde_json::json!({
        "drive_id": "bench", "path_on_host": disk.path(), "is_root_device": false, "is_read_only": false
    });
    if let Some(l) = limit {
        drive["rate_limiter"] = l;
    }
    let config = serde_json::json!({
        "boot-source": { "kernel_image_path": guest("blk_test"), "boot_args": format!("bench {bytes} w") },
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 128 },
        "drives": [drive]
    });
    let (mut vm, _cfg) = Vm::with_config(&config);
    let started = vm
        .wait_line("blk: id=", Duration::from_secs(60))
        .map(|_| Instant::now());
    let line = vm.wait_line("blk: bench ", Duration::from_secs(120));
    let host_s = started.map(|s| s.elapsed().as_secs_f64());
    let (code, stderr, seen) = vm.finish(Duration::from_secs(30));
    let line =
        line.unwrap_or_else(|| panic!("no bench line; console: {seen:#?}\nstderr: {stderr}"));
    assert_eq!(code, Some(0), "{line}\n{stderr}");
    let guest_ns: u64 = field(&line, "write_ns")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if guest_ns > 0 {
        guest_ns as f64 / 1e9
    } else {
        host_s.expect("start line")
    }
}

#[test]
fn ten_mib_per_second_holds_within_15_percent_over_50_mib() {
    let limit = serde_json::json!({ "bandwidth": { "size": MIB, "refill_time": 100 } });
    let limited = timed_write(Some(limit));
    let free = timed_write(None);
    let rate = 50.0 / limited;
    println!("rate limiter: limited {rate:.2} MiB/s ({limited:.2} s); unlimited {:.1} MiB/s ({free:.3} s)", 50.0 / free);
    assert!(
        (8.5..=11.5).contains(&rate),
        "limited rate {rate:.2} MiB/s is not 10 MiB/s ±15%"
    );
    assert!(
        free < limited / 2.0,
        "without a limit the write must be much faster ({free:.2} s vs {limited:.2} s)"
    );
}
