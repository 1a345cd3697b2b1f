//! Isolation test guest: counts the words of its free heap that are not zero
//! (memory left by anyone else would show here), fills that area with a
//! marker, counts the marker words back (so the scan is known to read guest
//! memory), and prints `memscan: words=N nonzero=Z marked=M`. The command
//! line is how many MiB of heap to scan (default 16). Run twice on one host,
//! the second VM must find nothing of the first (tests/isolation promise 4).
#![no_std]
#![no_main]

use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

/// "EMBER-MK" as a little-endian word.
const MARKER: u64 = u64::from_le_bytes(*b"EMBER-MK");

fn main(info: &'static StartInfo) -> i32 {
    let mib: u64 = info.args().trim().parse().unwrap_or(16);
    let start = info.heap_start.next_multiple_of(8);
    let end = start.saturating_add(mib << 20).min(info.heap_end);
    let words = (end.saturating_sub(start) / 8) as usize;
    // SAFETY: [heap_start, heap_end) is free guest RAM, identity-mapped and
    // user-accessible (StartInfo contract); this guest never allocates, so
    // nothing else uses it.
    let heap = unsafe { core::slice::from_raw_parts_mut(start as *mut u64, words) };
    let nonzero = heap
        .iter()
        // SAFETY: `w` is a valid, aligned word of the slice above; volatile
        // so the compiler cannot assume what fresh memory holds.
        .filter(|w| unsafe { core::ptr::read_volatile(*w) } != 0)
        .count();
    for w in heap.iter_mut() {
        // SAFETY: `w` is a valid, aligned word of the slice above.
        unsafe { core::ptr::write_volatile(w, MARKER) };
    }
    let marked = heap
        .iter()
        // SAFETY: as above.
        .filter(|w| unsafe { core::ptr::read_volatile(*w) } == MARKER)
        .count();
    println!("memscan: words={words} nonzero={nonzero} marked={marked}");
    0
}
