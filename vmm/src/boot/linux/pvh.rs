//! The PVH boot ABI (xen/include/public/arch-x86/hvm/start_info.h, version 1):
//! `hvm_start_info` at [`PVH_INFO_ADDR`], one module entry for the initrd and
//! the memory map, all written into guest memory for the 32-bit PVH entry.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    MemRange, CMDLINE_ADDR, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MEMMAP_MAX, PVH_MODLIST_ADDR,
};
use super::zeropage::InitrdPlacement;
use super::LinuxBootError;

/// `hvm_start_info.magic` ("xEn3" with the top bit flipped).
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Version 1 adds the memory map fields.
pub const VERSION: u32 = 1;
/// Size of `hvm_start_info` (version 1).
pub const START_INFO_SIZE: usize = 56;
const _: () = assert!(std::mem::size_of::<hvm_start_info>() == START_INFO_SIZE);

/// The three structures, before they are written.
pub struct PvhInfo {
    pub start_info: hvm_start_info,
    pub module: Option<hvm_modlist_entry>,
    pub memmap: Vec<hvm_memmap_table_entry>,
}

/// Builds the start info for the given initrd and memory map.
pub fn build(
    initrd: Option<InitrdPlacement>,
    e820: &[MemRange],
) -> Result<PvhInfo, LinuxBootError> {
    if e820.len() > PVH_MEMMAP_MAX {
        return Err(LinuxBootError::TooManyMemoryRanges(e820.len()));
    }
    let memmap: Vec<_> = e820
        .iter()
        .map(|r| hvm_memmap_table_entry {
            addr: r.addr,
            size: r.size,
            type_: r.kind,
            reserved: 0,
        })
        .collect();
    let module = initrd.map(|rd| hvm_modlist_entry {
        paddr: rd.addr,
        size: rd.size,
        cmdline_paddr: 0,
        reserved: 0,
    });
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: VERSION,
        flags: 0,
        nr_modules: u32::from(module.is_some()),
        modlist_paddr: if module.is_some() {
            PVH_MODLIST_ADDR
        } else {
            0
        },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: 0,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    Ok(PvhInfo {
        start_info,
        module,
        memmap,
    })
}

/// Writes the structures at their fixed addresses.
pub fn write(mem: &GuestMemoryMmap, info: &PvhInfo) -> Result<(), LinuxBootError> {
    let w = |e| LinuxBootError::GuestWrite("PVH start info", e);
    mem.write_obj(info.start_info, GuestAddress(PVH_INFO_ADDR))
        .map_err(w)?;
    if let Some(m) = info.module {
        mem.write_obj(m, GuestAddress(PVH_MODLIST_ADDR))
            .map_err(w)?;
    }
    for (i, e) in info.memmap.iter().enumerate() {
        let addr = PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(*e, GuestAddress(addr)).map_err(w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::linux::layout::E820_RAM;

    /// Reads back guest memory at the offsets start_info.h documents.
    #[test]
    fn start_info_layout_in_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let e820 = crate::boot::linux::layout::test_map(0x100000);
        let rd = InitrdPlacement {
            addr: 0x1ff000,
            size: 100,
        };
        write(&mem, &build(Some(rd), &e820).unwrap()).unwrap();
        let r32 = |a: u64| mem.read_obj::<u32>(GuestAddress(a)).unwrap();
        let r64 = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        let b = PVH_INFO_ADDR;
        assert_eq!(r32(b), 0x336e_c578, "magic");
        assert_eq!(r32(b + 4), 1, "version");
        assert_eq!(r32(b + 12), 1, "nr_modules");
        assert_eq!(r64(b + 16), PVH_MODLIST_ADDR, "modlist_paddr");
        assert_eq!(r64(b + 24), CMDLINE_ADDR, "cmdline_paddr");
        assert_eq!(r64(b + 32), 0, "rsdp_paddr");
        assert_eq!(r64(b + 40), PVH_MEMMAP_ADDR, "memmap_paddr");
        assert_eq!(r32(b + 48), 3, "memmap_entries");
        assert_eq!(
            (r64(PVH_MODLIST_ADDR), r64(PVH_MODLIST_ADDR + 8)),
            (0x1ff000, 100)
        );
        for (i, r) in e820.iter().enumerate() {
            let o = PVH_MEMMAP_ADDR + 24 * i as u64;
            assert_eq!((r64(o), r64(o + 8), r32(o + 16)), (r.addr, r.size, r.kind));
        }
    }

    #[test]
    fn no_initrd_no_module() {
        let e820 = [MemRange {
            addr: 0,
            size: 0x9fc00,
            kind: E820_RAM,
        }];
        let info = build(None, &e820).unwrap();
        assert_eq!({ info.start_info.nr_modules }, 0);
        assert_eq!({ info.start_info.modlist_paddr }, 0);
        let many = vec![e820[0]; PVH_MEMMAP_MAX + 1];
        assert!(matches!(
            build(None, &many),
            Err(LinuxBootError::TooManyMemoryRanges(_))
        ));
    }
}
