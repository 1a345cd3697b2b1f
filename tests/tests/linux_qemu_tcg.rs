//! The Linux guest under QEMU with software emulation (`-accel tcg -M
//! microvm`), which works on any host: ember's kernel (kernel-config/build.sh,
//! cached) boots the initramfs whose /init is the static `ember-agent`; the
//! agent must log its start as PID 1, find its virtio-mmio devices (two block
//! devices and a net device), mount the `provided` runtime image as root, a
//! code image built from a ZIP by images/code-image.sh at /var/task and a
//! size-limited /tmp, bring up loopback, serve the Runtime API, and then — no
//! vsock device exists under QEMU here (no /dev/vhost-vsock on this host) —
//! report that it cannot reach the host and power the VM off.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a build script and returns the last line it printed (a path).
fn build(script: &str, args: &[&str]) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join(script))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(out.status.success(), "{script} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.lines().last().expect("a path on the last line").trim())
}

#[test]
fn kernel_and_initramfs_boot_to_the_agent_under_qemu_tcg() {
    let vmlinux = build("kernel-config/build.sh", &[]);
    let images = build("images/build-images.sh", &[]);
    let dir = std::env::temp_dir().join(format!("ember-tcg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();

    // A function ZIP with an executable bootstrap -> read-only code image.
    let zip = dir.join("fn.zip");
    let made = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\n\
            z = zipfile.ZipFile(sys.argv[1], 'w')\n\
            i = zipfile.ZipInfo('bootstrap'); i.external_attr = 0o100755 << 16\n\
            z.writestr(i, '#!/bin/sh\\necho hi\\n'); z.close()",
        ])
        .arg(&zip)
        .status()
        .expect("python3");
    assert!(made.success());
    let code = dir.join("code.squashfs");
    let st = Command::new("bash")
        .arg(repo().join("images/code-image.sh"))
        .arg(&zip)
        .arg(&code)
        .status()
        .unwrap();
    assert!(st.success(), "code-image.sh failed");

    let console = dir.join("console.log");
    let drive = |id: &str, p: &Path| {
        format!(
            "id={id},file={},format=raw,if=none,readonly=on",
            p.display()
        )
    };
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-M",
            "microvm,acpi=off",
            "-m",
            "256",
            "-smp",
            "1",
        ])
        .args([
            "-nographic",
            "-nodefaults",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&vmlinux)
        .arg("-initrd")
        .arg(images.join("initramfs.cpio"))
        .args([
            "-append",
            "console=ttyS0 reboot=t panic=-1 ember_tmp_size=64m",
        ])
        .args(["-drive", &drive("rt", &images.join("provided.squashfs"))])
        .args(["-device", "virtio-blk-device,drive=rt"])
        .args(["-drive", &drive("code", &code)])
        .args(["-device", "virtio-blk-device,drive=code"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-device,netdev=n0",
        ])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&console).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
    // TCG on a busy 2-core machine: a few seconds normally; generous cap.
    let deadline = started + Duration::from_secs(240);
    let status = loop {
        if let Some(st) = qemu.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = fs::read_to_string(&console).unwrap_or_default();
    let _ = fs::remove_dir_all(&dir);
    eprintln!("QEMU TCG boot to agent power-off: {:?}", started.elapsed());
    assert!(
        status.is_some(),
        "QEMU did not finish within 240 s; console:\n{log}"
    );
    for want in [
        "Run /init as init process",
        "ember-agent: started as PID 1",
        "ember-agent: found devices: block=[vda,vdb] net=1 vsock=false",
        "ember-agent: mounted: /dev/vda on /; /dev/vdb on /var/task; tmpfs on /tmp (64m)",
        // Got past the Runtime API (loopback up) to the vsock connect.
        "ember-agent: FATAL: cannot reach the host: cannot connect to the host over vsock (cid 2, port 9000)",
        "reboot: Restarting system",
    ] {
        assert!(log.contains(want), "console lacks {want:?}:\n{log}");
    }
    assert!(!log.contains("Kernel panic"), "{log}");
}
