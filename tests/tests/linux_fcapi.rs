//! Firecracker API features only a Linux guest can show, in one Linux
//! microVM configured and started only through `ember-vmm --api-sock`
//! (boot-source, machine-config, serial, entropy, InstanceStart):
//! - the entropy device (`PUT /entropy`) is Linux's hwrng: virtio-rng's
//!   driver binds and two reads of `/dev/hwrng` give different, non-zero
//!   bytes (the kernel has no other hwrng driver and no sysfs: a read with
//!   no bound rng fails, and the line would be empty);
//! - `PUT /actions {"action_type":"SendCtrlAltDel"}` reaches the guest
//!   through the i8042: /init never disabled Ctrl+Alt+Del, so the kernel
//!   restarts, `reboot=k` resets through the i8042, and ember-vmm exits 0,
//!   as Firecracker does.
//!
//! Needs hardware-backed KVM: `#[ignore]`d in a plain `cargo test`, run by
//! tests/hvhost (suite `linux-fcapi`). Under the nested TCG layer every
//! timing is functional evidence only.

use std::time::{Duration, Instant};

use ember_tests::fc_api::ApiVmm;
use ember_tests::initramfs::busybox_initramfs;
use ember_tests::linux_guest::{build, require_hardware_kvm};

/// One step under nested TCG on a busy 2-core host.
const STEP: Duration = Duration::from_secs(300);

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
echo "EMBER-RNG a=$(head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
echo "EMBER-RNG b=$(head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
echo "EMBER-CAD ready"
exec sleep 100000
"#;

fn wait_for(path: &std::path::Path, marker: &str, vmm: &mut ApiVmm) -> String {
    let end = Instant::now() + STEP;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(marker) {
            return text;
        }
        if let Ok(Some(s)) = vmm.child.try_wait() {
            panic!("ember-vmm ended ({s}) before {marker:?}; console:\n{text}");
        }
        assert!(
            Instant::now() < end,
            "no {marker:?} in {STEP:?}; console:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn field<'a>(console: &'a str, key: &str) -> &'a str {
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("EMBER-RNG "))
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no EMBER-RNG {key}= line; console:\n{console}"))
}

#[test]
#[ignore = "boots Linux: needs VMX/SVM-backed KVM; run by tests/hvhost/hvhost.sh"]
fn linux_reads_the_entropy_device_and_reboots_on_ctrl_alt_del() {
    require_hardware_kvm();
    let kernel = build("kernel-config/build.sh", &[]);
    let dir = std::env::temp_dir().join(format!("ember-linux-fcapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("init.cpio");
    busybox_initramfs(&initrd, INIT, &[]);
    let console = dir.join("console.out");
    let mut vmm = ApiVmm::spawn(&dir.join("api.sock"), &dir.join("vmm.log"));
    // Before boot Firecracker refuses SendCtrlAltDel.
    let (status, body) = vmm.call("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not supported before starting"), "{body}");
    vmm.ok(
        "PUT",
        "/boot-source",
        &serde_json::json!({
            "kernel_image_path": kernel,
            "initrd_path": initrd,
            "boot_args": "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux \
                          i8042.nopnp i8042.dumbkbd quiet rdinit=/init",
        })
        .to_string(),
    );
    vmm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count":1,"mem_size_mib":256}"#,
    );
    vmm.ok(
        "PUT",
        "/serial",
        &serde_json::json!({ "serial_out_path": console }).to_string(),
    );
    vmm.ok(
        "PUT",
        "/entropy",
        r#"{"rate_limiter":{"bandwidth":{"size":65536,"refill_time":100}}}"#,
    );
    vmm.ok("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#);
    let text = wait_for(&console, "EMBER-CAD ready", &mut vmm);
    println!("-- console up to the CAD:\n{text}");
    let (a, b) = (field(&text, "a"), field(&text, "b"));
    for x in [a, b] {
        assert_eq!(x.len(), 64, "32 bytes as hex: {x:?}");
        assert_ne!(x, "0".repeat(64));
    }
    assert_ne!(a, b, "two reads of /dev/hwrng gave the same bytes");
    let sent = Instant::now();
    vmm.ok("PUT", "/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
    let end = Instant::now() + STEP;
    let status = loop {
        if let Some(s) = vmm.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "ember-vmm still runs {STEP:?} after SendCtrlAltDel; console:\n{}",
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let log = std::fs::read_to_string(dir.join("vmm.log")).unwrap_or_default();
    println!(
        "-- exit {status} {:?} after SendCtrlAltDel (nested TCG: functional only)\n-- console:\n{text}\n-- ember-vmm:\n{log}",
        sent.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(0),
        "the guest's reset must end ember-vmm with 0"
    );
    assert!(text.contains("reboot"), "no reboot message on the console");
    let _ = std::fs::remove_dir_all(&dir);
}
