//! The x86-64 machine state for entering a kernel-less guest at CPL3: identity
//! page tables with user pages, a GDT with DPL3 code/data and a TSS, and the
//! control registers, segments and general registers of the entry. The VMM's
//! own structures (GDT, page tables, TSS) are mapped supervisor-only, the
//! start-info page user read-only, page 0 not at all (null dereferences fault).
//!
//! Port I/O: RFLAGS.IOPL=3 lets CPL3 code use `in`/`out` on hardware KVM. PVM
//! hosts cannot give the guest a real IOPL (it runs at hardware CPL3 on the
//! host's CPU), so `in`/`out` trap to KVM's emulator, which then consults the
//! I/O permission bitmap of the guest TSS: ours allows every port.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

/// GDT.
pub const GDT_ADDR: u64 = 0x1000;
/// The 64-bit TSS and its all-zero (= all ports allowed) I/O bitmap.
pub const TSS_ADDR: u64 = 0x9000;
/// PML4, then the PDPT, then four page directories (0..4 GiB), then the page
/// table of the first 2 MiB.
pub const PML4_ADDR: u64 = 0x2000;
pub const PDPT_ADDR: u64 = 0x3000;
pub const PD_ADDR: u64 = 0x4000;
pub const PT_ADDR: u64 = 0x8000;
/// First page after the VMM's supervisor-only structures.
pub const SUPERVISOR_END: u64 = 0xc000;

const PAGE: u64 = 0x1000;
const HUGE: u64 = 0x20_0000;
const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 0x80;

/// Selectors: user data and user code (RPL 3), the TSS. The layout is Linux's
/// x86-64 GDT (user DS 0x2b, user CS 0x33, TSS 0x40): PVM hosts load the
/// guest's user selectors into the real CPU, whose GDT is the host kernel's.
pub const USER_DATA_SEL: u16 = 0x28 | 3;
pub const USER_CODE_SEL: u16 = 0x30 | 3;
pub const TSS_SEL: u16 = 0x40;

/// Size of the TSS proper; the I/O bitmap starts right after it.
const TSS_LEN: u64 = 104;
/// One bit per port, plus the trailing all-ones byte the CPU requires.
const IO_BITMAP_LEN: u64 = 65536 / 8 + 1;
const TSS_LIMIT: u64 = TSS_LEN + IO_BITMAP_LEN - 1;
const _: () = assert!(TSS_ADDR + TSS_LIMIT < SUPERVISOR_END);

/// The TSS bytes: no stacks (no privilege changes ever happen), the I/O
/// bitmap offset at byte 102, the bitmap all zeros, the last byte 0xff.
pub fn tss() -> Vec<u8> {
    let mut t = vec![0u8; (TSS_LIMIT + 1) as usize];
    t[102..104].copy_from_slice(&(TSS_LEN as u16).to_le_bytes());
    if let Some(last) = t.last_mut() {
        *last = 0xff;
    }
    t
}

/// The GDT (Linux's layout): null, kernel code32/code64/data, user code32,
/// user data, user code64 (DPL3), an unused slot, and the two-slot TSS.
pub fn gdt() -> [u64; 10] {
    let tss_low = TSS_LIMIT
        | ((TSS_ADDR & 0xff_ffff) << 16)
        | (0x8b << 40) // present, DPL0, type 0xb = busy 64-bit TSS
        | ((TSS_ADDR >> 24) & 0xff) << 56;
    [
        0,
        0x00cf_9b00_0000_ffff, // 0x08 kernel code32
        0x00af_9b00_0000_ffff, // 0x10 kernel code64
        0x00cf_9300_0000_ffff, // 0x18 kernel data
        0x00cf_fb00_0000_ffff, // 0x20 user code32, DPL3
        0x00cf_f300_0000_ffff, // 0x28 user data, DPL3
        0x00af_fb00_0000_ffff, // 0x30 user code64, DPL3
        0,
        tss_low, // 0x40 TSS
        TSS_ADDR >> 32,
    ]
}

