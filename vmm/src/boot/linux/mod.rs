//! Linux boot state: loads an ELF vmlinux or a bzImage (plus initrd and
//! command line) and builds everything Linux's x86 boot protocols need — zero
//! page, PVH start info, e820, MP table, CPUID, MSRs, FPU, LAPIC, GDT, page
//! tables, entry registers. DESIGN.md "Linux boot state" has the memory map.
//!
//! API for the VM core (stable; extend, don't change):
//! 1. create the VM, its guest memory (which must cover `[0, 1 MiB)`; RAM above
//!    is reported to the guest exactly as the memory regions are laid out) and
//!    the in-kernel irqchip (the LAPIC setup needs it);
//! 2. `let entry = linux::load(&vm, &mem, &LinuxBootConfig { kernel, initrd, cmdline, vcpu_count })?;`
//! 3. for every vCPU `i`: `linux::configure_vcpu(&kvm, &vcpu, i, vcpu_count, &entry)?;`
//!    vCPU 0 (the BSP) gets the entry registers; the others get CPUID, MSRs
//!    and LAPIC only and wait in KVM for INIT-SIPI from the kernel;
//! 4. run. [`cpuid_for`] may also be used for kernel-less vCPUs.
//!
//! The entry is PVH (32-bit protected mode, `ebx` = start info) when the ELF has
//! the `XEN_ELFNOTE_PHYS32_ENTRY` note, else the 64-bit boot protocol (`rsi` =
//! zero page). All errors are [`LinuxBootError`]; none of them panics.

pub mod cmdline;
pub mod cpuid;
pub mod initrd;
pub mod kernel;
pub mod lapic;
pub mod layout;
pub mod mptable;
pub mod msrs;
pub mod pvh;
pub mod regs;
pub mod zeropage;

#[cfg(test)]
mod boot_test;

use std::fs::File;
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use cpuid::cpuid_for;
pub use zeropage::InitrdPlacement;

use kernel::KernelKind;
use layout::{CMDLINE_ADDR, EBDA_START, ZERO_PAGE_ADDR};

/// What to boot.
#[derive(Clone, Copy, Debug)]
pub struct LinuxBootConfig<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
    pub vcpu_count: u8,
}

/// Which entry protocol the BSP uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit boot protocol: long mode, `rsi` = zero page.
    Linux64,
    /// PVH: 32-bit protected mode without paging, `ebx` = hvm_start_info.
    Pvh,
}

/// The result of [`load`]: what [`configure_vcpu`] needs, and facts to log.
#[derive(Clone, Copy, Debug)]
pub struct LinuxEntry {
    pub mode: EntryMode,
    /// Guest-physical entry point of the BSP.
    pub entry_addr: u64,
    pub kernel_start: u64,
    pub kernel_end: u64,
    pub initrd: Option<InitrdPlacement>,
    /// Guest-physical address of the NUL-terminated command line.
    pub cmdline_addr: u64,
    pub vcpu_count: u8,
}

/// One log line: `linux64 entry 0x1000000, kernel [..), initrd .., cmdline @..`.
impl std::fmt::Display for LinuxEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            EntryMode::Linux64 => "64-bit boot protocol",
            EntryMode::Pvh => "PVH",
        };
        write!(
            f,
            "{mode} entry {:#x}, kernel [{:#x}, {:#x}), {} vCPUs, cmdline at {:#x}",
            self.entry_addr, self.kernel_start, self.kernel_end, self.vcpu_count, self.cmdline_addr
        )?;
        match self.initrd {
            Some(rd) => write!(f, ", initrd {} bytes at {:#x}", rd.size, rd.addr),
            None => write!(f, ", no initrd"),
        }
    }
}

