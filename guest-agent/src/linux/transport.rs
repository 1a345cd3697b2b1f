//! The agent's connection to the host, behind [`Transport`]: AF_VSOCK to CID 2
//! inside a guest, a Unix stream socket when the agent runs as an ordinary
//! process, TCP where a test VM has a network but no vsock (QEMU here). Both yield a read half (for the host-reader thread) and a write
//! half (shared by everything that sends frames).

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The two halves of a host connection.
pub type Halves = (Box<dyn Read + Send>, Box<dyn Write + Send>);

/// Why the host could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to the host over vsock (cid {cid}, port {port})")]
    Vsock {
        cid: u32,
        port: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to the host at {addr}")]
    Tcp {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to the host socket {}", path.display())]
    Unix {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A way to open the single host↔agent byte stream.
pub trait Transport {
    fn connect(&self) -> Result<Halves, TransportError>;
}

/// AF_VSOCK stream to the host (CID 2 in a guest).
pub struct VsockTransport {
    pub cid: u32,
    pub port: u32,
}

fn vsock_connect(cid: u32, port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own; OwnedFd closes it on error paths.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes that outlives the call.
    let rc = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_vm).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

impl Transport for VsockTransport {
    fn connect(&self) -> Result<Halves, TransportError> {
        let err = |source| TransportError::Vsock {
            cid: self.cid,
            port: self.port,
            source,
        };
        let fd = vsock_connect(self.cid, self.port).map_err(err)?;
        // A std File reads and writes any stream descriptor with read(2)/write(2).
        let file = std::fs::File::from(fd);
        let reader = file.try_clone().map_err(err)?;
        Ok((Box::new(reader), Box::new(file)))
    }
}

/// Unix stream socket at a path (the host side listens there).
pub struct UnixTransport {
    pub path: PathBuf,
}

impl Transport for UnixTransport {
    fn connect(&self) -> Result<Halves, TransportError> {
        let err = |source| TransportError::Unix {
            path: self.path.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.path).map_err(err)?;
        let reader = stream.try_clone().map_err(err)?;
        Ok((Box::new(reader), Box::new(stream)))
    }
}

/// TCP to the host (QEMU user networking: the host is 10.0.2.2).
pub struct TcpTransport {
    pub addr: std::net::SocketAddr,
}

impl Transport for TcpTransport {
    fn connect(&self) -> Result<Halves, TransportError> {
        let err = |source| TransportError::Tcp {
            addr: self.addr,
            source,
        };
        let stream = std::net::TcpStream::connect(self.addr).map_err(err)?;
        let _ = stream.set_nodelay(true);
        let reader = stream.try_clone().map_err(err)?;
        Ok((Box::new(reader), Box::new(stream)))
    }
}
