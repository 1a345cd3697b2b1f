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

/// The same limit on a network interface's transmit side: the `net_test`
/// guest sends 20 MiB of UDP through a TAP in a fresh namespace; the device
/// may pass only 10 MiB/s (±15%) of frame payload.
#[test]
fn net_tx_limit_holds_within_15_percent() {
    use ember_tests::blknet::{can_netns, NetNs};
    use std::net::UdpSocket;
    if let Err(why) = can_netns() {
        println!("SKIPPED: {why}");
        return;
    }
    let (peer, guest_ip, port, bytes) = ("10.80.0.1", "10.80.0.2", 5600u16, 20 * MIB);
    let ns = NetNs::new(
        &format!("ember-rl-{}", std::process::id()),
        "embrl0",
        &format!("{peer}/24"),
    );
    // The peer drains the flood, then answers GO with END.
    let peer_thread = ns.spawn_in(move || -> Result<u64, String> {
        let sock = UdpSocket::bind((peer, port)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let (mut got, mut buf) = (0u64, [0u8; 2048]);
        loop {
            let (n, from) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
            match &buf[..n] {
                b"GO" => {
                    for _ in 0..3 {
                        sock.send_to(b"END", from).map_err(|e| e.to_string())?;
                    }
                    return Ok(got);
                }
                b"END" => {}
                _ => got += n as u64,
            }
        }
    });
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest("net_test"),
            "boot_args": format!("bench {guest_ip} {peer} {port} {bytes}")
        },
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 64 },
        "network-interfaces": [{
            "iface_id": "eth0", "host_dev_name": ns.tap, "guest_mac": "06:00:0a:50:00:02",
            "tx_rate_limiter": { "bandwidth": { "size": MIB, "refill_time": 100 } }
        }]
    });
    let cfg = TempFile::new("rl-net.json", config.to_string().as_bytes());
    let args: Vec<String> = ["netns", "exec", &ns.name]
        .iter()
        .map(|s| s.to_string())
        .chain([
            ember_tests::probes::ember_vmm().display().to_string(),
            "--no-api".into(),
            "--config-file".into(),
            cfg.path(),
            "--console".into(),
            "stdout".into(),
        ])
        .collect();
    let mut vm = Vm::spawn("ip", &args);
    let line = vm.wait_line("net: bench ", Duration::from_secs(120));
    let (code, stderr, seen) = vm.finish(Duration::from_secs(30));
    let line =
        line.unwrap_or_else(|| panic!("no bench line; console: {seen:#?}\nstderr: {stderr}"));
    assert_eq!(code, Some(0), "{line}\n{stderr}");
    let peer_got = peer_thread.join().expect("peer thread");
    let tx_bytes: u64 = field(&line, "tx_bytes")
        .and_then(|v| v.parse().ok())
        .expect("tx_bytes");
    let tx_ns: u64 = field(&line, "tx_ns")
        .and_then(|v| v.parse().ok())
        .expect("tx_ns");
    // The limiter counts frame bytes after the vnet header: payload + 42 bytes of headers.
    let wire = tx_bytes as f64 * (1472.0 + 42.0) / 1472.0;
    let rate = wire / MIB as f64 / (tx_ns as f64 / 1e9);
    println!(
        "net tx limiter: {rate:.2} MiB/s over {:.1} MiB; peer got {peer_got:?}",
        wire / MIB as f64
    );
    assert!(
        (8.5..=11.5).contains(&rate),
        "limited tx rate {rate:.2} MiB/s is not 10 MiB/s ±15%"
    );
    assert!(
        peer_got.as_ref().is_ok_and(|&g| g > 0),
        "the peer saw no traffic: {peer_got:?}"
    );
}
