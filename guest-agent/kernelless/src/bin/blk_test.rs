//! Test guest for virtio-block. Arguments (the VM command line) pick a mode;
//! it drives the first block device in the start-info page and reports on
//! the serial console, one `blk:` line per result:
//! - `rw BYTES`: writes BYTES of fresh random data from sector 0, flushes,
//!   reads it back, prints `blk: rw bytes=N sha256=HEX readback=ok`;
//! - `ro`: expects a read-only drive: a write must fail with IOERR, an
//!   unknown request type with UNSUPP, a read past the end with IOERR;
//!   prints the SHA-256 of the first 4 KiB;
//! - `flush BYTES`: writes and flushes, prints `blk: flushed sha256=HEX`,
//!   then parks until the host kills the VMM;
//! - `bench BYTES [w]`: writes then reads BYTES in 1 MiB requests and prints
//!   `blk: bench write_ns=.. read_ns=..` (guest TSC time); `w`: write only;
//! - `hostile`: sends chains a hostile guest would (data outside guest
//!   memory, lying lengths, wrong directions, no status byte), checks each
//!   comes back refused, then that a normal 1 MiB write/read still works;
//!   prints `blk: hostile ok`.
//!
//! Exit codes: 0 success, 3 a check failed, 4 bad arguments / no device.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use ember_abi::guest::device_id;
use ember_guest::virtio::block::{BlockDevice, BlockError};
use ember_guest::virtio::queue::Buf;
use ember_rt::{println, StartInfo};
use sha2::{Digest, Sha256};

ember_rt::entry!(main);

const CHUNK: usize = 1 << 20;

fn hex(d: &[u8]) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::new();
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// xorshift64*, seeded from the VM's random seed: fresh data every run.
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

fn wait() {
    ember_rt::wait(1000);
}

fn main(info: &'static StartInfo) -> i32 {
    let mut args = info.args().split_whitespace();
    let mode = args.next().unwrap_or("");
    let bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let write_only = args.next() == Some("w");
    let Some(dev) = info
        .devices()
        .iter()
        .find(|d| d.device_id == device_id::BLOCK)
    else {
        println!("blk: no block device");
        return 4;
    };
    // SAFETY: the VMM announced a virtio-mmio block window at this address;
    // nothing else in this guest drives it.
    let mut blk = match unsafe { BlockDevice::new(dev.base as usize) } {
        Ok(b) => b,
        Err(e) => {
            println!("blk: init failed: {e}");
            return 3;
        }
    };
    let id = blk.id(&mut wait).unwrap_or([0; 20]);
    let id_len = id.iter().position(|&b| b == 0).unwrap_or(20);
    println!(
        "blk: id={} sectors={} ro={} flush={}",
        core::str::from_utf8(&id[..id_len]).unwrap_or("?"),
        blk.capacity(),
        blk.read_only(),
        blk.has_flush()
    );
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&info.random_seed[..8]);
    let mut rng = Rng(u64::from_le_bytes(seed) | 1);
    let fits = bytes > 0 && bytes % 512 == 0 && (bytes as u64 / 512) <= blk.capacity();
    let result = match mode {
        "rw" if fits => rw(&mut blk, &mut rng, bytes),
        "ro" => ro(&mut blk),
        "flush" if fits => {
            let sum =
                write_all(&mut blk, &mut rng, bytes).and_then(|s| blk.flush(&mut wait).map(|_| s));
            match sum {
                Ok(s) => {
                    println!("blk: flushed bytes={bytes} sha256={}", hex(&s));
                    loop {
                        ember_rt::park();
                    }
                }
                Err(e) => Err(e),
            }
        }
        "bench" if fits => bench(&mut blk, &mut rng, bytes, write_only),
        "hostile" => hostile(&mut blk, &mut rng, info.mem_size),
        _ => {
            println!("blk: usage: rw|ro|flush|bench BYTES (multiple of 512, within the drive)");
            return 4;
        }
    };
    match result {
        Ok(true) => 0,
        Ok(false) => 3,
        Err(e) => {
            println!("blk: error: {e}");
            3
        }
    }
}

/// Writes `bytes` of random data from sector 0; returns its SHA-256.
fn write_all(blk: &mut BlockDevice, rng: &mut Rng, bytes: usize) -> Result<[u8; 32], BlockError> {
    let mut buf = vec![0u8; CHUNK.min(bytes)];
    let mut h = Sha256::new();
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(buf.len());
        rng.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        blk.write((done / 512) as u64, &buf[..n], &mut wait)?;
        done += n;
    }
    Ok(h.finalize().into())
}

fn read_sum(blk: &mut BlockDevice, bytes: usize) -> Result<[u8; 32], BlockError> {
    let mut buf = vec![0u8; CHUNK.min(bytes)];
    let mut h = Sha256::new();
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(buf.len());
        blk.read((done / 512) as u64, &mut buf[..n], &mut wait)?;
        h.update(&buf[..n]);
        done += n;
    }
    Ok(h.finalize().into())
}

