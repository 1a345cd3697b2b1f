//! Helpers for the block, net and rate-limiter microVM tests: the kernel-less
//! test guests, running `ember-vmm` with a live view of its console, and a
//! throwaway network namespace with a TAP.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use crate::guests::guest;

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A temporary file removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// A file named after `tag` holding `contents`.
    pub fn new(tag: &str, contents: &[u8]) -> Self {
        let p = std::env::temp_dir().join(format!(
            "ember-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let p = PathBuf::from(p.to_string_lossy().replace([' ', '{', '}', ':'], ""));
        std::fs::write(&p, contents).expect("write temp file");
        TempFile(p)
    }

    /// The path as a string.
    pub fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running `ember-vmm` whose console lines arrive on a channel.
pub struct Vm {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every console line seen so far.
    pub seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Vm {
    /// Starts `program args` (e.g. `ember-vmm` or `ip netns exec ... ember-vmm`).
    pub fn spawn(program: &str, args: &[String]) -> Vm {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(err), &mut s);
            s
        });
        Vm {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Starts `ember-vmm --no-api --config-file` on this Firecracker JSON
    /// config (console on stdout); the returned file must outlive the start.
    pub fn with_config(config: &serde_json::Value) -> (Vm, TempFile) {
        let cfg = TempFile::new("vm-config.json", config.to_string().as_bytes());
        let args: Vec<String> = [
            "--no-api",
            "--config-file",
            &cfg.path(),
            "--console",
            "stdout",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        (
            Vm::spawn(&crate::probes::ember_vmm().display().to_string(), &args),
            cfg,
        )
    }

    /// Waits up to `timeout` for a console line starting with `prefix`.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return Some(l.clone());
        }
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Waits for the process to end (killing it after `timeout`); returns
    /// its exit code (None if killed by a signal) and its stderr.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String, Vec<String>) {
        let end = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                break self.child.wait().expect("wait after kill");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        let stderr = self.stderr.join().unwrap_or_default();
        (status.code(), stderr, self.seen)
    }
}

/// The value of `key=` in a `key=value` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Whether the test may create namespaces and TAPs (root with `ip` and /dev/net/tun).
pub fn can_netns() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun".into());
    }
    Command::new("ip")
        .arg("-V")
        .output()
        .map(|_| ())
        .map_err(|e| format!("no `ip` tool: {e}"))
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace holding one TAP with the host side's address; deleted on drop.
pub struct NetNs {
    pub name: String,
    pub tap: String,
}

impl NetNs {
    /// Creates namespace `name` with TAP `tap` at `host_cidr`, up.
    pub fn new(name: &str, tap: &str, host_cidr: &str) -> NetNs {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let ns = NetNs {
            name: name.into(),
            tap: tap.into(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&["-n", name, "tuntap", "add", "dev", tap, "mode", "tap"]);
        ip(&["-n", name, "addr", "add", host_cidr, "dev", tap]);
        ip(&["-n", name, "link", "set", tap, "up"]);
        ns
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it
    /// creates live there).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
