//! Raw x86 port I/O. The guest runs at CPL3 with RFLAGS.IOPL=3, so `in`/`out`
//! are allowed and each one exits to `ember-vmm`'s port-I/O bus.

/// Writes a byte to `port`.
#[inline]
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no effect on guest memory; IOPL=3 permits it at CPL3.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 32-bit value to `port`.
#[inline]
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for outb.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from `port`.
#[inline]
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for outb.
    unsafe {
        core::arch::asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}
