//! The kernel-less null guest of the boot benchmark: writes 123 to the boot
//! timer (MMIO 0xC000_0000, logged by `ember-vmm` as `Guest-boot-time`) and exits 0.
#![no_std]
#![no_main]

use ember_rt::StartInfo;

ember_rt::entry!(main);

/// Firecracker's boot-timer device address and the magic byte.
const BOOT_TIMER: usize = 0xC000_0000;
const BOOT_DONE: u8 = 123;

fn main(_info: &'static StartInfo) -> i32 {
    // SAFETY: the VMM maps the MMIO hole (user pages) and emulates this byte.
    unsafe { core::ptr::write_volatile(BOOT_TIMER as *mut u8, BOOT_DONE) };
    0
}
