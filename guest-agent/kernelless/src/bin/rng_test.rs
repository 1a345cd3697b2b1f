//! Test guest for virtio-rng (the entropy device). Arguments (the VM
//! command line) pick a mode; it drives the first rng device in the
//! start-info page and reports on the serial console, one `rng:` line per
//! result:
//! - `read SIZE COUNT`: COUNT requests of SIZE bytes; prints `rng: start`,
//!   then `rng: read requests=N bytes=B zero_requests=Z repeats=R
//!   sha256=HEX ns=T` (R: requests whose bytes equal the one before; T:
//!   guest time from the first request to the last answer);
//! - `hostile`: sends chains a hostile guest would (a device-readable
//!   buffer, one outside guest memory, one wrapping the address space, a
//!   writable buffer followed by a readable one, a zero-length one), checks
//!   each comes back with length 0 and the readable buffer unchanged, then
//!   that a normal read still works; prints `rng: hostile ok`.
//!
//! Exit codes: 0 success, 3 a check failed, 4 bad arguments / no device.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use ember_abi::guest::device_id;
use ember_guest::virtio::queue::Buf;
use ember_guest::virtio::rng::{RngDevice, RngError};
use ember_rt::{println, StartInfo};
use sha2::{Digest, Sha256};

ember_rt::entry!(main);

fn hex(d: &[u8]) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::new();
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn wait() {
    ember_rt::wait(1000);
}

fn main(info: &'static StartInfo) -> i32 {
    let mut args = info.args().split_whitespace();
    let mode = args.next().unwrap_or("");
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let Some(dev) = info
        .devices()
        .iter()
        .find(|d| d.device_id == device_id::RNG)
    else {
        println!("rng: no entropy device");
        return 4;
    };
    // SAFETY: the VMM announced a virtio-mmio rng window at this address;
    // nothing else in this guest drives it.
    let mut rng = match unsafe { RngDevice::new(dev.base as usize) } {
        Ok(r) => r,
        Err(e) => {
            println!("rng: init failed: {e}");
            return 3;
        }
    };
    let result = match mode {
        "read" if size > 0 && count > 0 => read(&mut rng, size, count),
        "hostile" => hostile(&mut rng, info.mem_size),
        _ => {
            println!("rng: usage: read SIZE COUNT | hostile");
            return 4;
        }
    };
    match result {
        Ok(true) => 0,
        Ok(false) => 3,
        Err(e) => {
            println!("rng: error: {e}");
            3
        }
    }
}

fn read(rng: &mut RngDevice, size: usize, count: usize) -> Result<bool, RngError> {
    let mut buf = vec![0u8; size];
    let mut prev: Vec<u8> = Vec::new();
    let (mut bytes, mut zero, mut repeats) = (0usize, 0usize, 0usize);
    let mut sum = Sha256::new();
    println!("rng: start");
    let t0 = ember_rt::now_ns();
    for _ in 0..count {
        buf.fill(0);
        let n = rng.read(&mut buf, &mut wait)?;
        let got = &buf[..n];
        bytes += n;
        if n == 0 || got.iter().all(|&b| b == 0) {
            zero += 1;
        }
        if !prev.is_empty() && prev.as_slice() == got {
            repeats += 1;
        }
        sum.update(got);
        prev.clear();
        prev.extend_from_slice(got);
    }
    let ns = ember_rt::now_ns().saturating_sub(t0);
    println!(
        "rng: read requests={count} bytes={bytes} zero_requests={zero} repeats={repeats} sha256={} ns={ns}",
        hex(&sum.finalize())
    );
    Ok(zero == 0 && repeats == 0 && bytes == size * count)
}

fn hostile(rng: &mut RngDevice, mem_size: u64) -> Result<bool, RngError> {
    let mut page = vec![0x5au8; 8192];
    let base = page.as_mut_ptr() as u64;
    let rd = |addr: u64, len: u32| Buf {
        addr,
        len,
        device_writes: false,
    };
    let wr = |addr: u64, len: u32| Buf {
        addr,
        len,
        device_writes: true,
    };
    let cases: [(&str, Vec<Buf>); 6] = [
        ("device-readable buffer", vec![rd(base, 64)]),
        ("outside guest memory", vec![wr(mem_size + 4096, 64)]),
        ("wrapping the address space", vec![wr(u64::MAX - 31, 64)]),
        (
            "readable after writable",
            vec![wr(base + 4096, 64), rd(base, 64)],
        ),
        ("lying length", vec![wr(base, 0xffff_f000)]),
        ("zero length", vec![wr(base, 0)]),
    ];
    let mut ok = true;
    for (what, bufs) in cases.iter() {
        let len = rng.raw_chain(bufs, &mut wait)?;
        // SAFETY: `page` is ours; read through volatile loads because the
        // device's writes (if any) are invisible to the compiler.
        let untouched = (0..8192).all(|i| unsafe {
            core::ptr::read_volatile(page.as_ptr().add(i)) == 0x5a
        });
        let good = len == 0 && untouched;
        println!("rng: case {what}: len={len} untouched={untouched}");
        ok &= good;
    }
    let mut buf = [0u8; 64];
    let n = rng.read(&mut buf, &mut wait)?;
    let fine = n == 64 && buf.iter().any(|&b| b != 0);
    println!("rng: after hostile read={n} ok={fine}");
    ok &= fine;
    if ok {
        println!("rng: hostile ok");
    }
    core::hint::black_box(&mut page);
    Ok(ok)
}