/// Everything that can go wrong while preparing a Linux boot.
#[derive(Debug, thiserror::Error)]
pub enum LinuxBootError {
    #[error("vCPU count {0} is outside 1..={max}", max = mptable::MAX_VCPUS)]
    VcpuCount(u8),
    #[error("guest memory must cover at least the first MiB (boot structures live there)")]
    MemoryTooSmall,
    #[error("cannot open kernel {0}")]
    KernelOpen(PathBuf, #[source] std::io::Error),
    #[error("kernel image is neither an ELF vmlinux nor a bzImage")]
    KernelFormat,
    #[error("kernel image is corrupt or unsupported: {0}")]
    KernelLoad(linux_loader::loader::Error),
    #[error("kernel does not fit in guest memory: {0}")]
    KernelDoesNotFit(linux_loader::loader::Error),
    #[error("kernel needs memory up to {end:#x} but RAM ends at {ram_end:#x}")]
    KernelTooBig { end: u64, ram_end: u64 },
    #[error("bzImage has no 64-bit entry point (xloadflags XLF_KERNEL_64 clear)")]
    BzImageNot64Bit,
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("cannot read initrd {0}")]
    InitrdOpen(PathBuf, #[source] std::io::Error),
    #[error("initrd is empty")]
    InitrdEmpty,
    #[error("initrd of {size} bytes does not fit: {room} bytes free above the kernel")]
    InitrdTooLarge { size: u64, room: u64 },
    #[error("guest memory has {0} ranges, more than the boot memory map holds")]
    TooManyMemoryRanges(usize),
    #[error("writing {0} into guest memory")]
    GuestWrite(&'static str, #[source] vm_memory::GuestMemoryError),
    #[error("KVM_GET_SUPPORTED_CPUID")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error("CPUID has more entries than KVM accepts")]
    CpuidTooManyEntries,
    #[error("KVM_SET_CPUID2")]
    SetCpuid(#[source] kvm_ioctls::Error),
    #[error("too many boot MSRs")]
    MsrsTooMany,
    #[error("KVM_SET_MSRS")]
    Msrs(#[source] kvm_ioctls::Error),
    #[error("KVM refused to set MSR {0:#x}")]
    MsrRefused(u32),
    #[error("KVM_SET_FPU")]
    Fpu(#[source] kvm_ioctls::Error),
    #[error("local APIC (is the in-kernel irqchip created?)")]
    Lapic(#[source] kvm_ioctls::Error),
    #[error("setting the entry registers")]
    Registers(#[source] kvm_ioctls::Error),
}

/// Loads kernel, initrd and command line into `mem` and writes every boot
/// structure. The VM itself is not modified (the parameter keeps the API
/// stable for VM-wide setup such as a future ACPI table).
pub fn load(
    _vm: &kvm_ioctls::VmFd,
    mem: &GuestMemoryMmap,
    cfg: &LinuxBootConfig,
) -> Result<LinuxEntry, LinuxBootError> {
    if cfg.vcpu_count == 0 || cfg.vcpu_count > mptable::MAX_VCPUS {
        return Err(LinuxBootError::VcpuCount(cfg.vcpu_count));
    }
    let e820 = layout::e820_map(mem).ok_or(LinuxBootError::MemoryTooSmall)?;
    let ram_end = layout::low_ram_end(mem);
    let k = kernel::load(mem, cfg.kernel, ram_end)?;

    let header = match k.kind {
        KernelKind::BzImage { header, .. } => Some(header),
        KernelKind::Elf { .. } => None,
    };
    // The command line must also fit its slot below the EBDA.
    let slot = (EBDA_START - CMDLINE_ADDR) as usize - 1;
    let max = cmdline::max_len(header.map(|h| (h.version, h.cmdline_size))).min(slot);
    let cmdline_bytes = cmdline::encode(cfg.cmdline, max)?;
    mem.write_slice(&cmdline_bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| LinuxBootError::GuestWrite("command line", e))?;

    let initrd = match cfg.initrd {
        Some(path) => {
            let addr_max = match header {
                Some(h) if h.initrd_addr_max != 0 => u64::from(h.initrd_addr_max),
                Some(_) => 0x37ff_ffff, // boot.rst: protocols before 2.03
                None => initrd::DEFAULT_INITRD_ADDR_MAX,
            };
            Some(load_initrd(mem, path, k.end, ram_end, addr_max)?)
        }
        None => None,
    };

    let params = zeropage::build(&k, cmdline_bytes.len(), initrd, &e820)?;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|e| LinuxBootError::GuestWrite("zero page", e))?;
    pvh::write(mem, &pvh::build(initrd, &e820)?)?;
    mem.write_slice(&mptable::build(cfg.vcpu_count), GuestAddress(EBDA_START))
        .map_err(|e| LinuxBootError::GuestWrite("MP table", e))?;
    regs::write_tables(mem)?;

    let (mode, entry_addr) = match k.kind {
        KernelKind::Elf {
            pvh_entry: Some(pvh),
            ..
        } => (EntryMode::Pvh, pvh),
        KernelKind::Elf { entry64, .. } | KernelKind::BzImage { entry64, .. } => {
            (EntryMode::Linux64, entry64)
        }
    };
    Ok(LinuxEntry {
        mode,
        entry_addr,
        kernel_start: k.start,
        kernel_end: k.end,
        initrd,
        cmdline_addr: CMDLINE_ADDR,
        vcpu_count: cfg.vcpu_count,
    })
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    ram_end: u64,
    addr_max: u64,
) -> Result<InitrdPlacement, LinuxBootError> {
    let open_err = |e| LinuxBootError::InitrdOpen(path.to_path_buf(), e);
    let mut file = File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    let addr = initrd::place(size, kernel_end, ram_end, addr_max)?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| LinuxBootError::GuestWrite("initrd", e))?;
    Ok(InitrdPlacement { addr, size })
}

/// Sets up vCPU `index` of `vcpu_count`: CPUID, boot MSRs, FPU, LAPIC LINT0/1;
/// for the BSP (index 0) also the entry segment/control/general registers.
pub fn configure_vcpu(
    kvm: &kvm_ioctls::Kvm,
    vcpu: &kvm_ioctls::VcpuFd,
    index: u8,
    vcpu_count: u8,
    entry: &LinuxEntry,
) -> Result<(), LinuxBootError> {
    let cpuid = cpuid_for(kvm, index, vcpu_count)?;
    vcpu.set_cpuid2(&cpuid).map_err(LinuxBootError::SetCpuid)?;
    msrs::set_boot_msrs(vcpu)?;
    vcpu.set_fpu(&regs::fpu()).map_err(LinuxBootError::Fpu)?;
    lapic::set_lint(vcpu)?;
    if index != 0 {
        return Ok(());
    }
    let sregs = vcpu.get_sregs().map_err(LinuxBootError::Registers)?;
    let (sregs, gprs) = match entry.mode {
        EntryMode::Linux64 => (regs::sregs_64(sregs), regs::regs_64(entry.entry_addr)),
        EntryMode::Pvh => (regs::sregs_pvh(sregs), regs::regs_pvh(entry.entry_addr)),
    };
    vcpu.set_sregs(&sregs).map_err(LinuxBootError::Registers)?;
    vcpu.set_regs(&gprs).map_err(LinuxBootError::Registers)
}
