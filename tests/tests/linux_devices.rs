//! Linux's own drivers against ember's virtio devices, in one real Linux
//! microVM under `ember-vmm`: a busybox /init chroots into the python3.11
//! runtime image and runs tests/tests/linux_devices_guest.py, which reports
//! each step on the console; this side checks every report against what it
//! stored, sent and received.
//! - virtio-blk: a file the host put on an ext4 drive reads back; a
//!   read-only drive is readable and refuses writes (and is unchanged after);
//!   a file written and fsync'd survives SIGKILL of the VMM (e2fsck replays
//!   the journal, debugfs reads it from the image).
//! - virtio-net: a TAP in a network namespace this test creates; ping both
//!   ways, TCP (1 MiB) and UDP (16 datagrams) both ways, content-checked.
//! - virtio-vsock: guest -> CID 2 through `<uds_path>_<port>`, host -> guest
//!   through `CONNECT <port>`, 64 MiB each way with matching SHA-256.
//! - rate limiters seen from inside Linux: a drive limited to 2 MiB/s read
//!   beside an unlimited one; a NIC whose tx is limited to 1/16 MiB/s beside
//!   an unlimited one.
//!
//! Needs hardware-backed KVM: `#[ignore]`d in a plain `cargo test`, run by
//! tests/hvhost (suite `linux-devices`). Under the nested TCG layer every
//! timing is functional evidence only.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ember_tests::blknet::{can_netns, sha256_hex, NetNs, Vm};
use ember_tests::initramfs::busybox_initramfs;
use ember_tests::linux_guest::{build, require_hardware_kvm};

const MIB: usize = 1 << 20;
const GUEST_PY: &str = include_str!("linux_devices_guest.py");
/// One step under nested TCG on a busy 2-core host.
const STEP: Duration = Duration::from_secs(300);
const MAC0: &str = "06:00:0a:51:00:02";
const MAC1: &str = "06:00:0a:52:00:02";
/// Drive limit: 256 KiB every 125 ms = 2 MiB/s.
const BLK_LIMIT_MIB_S: f64 = 2.0;
/// eth1 tx limit: 8 KiB every 125 ms = 1/16 MiB/s of frames. It must sit
/// well below the machine's own pace to be told apart from it, and under
/// nested TCG an unlimited NIC ran at 9.6 MiB/s on a quiet host but at only
/// 0.21 MiB/s with four builds beside it (when a 0.25 MiB/s limit could no
/// longer be seen: the limited NIC sent at 0.18).
const NET_LIMIT_MIB_S: f64 = 0.0625;
/// Bytes sent over each NIC for the rate check (8 s at the limit).
const NET_RATE_BYTES: usize = MIB / 2;

/// /init: mounts the runtime image (the squashfs drive) as the chroot,
/// brings up the NICs by MAC, and runs the guest script with its python.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /sys /py
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /py
for d in /dev/vd?; do mount -t squashfs -o ro "$d" /py 2>/dev/null && break; done
mount -t tmpfs -o size=16m tmp /py/tmp
mount -t devtmpfs dev /py/dev
mount -t proc proc /py/proc
mount -t sysfs sys /py/sys
cp /bin/busybox /guest.py /py/tmp/
ip link set lo up
for i in /sys/class/net/eth*; do
  n=${i##*/}
  case "$(cat "$i/address")" in
    06:00:0a:51:00:02) ip addr add 10.81.0.2/24 dev "$n" ;;
    06:00:0a:52:00:02) ip addr add 10.82.0.2/24 dev "$n" ;;
  esac
  ip link set "$n" up
done
echo "EMBER-DEV net-up $(ip -o -4 addr show | grep -c ' 10\.8[12]\.0\.2/')"
chroot /py /usr/bin/python3.11 -u /tmp/guest.py
echo "EMBER-DEV script-exit rc=$?"
exec sleep 100000
"#;

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut v))
        .expect("/dev/urandom");
    v
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    println!(
        "$ {cmd} {}: {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `key=value` fields of a report line.
fn fields(line: &str) -> HashMap<String, String> {
    line.trim_end()
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits for the guest's `EMBER-DEV <step>` report; an error report or
/// none in time is a failure.
fn report(vm: &mut Vm, step: &str) -> Result<HashMap<String, String>, String> {
    let prefix = format!("EMBER-DEV {step} ");
    let line = vm
        .wait_line(&prefix, STEP)
        .ok_or_else(|| format!("no report `{step}` from the guest"))?;
    println!("{line}");
    let f = fields(&line);
    match f.get("error") {
        Some(e) => Err(format!("guest step {step} failed: {e}")),
        None => Ok(f),
    }
}

fn ensure(cond: bool, what: String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what)
    }
}

