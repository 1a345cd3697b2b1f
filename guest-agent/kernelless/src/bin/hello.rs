//! Test guest: prints a greeting with its arguments and vCPU count, exits 0.
#![no_std]
#![no_main]

use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

fn main(info: &'static StartInfo) -> i32 {
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
