//! A minimal client of `ember-vmm --api-sock` (Firecracker's API, HTTP/1.1
//! over a Unix socket) for Rust tests and benchmarks: spawn a VMM that
//! waits for requests, send one request per connection, read the status and
//! body. The Python suites (tests/fcapi) cover the API itself; this is the
//! driver the snapshot tests need in Rust.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `ember-vmm --api-sock` child, killed at drop.
pub struct ApiVmm {
    pub child: Child,
    pub sock: PathBuf,
}

impl ApiVmm {
    /// Starts `ember-vmm --api-sock SOCK` (stderr to `log`) and waits until
    /// the socket answers.
    pub fn spawn(sock: &Path, log: &Path) -> ApiVmm {
        let _ = std::fs::remove_file(sock);
        let log = std::fs::File::create(log).expect("VMM log file");
        let child = Command::new(crate::probes::ember_vmm())
            .arg("--api-sock")
            .arg(sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ember-vmm");
        let vmm = ApiVmm {
            child,
            sock: sock.to_path_buf(),
        };
        let until = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(sock).is_err() {
            assert!(Instant::now() < until, "ember-vmm API socket never came up");
            std::thread::sleep(Duration::from_millis(2));
        }
        vmm
    }

    /// Sends one request; returns the status code and the body.
    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        request(&self.sock, method, path, body)
    }

    /// [`ApiVmm::call`] that must answer 204.
    pub fn ok(&self, method: &str, path: &str, body: &str) {
        let (status, reply) = self.call(method, path, body);
        assert_eq!(status, 204, "{method} {path} {body}: {reply}");
    }
}

impl Drop for ApiVmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a new connection to `sock`.
pub fn request(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send the request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read the response");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(len) = complete_len(&buf) {
            buf.truncate(len);
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The length of a complete response in `buf` (headers + Content-Length).
fn complete_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= end + len).then_some(end + len)
}
