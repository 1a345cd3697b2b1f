//! The Linux guest under QEMU with software emulation (`-accel tcg -M
//! microvm`), which works on any host. ember's kernel (kernel-config/build.sh,
//! cached) boots the initramfs whose /init is the static `ember-agent`.
//!
//! 1. Boot: the agent logs its start as PID 1, finds its virtio-mmio devices
//!    (two block devices and a net device), mounts the `provided` runtime
//!    image as root, a code image built from a ZIP by images/code-image.sh at
//!    /var/task and a size-limited /tmp, brings up loopback, serves the
//!    Runtime API, and — no vsock device exists under QEMU here (no
//!    /dev/vhost-vsock on this host) — reports that it cannot reach the host
//!    and powers the VM off.
//! 2. End to end: the same guest told to reach the host over TCP
//!    (`ember_tcp=10.0.2.2:PORT`, QEMU user networking) is driven by
//!    ember-host's `AgentConn`: init and invocations of a busybox shell
//!    function inside the guest, a timeout that kills the function's cgroup
//!    and re-initialises, then `Shutdown` powering the VM off.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ember_host::env::{AgentConn, AgentKind, Code, InitSpec, InvokeRequest, LogStream};
use ember_tests::linux_guest::{build, code_image_of, unix_ms, BUSYBOX_BOOTSTRAP};

/// Cap on one TCG boot on a busy 2-core machine (a few seconds normally).
const QEMU_CAP: Duration = Duration::from_secs(240);

/// A scratch dir with a code image made from a ZIP holding `bootstrap`.
fn code_image(tag: &str, bootstrap: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ember-tcg-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let code = code_image_of(&dir, "code", &[("bootstrap", 0o100755, bootstrap)]);
    (dir, code)
}

/// Starts QEMU TCG microvm with the runtime image, the code image and a
/// user-network NIC; the console goes to `dir/console.log`. `no_timer_check`:
/// the kernel's IO-APIC timer probe times a few ticks, which fails (and
/// panics) when emulation is slowed by a busy host.
fn qemu(dir: &Path, code: &Path, extra_cmdline: &str) -> Child {
    let (vmlinux, images) = artifacts();
    let drive = |id: &str, p: &Path| {
        format!(
            "id={id},file={},format=raw,if=none,readonly=on",
            p.display()
        )
    };
    Command::new("qemu-system-x86_64")
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
        .arg("-append")
        .arg(format!(
            "console=ttyS0 reboot=t panic=-1 no_timer_check ember_tmp_size=64m {extra_cmdline}"
        ))
        .args(["-drive", &drive("rt", &images.join("provided.squashfs"))])
        .args(["-device", "virtio-blk-device,drive=rt"])
        .args(["-drive", &drive("code", code)])
        .args(["-device", "virtio-blk-device,drive=code"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-device,netdev=n0",
        ])
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("console.log")).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)")
}

/// The kernel and the images (cached builds; the first can take minutes, so
/// tests call this before starting their clocks).
fn artifacts() -> (PathBuf, PathBuf) {
    (
        build("kernel-config/build.sh", &[]),
        build("images/build-images.sh", &[]),
    )
}

