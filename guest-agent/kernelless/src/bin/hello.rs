//! Test guest: prints a greeting with its arguments and vCPU count, exits 0
//! (3 if the allocator handed out a dirty block from `alloc_zeroed`).
#![no_std]
#![no_main]

use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

fn main(info: &'static StartInfo) -> i32 {
    if !zeroed_alloc_check() {
        println!("hello: alloc_zeroed returned a dirty block");
        return 3;
    }
    let mut v = alloc_check();
    v.push(info.vcpu_count);
    println!(
        "hello from ember: args=[{}] vcpus={} mem={}MiB",
        info.args(),
        v[1],
        info.mem_size >> 20
    );
    0
}

extern crate alloc;

fn alloc_check() -> alloc::vec::Vec<u32> {
    let mut v = alloc::vec::Vec::with_capacity(1);
    v.push(7);
    v
}

/// `alloc_zeroed` skips writing blocks fresh from the heap (they are zero);
/// a reused block must still come back zeroed.
fn zeroed_alloc_check() -> bool {
    let fresh = alloc::vec![0u8; 20_000];
    let fresh_ok = core::hint::black_box(&fresh).iter().all(|b| *b == 0);
    let dirty = core::hint::black_box(alloc::vec![0xa5u8; 20_000]);
    drop(dirty); // its block goes to the free list of its size class
    let reused = alloc::vec![0u8; 20_000];
    fresh_ok && core::hint::black_box(&reused).iter().all(|b| *b == 0)
}
