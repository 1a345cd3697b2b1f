//! Test guest: faults on purpose, according to its arguments:
//! `unmapped` reads an address no page maps, `ud2` executes an invalid opcode,
//! `panic` panics (exit code 101); anything else exits 3.
#![no_std]
#![no_main]

use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

fn main(info: &'static StartInfo) -> i32 {
    let what = info.args().trim();
    println!("fault: {what}");
    match what {
        "unmapped" => {
            // 1 TiB: far beyond guest memory and the MMIO hole, so no page maps it.
            let p = 0x100_0000_0000u64 as *const u64;
            // SAFETY: deliberately not safe: this read must fault, ending the VM.
            let v = unsafe { core::ptr::read_volatile(p) };
            v as i32
        }
        "ud2" => {
            // SAFETY: deliberately raises #UD, ending the VM.
            unsafe { core::arch::asm!("ud2") };
            0
        }
        "panic" => panic!("asked to"),
        _ => 3,
    }
}
