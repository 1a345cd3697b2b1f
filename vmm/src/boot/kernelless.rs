//! Booting a kernel-less guest: load a static ELF into guest memory, write the
//! page tables, GDT and `StartInfo` page, and put each vCPU in the CPL3 entry
//! state of `ember_abi::guest`. Memory layout:
//!
//! ```text
//! 0x0000            not mapped (null dereferences fault)
//! 0x1000..0xc000    GDT, page tables, TSS + I/O bitmap (supervisor-only)
//! 0xc000            StartInfo (user, read-only)
//! 0x10000..         the ELF's PT_LOAD segments (anywhere in RAM above this)
//! image end..heap_end   heap (StartInfo::heap_start/heap_end)
//! heap_end..mem_size    one stack per vCPU, STACK_SIZE each
//! ```

use std::fs::File;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ember_abi::guest::{self, MmioDevice, StartInfo};
use kvm_bindings::CpuId;
use kvm_bindings::{kvm_msr_entry, kvm_xcrs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::cpl3;
use super::elf::{Elf, ElfError};
use crate::memory::MMIO_GAP_START;

/// Guest-physical address of the StartInfo page.
pub const START_INFO_ADDR: u64 = cpl3::SUPERVISOR_END;
/// Lowest address an ELF segment may use.
pub const IMAGE_MIN: u64 = 0x1_0000;
/// Stack of each vCPU.
pub const STACK_SIZE: u64 = 1 << 20;
/// The least heap a guest gets; less means "memory too small for this guest".
pub const MIN_HEAP: u64 = 1 << 20;

const PAGE: u64 = 0x1000;
const MSR_IA32_TSC: u32 = 0x10;

/// Why a kernel-less guest could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KernellessError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Elf {
        path: String,
        #[source]
        source: ElfError,
    },
    #[error(
        "ELF segment {start:#x}..{end:#x} lies outside guest memory (usable {min:#x}..{max:#x})"
    )]
    SegmentOutside {
        start: u64,
        end: u64,
        min: u64,
        max: u64,
    },
    #[error("guest memory too small: {mem_mib} MiB leaves {heap} bytes of heap after the image and {vcpus} stacks (need {need})")]
    MemoryTooSmall {
        mem_mib: u64,
        heap: u64,
        vcpus: u8,
        need: u64,
    },
    #[error("kernel-less guests use memory below the MMIO gap only: at most {max_mib} MiB, got {mem_mib} MiB")]
    MemoryTooLarge { mem_mib: u64, max_mib: u64 },
    #[error("arguments too long: {len} bytes, kernel-less guests take at most {max}")]
    ArgsTooLong { len: usize, max: usize },
    #[error("too many MMIO devices for the start-info page: {count} (max {max})")]
    TooManyDevices { count: usize, max: usize },
    #[error("cannot write guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
    #[error("cannot load ELF segment from the file")]
    Load(#[source] vm_memory::GuestMemoryError),
    #[error("cannot set vCPU {index} state: {what}")]
    Vcpu {
        index: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot get random bytes")]
    Random(#[source] std::io::Error),
}

/// Whether `path` is a kernel-less guest ELF (carries the EMBER note).
/// Files that are not ELF at all (a bzImage) are not.
pub fn is_kernelless(path: &Path) -> Result<bool, KernellessError> {
    let mut file = open(path)?;
    match Elf::parse_headers(&mut file) {
        Ok(elf) => elf
            .has_note(
                &mut file,
                super::elf::EMBER_NOTE_NAME,
                super::elf::EMBER_NOTE_TYPE,
            )
            .map_err(|source| KernellessError::Elf {
                path: path.display().to_string(),
                source,
            }),
        Err(ElfError::NotElf) | Err(ElfError::Unsupported(_)) => Ok(false),
        Err(source) => Err(KernellessError::Elf {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn open(path: &Path) -> Result<File, KernellessError> {
    File::open(path).map_err(|source| KernellessError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// A loaded kernel-less guest, ready for its vCPUs to be configured.
#[derive(Debug, Clone)]
pub struct Image {
    pub entry: u64,
    pub mem_size: u64,
    pub heap_start: u64,
    pub heap_end: u64,
    pub vcpu_count: u8,
}

/// Loads the ELF at `path` and writes the page tables and GDT.
pub fn load(
    mem: &GuestMemoryMmap,
    path: &Path,
    mem_size: u64,
    vcpu_count: u8,
) -> Result<Image, KernellessError> {
    if mem_size > MMIO_GAP_START {
        return Err(KernellessError::MemoryTooLarge {
            mem_mib: mem_size >> 20,
            max_mib: MMIO_GAP_START >> 20,
        });
    }
    let mut file = open(path)?;
    let elf = Elf::parse(&mut file).map_err(|source| KernellessError::Elf {
        path: path.display().to_string(),
        source,
    })?;
    let stacks = vcpu_count as u64 * STACK_SIZE;
    let heap_end = mem_size.saturating_sub(stacks) & !(PAGE - 1);
    for seg in elf.loads() {
        let end = seg.vaddr + seg.memsz; // checked by Elf::parse
        if seg.vaddr < IMAGE_MIN || end > heap_end {
            return Err(KernellessError::SegmentOutside {
                start: seg.vaddr,
                end,
                min: IMAGE_MIN,
                max: heap_end,
            });
        }
    }
    let (_, image_end) = elf.image_range();
    let heap_start = image_end.div_ceil(PAGE) * PAGE;
    let heap = heap_end.saturating_sub(heap_start);
    if heap < MIN_HEAP {
        return Err(KernellessError::MemoryTooSmall {
            mem_mib: mem_size >> 20,
            heap,
            vcpus: vcpu_count,
            need: MIN_HEAP,
        });
    }
    for seg in elf.loads().filter(|s| s.filesz > 0) {
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(seg.offset))
            .map_err(|source| KernellessError::Elf {
                path: path.display().to_string(),
                source: ElfError::Io(source),
            })?;
        // The bss part (memsz - filesz) is already zero: guest memory is fresh
        // anonymous memory.
        mem.read_exact_volatile_from(GuestAddress(seg.vaddr), &mut file, seg.filesz as usize)
            .map_err(KernellessError::Load)?;
    }
    write_tables(mem, mem_size)?;
    Ok(Image {
        entry: elf.entry,
        mem_size,
        heap_start,
        heap_end,
        vcpu_count,
    })
}

pub(crate) fn write_tables(mem: &GuestMemoryMmap, mem_size: u64) -> Result<(), KernellessError> {
    let gdt: Vec<u8> = cpl3::gdt().iter().flat_map(|d| d.to_le_bytes()).collect();
    mem.write_slice(&gdt, GuestAddress(cpl3::GDT_ADDR))
        .map_err(KernellessError::Memory)?;
    mem.write_slice(&cpl3::tss(), GuestAddress(cpl3::TSS_ADDR))
        .map_err(KernellessError::Memory)?;
    for (addr, table) in cpl3::page_tables(mem_size, MMIO_GAP_START, &[START_INFO_ADDR]) {
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        mem.write_slice(&bytes, GuestAddress(addr))
            .map_err(KernellessError::Memory)?;
    }
    Ok(())
}

impl Image {
    /// Top of vCPU `index`'s stack.
    pub fn stack_top(&self, index: u8) -> u64 {
        self.heap_end + (index as u64 + 1) * STACK_SIZE
    }

    /// Writes the StartInfo page. `vcpu0` provides the TSC reading that goes
    /// with the wall-clock time.
    pub fn write_start_info(
        &self,
        mem: &GuestMemoryMmap,
        vcpu0: &VcpuFd,
        args: &str,
        devices: &[MmioDevice],
    ) -> Result<(), KernellessError> {
        if args.len() > guest::MAX_ARGS {
            return Err(KernellessError::ArgsTooLong {
                len: args.len(),
                max: guest::MAX_ARGS,
            });
        }
        if devices.len() > guest::MAX_DEVICES {
            return Err(KernellessError::TooManyDevices {
                count: devices.len(),
                max: guest::MAX_DEVICES,
            });
        }
        let mut info = StartInfo::empty();
        info.vcpu_count = self.vcpu_count as u32;
        info.mem_size = self.mem_size;
        info.heap_start = self.heap_start;
        info.heap_end = self.heap_end;
        info.stack_size = STACK_SIZE;
        info.tsc_khz = vcpu0.get_tsc_khz().map(u64::from).unwrap_or(0);
        info.wallclock_tsc = guest_tsc(vcpu0).unwrap_or(0);
        info.wallclock_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        getrandom(&mut info.random_seed)?;
        info.device_count = devices.len() as u32;
        info.devices[..devices.len()].copy_from_slice(devices);
        info.args_len = args.len() as u32;
        info.args[..args.len()].copy_from_slice(args.as_bytes());
        mem.write_slice(info.as_bytes(), GuestAddress(START_INFO_ADDR))
            .map_err(KernellessError::Memory)
    }

    /// Puts vCPU `index` in the CPL3 entry state (CPUID is set by the caller).
    /// `cpuid` is the CPUID the vCPU was given (it decides XSAVE/NX use).
    pub fn configure_vcpu(
        &self,
        cpuid: &CpuId,
        vcpu: &VcpuFd,
        index: u8,
    ) -> Result<(), KernellessError> {
        let err = |what| {
            move |source| KernellessError::Vcpu {
                index,
                what,
                source,
            }
        };
        let features = features(cpuid);
        let mut xsave = features.xsave;
        if xsave {
            // SSE/AVX state the guest may use: x87 | SSE | AVX, plus the three
            // AVX-512 components when all are supported.
            let supported = xcr0_supported(cpuid);
            let mut xcr0 = supported & 0x7;
            if supported & 0xe0 == 0xe0 {
                xcr0 |= 0xe0;
            }
            let mut xcrs = kvm_xcrs {
                nr_xcrs: 1,
                ..Default::default()
            };
            xcrs.xcrs[0].xcr = 0;
            xcrs.xcrs[0].value = xcr0 | 1;
            // Without XCR0 the guest still has SSE; only AVX is lost.
            xsave = vcpu.set_xcrs(&xcrs).is_ok();
        }
        let sregs = vcpu.get_sregs().map_err(err("get sregs"))?;
        vcpu.set_sregs(&cpl3::sregs(sregs, cpl3::Features { xsave, ..features }))
            .map_err(err("set sregs"))?;
        let fpu = kvm_bindings::kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu).map_err(err("set fpu"))?;
        vcpu.set_regs(&cpl3::regs(
            self.entry,
            START_INFO_ADDR,
            index,
            self.stack_top(index),
        ))
        .map_err(err("set regs"))
    }
}

/// leaf 1 ECX: XSAVE/XRSTOR and XSETBV/XGETBV with XCR0.
const LEAF1_ECX_XSAVE: u32 = 1 << 26;
/// leaf 0x80000001 ECX: LZCNT (AMD's ABM).
const EXT_ECX_LZCNT: u32 = 1 << 5;
/// XCR0 bits of the AVX state (SSE + YMM upper halves).
const XCR0_SSE_YMM: u64 = 0x6;

/// The CPUID of a kernel-less guest's vCPU `index` of `count`: KVM's
/// supported set normalized as for Linux guests, plus XSAVE when the host CPU
/// has it and KVM can switch the AVX state (`xcr0_supported`) but left XSAVE
/// out of its supported set. PVM does that because its CPL0 instruction
/// emulator lacks XSAVE; a kernel-less guest never runs at CPL0, and at CPL3
/// its AVX code runs natively (under PVM with the host's XCR0 in the
/// hardware: the guest's XGETBV reads it, AMX bits included, which the host's
/// XFD guards). Without the bit KVM refuses CR4.OSXSAVE and XCR0, and the
/// guest has SSE only.
pub fn cpuid(
    supported: &[kvm_bindings::kvm_cpuid_entry2],
    index: u8,
    count: u8,
) -> Vec<kvm_bindings::kvm_cpuid_entry2> {
    let mut entries = super::linux::cpuid::normalize(supported, index, count);
    let xsave_state = entries
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)
        .is_some_and(|e| u64::from(e.eax) & XCR0_SSE_YMM == XCR0_SSE_YMM);
    if xsave_state && std::is_x86_feature_detected!("xsave") {
        for e in entries.iter_mut().filter(|e| e.function == 1) {
            e.ecx |= LEAF1_ECX_XSAVE;
        }
    }
    if std::is_x86_feature_detected!("lzcnt") {
        for e in entries.iter_mut().filter(|e| e.function == 0x8000_0001) {
            e.ecx |= EXT_ECX_LZCNT;
        }
    }
    entries
}

fn cpuid_entry(cpuid: &CpuId, function: u32, index: u32) -> Option<kvm_bindings::kvm_cpuid_entry2> {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == function && e.index == index)
        .copied()
}

fn features(cpuid: &CpuId) -> cpl3::Features {
    let leaf1 = cpuid_entry(cpuid, 1, 0).unwrap_or_default();
    let ext = cpuid_entry(cpuid, 0x8000_0001, 0).unwrap_or_default();
    cpl3::Features {
        xsave: leaf1.ecx & (1 << 26) != 0,
        nx: ext.edx & (1 << 20) != 0,
    }
}

fn xcr0_supported(cpuid: &CpuId) -> u64 {
    cpuid_entry(cpuid, 0xd, 0)
        .map(|e| e.eax as u64 | ((e.edx as u64) << 32))
        .unwrap_or(0x3)
}

pub(crate) fn guest_tsc(vcpu: &VcpuFd) -> Option<u64> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_TSC,
        ..Default::default()
    }])
    .ok()?;
    (vcpu.get_msrs(&mut msrs).ok()? == 1).then(|| msrs.as_slice()[0].data)
}

