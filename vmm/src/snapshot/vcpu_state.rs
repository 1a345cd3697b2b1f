//! One vCPU's saved state: what a kernel-less guest's CPU holds (general,
//! special and FPU registers, XCR0 and the XSAVE area where the host has
//! them, the MSRs a CPL3 program can observe), read from KVM while the vCPU
//! is paused, written back into a fresh vCPU at load, stored with the codec
//! and checked against the VMM's own CPL3 entry state (a state file cannot
//! hand the guest a privilege the VMM never gave it).

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_xcrs, kvm_xsave, Msrs};
use kvm_ioctls::VcpuFd;

use super::codec::{CodecError, Reader, Writer};
use crate::boot::cpl3;

/// MSRs saved for a kernel-less guest: the TSC (its clock), TSC_AUX (what
/// `rdtscp`/`rdpid` return), the PAT and the swapgs base. The rest are the
/// VMM's entry defaults, which a CPL3 guest cannot change.
const MSRS: [u32; 4] = [0x10, 0xc000_0103, 0x277, 0xc000_0102];
/// Most MSR entries a state file may carry per vCPU.
const MAX_MSRS: usize = 64;
/// The legacy 4 KiB XSAVE area of KVM_GET_XSAVE, in 32-bit words.
const XSAVE_WORDS: usize = 1024;

/// Why a vCPU's state could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SaveError {
    #[error("vCPU {0} is running: pause the VM before saving it")]
    Running(u8),
    #[error("KVM: {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
}

/// What a saved vCPU state may not be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidVcpu {
    #[error("{0} differs from the kernel-less CPL3 entry state")]
    NotEntryState(&'static str),
    #[error("{what} {value:#x} lies outside guest memory ({mem_size:#x} bytes)")]
    Outside {
        what: &'static str,
        value: u64,
        mem_size: u64,
    },
    #[error("MSR {0:#x} is not one a kernel-less guest's state holds")]
    Msr(u32),
}

/// The registers of one vCPU.
#[derive(Clone, Debug)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: kvm_fpu,
    /// XCR0, if the host has XSAVE (absent on hosts without it).
    pub xcrs: Option<kvm_xcrs>,
    /// The XSAVE area (AVX upper halves and more), if the host lets KVM
    /// read it; `fpu` then holds the same x87/SSE state.
    pub xsave: Option<Box<[u32; XSAVE_WORDS]>>,
    pub msrs: Vec<(u32, u64)>,
}

impl VcpuState {
    /// Reads the state of a vCPU that is outside KVM_RUN.
    pub fn save(fd: &VcpuFd) -> Result<VcpuState, SaveError> {
        let regs = fd.get_regs().map_err(|e| SaveError::Kvm("get regs", e))?;
        let sregs = fd.get_sregs().map_err(|e| SaveError::Kvm("get sregs", e))?;
        let fpu = fd.get_fpu().map_err(|e| SaveError::Kvm("get fpu", e))?;
        let xcrs = fd.get_xcrs().ok();
        let xsave = fd.get_xsave().ok().map(|x| Box::new(x.region));
        let mut msrs = Vec::new();
        for index in MSRS {
            // One at a time: a host that refuses one MSR keeps the others.
            let Ok(mut one) = Msrs::from_entries(&[kvm_msr_entry {
                index,
                ..Default::default()
            }]) else {
                continue;
            };
            if fd.get_msrs(&mut one).ok() == Some(1) {
                msrs.push((index, one.as_slice()[0].data));
            }
        }
        Ok(VcpuState {
            regs,
            sregs,
            fpu,
            xcrs,
            xsave,
            msrs,
        })
    }

