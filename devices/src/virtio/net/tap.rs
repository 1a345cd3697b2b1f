//! A TAP interface opened by name through `/dev/net/tun`, in the mode the
//! virtio-net device needs: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, nonblocking,
//! with a 12-byte (virtio 1.x) vnet header on every frame in both directions.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Errors opening or configuring a TAP.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name does not fit `IFNAMSIZ` or holds a NUL.
    #[error("invalid TAP name {0:?}")]
    BadName(String),
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] std::io::Error),
    /// A TUN ioctl failed.
    #[error("{op} on TAP {name}")]
    Ioctl {
        op: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Bytes of the virtio 1.x net header (`virtio_net_hdr_v1`, with `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

/// An open TAP queue.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tap {
    /// Attaches to the TAP `name` (creating it if it does not exist and the
    /// caller may). The fd is nonblocking.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(TapError::BadName(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        let tap = Tap {
            file,
            name: name.to_owned(),
        };
        // SAFETY: TUNSETIFF reads (and may write back) one `struct ifreq`; IfReq
        // has its layout (16-byte name, then a 24-byte union) and outlives the call.
        tap.check("TUNSETIFF", unsafe {
            libc::ioctl(tap.fd(), libc::TUNSETIFF, &mut req)
        })?;
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, valid for the call.
        tap.check("TUNSETVNETHDRSZ", unsafe {
            libc::ioctl(tap.fd(), libc::TUNSETVNETHDRSZ, &hdr_len)
        })?;
        Ok(tap)
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn check(&self, op: &'static str, rc: libc::c_int) -> Result<(), TapError> {
        if rc < 0 {
            return Err(TapError::Ioctl {
                op,
                name: self.name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the kernel which offloads it may use on frames it hands us
    /// (`TUN_F_*`). Fails when the TAP does not support them.
    pub fn set_offload(&self, flags: libc::c_uint) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is touched.
        self.check("TUNSETOFFLOAD", unsafe {
            libc::ioctl(self.fd(), libc::TUNSETOFFLOAD, libc::c_ulong::from(flags))
        })
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

/// Where a virtio-net device sends and gets frames (each starting with the
/// 12-byte vnet header). The TAP is the real one; tests use an in-memory one.
pub trait NetBackend: Send {
    /// Reads one frame; `WouldBlock` when none is waiting.
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Sends one frame.
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()>;
    /// Allows the `TUN_F_*` offloads on received frames (no-op by default).
    fn set_offload(&self, _flags: libc::c_uint) -> Result<(), TapError> {
        Ok(())
    }
}

impl NetBackend for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        // A TAP write takes one whole frame or fails; it never writes part.
        self.file.write(frame).map(|_| ())
    }

    fn set_offload(&self, flags: libc::c_uint) -> Result<(), TapError> {
        Tap::set_offload(self, flags)
    }
}
