//! Snapshot test guest (tests/tests/snapshot.rs). Command line:
//! - `compute N`: draws a random number, prints `computing`, runs N rounds
//!   of an LCG, then prints `result=<hex> random=<hex> generation=<n>` (the
//!   draw after the loop, so a snapshot taken mid-loop shows whether clones
//!   reseed);
//! - `ready [quiet]`: draws a random number, prints `ready`, spins until a
//!   snapshot load bumps the generation, then prints `random=<hex>
//!   generation=<n>` (`quiet`: exits at once with code 7 instead: the first
//!   port write after a load, for the load benchmark);
//! - `exit`: exits with code 7 at once (the same guest's fresh-boot peer);
//! - `touch MIB`: writes MIB MiB of heap, prints `touched`, spins until a
//!   load, reads the same pages back (no writes: they stay shared with the
//!   memory file), prints `resumed sum=<n>`, sleeps 20 s (the test measures
//!   it meanwhile, then kills it), exits 0.
#![no_std]
#![no_main]

use ember_rt::random::{generation, Random};
use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

const PAGE: u64 = 4096;

fn main(info: &'static StartInfo) -> i32 {
    let mut args = info.args().split_whitespace();
    let mode = args.next().unwrap_or("");
    let arg = args.next().unwrap_or("");
    match mode {
        "compute" => compute(arg.parse().unwrap_or(0)),
        "ready" => ready(arg == "quiet"),
        "exit" => 7,
        "touch" => touch(info, arg.parse().unwrap_or(0)),
        _ => {
            println!("snap_guest: unknown mode {mode:?}");
            2
        }
    }
}

fn compute(rounds: u64) -> i32 {
    let mut rng = Random::new();
    let before = rng.u64();
    println!("computing");
    let mut x = 0u32;
    for _ in 0..rounds {
        x = x.wrapping_mul(0x41c6_4e6d).wrapping_add(12345);
        core::hint::black_box(x);
    }
    let after = rng.u64();
    println!(
        "result={x:x} before={before:x} random={after:x} generation={}",
        generation()
    );
    0
}

fn wait_for_load() {
    while generation() == 0 {
        core::hint::spin_loop();
    }
}

fn ready(quiet: bool) -> i32 {
    let mut rng = Random::new();
    let before = rng.u64();
    println!("ready before={before:x}");
    wait_for_load();
    if quiet {
        return 7;
    }
    println!("random={:x} generation={}", rng.u64(), generation());
    0
}

fn touch(info: &StartInfo, mib: u64) -> i32 {
    let start = info.heap_start.next_multiple_of(PAGE);
    let end = start + (mib << 20);
    if end > info.heap_end {
        println!("snap_guest: {mib} MiB does not fit the heap");
        return 2;
    }
    for addr in (start..end).step_by(PAGE as usize) {
        // SAFETY: [heap_start, heap_end) is free guest RAM, identity-mapped
        // and user-accessible (StartInfo contract); nothing else uses it.
        unsafe { core::ptr::write_volatile(addr as *mut u64, addr) };
    }
    println!("touched");
    wait_for_load();
    let mut sum = 0u64;
    for addr in (start..end).step_by(PAGE as usize) {
        // SAFETY: as above; read only.
        sum = sum.wrapping_add(unsafe { core::ptr::read_volatile(addr as *const u64) });
    }
    println!("resumed sum={sum}");
    ember_rt::sleep(20_000_000);
    0
}
