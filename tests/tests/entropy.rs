//! The entropy device (virtio-rng) on real microVMs, configured through the
//! config file's `entropy` section as Firecracker spells it: the kernel-less
//! `rng_test` guest reads random bytes (none zero, no request repeating the
//! one before, two VMs getting different bytes), hostile chains come back
//! empty and leave the device serving, and a `rate_limiter` holds a guest to
//! its budget, measured against an unlimited VM in the same test.

use std::time::Duration;

use ember_tests::blknet::{field, guest, Vm};
use serde_json::{json, Value};

fn config(args: &str, entropy: Value) -> Value {
    json!({
        "boot-source": {
            "kernel_image_path": guest("rng_test").display().to_string(),
            "boot_args": args,
        },
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 128 },
        "entropy": entropy,
    })
}

/// Runs the guest; returns its result line (the VM must exit 0).
fn run(args: &str, entropy: Value, prefix: &str) -> String {
    let (mut vm, _cfg) = Vm::with_config(&config(args, entropy));
    let line = vm.wait_line(prefix, Duration::from_secs(60));
    let (code, stderr, seen) = vm.finish(Duration::from_secs(30));
    let line =
        line.unwrap_or_else(|| panic!("no {prefix:?} line; console: {seen:#?}\nstderr: {stderr}"));
    assert_eq!(
        code,
        Some(0),
        "{line}\nconsole: {seen:#?}\nstderr: {stderr}"
    );
    line
}

fn num(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn the_guest_reads_fresh_random_bytes() {
    let a = run("read 1024 64", json!({}), "rng: read ");
    let b = run(
        "read 1024 64",
        json!({ "rate_limiter": null }),
        "rng: read ",
    );
    for l in [&a, &b] {
        assert_eq!(num(l, "bytes"), 64 * 1024, "{l}");
        assert_eq!(num(l, "zero_requests"), 0, "{l}");
        assert_eq!(num(l, "repeats"), 0, "{l}");
    }
    assert_ne!(
        field(&a, "sha256"),
        field(&b, "sha256"),
        "two VMs drew the same bytes"
    );
}

#[test]
fn hostile_chains_come_back_empty_and_the_device_serves_on() {
    run("hostile", json!({}), "rng: hostile ok");
}

#[test]
fn a_rate_limiter_holds_the_guest_to_its_budget() {
    // 8 KiB per 100 ms (80 KiB/s), the bucket full at start: 32 KiB takes
    // at least (32 - 8) / 80 s = 300 ms of guest time.
    let limited = json!({ "rate_limiter": {
        "bandwidth": { "size": 8192, "one_time_burst": 0, "refill_time": 100 }
    }});
    let slow = run("read 1024 32", limited, "rng: read ");
    let fast = run("read 1024 32", json!({}), "rng: read ");
    let (slow_ns, fast_ns) = (num(&slow, "ns"), num(&fast, "ns"));
    eprintln!(
        "rate limit: limited {:.1} ms, unlimited {:.1} ms (ratio {:.1}x)",
        slow_ns as f64 / 1e6,
        fast_ns as f64 / 1e6,
        slow_ns as f64 / fast_ns.max(1) as f64
    );
    assert_eq!(num(&slow, "bytes"), 32 * 1024, "{slow}");
    assert!(
        slow_ns >= 250_000_000,
        "limited read took {slow_ns} ns: {slow}"
    );
    assert!(
        slow_ns > 3 * fast_ns,
        "limited {slow_ns} ns vs unlimited {fast_ns} ns"
    );
    // An ops limit too: 4 requests per 100 ms, 24 requests ≥ 500 ms.
    let ops = json!({ "rate_limiter": { "ops": { "size": 4, "refill_time": 100 } } });
    let l = run("read 16 24", ops, "rng: read ");
    assert!(num(&l, "ns") >= 400_000_000, "{l}");
}
