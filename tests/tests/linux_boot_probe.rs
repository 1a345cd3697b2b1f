//! Boot-state probes through `ember-vmm`'s Linux entry paths: the probe guests
//! (tests/guests/probes) report the zero page / PVH start info, e820, command
//! line, MP table, entry registers and CPUID they were given; every field is
//! checked against what was configured.

use std::collections::HashMap;
use std::time::Duration;

use ember_tests::probes::{self, le16, le32, le64};

const MIB: u64 = 1 << 20;

struct Boot<'a> {
    probe: &'a str,
    vcpus: u8,
    mem_mib: u64,
    cmdline: &'a str,
    initrd_len: Option<usize>,
    /// More ember-vmm flags (devices).
    extra: &'a [&'a str],
}

/// Runs the probe, asserts a clean exit after "END", returns the report.
fn run(b: &Boot) -> HashMap<String, Vec<u8>> {
    let elf = match b.probe.strip_suffix(".bzimage") {
        Some(name) => probes::build_bzimage(name).expect("build bzImage probe"),
        None => probes::build(b.probe).expect("assemble probe"),
    };
    let mut args: Vec<String> = vec![
        "--kernel".into(),
        elf.display().to_string(),
        "--cmdline".into(),
        b.cmdline.into(),
        "--vcpus".into(),
        b.vcpus.to_string(),
        "--mem-mib".into(),
        b.mem_mib.to_string(),
        "--console".into(),
        "stdout".into(),
    ];
    args.extend(b.extra.iter().map(|s| s.to_string()));
    if let Some(len) = b.initrd_len {
        let path = std::env::temp_dir().join(format!(
            "ember-probe-initrd-{}-{}",
            std::process::id(),
            b.probe
        ));
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&path, bytes).expect("write initrd");
        args.extend(["--initrd".into(), path.display().to_string()]);
    }
    let out = probes::run_with_deadline(&probes::ember_vmm(), &args, Duration::from_secs(60))
        .expect("spawn ember-vmm");
    assert!(
        !out.timed_out,
        "probe hung; stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "i8042 reset must end ember-vmm with 0; stderr:\n{}",
        out.stderr
    );
    let report = probes::parse_report(&out.stdout);
    assert!(
        report.contains_key("END"),
        "probe did not finish:\n{}",
        out.stdout
    );
    report
}

/// The e820 map ember must report for `mem` bytes (ember's layout: RAM up to
/// 3 GiB, then the rest above 4 GiB).
fn expected_e820(mem: u64) -> Vec<(u64, u64, u32)> {
    let low_end = mem.min(0xc000_0000);
    let mut v = vec![
        (0, 0x9fc00, 1),
        (0x9fc00, 0x60400, 2),
        (MIB, low_end - MIB, 1),
    ];
    if mem > low_end {
        v.push((1 << 32, mem - low_end, 1));
    }
    v
}

fn e820_from(table: &[u8], entry_len: usize) -> Vec<(u64, u64, u32)> {
    table
        .chunks_exact(entry_len)
        .map(|e| (le64(e, 0), le64(e, 8), le32(e, 16)))
        .collect()
}

/// MP table: both checksums, floating pointer -> table, one enabled processor
/// entry per vCPU with APIC id = index and the BSP flag on vCPU 0 only.
fn check_mp_table(r: &HashMap<String, Vec<u8>>, vcpus: u8) {
    assert_eq!(
        r["MPSUM"],
        vec![0, 0],
        "MP floating pointer and table checksums"
    );
    let mpf = &r["MPF"];
    assert_eq!(&mpf[..4], b"_MP_");
    let mpc = &r["MPC"];
    assert_eq!(&mpc[..4], b"PCMP");
    assert_eq!(le16(mpc, 4) as usize, mpc.len());
    assert_eq!(le32(mpc, 36), 0xfee0_0000, "local APIC address");
    let mut cpus = Vec::new();
    let mut ioapic = None;
    let mut p = 44;
    for _ in 0..le16(mpc, 34) {
        match mpc[p] {
            0 => {
                cpus.push((mpc[p + 1], mpc[p + 3]));
                p += 20;
            }
            2 => {
                ioapic = Some((mpc[p + 1], le32(mpc, p + 4)));
                p += 8;
            }
            1 | 3 | 4 => p += 8,
            t => panic!("unknown MP entry type {t}"),
        }
    }
    assert_eq!(p, mpc.len(), "entry count matches the table length");
    let expect: Vec<(u8, u8)> = (0..vcpus)
        .map(|i| (i, if i == 0 { 3 } else { 1 }))
        .collect();
    assert_eq!(cpus, expect, "(APIC id, enabled|BSP) per vCPU");
    assert_eq!(ioapic, Some((vcpus + 1, 0xfec0_0000)));
}

