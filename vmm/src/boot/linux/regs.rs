//! Entry CPU state: the boot GDT, identity page tables, and the segment,
//! control and general registers for the two entries:
//! - 64-bit boot protocol (boot.rst "64-bit Boot Protocol"): long mode, paging
//!   on with an identity map, CS = __BOOT_CS (0x10) 64-bit code, DS/ES/SS =
//!   __BOOT_DS (0x18), interrupts off, `rsi` = zero page;
//! - PVH (xen/include/public/arch-x86/hvm/start_info.h): 32-bit protected mode,
//!   paging off, flat 4 GiB CS (0x08) and data segments, TR a 32-bit TSS,
//!   `ebx` = hvm_start_info.
//!
//! Plus the FPU state Linux expects (fcw 0x37f, mxcsr 0x1f80).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    BOOT_STACK_TOP, GDT_ADDR, IDENTITY_MAP_GIB, IDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR,
    PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};
use super::LinuxBootError;

/// GDT selectors.
pub const SEL_CODE32: u16 = 0x08;
pub const SEL_CODE64: u16 = 0x10;
pub const SEL_DATA: u16 = 0x18;
pub const SEL_TSS: u16 = 0x20;

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

/// x87 control word after FNINIT.
pub const FCW_INIT: u16 = 0x37f;
/// MXCSR after reset: all exceptions masked.
pub const MXCSR_INIT: u32 = 0x1f80;

/// Page-table entry bits.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_2M: u64 = 0x80;

/// One GDT descriptor from access/flags (`0xF0FF` layout: flags nibble in
/// bits 12..15, access byte in bits 0..7), base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The boot GDT; the TSS descriptor takes two slots in long mode (the second is 0).
pub const GDT: [u64; 6] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff), // 0x08: 32-bit code, flat 4 GiB
    gdt_entry(0xa09b, 0, 0xfffff), // 0x10: 64-bit code
    gdt_entry(0xc093, 0, 0xfffff), // 0x18: data, flat 4 GiB
    gdt_entry(0x008b, 0, 0x67),    // 0x20: busy TSS
    0,
];