/// The KVM view of the segment `selector` described by GDT entry `desc`.
pub fn segment(selector: u16, desc: u64) -> kvm_segment {
    let g = ((desc >> 55) & 1) as u8;
    let raw_limit = ((desc & 0xffff) | ((desc >> 32) & 0xf_0000)) as u32;
    kvm_segment {
        base: ((desc >> 16) & 0xff_ffff) | (((desc >> 56) & 0xff) << 24),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector,
        type_: ((desc >> 40) & 0xf) as u8,
        present: ((desc >> 47) & 1) as u8,
        dpl: ((desc >> 45) & 3) as u8,
        db: ((desc >> 54) & 1) as u8,
        s: ((desc >> 44) & 1) as u8,
        l: ((desc >> 53) & 1) as u8,
        g,
        avl: ((desc >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// The page-table pages to write, as (guest address, 512 entries).
/// Maps `[0, ram_end)` (rounded up to 2 MiB) and the MMIO gap
/// `[mmio_start, 4 GiB)` with 2 MiB user pages, except the first 2 MiB, which
/// uses 4 KiB pages: page 0 absent, `[PAGE, SUPERVISOR_END)` supervisor-only,
/// `read_only` pages user read-only, the rest user read-write.
pub fn page_tables(
    ram_end: u64,
    mmio_start: u64,
    read_only: &[u64],
) -> Vec<(u64, Box<[u64; 512]>)> {
    let mut pml4 = Box::new([0u64; 512]);
    let mut pdpt = Box::new([0u64; 512]);
    pml4[0] = PDPT_ADDR | P | RW | US;
    let mut out = Vec::with_capacity(7);
    for gib in 0..4u64 {
        pdpt[gib as usize] = (PD_ADDR + gib * PAGE) | P | RW | US;
        let mut pd = Box::new([0u64; 512]);
        for (i, e) in pd.iter_mut().enumerate() {
            let addr = (gib << 30) + (i as u64) * HUGE;
            if addr < ram_end || addr >= mmio_start {
                *e = addr | P | RW | US | PS;
            }
        }
        if gib == 0 {
            pd[0] = PT_ADDR | P | RW | US;
        }
        out.push((PD_ADDR + gib * PAGE, pd));
    }
    let mut pt = Box::new([0u64; 512]);
    for (i, e) in pt.iter_mut().enumerate().skip(1) {
        let addr = i as u64 * PAGE;
        if addr >= ram_end {
            break;
        }
        *e = addr
            | P
            | if addr < SUPERVISOR_END {
                RW
            } else if read_only.contains(&addr) {
                US
            } else {
                RW | US
            };
    }
    out.push((PT_ADDR, pt));
    out.push((PML4_ADDR, pml4));
    out.push((PDPT_ADDR, pdpt));
    out
}

/// CPU features that change the entry state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// CPUID.1:ECX.XSAVE: enable CR4.OSXSAVE (XCR0 is set separately).
    pub xsave: bool,
    /// CPUID.80000001:EDX.NX: enable EFER.NXE.
    pub nx: bool,
}

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// Special registers for the CPL3 long-mode entry, on top of `sregs` as read
/// from the vCPU (which keeps KVM's defaults for what we do not set, e.g. APIC base).
pub fn sregs(mut sregs: kvm_sregs, features: Features) -> kvm_sregs {
    let gdt = gdt();
    let data = segment(USER_DATA_SEL, gdt[(USER_DATA_SEL >> 3) as usize]);
    sregs.cs = segment(USER_CODE_SEL, gdt[(USER_CODE_SEL >> 3) as usize]);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(TSS_SEL, gdt[(TSS_SEL >> 3) as usize]);
    sregs.ldt = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    // No IDT: any exception becomes a triple fault, i.e. KVM_EXIT_SHUTDOWN,
    // which the VMM reports with the RIP.
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 =
        CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if features.xsave { CR4_OSXSAVE } else { 0 };
    sregs.efer = EFER_LME | EFER_LMA | if features.nx { EFER_NXE } else { 0 };
    sregs
}

/// RFLAGS: reserved bit 1 plus IOPL=3 (port I/O allowed at CPL3), IF clear.
pub const RFLAGS: u64 = 0x2 | (3 << 12);

/// General registers of the entry: `rdi` = start info, `rsi` = vCPU index,
/// `rsp` = stack top - 8 (as right after a call, which compiled code expects).
pub fn regs(entry: u64, start_info: u64, index: u8, stack_top: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rdi: start_info,
        rsi: index as u64,
        rsp: stack_top - 8,
        rflags: RFLAGS,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(tables: &[(u64, Box<[u64; 512]>)], addr: u64) -> Option<u64> {
        let page = |a: u64| {
            tables
                .iter()
                .find(|(t, _)| *t == a & !0xfff & 0xf_ffff_ffff_f000)
                .map(|(_, p)| p)
        };
        let mut table = PML4_ADDR;
        let mut flags = P | RW | US;
        for (level, shift) in [(4, 39), (3, 30), (2, 21), (1, 12)] {
            let e = page(table)?[((addr >> shift) & 0x1ff) as usize];
            if e & P == 0 {
                return None;
            }
            flags &= e | !(RW | US);
            if (level == 2 && e & PS != 0) || level == 1 {
                let size = 1u64 << shift;
                assert_eq!(
                    e & 0x000f_ffff_ffff_f000 & !(size - 1),
                    addr & !(size - 1),
                    "identity at {addr:#x}"
                );
                return Some(flags & (RW | US));
            }
            table = e & 0x000f_ffff_ffff_f000;
        }
        None
    }

    #[test]
    fn identity_map_with_user_pages_and_protected_structures() {
        let t = page_tables(64 << 20, 0xc000_0000, &[SUPERVISOR_END]);
        assert_eq!(walk(&t, 0), None, "page 0 unmapped");
        assert_eq!(walk(&t, GDT_ADDR), Some(RW), "GDT supervisor-only");
        assert_eq!(walk(&t, PML4_ADDR + 8), Some(RW));
        assert_eq!(walk(&t, TSS_ADDR + 0x2000), Some(RW), "TSS supervisor-only");
        assert_eq!(
            walk(&t, SUPERVISOR_END),
            Some(US),
            "start info user read-only"
        );
        assert_eq!(walk(&t, SUPERVISOR_END + 0x1000), Some(RW | US));
        assert_eq!(walk(&t, 0x20_1234), Some(RW | US));
        assert_eq!(walk(&t, (64 << 20) - 8), Some(RW | US));
        assert_eq!(walk(&t, 64 << 20), None, "beyond RAM unmapped");
        assert_eq!(walk(&t, 0xc000_0000), Some(RW | US), "MMIO gap mapped");
        assert_eq!(walk(&t, 0xffff_f000), Some(RW | US));
        assert_eq!(walk(&t, 1 << 32), None);
        assert_eq!(walk(&t, 0x100_0000_0000), None);
    }

    #[test]
    fn gdt_segments_are_long_mode_user_segments() {
        let g = gdt();
        let cs = segment(USER_CODE_SEL, g[6]);
        assert_eq!(
            (cs.l, cs.db, cs.dpl, cs.s, cs.present, cs.type_),
            (1, 0, 3, 1, 1, 0xb)
        );
        let ds = segment(USER_DATA_SEL, g[5]);
        assert_eq!(
            (ds.dpl, ds.db, ds.g, ds.limit, ds.type_),
            (3, 1, 1, 0xffff_ffff, 3)
        );
        let tr = segment(TSS_SEL, g[8]);
        assert_eq!(
            (tr.base, tr.limit, tr.type_, tr.s, tr.present),
            (TSS_ADDR, TSS_LIMIT as u32, 0xb, 0, 1)
        );
        let t = tss();
        assert_eq!(u16::from_le_bytes([t[102], t[103]]) as u64, TSS_LEN);
        assert!(
            t[TSS_LEN as usize..t.len() - 1].iter().all(|&b| b == 0),
            "every port allowed"
        );
        assert_eq!(t.len() as u64, TSS_LIMIT + 1);
        assert_eq!(g[9], 0);
        // Linux's selectors, which PVM loads into the real CPU.
        assert_eq!((USER_CODE_SEL, USER_DATA_SEL, TSS_SEL), (0x33, 0x2b, 0x40));
    }

    #[test]
    fn entry_state_is_cpl3_long_mode_with_iopl3() {
        let s = sregs(
            kvm_sregs::default(),
            Features {
                xsave: true,
                nx: false,
            },
        );
        assert_eq!(s.cs.dpl, 3);
        assert_eq!(s.cs.selector & 3, 3);
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_eq!(s.efer & EFER_NXE, 0);
        assert_ne!(s.cr4 & CR4_OSXSAVE, 0);
        assert_ne!(s.cr0 & CR0_PG, 0);
        assert_eq!(s.cr3, PML4_ADDR);
        let r = regs(0x40_1000, 0xc000, 2, 0x100_0000);
        assert_eq!((r.rip, r.rdi, r.rsi, r.rsp % 16), (0x40_1000, 0xc000, 2, 8));
        assert_eq!(r.rflags >> 12 & 3, 3);
        assert_eq!(r.rflags & (1 << 9), 0, "interrupts off");
    }
}
