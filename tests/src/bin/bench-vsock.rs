//! vsock benchmark (run by `scripts/bench-vsock.sh`): round-trip latency and
//! throughput both ways between a kernel-less guest and a host Unix socket,
//! through ember-vmm's hybrid vsock, each printed beside the same measure on
//! a plain host Unix socket pair run in this process (the peer), with
//! ember-vmm's CPU use (utime+stime over wall time) for each run.
//! Usage: bench-vsock [EMBER_VMM] [GUEST_DIR] [MIB]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

struct Run {
    child: Child,
    dir: PathBuf,
    t0: Instant,
    cpu0: u64,
}

impl Run {
    fn start(vmm: &str, guest: &str, cmdline: &str, dir: PathBuf) -> Run {
        let child = Command::new(vmm)
            .args([
                "--kernel",
                guest,
                "--cmdline",
                cmdline,
                "--mem-mib",
                "256",
                "--console",
                "stdout",
            ])
            .args([
                "--vsock",
                &format!("3:{}", dir.join("v.sock").display()),
                "--timeout-ms",
                "600000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ember-vmm");
        let cpu0 = cpu_ticks(child.id());
        Run {
            child,
            dir,
            t0: Instant::now(),
            cpu0,
        }
    }

    /// Waits for exit; returns (console output, ember-vmm CPU % of one core over the run).
    fn finish(mut self) -> (String, f64) {
        let mut out = String::new();
        let cpu = cpu_ticks(self.child.id()).saturating_sub(self.cpu0) as f64 / ticks_per_sec();
        let wall = self.t0.elapsed().as_secs_f64();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        (out, 100.0 * cpu / wall)
    }
}

fn field(out: &str, key: &str) -> Option<f64> {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ember-bench-vsock-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The peer: round trips of `size` bytes over a host Unix socket pair.
fn peer_rtt_us(rounds: usize, size: usize) -> f64 {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; size];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let msg = vec![0x5au8; size];
    let mut buf = vec![0u8; size];
    let mut t = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        a.write_all(&msg).unwrap();
        a.read_exact(&mut buf).unwrap();
        t.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    drop(a);
    let _ = echo.join();
    median(t)
}

/// The peer: MiB/s of `bytes` through a host Unix socket pair.
fn peer_mibps(bytes: usize) -> f64 {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let t0 = Instant::now();
    let w = std::thread::spawn(move || {
        let chunk = vec![1u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            a.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < bytes {
        got += b.read(&mut buf).unwrap();
    }
    w.join().unwrap();
    bytes as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let vmm = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/ember-vmm".into());
    let gdir = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release".into());
    let mib: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(512);
    let client = format!("{gdir}/vsock_client");
    let bytes = mib << 20;

    // Round trip: the guest times send+receive of 64 bytes against a host echo.
    let (rounds, size) = (2000, 64);
    let dir = fresh_dir("rtt");
    let l = UnixListener::bind(dir.join("v.sock_53")).unwrap();
    let run = Run::start(&vmm, &client, &format!("rtt 53 {rounds} {size}"), dir);
    let (mut s, _) = l.accept().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let (out, cpu) = run.finish();
    let vsock_rtt = field(&out, "median_ns").unwrap_or(0.0) / 1000.0;
    let peer = peer_rtt_us(rounds, size);
    println!("rtt {size}B x{rounds}: vsock median {vsock_rtt:.1} us | host unix socket median {peer:.1} us | ratio {:.1}x | ember-vmm cpu {cpu:.0}% (target <= 50 us)", vsock_rtt / peer.max(1e-9));

    // Guest -> host.
    let dir = fresh_dir("tx");
    let l = UnixListener::bind(dir.join("v.sock_54")).unwrap();
    let run = Run::start(&vmm, &client, &format!("bulk 54 {bytes} 0"), dir);
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let t0 = Instant::now();
    let mut got = 0usize;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (_, cpu) = run.finish();
    let tx = got as f64 / (1 << 20) as f64 / secs;
    let peer = peer_mibps(bytes);
    println!("guest->host {mib} MiB: vsock {tx:.0} MiB/s | host unix socket {peer:.0} MiB/s | ratio {:.2} | ember-vmm cpu {cpu:.0}% (target >= 1024 MiB/s)", tx / peer.max(1e-9));
    assert_eq!(got, bytes, "guest->host transfer incomplete");

    // Host -> guest.
    let dir = fresh_dir("rx");
    let l = UnixListener::bind(dir.join("v.sock_56")).unwrap();
    let run = Run::start(&vmm, &client, &format!("sink 56 {bytes}"), dir);
    let (mut s, _) = l.accept().unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let t0 = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    let _ = s.read(&mut buf); // the guest closes when it has everything
    let secs = t0.elapsed().as_secs_f64();
    let (out, cpu) = run.finish();
    let rx = bytes as f64 / (1 << 20) as f64 / secs;
    println!("host->guest {mib} MiB: vsock {rx:.0} MiB/s | host unix socket {peer:.0} MiB/s | ratio {:.2} | ember-vmm cpu {cpu:.0}% (guest says {})", rx / peer.max(1e-9), out.lines().find(|l| l.contains("sink")).unwrap_or("?"));
}