pub(crate) fn getrandom(buf: &mut [u8]) -> Result<(), KernellessError> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(KernellessError::Random(e));
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::elf::tests::{build, temp_file};
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem(mib: u64) -> GuestMemoryMmap {
        crate::memory::create(mib).unwrap()
    }

    #[test]
    fn loads_segments_and_computes_the_heap() {
        let (_, path) = temp_file(&build(Some((b"EMBER", 1))), "kl-load");
        let m = mem(16);
        assert!(is_kernelless(&path).unwrap());
        let img = load(&m, &path, 16 << 20, 2).unwrap();
        assert_eq!(img.entry, 0x40_0000);
        assert_eq!(img.heap_start, 0x40_1000);
        assert_eq!(img.heap_end, (16 << 20) - 2 * STACK_SIZE);
        assert_eq!(img.stack_top(1), 16 << 20);
        let mut code = [0u8; 16];
        m.read_slice(&mut code, GuestAddress(0x40_0000)).unwrap();
        assert_eq!(code, [0xf4; 16]);
        let mut pml4 = 0u64;
        m.read_slice(bytemuck(&mut pml4), GuestAddress(cpl3::PML4_ADDR))
            .unwrap();
        assert_eq!(pml4 & !0xfff, cpl3::PDPT_ADDR);
        std::fs::remove_file(path).unwrap();
    }

    fn bytemuck(v: &mut u64) -> &mut [u8] {
        // SAFETY: a u64 is 8 plain bytes.
        unsafe { std::slice::from_raw_parts_mut((v as *mut u64).cast(), 8) }
    }

    #[test]
    fn refuses_images_that_do_not_fit() {
        let (_, path) = temp_file(&build(None), "kl-fit");
        assert!(!is_kernelless(&path).unwrap());
        // Segment at 4 MiB does not fit in 4 MiB of memory.
        let e = load(&mem(4), &path, 4 << 20, 1).unwrap_err();
        assert!(matches!(e, KernellessError::SegmentOutside { .. }), "{e}");
        // Fits, but one vCPU stack leaves less than MIN_HEAP of heap.
        let e = load(&mem(6), &path, 6 << 20, 1).unwrap_err();
        assert!(matches!(e, KernellessError::MemoryTooSmall { .. }), "{e}");
        let e = load(&mem(8), &path, 4 << 30, 1).unwrap_err();
        assert!(matches!(e, KernellessError::MemoryTooLarge { .. }), "{e}");
        std::fs::remove_file(path).unwrap();
    }
}