fn rw(blk: &mut BlockDevice, rng: &mut Rng, bytes: usize) -> Result<bool, BlockError> {
    let wrote = write_all(blk, rng, bytes)?;
    if blk.has_flush() {
        blk.flush(&mut wait)?;
    }
    let read = read_sum(blk, bytes)?;
    let ok = wrote == read;
    println!(
        "blk: rw bytes={bytes} sha256={} readback={}",
        hex(&wrote),
        if ok { "ok" } else { "MISMATCH" }
    );
    Ok(ok)
}

fn ro(blk: &mut BlockDevice) -> Result<bool, BlockError> {
    let mut ok = blk.read_only();
    let mut first = vec![0u8; 4096];
    blk.read(0, &mut first, &mut wait)?;
    let write = blk.write(0, &first[..512], &mut wait);
    let unsupported = blk.raw_request(99, 0, &mut [], &mut wait);
    let mut sector = [0u8; 512];
    let past_end = blk.read(blk.capacity(), &mut sector, &mut wait);
    ok &= write == Err(BlockError::IoErr);
    ok &= unsupported == Err(BlockError::Unsupported);
    ok &= past_end == Err(BlockError::IoErr);
    let again: Vec<u8> = {
        let mut b = vec![0u8; 4096];
        blk.read(0, &mut b, &mut wait)?;
        b
    };
    ok &= again == first;
    println!(
        "blk: ro write={:?} unsupported={:?} past_end={:?} head_sha256={} {}",
        write,
        unsupported,
        past_end,
        hex(&Sha256::digest(&first)),
        if ok { "ok" } else { "FAILED" }
    );
    Ok(ok)
}

/// Device throughput: one random 1 MiB buffer written over and over, then
/// read back; no hashing inside the timed loops.
fn bench(
    blk: &mut BlockDevice,
    rng: &mut Rng,
    bytes: usize,
    write_only: bool,
) -> Result<bool, BlockError> {
    let mut buf = vec![0u8; CHUNK.min(bytes)];
    rng.fill(&mut buf);
    let sweep = |blk: &mut BlockDevice, buf: &mut [u8], write: bool| -> Result<u64, BlockError> {
        let t = ember_rt::now_ns();
        let mut done = 0;
        while done < bytes {
            let n = (bytes - done).min(buf.len());
            let sector = (done / 512) as u64;
            if write {
                blk.write(sector, &buf[..n], &mut wait)?;
            } else {
                blk.read(sector, &mut buf[..n], &mut wait)?;
            }
            done += n;
        }
        Ok(ember_rt::now_ns() - t)
    };
    let write_ns = sweep(blk, &mut buf, true)?;
    if write_only {
        println!("blk: bench bytes={bytes} write_ns={write_ns}");
        return Ok(true);
    }
    let read_ns = sweep(blk, &mut buf, false)?;
    println!("blk: bench bytes={bytes} write_ns={write_ns} read_ns={read_ns}");
    Ok(true)
}

/// Chains a hostile guest would send. Each must come back (never hang the
/// device), with IOERR in the status byte where there is one.
fn hostile(blk: &mut BlockDevice, rng: &mut Rng, mem_size: u64) -> Result<bool, BlockError> {
    let mut page = vec![0u8; 8192];
    let base = page.as_mut_ptr() as u64;
    let hdr = |kind: u32| {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h
    };
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
    let (h, data, status) = (base, base + 512, base + 4096);
    let cases: [(&str, u32, Vec<Buf>); 7] = [
        (
            "data outside guest memory",
            1,
            vec![rd(h, 16), rd(mem_size + 4096, 512), wr(status, 1)],
        ),
        (
            "data wrapping the address space",
            1,
            vec![rd(h, 16), rd(u64::MAX - 100, 512), wr(status, 1)],
        ),
        (
            "lying length",
            0,
            vec![rd(h, 16), wr(data, 0xffff_f000), wr(status, 1)],
        ),
        (
            "odd length",
            1,
            vec![rd(h, 16), rd(data, 100), wr(status, 1)],
        ),
        (
            "read into device-readable data",
            0,
            vec![rd(h, 16), rd(data, 512), wr(status, 1)],
        ),
        (
            "header device-writable",
            0,
            vec![wr(h, 16), wr(data, 512), wr(status, 1)],
        ),
        (
            "readable after writable",
            1,
            vec![rd(h, 16), wr(status, 1), rd(data, 512)],
        ),
    ];
    let mut ok = true;
    for (what, kind, bufs) in cases.iter() {
        page[..16].copy_from_slice(&hdr(*kind));
        page[4096] = 0xee;
        let len = blk.raw_chain(bufs, &mut wait)?;
        // SAFETY: `page` is ours; the device wrote the status byte (or not)
        // before returning the chain; volatile because the compiler cannot see it.
        let st = unsafe { core::ptr::read_volatile(page.as_ptr().add(4096)) };
        let good = st == 1 || (st == 0xee && len == 0);
        ok &= good;
        if !good {
            println!("blk: hostile case {what:?}: status {st:#x} len {len}");
        }
    }
    // No status byte at all: the chain still comes back, with length 0.
    page[..16].copy_from_slice(&hdr(0));
    let len = blk.raw_chain(&[rd(h, 16)], &mut wait)?;
    ok &= len == 0;
    // The device still works.
    ok &= rw(blk, rng, 1 << 20)?;
    println!("blk: hostile {}", if ok { "ok" } else { "FAILED" });
    Ok(ok)
}
