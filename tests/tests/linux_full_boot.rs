//! Real Linux boots through `ember-vmm`: ember's kernel (kernel-config/build.sh,
//! cached) with a busybox initramfs whose /init reports what Linux sees
//! (MemTotal, `nproc`, the command line) and then reboots, panics or triple
//! faults. Entries: PVH (the vmlinux's Xen note), the 64-bit boot protocol
//! (the same vmlinux without its note) and a bzImage. These need hardware-backed
//! KVM, so they are `#[ignore]`d in a plain `cargo test` and run by
//! tests/hvhost (suite `linux_full_boot`), which provides it — nested under
//! QEMU TCG on PVM hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ember_tests::initramfs::busybox_initramfs;
use ember_tests::linux_guest::{build, require_hardware_kvm};
use ember_tests::probes::{self, RunOutput};

const MARKER: &str = "EMBER-LINUX-BOOT-OK";
/// Cap on one boot (nested TCG on a busy 2-core host is slow; a boot is ~5-20 s).
const BOOT_CAP: Duration = Duration::from_secs(180);

/// The cached kernel's directory (vmlinux and bzImage).
fn kernel_dir() -> PathBuf {
    let vmlinux = build("kernel-config/build.sh", &["--bzimage"]);
    vmlinux.parent().expect("kernel dir").to_path_buf()
}

/// A busybox initramfs whose /init reports and then runs `end`.
fn initramfs(path: &Path, end: &str) {
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\n\
         echo \"EMBER-MEMTOTAL $(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo)\"\n\
         echo \"EMBER-NPROC $(nproc)\"\n\
         echo \"EMBER-CMDLINE $(cat /proc/cmdline)\"\n\
         echo {MARKER}\n{end}\n"
    );
    busybox_initramfs(path, &init, &[]);
}

struct Boot<'a> {
    tag: &'a str,
    kernel: PathBuf,
    vcpus: u8,
    mem_mib: u64,
    cmdline: &'a str,
    /// What /init does after reporting.
    end: &'a str,
}

/// Boots, prints the console and VMM log (cargo shows them on failure).
fn boot(b: &Boot) -> RunOutput {
    let rd = std::env::temp_dir().join(format!(
        "ember-full-boot-{}-{}.cpio",
        std::process::id(),
        b.tag
    ));
    initramfs(&rd, b.end);
    let args: Vec<String> = [
        "--kernel",
        &b.kernel.display().to_string(),
        "--initrd",
        &rd.display().to_string(),
        "--cmdline",
        b.cmdline,
        "--vcpus",
        &b.vcpus.to_string(),
        "--mem-mib",
        &b.mem_mib.to_string(),
        "--console",
        "stdout",
        "--level",
        "debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out =
        probes::run_with_deadline(&probes::ember_vmm(), &args, BOOT_CAP).expect("spawn ember-vmm");
    let _ = std::fs::remove_file(&rd);
    println!(
        "== {}: exit {:?} after {:?} (nested TCG: functional evidence only)\n-- console:\n{}\n-- ember-vmm:\n{}",
        b.tag,
        out.status.and_then(|s| s.code()),
        out.elapsed,
        out.stdout,
        out.stderr
    );
    assert!(
        !out.timed_out,
        "{}: Linux did not finish in {BOOT_CAP:?}",
        b.tag
    );
    out
}

/// The `EMBER-<KEY> value` lines /init printed.
fn report(console: &str) -> HashMap<String, String> {
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("EMBER-"))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Boots to /init, checks what Linux saw, and `reboot -f` ends ember-vmm with 0.
fn boots_and_sees(b: &Boot, entry: &str) {
    require_hardware_kvm();
    let out = boot(b);
    assert!(out.stdout.contains(MARKER), "{}: /init never ran", b.tag);
    assert!(
        out.stderr.contains(&format!("Linux: {entry} entry")),
        "{}: not booted through the {entry} entry",
        b.tag
    );
    let r = report(&out.stdout);
    let mem_kib: u64 = r["MEMTOTAL"].trim().parse().expect("MemTotal");
    let given = b.mem_mib * 1024;
    // The kernel's own image and reserved pages are not in MemTotal.
    assert!(
        mem_kib <= given && mem_kib >= given * 3 / 4,
        "{}: MemTotal {mem_kib} KiB for {given} KiB of guest RAM",
        b.tag
    );
    assert_eq!(r["NPROC"].trim(), b.vcpus.to_string(), "{}: nproc", b.tag);
    assert_eq!(r["CMDLINE"].trim(), b.cmdline, "{}: /proc/cmdline", b.tag);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "{}: reboot -f must end ember-vmm with 0",
        b.tag
    );
}

const CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet rdinit=/init";

#[test]
#[ignore = "boots Linux: needs VMX/SVM-backed KVM; run by tests/hvhost/hvhost.sh"]
fn pvh_entry_one_vcpu_128_mib() {
    let b = Boot {
        tag: "pvh",
        kernel: kernel_dir().join("vmlinux"),
        vcpus: 1,
        mem_mib: 128,
        cmdline: CMDLINE,
        end: "reboot -f",
    };
    boots_and_sees(&b, "PVH");
}

