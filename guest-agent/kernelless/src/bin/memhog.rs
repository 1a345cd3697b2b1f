//! Isolation test guest: touches the number of MiB given as its command line
//! (one write per 4 KiB page of its free heap area), prints how much it
//! touched, then exits 0. Under a cgroup memory limit smaller than that, the
//! host kills the VMM before the line appears (tests/tests/isolation_limits.rs).
#![no_std]
#![no_main]

use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

const PAGE: u64 = 4096;

fn main(info: &'static StartInfo) -> i32 {
    let mib: u64 = info.args().trim().parse().unwrap_or(0);
    let want = mib << 20;
    if want > info.heap_end.saturating_sub(info.heap_start) {
        println!("memhog: {mib} MiB does not fit the heap");
        return 2;
    }
    let mut addr = info.heap_start.next_multiple_of(PAGE);
    let end = addr + want;
    while addr < end {
        // SAFETY: [heap_start, heap_end) is free guest RAM, identity-mapped
        // and user-accessible (StartInfo contract); nothing else uses it.
        unsafe { core::ptr::write_volatile(addr as *mut u8, 1) };
        addr += PAGE;
    }
    println!("memhog: touched {mib} MiB");
    0
}