/// CPUID as seen by the BSP: APIC id 0, the vCPU count in leaf 1 and in the
/// leaf 0xb core level, the hypervisor bit, KVM's signature.
fn check_cpuid(r: &HashMap<String, Vec<u8>>, vcpus: u8) {
    let leaf = |k: &str| {
        let b = &r[k];
        [le32(b, 0), le32(b, 4), le32(b, 8), le32(b, 12)]
    };
    let l1 = leaf("CPUID.0x1.0x0");
    assert_eq!(l1[1] >> 24, 0, "BSP APIC id");
    assert_eq!(
        (l1[1] >> 16) & 0xff,
        u32::from(vcpus),
        "logical processor count"
    );
    assert_ne!(l1[2] & (1 << 31), 0, "hypervisor bit");
    assert_eq!(l1[2] & (1 << 5), 0, "VMX hidden");
    // HTT must be set with several vCPUs; with one, KVM_SET_CPUID2 on this
    // kernel sets it by itself (ember asks for it clear), so it is not checked.
    if vcpus > 1 {
        assert_ne!(l1[3] & (1 << 28), 0, "HTT with several vCPUs");
    }
    if leaf("CPUID.0x0.0x0")[0] >= 0xb {
        let smt = leaf("CPUID.0xb.0x0");
        let core = leaf("CPUID.0xb.0x1");
        let end = leaf("CPUID.0xb.0x2");
        assert_eq!(
            (smt[1], (smt[2] >> 8) & 0xff),
            (1, 1),
            "one thread per core"
        );
        assert_eq!(
            (core[1], (core[2] >> 8) & 0xff),
            (u32::from(vcpus), 2),
            "cores = vCPUs"
        );
        assert!(1u32 << core[0] >= u32::from(vcpus));
        assert_eq!((end[2] >> 8) & 0xff, 0, "level 2 is invalid");
        assert_eq!([smt[3], core[3]], [0, 0], "x2APIC id of the BSP");
    }
    assert_eq!(
        leaf("CPUID.0x4.0x0")[0] >> 26,
        u32::from(vcpus) - 1,
        "cores per package in leaf 4"
    );
    let sig = leaf("CPUID.0x40000000.0x0");
    let text: Vec<u8> = sig[1..].iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(&text, b"KVMKVMKVM\0\0\0");
}

fn check_regs_64(r: &HashMap<String, Vec<u8>>) {
    let g = &r["REGS"];
    let (rsi, rsp, cr0, cr3, cr4, efer) = (
        le32(g, 0),
        le32(g, 4),
        le32(g, 8),
        le32(g, 12),
        le32(g, 16),
        le32(g, 20),
    );
    assert_eq!((rsi, rsp), (0x7000, 0x8ff0), "rsi = zero page, boot stack");
    assert_eq!(cr0 & 0x8000_0001, 0x8000_0001, "PE|PG");
    assert_eq!((cr3, cr4 & 0x20), (0x9000, 0x20), "page tables, PAE");
    assert_eq!(efer & 0x500, 0x500, "LME|LMA");
    assert_eq!(
        (le32(g, 24), le32(g, 28), le32(g, 32)),
        (0x10, 0x18, 0x18),
        "__BOOT_CS / __BOOT_DS"
    );
    assert_eq!(le32(g, 36) & (1 << 9), 0, "interrupts off");
}

#[test]
fn linux64_entry_zero_page_e820_cmdline_initrd_mp_cpuid() {
    let cmdline = "console=ttyS0 reboot=k panic=1 ember.probe=linux64";
    let mem = 64 * MIB;
    let r = run(&Boot {
        probe: "probe64",
        vcpus: 1,
        mem_mib: 64,
        cmdline,
        initrd_len: Some(10_000),
        extra: &[],
    });
    check_regs_64(&r);
    let zp = &r["ZP"];
    assert_eq!(le16(zp, 0x1fe), 0xaa55, "boot_flag");
    assert_eq!(le32(zp, 0x202), 0x5372_6448, "HdrS");
    assert_eq!(zp[0x210], 0xff, "type_of_loader");
    assert_eq!(zp[0x211] & 1, 1, "loadflags LOADED_HIGH");
    assert_eq!(le32(zp, 0x228), 0x20000, "cmd_line_ptr");
    assert_eq!(le32(zp, 0xc8), 0, "ext_cmd_line_ptr");
    assert_eq!(le32(zp, 0x238) as usize, cmdline.len() + 1, "cmdline_size");
    let (rd, rd_size) = (le32(zp, 0x218) as u64, le32(zp, 0x21c));
    assert_eq!(
        (rd_size, le32(zp, 0xc0), le32(zp, 0xc4)),
        (10_000, 0, 0),
        "initrd size, no high bits"
    );
    assert_eq!(rd % 4096, 0, "initrd page-aligned");
    assert!(
        rd >= 0x100000 + 0x1000 && rd + 10_000 <= mem,
        "initrd inside RAM above the probe"
    );
    assert!(rd + 10_000 + 4096 > mem, "initrd as high as possible");
    let n = zp[0x1e8] as usize;
    assert_eq!(zp.len(), 0x2d0 + 20 * n);
    assert_eq!(e820_from(&zp[0x2d0..], 20), expected_e820(mem));
    assert_eq!(r["CMDLINE"], cmdline.as_bytes());
    check_mp_table(&r, 1);
    check_cpuid(&r, 1);
}