#[test]
#[ignore = "boots Linux: needs VMX/SVM-backed KVM; run by tests/hvhost/hvhost.sh"]
fn linux64_entry_two_vcpus_1024_mib() {
    // The same vmlinux without its notes section: no PVH note, so ember
    // enters it through the 64-bit boot protocol at e_entry.
    let plain = std::env::temp_dir().join(format!("ember-vmlinux-nopvh-{}", std::process::id()));
    let st = Command::new("objcopy")
        .arg("--remove-section=.notes")
        .arg(kernel_dir().join("vmlinux"))
        .arg(&plain)
        .status()
        .expect("objcopy (binutils)");
    assert!(st.success(), "objcopy");
    let b = Boot {
        tag: "linux64",
        kernel: plain.clone(),
        vcpus: 2,
        mem_mib: 1024,
        cmdline: "console=ttyS0 reboot=k panic=-1 quiet rdinit=/init ember.case=linux64",
        end: "reboot -f",
    };
    boots_and_sees(&b, "64-bit boot protocol");
    let _ = std::fs::remove_file(&plain);
}

#[test]
#[ignore = "boots Linux: needs VMX/SVM-backed KVM; run by tests/hvhost/hvhost.sh"]
fn bzimage_two_vcpus_128_mib() {
    let b = Boot {
        tag: "bzimage",
        kernel: kernel_dir().join("bzImage"),
        vcpus: 2,
        mem_mib: 128,
        cmdline: "console=ttyS0 reboot=k panic=-1 quiet rdinit=/init ember.case=bzimage",
        end: "reboot -f",
    };
    boots_and_sees(&b, "64-bit boot protocol");
}

/// /init exits: Linux panics ("Attempted to kill init!") and, with panic=-1,
/// resets at once — which must not look like a clean reboot: exit 125 with
/// the panic line in the report (DESIGN.md "Exit codes").
#[test]
#[ignore = "boots Linux: needs VMX/SVM-backed KVM; run by tests/hvhost/hvhost.sh"]
fn kernel_panic_is_a_guest_crash_exit_125() {
    require_hardware_kvm();
    let out = boot(&Boot {
        tag: "panic",
        kernel: kernel_dir().join("vmlinux"),
        vcpus: 1,
        mem_mib: 128,
        cmdline: CMDLINE,
        end: "exit 3",
    });
    assert!(out.stdout.contains(MARKER), "/init never ran");
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(125),
        "a panic is a guest crash"
    );
    assert!(
        out.stderr.contains("ember-vmm: guest crashed: kernel panic: Kernel panic - not syncing: Attempted to kill init!"),
        "the report names the panic"
    );
}

/// `reboot=t`: Linux reboots by a triple fault (it loads an empty IDT and
/// raises int3). KVM reports KVM_EXIT_SHUTDOWN; ember-vmm ends with 125 and a
/// one-line report naming the triple fault.
#[test]
#[ignore = "boots Linux: needs VMX/SVM-backed KVM; run by tests/hvhost/hvhost.sh"]
fn triple_fault_is_reported_clearly() {
    require_hardware_kvm();
    let out = boot(&Boot {
        tag: "triple-fault",
        kernel: kernel_dir().join("vmlinux"),
        vcpus: 1,
        mem_mib: 128,
        cmdline: "console=ttyS0 reboot=t panic=-1 quiet rdinit=/init",
        end: "reboot -f",
    });
    assert!(out.stdout.contains(MARKER), "/init never ran");
    assert_eq!(out.status.and_then(|s| s.code()), Some(125));
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("ember-vmm: guest crashed:"))
        .expect("one crash report line");
    assert!(
        line.contains("vCPU 0: triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x"),
        "{line}"
    );
}

/// The real kernel through the real load path, on any KVM: a vmlinux's
/// `e_entry` is physical while its segments' `p_vaddr` are virtual, and it
/// must still be recognised as a Linux kernel and entered (on PVM it then
/// stops inside the emulator, which is the expected, reported failure).
#[test]
fn real_vmlinux_is_recognised_and_entered() {
    let kernel = kernel_dir().join("vmlinux");
    let args: Vec<String> = [
        "--kernel",
        &kernel.display().to_string(),
        "--cmdline",
        "console=ttyS0 reboot=k panic=-1",
        "--mem-mib",
        "256",
        "--timeout-ms",
        "3000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = probes::run_with_deadline(&probes::ember_vmm(), &args, Duration::from_secs(60))
        .expect("spawn ember-vmm");
    assert!(!out.timed_out, "ember-vmm ignored --timeout-ms");
    let err = out.stderr.to_lowercase();
    // Entered: it ran until the timeout (124), rebooted (0), or stopped in the
    // PVM emulator (reported as a KVM internal error) — never a load error.
    let code = out.status.and_then(|s| s.code());
    let entered = matches!(code, Some(0) | Some(124)) || err.contains("internal error");
    assert!(
        entered,
        "kernel not entered: exit {code:?}, stderr: {}",
        out.stderr
    );
}
