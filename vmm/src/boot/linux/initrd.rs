//! Initrd placement: page-aligned, as high as possible below both the end of
//! low RAM and the kernel's `initrd_addr_max`, and above the kernel (boot.rst:
//! "the initrd should typically be located as high in memory as possible").

use super::LinuxBootError;

/// Page size the initrd start is aligned to.
const PAGE: u64 = 4096;
/// `initrd_addr_max` of x86-64 kernels (arch/x86/boot/header.S), used for ELF
/// vmlinux images, which carry no setup header.
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;

/// Where an initrd of `size` bytes goes: the highest page-aligned address with
/// `addr + size - 1 <= addr_max`, `addr + size <= ram_end` and
/// `addr >= kernel_end`.
pub fn place(
    size: u64,
    kernel_end: u64,
    ram_end: u64,
    addr_max: u64,
) -> Result<u64, LinuxBootError> {
    let limit = ram_end.min(addr_max.saturating_add(1));
    let too_large = || LinuxBootError::InitrdTooLarge {
        size,
        room: limit.saturating_sub(kernel_end),
    };
    if size == 0 {
        return Err(LinuxBootError::InitrdEmpty);
    }
    let addr = limit.checked_sub(size).ok_or_else(too_large)? & !(PAGE - 1);
    if addr < kernel_end.next_multiple_of(PAGE) {
        return Err(too_large());
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_high_aligned_and_above_the_kernel() {
        let a = place(10_000, 0x200_0000, 128 << 20, DEFAULT_INITRD_ADDR_MAX).unwrap();
        assert_eq!(a % 4096, 0);
        assert!(a + 10_000 <= 128 << 20);
        assert!(a + 4096 + 10_000 > 128 << 20, "as high as possible");
        // initrd_addr_max below the end of RAM wins.
        let a = place(4096, 0x100_0000, 4 << 30, 0x37ff_ffff).unwrap();
        assert_eq!(a, 0x3800_0000 - 4096);
    }

    #[test]
    fn too_large_or_empty_is_an_error() {
        assert!(matches!(
            place(200 << 20, 0x100_0000, 128 << 20, DEFAULT_INITRD_ADDR_MAX),
            Err(LinuxBootError::InitrdTooLarge { .. })
        ));
        // Would fit in RAM but overlap the kernel.
        assert!(matches!(
            place(120 << 20, 0x100_0000, 128 << 20, DEFAULT_INITRD_ADDR_MAX),
            Err(LinuxBootError::InitrdTooLarge { .. })
        ));
        assert!(matches!(
            place(0, 0x100_0000, 128 << 20, 0x7fff_ffff),
            Err(LinuxBootError::InitrdEmpty)
        ));
    }
}