/// The KVM segment register matching GDT slot `selector`.
pub fn segment(selector: u16) -> kvm_segment {
    let e = GDT[usize::from(selector >> 3)];
    let g = ((e >> 55) & 1) as u8;
    let raw_limit = (((e >> 32) & 0x000f_0000) | (e & 0xffff)) as u32;
    let present = ((e >> 47) & 1) as u8;
    kvm_segment {
        base: ((e >> 16) & 0x00ff_ffff) | ((e >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector,
        type_: ((e >> 40) & 0xf) as u8,
        present,
        dpl: ((e >> 45) & 0x3) as u8,
        db: ((e >> 54) & 1) as u8,
        s: ((e >> 44) & 1) as u8,
        l: ((e >> 53) & 1) as u8,
        g,
        avl: ((e >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Writes the GDT, the (empty) IDT and the identity page tables.
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<(), LinuxBootError> {
    let w = |e| LinuxBootError::GuestWrite("boot GDT and page tables", e);
    let gdt: Vec<u8> = GDT.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&gdt, GuestAddress(GDT_ADDR)).map_err(w)?;
    mem.write_obj(0u64, GuestAddress(IDT_ADDR)).map_err(w)?;
    mem.write_obj(PDPT_ADDR | PTE_PRESENT_RW, GuestAddress(PML4_ADDR))
        .map_err(w)?;
    for gib in 0..IDENTITY_MAP_GIB {
        let pd = PD_ADDR + gib * 0x1000;
        mem.write_obj(pd | PTE_PRESENT_RW, GuestAddress(PDPT_ADDR + gib * 8))
            .map_err(w)?;
    }
    // 2048 2 MiB pages: 0..4 GiB, so the kernel, the zero page, the command
    // line and the boot-timer MMIO byte are all reachable before the kernel
    // builds its own tables.
    let pds: Vec<u8> = (0..512 * IDENTITY_MAP_GIB)
        .flat_map(|i| ((i << 21) | PTE_PRESENT_RW | PDE_2M).to_le_bytes())
        .collect();
    mem.write_slice(&pds, GuestAddress(PD_ADDR)).map_err(w)?;
    Ok(())
}

fn set_tables(sregs: &mut kvm_sregs) {
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.ds = segment(SEL_DATA);
    sregs.es = segment(SEL_DATA);
    sregs.fs = segment(SEL_DATA);
    sregs.gs = segment(SEL_DATA);
    sregs.ss = segment(SEL_DATA);
    sregs.tr = segment(SEL_TSS);
}

/// Long mode, paging on, CPL0: the 64-bit boot protocol.
pub fn sregs_64(mut sregs: kvm_sregs) -> kvm_sregs {
    set_tables(&mut sregs);
    sregs.cs = segment(SEL_CODE64);
    sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// 32-bit protected mode, paging off: the PVH entry.
pub fn sregs_pvh(mut sregs: kvm_sregs) -> kvm_sregs {
    set_tables(&mut sregs);
    sregs.cs = segment(SEL_CODE32);
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// General registers of the 64-bit entry: `rsi` = zero page.
pub fn regs_64(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_TOP,
        rbp: BOOT_STACK_TOP,
        rsi: ZERO_PAGE_ADDR,
        ..Default::default()
    }
}

/// General registers of the PVH entry: `ebx` = hvm_start_info.
pub fn regs_pvh(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rbx: PVH_INFO_ADDR,
        ..Default::default()
    }
}

/// FPU state after FNINIT with SSE exceptions masked.
pub fn fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: FCW_INIT,
        mxcsr: MXCSR_INIT,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_matches_the_descriptors_linux_expects() {
        // Well-known encodings (same as Firecracker / Linux's boot GDT).
        assert_eq!(GDT[2], 0x00af_9b00_0000_ffff, "64-bit code");
        assert_eq!(GDT[3], 0x00cf_9300_0000_ffff, "flat data");
        assert_eq!(GDT[1], 0x00cf_9b00_0000_ffff, "flat 32-bit code");
        let cs = segment(SEL_CODE64);
        assert_eq!(
            (cs.l, cs.db, cs.type_, cs.s, cs.present, cs.dpl),
            (1, 0, 0xb, 1, 1, 0)
        );
        let cs32 = segment(SEL_CODE32);
        assert_eq!(
            (cs32.l, cs32.db, cs32.limit, cs32.base),
            (0, 1, 0xffff_ffff, 0)
        );
        let ds = segment(SEL_DATA);
        assert_eq!((ds.type_, ds.limit, ds.db), (3, 0xffff_ffff, 1));
        let tr = segment(SEL_TSS);
        assert_eq!((tr.type_, tr.s, tr.limit, tr.present), (0xb, 0, 0x67, 1));
    }

    #[test]
    fn identity_map_covers_4_gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_tables(&mem).unwrap();
        let r = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(r(PML4_ADDR), PDPT_ADDR | 3);
        for gib in 0..4 {
            assert_eq!(r(PDPT_ADDR + gib * 8), (PD_ADDR + gib * 0x1000) | 3);
        }
        assert_eq!(r(PDPT_ADDR + 32), 0);
        // Walk a few addresses through the tables.
        for va in [0u64, 0x7000, 0x100_0000, 0xc000_0000, 0xffff_ffff] {
            let pdpte = r(PDPT_ADDR + ((va >> 30) & 511) * 8);
            let pde = r((pdpte & !0xfff) + ((va >> 21) & 511) * 8);
            assert_eq!(pde & 0x83, 0x83);
            assert_eq!((pde & !0x1f_ffff) | (va & 0x1f_ffff), va);
        }
    }

    #[test]
    fn entry_registers() {
        let s = sregs_64(kvm_sregs::default());
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(
            (s.cr3, s.cr4 & CR4_PAE, s.efer),
            (PML4_ADDR, CR4_PAE, EFER_LME | EFER_LMA)
        );
        assert_eq!(
            (s.cs.selector, s.ds.selector, s.ss.selector),
            (0x10, 0x18, 0x18)
        );
        let r = regs_64(0x100_0000);
        assert_eq!((r.rip, r.rsi, r.rflags), (0x100_0000, ZERO_PAGE_ADDR, 2));
        let p = sregs_pvh(kvm_sregs::default());
        assert_eq!(
            (p.cr0 & CR0_PG, p.cr0 & CR0_PE, p.efer, p.cr4),
            (0, 1, 0, 0)
        );
        assert_eq!(p.cs.selector, SEL_CODE32);
        let r = regs_pvh(0x100_0040);
        assert_eq!(
            (r.rip, r.rbx, r.rflags & (1 << 9)),
            (0x100_0040, PVH_INFO_ADDR, 0)
        );
        assert_eq!((fpu().fcw, fpu().mxcsr), (0x37f, 0x1f80));
    }
}