/// Waits for QEMU to exit (the guest powered off) or kills it at `deadline`.
fn wait_exit(qemu: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(st) = qemu.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kernel_and_initramfs_boot_to_the_agent_under_qemu_tcg() {
    let (dir, code) = code_image("boot", "#!/bin/sh\necho hi\n");
    artifacts();
    let started = Instant::now();
    let mut vm = qemu(&dir, &code, "");
    let status = wait_exit(&mut vm, started + QEMU_CAP);
    let log = fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let _ = fs::remove_dir_all(&dir);
    eprintln!("QEMU TCG boot to agent power-off: {:?}", started.elapsed());
    assert!(
        status.is_some(),
        "QEMU did not finish within {QEMU_CAP:?}; console:\n{log}"
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

/// ember-host's protocol driver needs read timeouts; TCP has them too.
struct Tcp(TcpStream);

impl Read for Tcp {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}
impl Write for Tcp {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
impl ember_host::env::Transport for Tcp {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> std::io::Result<()> {
        self.0.set_read_timeout(t)
    }
}

fn request(id: &str, payload: &[u8], timeout_ms: u64) -> InvokeRequest {
    let now = unix_ms();
    InvokeRequest {
        request_id: id.into(),
        payload: payload.to_vec().into(),
        deadline_ms: now + timeout_ms,
        ..Default::default()
    }
}

#[test]
fn agent_as_pid1_serves_invocations_under_qemu_tcg() {
    let (dir, code) = code_image("e2e", BUSYBOX_BOOTSTRAP);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    artifacts();
    let started = Instant::now();
    // QEMU user networking maps the guest's 10.0.2.2 to the host's loopback.
    let mut vm = qemu(
        &dir,
        &code,
        &format!("ember_ip=10.0.2.15/24 ember_tcp=10.0.2.2:{port}"),
    );
    listener.set_nonblocking(true).unwrap();
    let console = || fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if started.elapsed() < QEMU_CAP && vm.try_wait().unwrap().is_none() => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                let _ = vm.kill();
                panic!(
                    "the guest agent never connected ({e}); console:\n{}",
                    console()
                );
            }
        }
    };
    stream.set_nonblocking(false).unwrap();
    let mut conn = AgentConn::handshake(Tcp(stream), Duration::from_secs(60)).expect("Ready");
    eprintln!(
        "QEMU TCG boot to Ready: {:?} (guest boot_us {})",
        started.elapsed(),
        conn.ready().boot_us
    );
    assert_eq!(conn.ready().agent, AgentKind::Linux);
    let spec = InitSpec {
        function_name: "tcg-fn".into(),
        function_version: "1".into(),
        handler: "unused".into(),
        code: Code::Path("/var/task".into()),
        env: vec![],
        memory_mib: 128,
        timeout_ms: 2_000,
        random_seed: None,
        trees: Vec::new(),
        ephemeral_mib: 0,
    };
    conn.init(&spec, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("init: {e}; console:\n{}", console()));
    let inv = conn
        .invoke(
            &request("tcg-1", br#"{"n":1}"#, 30_000),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("invoke: {e}; console:\n{}", console()));
    let v: serde_json::Value =
        serde_json::from_slice(&inv.result.clone().expect("response")).expect("json");
    assert_eq!(v["event"]["n"], 1);
    assert_eq!(v["pid1"], "init", "the agent is PID 1 (/init)");
    assert_eq!(v["task"], "bootstrap", "the code image is at /var/task");
    assert!(
        v["kernel"].as_str().is_some_and(|k| k.starts_with("6.1.")),
        "{v}"
    );
    assert!(inv
        .logs
        .lines
        .iter()
        .any(|l| l.stream == LogStream::Stdout && l.line == "guest got tcg-1"));
    assert!(inv.max_memory_kib > 0, "memory cgroup peak measured");

    // Timeout inside the guest: the cgroup is killed and the runtime restarted.
    let inv = conn
        .invoke(
            &request("tcg-slow", b"\"sleep\"", 2_000),
            Duration::from_secs(60),
        )
        .expect("timeout answer");
    let err = inv.result.expect_err("timeout");
    assert_eq!(err.error_type, "Sandbox.Timedout");
    assert_eq!(err.message, "Task timed out after 2.00 seconds");
    assert!(!err.fatal);
    let inv = conn
        .invoke(
            &request("tcg-2", br#"{"n":2}"#, 30_000),
            Duration::from_secs(60),
        )
        .expect("invoke after timeout");
    assert!(inv.result.is_ok(), "{:?}", inv.result);

    conn.shutdown().unwrap();
    let status = wait_exit(&mut vm, Instant::now() + Duration::from_secs(60));
    let log = console();
    let _ = fs::remove_dir_all(&dir);
    assert!(
        status.is_some(),
        "the VM did not power off after Shutdown:\n{log}"
    );
    assert!(log.contains("ember-agent: eth0 10.0.2.15/24"), "{log}");
    assert!(!log.contains("Kernel panic"), "{log}");
}
