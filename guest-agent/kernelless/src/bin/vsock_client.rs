//! Test guest: vsock client of the host (CID 2). Arguments pick a mode and
//! print one `vsock:` result line:
//! - `refused PORT`: connecting must fail (no host listener): `refused ok`;
//! - `hello PORT`: sends `hello from guest\n`, half-closes, prints `reply=..`;
//! - `bulk PORT BYTES SEED`: sends BYTES of the xorshift64* stream seeded
//!   with SEED (the host recomputes it), closes, prints `bulk sent=N ns=T`;
//!   SEED 0 sends one fixed 64 KiB pattern over and over (benchmarks: no
//!   generator cost in the guest);
//! - `blast PORT BYTES SEED`: like `bulk`, but ends the VM right after the
//!   last byte is queued, without closing: the VMM must still deliver every
//!   byte it accepted before it drops the connection;
//! - `sink PORT BYTES`: reads BYTES from the host, prints `sink got=N ns=T`;
//! - `rtt PORT ROUNDS SIZE`: ROUNDS × (send SIZE bytes, read SIZE back),
//!   prints `rtt median_ns=.. min_ns=..`.
//!   Times are guest TSC nanoseconds. Exit codes: 0 ok, 3 check failed, 4 bad args.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use ember_abi::guest::device_id;
use ember_guest::virtio::vsock::{shut, ConnId, Vsock, VsockConfig};
use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

/// The same stream the host test computes: xorshift64* words, little-endian.
struct Rng(u64);
impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Spin (polling used rings) for up to 200 µs of guest TSC time, then sleep
/// until a device interrupt (with a safety timeout): a reply usually comes
/// sooner than a PORT_WAIT round trip costs.
fn waiter() -> impl FnMut() {
    let khz = ember_rt::start_info().map_or(0, |i| i.tsc_khz);
    let budget = if khz == 0 { 0 } else { 200 * khz / 1000 };
    let (mut start, mut last) = (0u64, 0u64);
    move || {
        let now = ember_rt::rdtsc();
        // A gap since the last idle call means work happened: a new idle spell.
        if now.wrapping_sub(last) > budget / 10 {
            start = now;
        }
        last = now;
        if now.wrapping_sub(start) < budget {
            core::hint::spin_loop();
        } else {
            ember_rt::wait(10_000);
            last = ember_rt::rdtsc();
            start = last;
        }
    }
}

fn ns_since(t0: u64) -> u64 {
    let khz = ember_rt::start_info().map_or(0, |i| i.tsc_khz);
    if khz == 0 {
        return 0;
    }
    (ember_rt::rdtsc().wrapping_sub(t0) as u128 * 1_000_000 / khz as u128) as u64
}

fn main(info: &'static StartInfo) -> i32 {
    let args: Vec<&str> = info.args().split_whitespace().collect();
    let num = |i: usize| -> Option<u64> { args.get(i).and_then(|a| a.parse().ok()) };
    let (Some(&mode), Some(port)) = (args.first(), num(1)) else {
        println!("vsock: usage: MODE PORT ...");
        return 4;
    };
    let port = port as u32;
    let Some(dev) = info
        .devices()
        .iter()
        .find(|d| d.device_id == device_id::VSOCK)
    else {
        println!("vsock: no vsock device");
        return 4;
    };
    // SAFETY: the VMM announced a virtio-mmio vsock window at this address;
    // nothing else in this guest drives it.
    let mut v = match unsafe { Vsock::new(dev.base as usize, VsockConfig::default()) } {
        Ok(v) => v,
        Err(e) => {
            println!("vsock: init failed: {e}");
            return 4;
        }
    };
    let mut w = waiter();
    let id = match v.connect_blocking(port, &mut w) {
        Ok(id) => id,
        Err(e) if mode == "refused" => {
            println!("vsock: refused ok ({e})");
            return 0;
        }
        Err(e) => {
            println!("vsock: connect to port {port} failed: {e}");
            return 3;
        }
    };
    match mode {
        "refused" => {
            println!("vsock: connected, but nobody should listen on {port}");
            3
        }
        "hello" => hello(&mut v, id, &mut w),
        "bulk" => bulk(&mut v, id, num(2).unwrap_or(0), num(3).unwrap_or(1), &mut w),
        "blast" => {
            match send_stream(&mut v, id, num(2).unwrap_or(0), num(3).unwrap_or(1), &mut w) {
                Ok(sent) => {
                    println!("vsock: blast queued={sent}");
                    ember_rt::exit(0)
                }
                Err(code) => code,
            }
        }
        "sink" => sink(&mut v, id, num(2).unwrap_or(0), &mut w),
        "rtt" => rtt(
            &mut v,
            id,
            num(2).unwrap_or(1000) as usize,
            num(3).unwrap_or(64) as usize,
            &mut w,
        ),
        _ => 4,
    }
}

