//! The few calls emberd makes on an `ember-vmm` API socket (Firecracker's
//! API: `PATCH /vm`, `PUT /snapshot/create`, `PUT /snapshot/load`), as
//! blocking HTTP/1.1 over a Unix socket with a deadline on every step. Used
//! for SnapStart: snapshot an initialised environment, restore one.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// Largest answer read from the VMM (its answers are small JSON).
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum VmmApiError {
    #[error("the VMM's API socket {0} did not come up in time")]
    NoSocket(PathBuf),
    #[error("the VMM exited before its API answered")]
    Exited,
    #[error("API socket I/O")]
    Io(#[from] std::io::Error),
    #[error("the VMM's API did not answer in time")]
    Timeout,
    #[error("malformed answer from the VMM's API")]
    Malformed,
    #[error("{method} {path}: HTTP {status}: {body}")]
    Refused {
        method: &'static str,
        path: &'static str,
        status: u16,
        body: String,
    },
}

/// Connects to `sock`, waiting (1 ms steps) until the VMM has bound it,
/// the child exits or `until` passes.
pub fn connect(sock: &Path, child: &mut Child, until: Instant) -> Result<UnixStream, VmmApiError> {
    loop {
        match UnixStream::connect(sock) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e.into()),
        }
        if !matches!(child.try_wait(), Ok(None)) {
            return Err(VmmApiError::Exited);
        }
        if Instant::now() >= until {
            return Err(VmmApiError::NoSocket(sock.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One request with a JSON body; `Ok` for a 2xx answer.
pub fn call(
    s: &mut UnixStream,
    method: &'static str,
    path: &'static str,
    body: &serde_json::Value,
    until: Instant,
) -> Result<(), VmmApiError> {
    let body = body.to_string();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let left = || {
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(VmmApiError::Timeout)
    };
    s.set_write_timeout(Some(left()?))?;
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left()?))?;
        let n = match s.read(&mut chunk) {
            Ok(0) => return Err(VmmApiError::Malformed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(VmmApiError::Timeout)
            }
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_ANSWER {
            return Err(VmmApiError::Malformed);
        }
        if let Some((status, body)) = parse(&buf)? {
            if (200..300).contains(&status) {
                return Ok(());
            }
            return Err(VmmApiError::Refused {
                method,
                path,
                status,
                body,
            });
        }
    }
}

/// A complete answer's status and body, `None` while bytes are missing.
fn parse(buf: &[u8]) -> Result<Option<(u16, String)>, VmmApiError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| VmmApiError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(VmmApiError::Malformed)?;
    let mut len = 0usize;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| VmmApiError::Malformed)?;
            }
        }
    }
    let body = &buf[end + 4..];
    if body.len() < len {
        return Ok(None);
    }
    Ok(Some((
        status,
        String::from_utf8_lossy(&body[..len]).trim().to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_only_when_complete() {
        assert!(parse(b"HTTP/1.1 204 No Content\r\n").unwrap().is_none());
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
            Some((204, String::new()))
        );
        let a = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 20\r\n\r\n{\"fault_message\":";
        assert!(parse(a).unwrap().is_none());
        assert!(parse(b"garbage\r\n\r\n").is_err());
    }
}
