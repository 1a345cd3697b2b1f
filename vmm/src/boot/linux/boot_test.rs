//! In-process boots on /dev/kvm through [`load`] and [`configure_vcpu`]: tiny
//! hand-assembled guests report, over port 0x80, the registers and boot
//! structures they were entered with (64-bit and PVH entries). The full probe
//! guests run through `ember-vmm` in tests/tests/linux_boot_probe.rs.

use std::io::Write;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::*;

/// A minimal 64-bit ELF with one PT_LOAD at `paddr` (entry there) and, with
/// `pvh`, a PT_NOTE carrying XEN_ELFNOTE_PHYS32_ENTRY.
pub(super) fn tiny_elf(paddr: u64, code: &[u8], pvh: Option<u32>) -> Vec<u8> {
    let phnum: u16 = if pvh.is_some() { 2 } else { 1 };
    let data_off = 64 + 56 * phnum as u64;
    let mut note = Vec::new();
    if let Some(entry) = pvh {
        for v in [4u32, 4, 18] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&entry.to_le_bytes());
    }
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&paddr.to_le_bytes()); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, phnum, 0, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    let mut ph = |ty: u32, off: u64, addr: u64, len: u64| {
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&5u32.to_le_bytes());
        for v in [off, addr, addr, len, len, 16] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    };
    ph(1, data_off, paddr, code.len() as u64);
    if pvh.is_some() {
        ph(4, data_off + code.len() as u64, 0, note.len() as u64);
    }
    f.extend_from_slice(code);
    f.extend_from_slice(&note);
    f
}

pub(super) fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("ember-linux-{}-{name}", std::process::id()));
    let mut f = std::fs::File::create(&p).expect("temp file");
    f.write_all(bytes).expect("write temp file");
    p
}

/// Boots `kernel` with `vcpus` vCPUs and returns the first `outs` 32-bit values
/// the BSP writes to port 0x80, plus the entry that was used.
/// [`boot_once`] with a deadline: on PVM a CPL0 test guest once sat halted in
/// KVM_RUN for 45 minutes (vCPU thread in `kvm_vcpu_block`), which hung the
/// whole test binary. A run past the deadline is reported and tried once
/// more in a fresh VM; a second one fails the test.
fn boot(
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    vcpus: u8,
    outs: usize,
) -> (LinuxEntry, Vec<u32>) {
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
    for attempt in 1..=2 {
        let (kernel, initrd, cmdline) = (
            kernel.to_path_buf(),
            initrd.map(Path::to_path_buf),
            cmdline.to_string(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(boot_once(&kernel, initrd.as_deref(), &cmdline, vcpus, outs));
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(done) => return done,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("boot_test: attempt {attempt}: no {outs} port writes within {DEADLINE:?}")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the boot thread panicked (see above)")
            }
        }
    }
    panic!("the test guest hung twice")
}

fn boot_once(
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    vcpus: u8,
    outs: usize,
) -> (LinuxEntry, Vec<u32>) {
    let kvm = Kvm::new().expect("/dev/kvm");
    let vm = kvm.create_vm().expect("create vm");
    vm.create_irq_chip().expect("irqchip");
    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).expect("memory");
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .expect("host address");
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mmap owned by `mem`, which outlives the VM.
        unsafe { vm.set_user_memory_region(r) }.expect("memory region");
    }
    let cfg = LinuxBootConfig {
        kernel,
        initrd,
        cmdline,
        vcpu_count: vcpus,
    };
    let entry = load(&vm, &mem, &cfg).expect("load");
    let mut vcpu0 = None;
    let mut others = Vec::new();
    for i in 0..vcpus {
        let v = vm.create_vcpu(u64::from(i)).expect("vcpu");
        configure_vcpu(&kvm, &v, i, vcpus, &entry).expect("configure vcpu");
        if i == 0 {
            vcpu0 = Some(v);
        } else {
            others.push(v);
        }
    }
    // APs are not started by ember: they wait in KVM for the kernel's INIT-SIPI,
    // with the LAPIC LVTs set like the BSP's.
    for ap in &others {
        let state = ap.get_mp_state().expect("mp state").mp_state;
        assert_eq!(
            state,
            kvm_bindings::KVM_MP_STATE_UNINITIALIZED,
            "AP waits for INIT-SIPI"
        );
        let lapic = ap.get_lapic().expect("AP lapic");
        let lvt0 = u32::from_le_bytes(std::array::from_fn(|i| {
            lapic.regs[lapic::APIC_LVT0 + i] as u8
        }));
        assert_eq!((lvt0 >> 8) & 7, lapic::APIC_MODE_EXTINT, "AP LINT0 ExtINT");
    }
    let mut vcpu = vcpu0.expect("bsp");
    let mut seen = Vec::new();
    while seen.len() < outs {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(0x80, data) if data.len() == 4 => {
                seen.push(u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
            }
            other => panic!("unexpected exit {other:?} after {seen:x?}"),
        }
    }
    (entry, seen)
}