/// A TCP server in the namespace: the bytes of one connection and the
/// seconds from accept to EOF.
fn tcp_sink(ns: &NetNs, addr: &'static str) -> JoinHandle<Result<(Vec<u8>, f64), String>> {
    let l = ns.spawn_in(move || TcpListener::bind(addr).map_err(|e| e.to_string()));
    let l = l.join().expect("bind thread");
    std::thread::spawn(move || {
        let l = l?;
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        s.set_read_timeout(Some(STEP)).map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        s.read_to_end(&mut v).map_err(|e| e.to_string())?;
        Ok((v, t0.elapsed().as_secs_f64()))
    })
}

struct Files {
    dir: PathBuf,
    data: PathBuf,
    from_host_sha: String,
    ro: PathBuf,
    ro_sha: String,
}

fn make_drives(dir: &Path) -> Files {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let from_host = random(MIB);
    std::fs::write(src.join("from-host.bin"), &from_host).expect("write");
    let data = dir.join("data.ext4");
    let src_s = src.display().to_string();
    let data_s = data.display().to_string();
    let out = run("mkfs.ext4", &["-q", "-F", "-d", &src_s, &data_s, "64M"]);
    assert!(out.status.success(), "mkfs.ext4 (e2fsprogs)");
    let ro_data = random(8 * MIB);
    let ro = dir.join("ro.img");
    std::fs::write(&ro, &ro_data).expect("write");
    std::fs::write(dir.join("lim.img"), vec![0u8; 12 * MIB]).expect("write");
    std::fs::write(dir.join("free.img"), vec![0u8; 16 * MIB]).expect("write");
    Files {
        dir: dir.to_path_buf(),
        data,
        from_host_sha: sha256_hex(&from_host),
        ro,
        ro_sha: sha256_hex(&ro_data),
    }
}

struct Listeners {
    tcp_in: JoinHandle<Result<(Vec<u8>, f64), String>>,
    net_lim: JoinHandle<Result<(Vec<u8>, f64), String>>,
    net_free: JoinHandle<Result<(Vec<u8>, f64), String>>,
    udp_in: JoinHandle<Result<Vec<Vec<u8>>, String>>,
    vsock_in: JoinHandle<Result<Vec<u8>, String>>,
}

fn listen(ns: &NetNs, uds: &Path) -> Listeners {
    let udp = ns
        .spawn_in(|| UdpSocket::bind("10.81.0.1:5703").map_err(|e| e.to_string()))
        .join()
        .expect("bind thread");
    let udp_in = std::thread::spawn(move || {
        let s = udp?;
        s.set_read_timeout(Some(STEP)).map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < 16 {
            let n = s.recv(&mut buf).map_err(|e| e.to_string())?;
            got.push(buf[..n].to_vec());
        }
        Ok(got)
    });
    let vl = UnixListener::bind(format!("{}_5000", uds.display())).expect("vsock listener");
    let vsock_in = std::thread::spawn(move || {
        let (mut s, _) = vl.accept().map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        s.read_to_end(&mut v).map_err(|e| e.to_string())?;
        Ok(v)
    });
    Listeners {
        tcp_in: tcp_sink(ns, "10.81.0.1:5701"),
        net_lim: tcp_sink(ns, "10.82.0.1:5705"),
        net_free: tcp_sink(ns, "10.81.0.1:5706"),
        udp_in,
        vsock_in,
    }
}

fn joined<T>(h: JoinHandle<Result<T, String>>, what: &str) -> Result<T, String> {
    h.join()
        .map_err(|_| format!("{what}: thread panicked"))?
        .map_err(|e| format!("{what}: {e}"))
}

