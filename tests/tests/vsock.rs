//! virtio-vsock on real microVMs, through the Firecracker hybrid protocol:
//! kernel-less guests `vsock_echo` (listens, echoes) and `vsock_client`
//! (connects to CID 2) against host peers on Unix sockets. Echo both ways,
//! 64 MiB each way with matching SHA-256, 100 concurrent connections, a host
//! peer that never reads (ember-vmm's RSS must stay flat), and RST when
//! nobody listens on either side.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_tests::guests::guest;
use ember_tests::probes::ember_vmm;
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

/// A running ember-vmm with a vsock device; its console is collected.
struct VsockVm {
    child: Child,
    out: Arc<Mutex<String>>,
    dir: PathBuf,
    uds: PathBuf,
}

impl VsockVm {
    /// A fresh directory for the sockets (bind host listeners there before `start`).
    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-vsock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn start(dir: PathBuf, guest_name: &str, cmdline: &str) -> VsockVm {
        Self::start_with(dir, guest_name, cmdline, &[])
    }

    /// [`Self::start`] with extra `ember-vmm` arguments.
    fn start_with(dir: PathBuf, guest_name: &str, cmdline: &str, extra: &[&str]) -> VsockVm {
        let uds = dir.join("v.sock");
        let mut child = Command::new(ember_vmm())
            .args([
                "--kernel",
                &guest(guest_name).display().to_string(),
                "--cmdline",
                cmdline,
            ])
            .args([
                "--vsock",
                &format!("3:{}", uds.display()),
                "--mem-mib",
                "256",
                "--console",
                "stdout",
            ])
            .args(["--timeout-ms", "300000"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ember-vmm");
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        VsockVm {
            child,
            out,
            dir,
            uds,
        }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// The first console line starting with `prefix`.
    fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(l) = self.output().lines().find(|l| l.starts_with(prefix)) {
                return l.to_string();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "no `{prefix}` line within {timeout:?}; output:\n{}",
            self.output()
        );
    }

    /// Waits for a console or log line containing `needle`.
    fn wait_line_containing(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.output().contains(needle) {
            assert!(
                Instant::now() < end,
                "no line with `{needle}` within {timeout:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for ember-vmm to exit; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50)); // let the readers drain
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Asserts ember-vmm exits with code 0 within 30 s (its output on failure).
    fn assert_clean_exit(&mut self) {
        let code = self.wait_exit(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{}", self.output());
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Host-initiated connection to guest `port`: `CONNECT`, then the `OK` line.
    fn connect(&self, port: u32) -> Result<UnixStream, String> {
        let mut s = UnixStream::connect(&self.uds).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while line.last() != Some(&b'\n') {
            match s.read(&mut b) {
                Ok(1) => line.push(b[0]),
                _ => return Err(format!("closed after {:?}", String::from_utf8_lossy(&line))),
            }
        }
        let line = String::from_utf8_lossy(&line).to_string();
        let port: u32 = line
            .strip_prefix("OK ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or(line.clone())?;
        assert!(port >= 1 << 30, "{line}");
        Ok(s)
    }
}

impl Drop for VsockVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The guest's xorshift64* stream (vsock_client `bulk`).
fn stream(seed: u64, bytes: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(bytes + 8);
    while v.len() < bytes {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(bytes);
    v
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn echo_host_to_guest_through_the_firecracker_protocol() {
    let mut vm = VsockVm::start(VsockVm::dir("echo"), "vsock_echo", "52 1");
    vm.wait_line(
        "vsock: echo listening cid=3 port=52",
        Duration::from_secs(30),
    );
    let mut s = vm
        .connect(52)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.output()));
    s.write_all(b"ping from the host").unwrap();
    let mut b = [0u8; 18];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping from the host");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        s.read(&mut b).unwrap(),
        0,
        "the guest closes after the host's EOF"
    );
    vm.assert_clean_exit();
}

#[test]
fn echo_guest_to_host_on_uds_path_port() {
    let dir = VsockVm::dir("hello");
    let listener = UnixListener::bind(dir.join("v.sock_53")).unwrap();
    let mut vm = VsockVm::start(dir, "vsock_client", "hello 53");
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap(); // the guest half-closes after its line
    assert_eq!(got, "hello from guest\n");
    s.write_all(b"hello from the host\n").unwrap();
    drop(s);
    vm.assert_clean_exit();
    assert!(
        vm.output().contains("vsock: reply=hello from the host"),
        "{}",
        vm.output()
    );
}

#[test]
fn transfer_64_mib_each_way_with_matching_sha256() {
    // Host -> guest -> host through the echo guest.
    let mut vm = VsockVm::start(VsockVm::dir("64m-echo"), "vsock_echo", "52 1");
    vm.wait_line("vsock: echo listening", Duration::from_secs(30));
    let s = vm.connect(52).unwrap();
    let data = stream(0x1234_5678, 64 * MIB);
    let want = sha(&data);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(64 * MIB);
    (&s).read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), 64 * MIB);
    assert_eq!(sha(&back), want);
    vm.assert_clean_exit();

    // Guest -> host: the guest's stream, recomputed here.
    let dir = VsockVm::dir("64m-bulk");
    let listener = UnixListener::bind(dir.join("v.sock_54")).unwrap();
    let mut vm = VsockVm::start(dir, "vsock_client", &format!("bulk 54 {} 99", 64 * MIB));
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut got = Vec::with_capacity(64 * MIB);
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 64 * MIB);
    assert_eq!(sha(&got), sha(&stream(99, 64 * MIB)));
    vm.assert_clean_exit();
}

/// A guest that exits right after queueing its last byte, while most of
/// them still sit in the VMM (the host peer has not read yet): the VMM's
/// final drain must deliver every byte it accepted before the connection
/// ends with the VM.
#[test]
fn bytes_accepted_before_the_guest_exits_still_reach_the_host() {
    const BYTES: usize = 768 * 1024;
    let dir = VsockVm::dir("blast");
    let listener = UnixListener::bind(dir.join("v.sock_56")).unwrap();
    let args = format!("blast 56 {BYTES} 11");
    let mut vm = VsockVm::start_with(dir, "vsock_client", &args, &["--level", "debug"]);
    let (mut s, _) = listener.accept().unwrap();
    // Read nothing until the VM has stopped (the VMM logs the exit at
    // debug level): only the final drain can deliver what is left.
    vm.wait_line_containing("VM exit at", Duration::from_secs(60));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::with_capacity(BYTES);
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), BYTES, "{}", vm.output());
    assert_eq!(sha(&got), sha(&stream(11, BYTES)));
    vm.assert_clean_exit();
}

#[test]
fn hundred_concurrent_connections() {
    let mut vm = VsockVm::start(VsockVm::dir("hundred"), "vsock_echo", "52 100");
    vm.wait_line("vsock: echo listening", Duration::from_secs(30));
    let mut conns: Vec<UnixStream> = (0..100)
        .map(|i| vm.connect(52).unwrap_or_else(|e| panic!("conn {i}: {e}")))
        .collect();
    // All open at once: each sends its own bytes, then each reads them back.
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&stream(i as u64, 8192)).unwrap();
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let mut b = vec![0u8; 8192];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b, stream(i as u64, 8192), "connection {i}");
    }
    for s in &conns {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    for s in &mut conns {
        assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);
    }
    vm.assert_clean_exit();
    assert!(
        vm.output().contains("vsock: echo done conns=100"),
        "{}",
        vm.output()
    );
}

