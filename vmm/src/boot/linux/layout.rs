//! The guest-physical memory map of a Linux (or PVH) boot: where every boot
//! structure lives below 1 MiB, and the e820 map built from guest memory.
//!
//! ```text
//! 0x0000_0500  boot GDT (null, code32 0x08, code64 0x10, data 0x18, TSS 0x20 (16 bytes))
//! 0x0000_0540  boot IDT (empty; the kernel installs its own)
//! 0x0000_6000  PVH hvm_start_info, then one hvm_modlist_entry (initrd)
//! 0x0000_6100  PVH memmap (hvm_memmap_table_entry[])
//! 0x0000_7000  zero page (boot_params, 4 KiB)
//! 0x0000_8ff0  boot stack top (rsp/rbp of the 64-bit entry)
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four PDs: 0..4 GiB identity, 2 MiB pages
//! 0x0002_0000  kernel command line (NUL-terminated)
//! 0x0009_fc00  EBDA: MP floating pointer + MP configuration table
//! 0x0010_0000  HIMEM: the kernel (vmlinux at its p_paddr, bzImage at code32_start)
//! ...          initrd: page-aligned, as high as initrd_addr_max and RAM allow
//! ```

use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Boot GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Boot IDT (one zero descriptor).
pub const IDT_ADDR: u64 = 0x540;
/// PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH module list (one entry: the initrd).
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH memory map table.
pub const PVH_MEMMAP_ADDR: u64 = 0x6100;
/// Room for PVH memmap entries before the zero page (24 bytes each).
pub const PVH_MEMMAP_MAX: usize = ((ZERO_PAGE_ADDR - PVH_MEMMAP_ADDR) / 24) as usize;
/// The zero page (`struct boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Top of the boot stack for the 64-bit entry.
pub const BOOT_STACK_TOP: u64 = 0x8ff0;
/// Page-map level 4.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First of the four page directories (one per GiB).
pub const PD_ADDR: u64 = 0xb000;
/// How many GiB the boot page tables identity-map.
pub const IDENTITY_MAP_GIB: u64 = 4;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Command-line limit when the kernel does not state one (Linux's x86
/// COMMAND_LINE_SIZE, terminating NUL included).
pub const CMDLINE_DEFAULT_MAX: usize = 2048;
/// Extended BIOS data area: the MP table goes here, where Linux scans first.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of the BIOS/VGA hole reported reserved up to `HIMEM_START`.
pub const HIMEM_START: u64 = 0x10_0000;
/// Local APIC MMIO base.
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// I/O APIC MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// One e820 / PVH memmap range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRange {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The e820 map for `mem`: RAM below the EBDA, the reserved EBDA/VGA/BIOS
/// hole up to 1 MiB, then every guest memory region above 1 MiB as RAM. The
/// map is derived from the regions themselves, so whatever layout the VM core
/// picks around the 32-bit MMIO gap is reported exactly. `None` if memory does
/// not cover `[0, 1 MiB)` (the boot structures need it).
pub fn e820_map(mem: &GuestMemoryMmap) -> Option<Vec<MemRange>> {
    let low = mem.find_region(vm_memory::GuestAddress(0))?;
    if low.start_addr().raw_value() != 0 || low.len() < HIMEM_START {
        return None;
    }
    let mut map = vec![
        MemRange {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemRange {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIMEM_START);
        let end = region.start_addr().raw_value().saturating_add(region.len());
        if end > start {
            map.push(MemRange {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map.sort_by_key(|r| r.addr);
    Some(map)
}

/// End (exclusive) of the RAM that is contiguous from address 0: the initrd and
/// the kernel must fit below it.
pub fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    let mut end = 0u64;
    loop {
        match mem.find_region(vm_memory::GuestAddress(end)) {
            Some(r) => end = r.start_addr().raw_value().saturating_add(r.len()),
            None => return end,
        }
    }
}

/// The e820 map of a VM with one RAM region of `1 MiB + above_1m` bytes
/// (shared by the structure tests).
#[cfg(test)]
pub fn test_map(above_1m: u64) -> Vec<MemRange> {
    vec![
        MemRange {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemRange {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
        MemRange {
            addr: HIMEM_START,
            size: above_1m,
            kind: E820_RAM,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn mem(ranges: &[(u64, usize)]) -> GuestMemoryMmap {
        let r: Vec<_> = ranges.iter().map(|&(a, s)| (GuestAddress(a), s)).collect();
        GuestMemoryMmap::from_ranges(&r).unwrap()
    }

    #[test]
    fn structures_do_not_overlap() {
        let spans = [
            (GDT_ADDR, 6 * 8),
            (IDT_ADDR, 8),
            (PVH_INFO_ADDR, 56),
            (PVH_MODLIST_ADDR, 32),
            (PVH_MEMMAP_ADDR, 24 * PVH_MEMMAP_MAX as u64),
            (ZERO_PAGE_ADDR, 4096),
            (PML4_ADDR, 4096),
            (PDPT_ADDR, 4096),
            (PD_ADDR, 4096 * IDENTITY_MAP_GIB),
            (CMDLINE_ADDR, 4096 * 4),
            (EBDA_START, 1024),
        ];
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                assert!(
                    a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0,
                    "{a:x?} overlaps {b:x?}"
                );
            }
            assert!(a.0 + a.1 <= HIMEM_START);
        }
    }

    const _: () = assert!(BOOT_STACK_TOP < PML4_ADDR && BOOT_STACK_TOP > ZERO_PAGE_ADDR + 4096);
    const _: () = assert!(PVH_MEMMAP_MAX >= 8);

    #[test]
    fn e820_has_low_hole_and_every_region() {
        let m = mem(&[(0, 128 << 20)]);
        let map = e820_map(&m).unwrap();
        // Written out, not via test_map(), so the hole is checked by value.
        assert_eq!(
            map[0],
            MemRange {
                addr: 0,
                size: 0x9fc00,
                kind: 1
            }
        );
        assert_eq!(
            map[1],
            MemRange {
                addr: 0x9fc00,
                size: 0x60400,
                kind: 2
            }
        );
        assert_eq!(map, test_map((128 << 20) - 0x100000));
        assert_eq!(low_ram_end(&m), 128 << 20);

        // Memory split around a 32-bit MMIO gap: both pieces reported, the gap not.
        let m = mem(&[(0, 0xc000_0000), (0x1_0000_0000, 1 << 30)]);
        let map = e820_map(&m).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[2],
            MemRange {
                addr: 0x100000,
                size: 0xc000_0000 - 0x100000,
                kind: E820_RAM
            }
        );
        assert_eq!(
            map[3],
            MemRange {
                addr: 0x1_0000_0000,
                size: 1 << 30,
                kind: E820_RAM
            }
        );
        assert_eq!(low_ram_end(&m), 0xc000_0000);
    }

    #[test]
    fn e820_needs_the_first_mebibyte() {
        assert!(e820_map(&mem(&[(0, 512 << 10)])).is_none());
        assert!(e820_map(&mem(&[(0x100000, 1 << 20)])).is_none());
    }
}
