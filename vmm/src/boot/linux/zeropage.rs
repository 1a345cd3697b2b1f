//! The zero page (`struct boot_params`, Documentation/arch/x86/zero-page.rst)
//! for the 64-bit boot protocol: the setup header (copied from a bzImage, or
//! synthesised for an ELF vmlinux), command line pointer, initrd, e820 map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};

use super::kernel::{KernelKind, LoadedKernel};
use super::layout::{MemRange, CMDLINE_ADDR};
use super::LinuxBootError;

/// `boot_flag` magic (0x1fe).
pub const BOOT_FLAG: u16 = 0xaa55;
/// `header` magic "HdrS" (0x202).
pub const HDRS: u32 = 0x5372_6448;
/// `type_of_loader` for a loader without an assigned id (boot.rst).
pub const LOADER_UNDEFINED: u8 = 0xff;
/// loadflags: protected-mode code is loaded at 0x100000.
pub const LOADED_HIGH: u8 = 1 << 0;
/// Alignment a relocatable kernel needs (the default CONFIG_PHYSICAL_ALIGN).
const KERNEL_ALIGNMENT: u32 = 0x0100_0000;
/// Most e820 entries the zero page holds (E820_MAX_ENTRIES_ZEROPAGE).
pub const E820_MAX: usize = 128;

/// Where the initrd was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}

/// Builds the zero page. `cmdline_bytes` counts the terminating NUL.
pub fn build(
    kernel: &LoadedKernel,
    cmdline_bytes: usize,
    initrd: Option<InitrdPlacement>,
    e820: &[MemRange],
) -> Result<boot_params, LinuxBootError> {
    let mut params = boot_params::default();
    match kernel.kind {
        KernelKind::BzImage { header, .. } => {
            // boot.rst: the loader copies the kernel's setup header and then
            // fills in the fields marked "write".
            params.hdr = header;
        }
        KernelKind::Elf { .. } => {
            params.hdr.boot_flag = BOOT_FLAG;
            params.hdr.header = HDRS;
            params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
            params.hdr.cmdline_size = cmdline_bytes as u32;
        }
    }
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.loadflags |= LOADED_HIGH;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.ext_cmd_line_ptr = (CMDLINE_ADDR >> 32) as u32;
    if let Some(rd) = initrd {
        params.hdr.ramdisk_image = rd.addr as u32;
        params.hdr.ramdisk_size = rd.size as u32;
        params.ext_ramdisk_image = (rd.addr >> 32) as u32;
        params.ext_ramdisk_size = (rd.size >> 32) as u32;
    }
    if e820.len() > E820_MAX {
        return Err(LinuxBootError::TooManyMemoryRanges(e820.len()));
    }
    let mut table = params.e820_table;
    for (slot, r) in table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: r.addr,
            size: r.size,
            r#type: r.kind,
        };
    }
    params.e820_table = table;
    params.e820_entries = e820.len() as u8;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::linux::layout::E820_RAM;
    use vm_memory::ByteValued;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    fn e820() -> Vec<MemRange> {
        crate::boot::linux::layout::test_map(0x7f00000)
    }

    /// Checks the fields at the byte offsets zero-page.rst and boot.rst give,
    /// independent of the Rust struct layout.
    #[test]
    fn elf_zero_page_at_protocol_offsets() {
        let k = LoadedKernel {
            kind: KernelKind::Elf {
                entry64: 0x1000000,
                pvh_entry: None,
            },
            start: 0x1000000,
            end: 0x1800000,
        };
        let rd = InitrdPlacement {
            addr: 0x7ff0000,
            size: 0x1234,
        };
        let p = build(&k, 14, Some(rd), &e820()).unwrap();
        let b = p.as_slice();
        assert_eq!(b.len(), 4096);
        assert_eq!(b[0x1e8], 3, "e820_entries");
        assert_eq!(u16_at(b, 0x1fe), 0xaa55, "boot_flag");
        assert_eq!(u32_at(b, 0x202), 0x5372_6448, "HdrS");
        assert_eq!(b[0x210], 0xff, "type_of_loader");
        assert_eq!(b[0x211] & 1, 1, "loadflags LOADED_HIGH");
        assert_eq!(u32_at(b, 0x218), 0x7ff0000, "ramdisk_image");
        assert_eq!(u32_at(b, 0x21c), 0x1234, "ramdisk_size");
        assert_eq!(u32_at(b, 0x228), 0x20000, "cmd_line_ptr");
        assert_eq!(u32_at(b, 0x230), 0x0100_0000, "kernel_alignment");
        assert_eq!(u32_at(b, 0x238), 14, "cmdline_size");
        assert_eq!(u32_at(b, 0x0c0), 0, "ext_ramdisk_image");
        assert_eq!(u32_at(b, 0x0c8), 0, "ext_cmd_line_ptr");
        for (i, r) in e820().iter().enumerate() {
            let o = 0x2d0 + 20 * i;
            assert_eq!(
                (u64_at(b, o), u64_at(b, o + 8), u32_at(b, o + 16)),
                (r.addr, r.size, r.kind)
            );
        }
        assert_eq!(u64_at(b, 0x2d0 + 60), 0, "no stray entry");
    }

    #[test]
    fn bzimage_header_is_copied_then_written() {
        let mut header = linux_loader::loader::bootparam::setup_header {
            setup_sects: 27,
            version: 0x020f,
            cmdline_size: 4095,
            initrd_addr_max: 0x7fff_ffff,
            xloadflags: 1,
            ..Default::default()
        };
        header.header = HDRS;
        let k = LoadedKernel {
            kind: KernelKind::BzImage {
                entry64: 0x100200,
                header,
            },
            start: 0x100000,
            end: 0x900000,
        };
        let p = build(&k, 10, None, &e820()).unwrap();
        let b = p.as_slice();
        assert_eq!(b[0x1f1], 27, "setup_sects copied");
        assert_eq!(u16_at(b, 0x206), 0x020f, "version copied");
        assert_eq!(u32_at(b, 0x238), 4095, "cmdline_size is the kernel's");
        assert_eq!(b[0x210], 0xff);
        assert_eq!(u32_at(b, 0x218), 0, "no initrd");
    }

    #[test]
    fn too_many_ranges() {
        let k = LoadedKernel {
            kind: KernelKind::Elf {
                entry64: 0,
                pvh_entry: None,
            },
            start: 0,
            end: 0,
        };
        let many = vec![
            MemRange {
                addr: 0,
                size: 1,
                kind: E820_RAM
            };
            129
        ];
        assert!(matches!(
            build(&k, 1, None, &many),
            Err(LinuxBootError::TooManyMemoryRanges(129))
        ));
    }
}