    /// Writes this state into a vCPU that has its CPUID set.
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), SaveError> {
        if let Some(xcrs) = &self.xcrs {
            fd.set_xcrs(xcrs)
                .map_err(|e| SaveError::Kvm("set xcrs", e))?;
        }
        fd.set_sregs(&self.sregs)
            .map_err(|e| SaveError::Kvm("set sregs", e))?;
        match &self.xsave {
            // SAFETY: KVM reads the vCPU's uabi XSAVE size from `x`; that is
            // the 4 KiB of kvm_xsave because ember never asks for guest
            // permission to larger components (ARCH_REQ_XCOMP_GUEST_PERM),
            // and validation kept XCR0 to components inside those 4 KiB.
            Some(region) => {
                let x = kvm_xsave {
                    region: **region,
                    ..Default::default()
                };
                // SAFETY: see above.
                unsafe { fd.set_xsave(&x) }.map_err(|e| SaveError::Kvm("set xsave", e))?
            }
            None => fd
                .set_fpu(&self.fpu)
                .map_err(|e| SaveError::Kvm("set fpu", e))?,
        }
        let entries = crate::boot::linux::msrs::entries(&self.msrs);
        let msrs = Msrs::from_entries(&entries)
            .map_err(|_| SaveError::Kvm("set MSRs", kvm_ioctls::Error::new(libc::E2BIG)))?;
        let set = fd
            .set_msrs(&msrs)
            .map_err(|e| SaveError::Kvm("set MSRs", e))?;
        if set != entries.len() {
            return Err(SaveError::Kvm(
                "set MSRs",
                kvm_ioctls::Error::new(libc::EINVAL),
            ));
        }
        let regs = kvm_regs {
            rflags: self.regs.rflags | (cpl3::RFLAGS & (3 << 12)),
            ..self.regs
        };
        fd.set_regs(&regs)
            .map_err(|e| SaveError::Kvm("set regs", e))
    }

    pub fn encode(&self, w: &mut Writer) {
        w.pod(&self.regs);
        w.pod(&self.sregs);
        w.pod(&self.fpu);
        w.bool(self.xcrs.is_some());
        if let Some(x) = &self.xcrs {
            w.pod(x);
        }
        w.bool(self.xsave.is_some());
        if let Some(x) = &self.xsave {
            for word in x.iter() {
                w.u32(*word);
            }
        }
        w.u32(self.msrs.len() as u32);
        for &(index, data) in &self.msrs {
            w.u32(index);
            w.u64(data);
        }
    }

    pub fn decode(r: &mut Reader) -> Result<VcpuState, CodecError> {
        let regs = r.pod("vCPU regs")?;
        let sregs = r.pod("vCPU sregs")?;
        let fpu = r.pod("vCPU fpu")?;
        let xcrs = if r.bool("vCPU has xcrs")? {
            Some(r.pod("vCPU xcrs")?)
        } else {
            None
        };
        let xsave = if r.bool("vCPU has xsave")? {
            let bytes = r.fixed("vCPU xsave", XSAVE_WORDS * 4)?;
            let mut region = Box::new([0u32; XSAVE_WORDS]);
            for (word, b) in region.iter_mut().zip(bytes.chunks_exact(4)) {
                *word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            Some(region)
        } else {
            None
        };
        let n = r.count("vCPU MSR count", MAX_MSRS)?;
        let mut msrs = Vec::with_capacity(n);
        for _ in 0..n {
            msrs.push((r.u32("MSR index")?, r.u64("MSR value")?));
        }
        Ok(VcpuState {
            regs,
            sregs,
            fpu,
            xcrs,
            xsave,
            msrs,
        })
    }

    /// Checks a kernel-less guest's vCPU: its system state (control
    /// registers, EFER, descriptor tables, TSS, code and stack segments)
    /// must be exactly the VMM's CPL3 entry state, RFLAGS keep IOPL 3 and
    /// no VM86/trap flags, RIP and RSP lie in guest memory, and only the
    /// known MSRs appear. KVM checks the rest when the state is set.
    pub fn validate_kernelless(&self, mem_size: u64) -> Result<(), InvalidVcpu> {
        let s = &self.sregs;
        let features = cpl3::Features {
            xsave: s.cr4 & (1 << 18) != 0,
            nx: s.efer & (1 << 11) != 0,
        };
        let want = cpl3::sregs(*s, features);
        let same_seg = |a: &kvm_bindings::kvm_segment, b: &kvm_bindings::kvm_segment| {
            (
                a.base, a.limit, a.selector, a.type_, a.present, a.dpl, a.db, a.s, a.l, a.g,
            ) == (
                b.base, b.limit, b.selector, b.type_, b.present, b.dpl, b.db, b.s, b.l, b.g,
            )
        };
        let checks: [(&'static str, bool); 9] = [
            ("CR0", s.cr0 == want.cr0),
            ("CR3", s.cr3 == want.cr3),
            ("CR4", s.cr4 == want.cr4),
            ("EFER", s.efer == want.efer),
            (
                "GDT",
                (s.gdt.base, s.gdt.limit) == (want.gdt.base, want.gdt.limit),
            ),
            (
                "IDT",
                (s.idt.base, s.idt.limit) == (want.idt.base, want.idt.limit),
            ),
            ("TR", same_seg(&s.tr, &want.tr)),
            ("CS", same_seg(&s.cs, &want.cs)),
            ("SS", s.ss.selector == want.ss.selector && s.ss.dpl == 3),
        ];
        if let Some((what, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(InvalidVcpu::NotEntryState(what));
        }
        // Reserved bit 1 set, VM86 clear. IOPL is not checked: PVM hosts
        // report 0 whatever the entry set (ports reach the VMM through the
        // TSS bitmap there); `restore` puts back the entry's IOPL 3.
        let flags = self.regs.rflags;
        if flags & 2 == 0 || flags & (1 << 17) != 0 || flags >> 32 != 0 {
            return Err(InvalidVcpu::NotEntryState("RFLAGS"));
        }
        for (what, value) in [("RIP", self.regs.rip), ("RSP", self.regs.rsp)] {
            if value > mem_size {
                return Err(InvalidVcpu::Outside {
                    what,
                    value,
                    mem_size,
                });
            }
        }
        // XCR0: x87 always; SSE, AVX and the AVX-512 trio at most (what the
        // entry state enables), which keeps the XSAVE area within its 4 KiB.
        if let Some(x) = &self.xcrs {
            let n = (x.nr_xcrs as usize).min(x.xcrs.len());
            if x.nr_xcrs != 1
                || x.xcrs[..n]
                    .iter()
                    .any(|e| e.xcr != 0 || e.value & !0xe7 != 0 || e.value & 1 == 0)
            {
                return Err(InvalidVcpu::NotEntryState("XCR0"));
            }
        }
        if let Some(&(index, _)) = self.msrs.iter().find(|(i, _)| !MSRS.contains(i)) {
            return Err(InvalidVcpu::Msr(index));
        }
        Ok(())
    }
}