fn hello(v: &mut Vsock, id: ConnId, w: &mut dyn FnMut()) -> i32 {
    let mut w = w;
    if v.send_all(id, b"hello from guest\n", &mut w).is_err() || v.shutdown(id, shut::SEND).is_err()
    {
        return 3;
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match v.recv_blocking(id, &mut buf, &mut w) {
            Ok(0) => break,
            Ok(n) if reply.len() < 4096 => reply.extend_from_slice(&buf[..n]),
            Ok(_) => return 3,
            Err(_) => return 3,
        }
    }
    println!(
        "vsock: reply={}",
        core::str::from_utf8(&reply)
            .unwrap_or("<not utf-8>")
            .trim_end()
    );
    let _ = v.close_blocking(id, &mut w);
    0
}

/// Sends BYTES of the seeded stream; the count sent, or the exit code.
fn send_stream(
    v: &mut Vsock,
    id: ConnId,
    bytes: u64,
    seed: u64,
    w: &mut dyn FnMut(),
) -> Result<u64, i32> {
    let mut w = w;
    let mut rng = Rng(seed | 1);
    let mut chunk = vec![0u8; 64 * 1024];
    if seed == 0 {
        rng.fill(&mut chunk);
    }
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(chunk.len() as u64) as usize;
        if seed != 0 {
            rng.fill(&mut chunk[..n]);
        }
        if let Err(e) = v.send_all(id, &chunk[..n], &mut w) {
            println!("vsock: bulk send failed after {sent}: {e}");
            return Err(3);
        }
        sent += n as u64;
    }
    Ok(sent)
}

fn bulk(v: &mut Vsock, id: ConnId, bytes: u64, seed: u64, w: &mut dyn FnMut()) -> i32 {
    let t0 = ember_rt::rdtsc();
    let sent = match send_stream(v, id, bytes, seed, w) {
        Ok(sent) => sent,
        Err(code) => return code,
    };
    let mut w = w;
    if v.close_blocking(id, &mut w).is_err() {
        return 3;
    }
    println!("vsock: bulk sent={sent} ns={}", ns_since(t0));
    0
}

fn sink(v: &mut Vsock, id: ConnId, bytes: u64, w: &mut dyn FnMut()) -> i32 {
    let mut w = w;
    let mut buf = vec![0u8; 64 * 1024];
    let t0 = ember_rt::rdtsc();
    let mut got = 0u64;
    while got < bytes {
        match v.recv_blocking(id, &mut buf, &mut w) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(_) => return 3,
        }
    }
    let ns = ns_since(t0);
    let _ = v.close_blocking(id, &mut w);
    println!("vsock: sink got={got} ns={ns}");
    if got == bytes {
        0
    } else {
        3
    }
}

fn rtt(v: &mut Vsock, id: ConnId, rounds: usize, size: usize, w: &mut dyn FnMut()) -> i32 {
    let mut w = w;
    let msg = vec![0x5au8; size];
    let mut buf = vec![0u8; size.max(1)];
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = ember_rt::rdtsc();
        if v.send_all(id, &msg, &mut w).is_err() {
            return 3;
        }
        let mut got = 0;
        while got < size {
            match v.recv_blocking(id, &mut buf[got..], &mut w) {
                Ok(0) | Err(_) => return 3,
                Ok(n) => got += n,
            }
        }
        times.push(ns_since(t0));
    }
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or(0);
    println!(
        "vsock: rtt rounds={rounds} size={size} median_ns={median} min_ns={}",
        times.first().copied().unwrap_or(0)
    );
    let _ = v.close_blocking(id, &mut w);
    0
}