#[test]
fn entry_64bit_sees_zero_page_and_long_mode() {
    #[rustfmt::skip]
    let code = [
        0x66, 0xba, 0x80, 0x00,                         // mov $0x80,%dx
        0x89, 0xf0, 0xef,                               // mov %esi,%eax; out
        0x8b, 0x86, 0x02, 0x02, 0x00, 0x00, 0xef,       // mov 0x202(%rsi),%eax (HdrS); out
        0x8c, 0xc8, 0xef,                               // mov %cs,%eax; out
        0x0f, 0x20, 0xc0, 0xef,                         // mov %cr0,%rax; out
        0x0f, 0x20, 0xe0, 0xef,                         // mov %cr4,%rax; out
        0x8b, 0x86, 0x28, 0x02, 0x00, 0x00, 0x8b, 0x00, 0xef, // cmd_line_ptr -> first 4 bytes
        0xeb, 0xfe,                                     // jmp .
    ];
    let k = temp_file("entry64", &tiny_elf(0x100_0000, &code, None));
    let rd = temp_file("entry64-rd", &[7u8; 5000]);
    let (entry, v) = boot(&k, Some(&rd), "abcd=1", 2, 6);
    assert_eq!(entry.mode, EntryMode::Linux64);
    assert_eq!(entry.initrd.map(|r| r.size), Some(5000));
    let line = entry.to_string();
    assert!(
        line.starts_with("64-bit boot protocol entry 0x1000000")
            && line.contains("initrd 5000 bytes"),
        "{line}"
    );
    assert_eq!(v[0], layout::ZERO_PAGE_ADDR as u32, "rsi = zero page");
    assert_eq!(v[1], zeropage::HDRS);
    assert_eq!(v[2], u32::from(regs::SEL_CODE64));
    assert_eq!(v[3] & 0x8000_0001, 0x8000_0001, "PE and PG");
    assert_ne!(v[4] & 0x20, 0, "PAE");
    assert_eq!(&v[5].to_le_bytes(), b"abcd");
}

#[test]
fn entry_pvh_sees_start_info_in_protected_mode() {
    #[rustfmt::skip]
    let code = [
        0x66, 0xba, 0x80, 0x00,                         // mov $0x80,%dx
        0x89, 0xd8, 0xef,                               // mov %ebx,%eax; out
        0x8b, 0x03, 0xef,                               // mov (%ebx),%eax (magic); out
        0x8c, 0xc8, 0xef,                               // mov %cs,%eax; out
        0x0f, 0x20, 0xc0, 0xef,                         // mov %cr0,%eax; out
        0x8b, 0x43, 0x18, 0x8b, 0x00, 0xef,             // cmdline_paddr -> first 4 bytes
        0xeb, 0xfe,                                     // jmp .
    ];
    let k = temp_file("pvh", &tiny_elf(0x100_0000, &code, Some(0x100_0000)));
    let (entry, v) = boot(&k, None, "wxyz", 1, 5);
    assert_eq!(entry.mode, EntryMode::Pvh);
    assert_eq!(v[0], layout::PVH_INFO_ADDR as u32, "ebx = start info");
    assert_eq!(v[1], pvh::XEN_HVM_START_MAGIC);
    assert_eq!(v[2], u32::from(regs::SEL_CODE32));
    assert_eq!(v[3] & 0x8000_0001, 0x1, "PE without PG");
    assert_eq!(&v[4].to_le_bytes(), b"wxyz");
}

#[test]
fn bad_configs_are_errors_not_panics() {
    let kvm = Kvm::new().expect("/dev/kvm");
    let vm = kvm.create_vm().expect("vm");
    let k = temp_file("bad", &tiny_elf(0x100_0000, &[0xf4], None));
    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).expect("mem");
    let cfg = |vcpu_count, cmdline| LinuxBootConfig {
        kernel: &k,
        initrd: None,
        cmdline,
        vcpu_count,
    };
    assert!(matches!(
        load(&vm, &mem, &cfg(0, "")),
        Err(LinuxBootError::VcpuCount(0))
    ));
    assert!(matches!(
        load(&vm, &mem, &cfg(33, "")),
        Err(LinuxBootError::VcpuCount(33))
    ));
    let long = "x".repeat(2048);
    assert!(matches!(
        load(&vm, &mem, &cfg(1, &long)),
        Err(LinuxBootError::CmdlineTooLong { .. })
    ));
    let big = temp_file("bad-rd", &vec![0u8; 40 << 20]);
    let c = LinuxBootConfig {
        kernel: &k,
        initrd: Some(&big),
        cmdline: "",
        vcpu_count: 1,
    };
    assert!(matches!(
        load(&vm, &mem, &c),
        Err(LinuxBootError::InitrdTooLarge { .. })
    ));
    let tiny: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 512 << 10)]).expect("mem");
    assert!(matches!(
        load(&vm, &tiny, &cfg(1, "")),
        Err(LinuxBootError::MemoryTooSmall)
    ));
    // Kernel at 16 MiB does not fit in 8 MiB.
    let small: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).expect("mem");
    assert!(matches!(
        load(&vm, &small, &cfg(1, "")),
        Err(LinuxBootError::KernelDoesNotFit(_))
    ));
}