/// Every check while the VM runs, up to the fsync'd write.
fn checks(vm: &mut Vm, ns: &NetNs, f: &Files, uds: &Path, l: Listeners) -> Result<(), String> {
    let t0 = Instant::now();
    let up = report(vm, "net-up")?;
    println!(
        "boot to /init: {:.1} s (nested TCG: functional evidence only); {up:?}",
        t0.elapsed().as_secs_f64()
    );
    // Host -> guest ping while the guest works through its steps.
    let ns_name = ns.name.clone();
    let ping = std::thread::spawn(move || {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns_name,
                "busybox",
                "ping",
                "-c",
                "3",
                "-W",
                "10",
                "10.81.0.2",
            ],
        )
    });
    let d = report(vm, "drives")?;
    ensure(d.len() == 5, format!("five drives expected: {d:?}"))?;

    let r = report(vm, "blk-read")?;
    ensure(
        r["sha"] == f.from_host_sha,
        "the file the host put on the ext4 drive read back different".into(),
    )?;
    let r = report(vm, "blk-ro")?;
    ensure(
        r["ro"] == "1",
        format!("Linux must see the drive read-only: {r:?}"),
    )?;
    ensure(
        r["sha"] == f.ro_sha,
        "the read-only drive read back different".into(),
    )?;
    ensure(
        r["refused"] != "no",
        format!("a write to the read-only drive succeeded: {r:?}"),
    )?;

    let r = report(vm, "blk-rate")?;
    let rate = |b: &str, s: &str| {
        r[b].parse::<f64>().unwrap_or(0.0) / MIB as f64 / r[s].parse::<f64>().unwrap_or(f64::MAX)
    };
    let (lim, free) = (
        rate("limited_bytes", "limited_s"),
        rate("free_bytes", "free_s"),
    );
    println!("blk read from inside Linux: limited {lim:.2} MiB/s (limit {BLK_LIMIT_MIB_S}), unlimited {free:.2} MiB/s");
    ensure(
        (0.75 * BLK_LIMIT_MIB_S..=1.25 * BLK_LIMIT_MIB_S).contains(&lim),
        format!("limited drive read at {lim:.2} MiB/s, limit {BLK_LIMIT_MIB_S} MiB/s"),
    )?;
    ensure(
        free > 2.0 * lim,
        format!("the unlimited drive ({free:.2} MiB/s) must be much faster than the limited one"),
    )?;

    let r = report(vm, "net-ping")?;
    ensure(
        r["rc"] == "0" && r["received"] == "3",
        format!("guest -> host ping: {r:?}"),
    )?;
    let p = ping.join().map_err(|_| "ping thread")?;
    let text = String::from_utf8_lossy(&p.stdout);
    ensure(
        p.status.success() && text.matches("bytes from 10.81.0.2").count() == 3,
        format!("host -> guest ping: {text}"),
    )?;

    let r = report(vm, "tcp-sent")?;
    let (got, _) = joined(l.tcp_in, "tcp guest -> host")?;
    ensure(
        got.len() == MIB && sha256_hex(&got) == r["sha"],
        "TCP guest -> host: content differs".into(),
    )?;
    report(vm, "tcp-listening")?;
    let sent = random(MIB);
    let data = sent.clone();
    ns.spawn_in(move || -> Result<(), String> {
        let mut s = TcpStream::connect("10.81.0.2:5702").map_err(|e| e.to_string())?;
        s.write_all(&data).map_err(|e| e.to_string())?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "tcp client thread")??;
    let r = report(vm, "tcp-got")?;
    ensure(
        r["bytes"] == MIB.to_string() && r["sha"] == sha256_hex(&sent),
        format!("TCP host -> guest: content differs: {r:?}"),
    )?;

    let r = report(vm, "udp-sent")?;
    let mut grams = joined(l.udp_in, "udp guest -> host")?;
    grams.sort_by_key(|g| g.get(..2).map(|s| s.to_vec()));
    ensure(
        sha256_hex(&grams.concat()) == r["sha"],
        "UDP guest -> host: content differs".into(),
    )?;
    report(vm, "udp-listening")?;
    let grams: Vec<Vec<u8>> = (0..16u16)
        .map(|n| [n.to_be_bytes().to_vec(), random(998)].concat())
        .collect();
    let to_send = grams.clone();
    ns.spawn_in(move || -> Result<(), String> {
        let s = UdpSocket::bind("10.81.0.1:0").map_err(|e| e.to_string())?;
        for g in &to_send {
            s.send_to(g, "10.81.0.2:5704").map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    })
    .join()
    .map_err(|_| "udp client thread")??;
    let r = report(vm, "udp-got")?;
    ensure(
        r["count"] == "16" && r["sha"] == sha256_hex(&grams.concat()),
        format!("UDP host -> guest: content differs: {r:?}"),
    )?;

    report(vm, "net-rate-sent")?;
    let (a, ta) = joined(l.net_lim, "limited NIC")?;
    let (b, tb) = joined(l.net_free, "unlimited NIC")?;
    // The limiter counts frames: 1448 bytes of TCP payload per 1514-byte frame.
    let (lim, free) = (
        a.len() as f64 / MIB as f64 / ta * 1514.0 / 1448.0,
        b.len() as f64 / MIB as f64 / tb,
    );
    println!("net tx seen by the peer: limited NIC {lim:.3} MiB/s of frames (limit {NET_LIMIT_MIB_S}), unlimited NIC {free:.2} MiB/s");
    ensure(
        a.len() == NET_RATE_BYTES && b.len() == NET_RATE_BYTES,
        "rate runs lost data".into(),
    )?;
    ensure(
        (0.75 * NET_LIMIT_MIB_S..=1.25 * NET_LIMIT_MIB_S).contains(&lim),
        format!("limited NIC sent at {lim:.3} MiB/s, limit {NET_LIMIT_MIB_S} MiB/s"),
    )?;
    ensure(
        free > 2.0 * lim,
        format!("the unlimited NIC ({free:.2} MiB/s) must be much faster than the limited one"),
    )?;

    let t = Instant::now();
    let r = report(vm, "vsock-sent")?;
    let got = joined(l.vsock_in, "vsock guest -> host")?;
    ensure(
        got.len() == 64 * MIB && sha256_hex(&got) == r["sha"],
        format!("vsock guest -> host: {} bytes, content differs", got.len()),
    )?;
    println!(
        "vsock 64 MiB guest -> host: {:.1} s (TCG)",
        t.elapsed().as_secs_f64()
    );
    report(vm, "vsock-listening")?;
    let t = Instant::now();
    let sent = random(64 * MIB);
    let mut s = UnixStream::connect(uds).map_err(|e| format!("vsock uds: {e}"))?;
    s.write_all(b"CONNECT 5001\n").map_err(|e| e.to_string())?;
    let mut ok = String::new();
    BufReader::new(s.try_clone().map_err(|e| e.to_string())?)
        .read_line(&mut ok)
        .map_err(|e| e.to_string())?;
    ensure(ok.starts_with("OK "), format!("CONNECT answered {ok:?}"))?;
    s.write_all(&sent).map_err(|e| e.to_string())?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let r = report(vm, "vsock-got")?;
    ensure(
        r["bytes"] == (64 * MIB).to_string() && r["sha"] == sha256_hex(&sent),
        format!("vsock host -> guest: content differs: {r:?}"),
    )?;
    println!(
        "vsock 64 MiB host -> guest: {:.1} s (TCG)",
        t.elapsed().as_secs_f64()
    );

    let r = report(vm, "blk-synced")?;
    // SIGKILL right after the guest's fsync returned.
    let _ = vm.child.kill();
    std::fs::write(f.dir.join("synced.sha"), &r["sha"]).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
#[ignore = "boots Linux: needs VMX/SVM-backed KVM; run by tests/hvhost/hvhost.sh"]
fn linux_drivers_against_ember_devices() {
    require_hardware_kvm();
    can_netns().expect("this test creates a network namespace with TAPs: run it as root");
    let kernel = build("kernel-config/build.sh", &[]);
    let images = build("images/build-images.sh", &["--python"]);
    let dir = std::env::temp_dir().join(format!("ember-linux-dev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let _cleanup = Scratch(dir.clone());
    let f = make_drives(&dir);
    let initrd = dir.join("initrd.cpio");
    busybox_initramfs(&initrd, INIT, &[("guest.py", 0o644, GUEST_PY.as_bytes())]);

    let ns = NetNs::new(
        &format!("ember-dev-{}", std::process::id()),
        "embdv0",
        "10.81.0.1/24",
    );
    for args in [
        &["tuntap", "add", "dev", "embdv1", "mode", "tap"][..],
        &["addr", "add", "10.82.0.1/24", "dev", "embdv1"],
        &["link", "set", "embdv1", "up"],
    ] {
        let out = run("ip", &[&["-n", ns.name.as_str()][..], args].concat());
        assert!(out.status.success(), "ip {args:?}");
    }
    let uds = dir.join("vsock.sock");
    let l = listen(&ns, &uds);

    let drive = |id: &str, p: &Path, ro: bool| serde_json::json!({ "drive_id": id, "path_on_host": p, "is_root_device": false, "is_read_only": ro });
    let mut lim = drive("lim", &dir.join("lim.img"), true);
    lim["rate_limiter"] =
        serde_json::json!({ "bandwidth": { "size": 256 * 1024, "refill_time": 125 } });
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": kernel,
            "initrd_path": initrd,
            "boot_args": "console=ttyS0 reboot=k panic=-1 quiet rdinit=/init"
        },
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 512 },
        "drives": [
            drive("py", &images.join("python3.11.squashfs"), true),
            drive("data", &f.data, false),
            drive("ro", &f.ro, true),
            lim,
            drive("free", &dir.join("free.img"), true),
        ],
        "network-interfaces": [
            { "iface_id": "eth0", "host_dev_name": "embdv0", "guest_mac": MAC0 },
            { "iface_id": "eth1", "host_dev_name": "embdv1", "guest_mac": MAC1,
              "tx_rate_limiter": { "bandwidth": { "size": 8 * 1024, "refill_time": 125 } } }
        ],
        "vsock": { "guest_cid": 3, "uds_path": uds }
    });
    let cfg = dir.join("vm.json");
    std::fs::write(&cfg, config.to_string()).expect("write config");
    let args: Vec<String> = ["netns", "exec", &ns.name]
        .iter()
        .map(|s| s.to_string())
        .chain([
            ember_tests::probes::ember_vmm().display().to_string(),
            "--no-api".into(),
            "--config-file".into(),
            cfg.display().to_string(),
            "--console".into(),
            "stdout".into(),
        ])
        .collect();
    let started = Instant::now();
    let mut vm = Vm::spawn("ip", &args);
    let result = checks(&mut vm, &ns, &f, &uds, l);
    let _ = vm.child.kill();
    let (code, stderr, seen) = vm.finish(Duration::from_secs(30));
    println!(
        "one Linux VM, every device check: {:.1} s (nested TCG: functional evidence only)",
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!(
            "{e}\n-- console:\n{}\n-- ember-vmm (exit {code:?}):\n{stderr}",
            seen.join("\n")
        );
    }
    assert_eq!(code, None, "ember-vmm was SIGKILLed: {stderr}");

    // After SIGKILL: the fsync'd file is in the image (journal replayed).
    let data = f.data.display().to_string();
    let fsck = run("e2fsck", &["-fy", &data]);
    assert!(
        matches!(fsck.status.code(), Some(0) | Some(1)),
        "e2fsck found damage it could not fix"
    );
    let out = dir.join("written.out").display().to_string();
    let dump = run(
        "debugfs",
        &["-R", &format!("dump /written.bin {out}"), &data],
    );
    assert!(dump.status.success());
    let written = std::fs::read(&out).expect("debugfs dumped /written.bin");
    let want = std::fs::read_to_string(dir.join("synced.sha")).expect("synced sha");
    assert_eq!(written.len(), 4 * MIB, "fsync'd file length after SIGKILL");
    assert_eq!(
        sha256_hex(&written),
        want,
        "data fsync'd before SIGKILL was lost"
    );
    // The read-only drive is byte for byte what it was.
    let ro = std::fs::read(&f.ro).expect("read ro image");
    assert_eq!(
        sha256_hex(&ro),
        f.ro_sha,
        "the read-only drive's file changed"
    );
}