#[test]
fn linux64_four_vcpus_and_memory_above_the_mmio_gap() {
    let cmdline = "ember.probe=gap";
    let r = run(&Boot {
        probe: "probe64",
        vcpus: 4,
        mem_mib: 4096,
        cmdline,
        initrd_len: None,
        extra: &[],
    });
    check_regs_64(&r);
    let zp = &r["ZP"];
    assert_eq!(e820_from(&zp[0x2d0..], 20), expected_e820(4096 * MIB));
    assert_eq!((le32(zp, 0x218), le32(zp, 0x21c)), (0, 0), "no initrd");
    assert_eq!(r["CMDLINE"], cmdline.as_bytes());
    check_mp_table(&r, 4);
    check_cpuid(&r, 4);
}

#[test]
fn pvh_entry_start_info_memmap_modules_cmdline_mp_cpuid() {
    let cmdline = "console=ttyS0 ember.probe=pvh";
    let mem = 128 * MIB;
    let r = run(&Boot {
        probe: "probe_pvh",
        vcpus: 2,
        mem_mib: 128,
        cmdline,
        initrd_len: Some(5000),
        extra: &[],
    });
    let g = &r["REGS"];
    assert_eq!(le32(g, 0), 0x6000, "ebx = hvm_start_info");
    assert_eq!(le32(g, 8) & 0x8000_0001, 1, "protected mode, paging off");
    assert_eq!((le32(g, 16), le32(g, 20)), (0, 0), "CR4 and EFER clear");
    assert_eq!(
        (le32(g, 24), le32(g, 28), le32(g, 32)),
        (0x08, 0x18, 0x18),
        "flat 32-bit CS, data segments"
    );
    let si = &r["PVH"];
    assert_eq!(le32(si, 0), 0x336e_c578, "magic");
    assert_eq!(le32(si, 4), 1, "version");
    assert_eq!(le32(si, 12), 1, "nr_modules");
    assert_eq!(le64(si, 24), 0x20000, "cmdline_paddr");
    assert_eq!(
        le32(si, 48) as usize,
        r["MEMMAP"].len() / 24,
        "memmap_entries"
    );
    assert_eq!(e820_from(&r["MEMMAP"], 24), expected_e820(mem));
    let m = &r["MODLIST"];
    let (rd, rd_size) = (le64(m, 0), le64(m, 8));
    assert_eq!(rd_size, 5000);
    assert!(
        rd % 4096 == 0 && rd + 5000 <= mem && rd + 5000 + 4096 > mem,
        "initrd at the top of RAM"
    );
    assert_eq!(r["CMDLINE"], cmdline.as_bytes());
    check_mp_table(&r, 2);
    check_cpuid(&r, 2);
}