#[test]
fn a_host_peer_that_never_reads_keeps_vmm_memory_bounded() {
    let dir = VsockVm::dir("noread");
    let listener = UnixListener::bind(dir.join("v.sock_55")).unwrap();
    let vm = VsockVm::start(dir, "vsock_client", &format!("bulk 55 {} 7", 1024 * MIB));
    let (s, _) = listener.accept().unwrap(); // accepted, never read
    std::thread::sleep(Duration::from_secs(2));
    let early = vm.rss_kib();
    std::thread::sleep(Duration::from_secs(3));
    let late = vm.rss_kib();
    assert!(early > 0, "cannot read ember-vmm's RSS");
    // The guest would push 1 GiB; the device must stop at its credit window.
    assert!(
        late < early + 4096,
        "RSS grew from {early} KiB to {late} KiB"
    );
    assert!(
        vm.output()
            .lines()
            .all(|l| !l.starts_with("vsock: bulk sent")),
        "{}",
        vm.output()
    );
    drop(s);
}

#[test]
fn rst_when_nobody_listens() {
    // Host side: the guest listens on 52 only; CONNECT 77 is closed, no OK.
    let mut vm = VsockVm::start(VsockVm::dir("rst"), "vsock_echo", "52 1");
    vm.wait_line("vsock: echo listening", Duration::from_secs(30));
    let e = vm
        .connect(77)
        .expect_err("CONNECT to a port nobody listens on must fail");
    assert!(e.starts_with("closed"), "{e}");
    // The guest still works afterwards.
    let mut s = vm.connect(52).unwrap();
    s.write_all(b"x").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut b = Vec::new();
    s.read_to_end(&mut b).unwrap();
    assert_eq!(b, b"x");
    vm.assert_clean_exit();

    // Guest side: no listener on uds_path_78: the guest gets RST.
    let mut vm = VsockVm::start(VsockVm::dir("rst-guest"), "vsock_client", "refused 78");
    vm.assert_clean_exit();
    assert!(vm.output().contains("vsock: refused ok"), "{}", vm.output());
}