#[test]
fn bzimage_entry_keeps_the_kernels_header_and_limits() {
    let cmdline = "console=ttyS0 ember.probe=bzimage";
    let mem = 64 * MIB;
    let r = run(&Boot {
        probe: "probe64.bzimage",
        vcpus: 2,
        mem_mib: 64,
        cmdline,
        initrd_len: Some(3000),
        extra: &[],
    });
    check_regs_64(&r);
    let zp = &r["ZP"];
    assert_eq!(
        zp[0x1f1],
        probes::BZ_SETUP_SECTS,
        "setup_sects copied from the image"
    );
    assert_eq!(
        le16(zp, 0x206),
        probes::BZ_VERSION,
        "protocol version copied"
    );
    assert_eq!(
        le32(zp, 0x238),
        probes::BZ_CMDLINE_SIZE,
        "cmdline_size is the kernel's, not rewritten"
    );
    assert_eq!(le16(zp, 0x236) & 1, 1, "xloadflags XLF_KERNEL_64");
    assert_eq!(le32(zp, 0x214), 0x100000, "code32_start");
    assert_eq!(zp[0x210], 0xff, "type_of_loader written over the image's");
    assert_eq!(le32(zp, 0x228), 0x20000, "cmd_line_ptr");
    let (rd, size) = (le32(zp, 0x218), le32(zp, 0x21c));
    let top = probes::BZ_INITRD_ADDR_MAX + 1;
    assert_eq!(size, 3000);
    assert!(
        rd % 4096 == 0 && rd + size <= top && rd + size + 4096 > top,
        "initrd right below initrd_addr_max: {rd:#x}"
    );
    assert_eq!(e820_from(&zp[0x2d0..], 20), expected_e820(mem));
    assert_eq!(r["CMDLINE"], cmdline.as_bytes());
    check_mp_table(&r, 2);
    check_cpuid(&r, 2);

    // One byte over the kernel's cmdline_size is refused.
    let bz = probes::build_bzimage("probe64").expect("bzImage");
    let args: Vec<String> = vec![
        "--kernel".into(),
        bz.display().to_string(),
        "--cmdline".into(),
        "y".repeat(probes::BZ_CMDLINE_SIZE as usize + 1),
    ];
    let out = probes::run_with_deadline(&probes::ember_vmm(), &args, Duration::from_secs(30))
        .expect("spawn");
    assert!(!out.timed_out);
    assert_ne!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "over-long command line must fail"
    );
    assert!(
        out.stderr.contains("1023"),
        "error names the kernel's limit: {}",
        out.stderr
    );
}

/// Linux finds virtio-mmio devices only through `virtio_mmio.device=` on its
/// command line: the command line the guest receives must announce every
/// configured device (vsock, then drives, then NICs: SECTIONS order), each at
/// its window and interrupt line, after the caller's own text. Regression: the
/// VM builder built the fragment from a device list it had already moved out,
/// so a real Linux guest saw no devices at all (found in the nested SVM host).
#[test]
fn linux_cmdline_announces_every_virtio_mmio_device() {
    let dir = std::env::temp_dir().join(format!("ember-probe-devs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    std::fs::write(&a, vec![0u8; 1 << 20]).expect("drive a");
    std::fs::write(&b, vec![0u8; 1 << 20]).expect("drive b");
    let vsock = format!("3:{}", dir.join("v.sock").display());
    let ro = format!("{},ro", b.display());
    let cmdline = "console=ttyS0 ember.probe=devices";
    let a = a.display().to_string();
    let r = run(&Boot {
        probe: "probe64",
        vcpus: 1,
        mem_mib: 64,
        cmdline,
        initrd_len: None,
        extra: &["--vsock", &vsock, "--drive", &a, "--drive", &ro],
    });
    let seen = String::from_utf8_lossy(&r["CMDLINE"]).to_string();
    let want = format!(
        "{cmdline} virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
         virtio_mmio.device=4K@0xd0002000:7"
    );
    assert_eq!(seen, want, "the guest's command line");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad Linux inputs end `ember-vmm` with a one-line error, never a hang.
#[test]
fn linux_path_rejects_oversized_initrd_and_cmdline() {
    let elf = probes::build("probe64").expect("assemble probe");
    let big = std::env::temp_dir().join(format!("ember-probe-big-initrd-{}", std::process::id()));
    std::fs::write(&big, vec![0u8; 40 << 20]).expect("write initrd");
    let long = "x".repeat(4096);
    let cases: [(&str, Vec<String>); 2] = [
        (
            "initrd",
            vec![
                "--initrd".into(),
                big.display().to_string(),
                "--mem-mib".into(),
                "32".into(),
            ],
        ),
        (
            "command line",
            vec!["--cmdline".into(), long, "--mem-mib".into(), "32".into()],
        ),
    ];
    for (what, extra) in cases {
        let mut args = vec!["--kernel".to_string(), elf.display().to_string()];
        args.extend(extra);
        let out = probes::run_with_deadline(&probes::ember_vmm(), &args, Duration::from_secs(30))
            .expect("spawn");
        assert!(!out.timed_out, "{what}: hung");
        let code = out.status.and_then(|s| s.code());
        assert!(
            matches!(code, Some(c) if c != 0),
            "{what}: must fail, got {code:?}"
        );
        let err = out.stderr.to_lowercase();
        let named = err.contains(what) || (what == "command line" && err.contains("cmdline"));
        assert!(named, "{what}: the error should name it: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
    }
}
