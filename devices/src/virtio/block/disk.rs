//! The host side of a virtio-block drive: a backing file, read-only or
//! read-write, and the execution of validated requests against it. Data moves
//! between the file and guest memory with `pread`/`pwrite` straight on the
//! guest's pages (no bounce buffer).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

use super::request::{DiskGeometry, Request, RequestError, RequestKind, Segment, SECTOR_SIZE};

/// Errors opening a drive or running a request.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The backing file could not be opened.
    #[error("cannot open drive backing file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The backing file's size could not be read.
    #[error("cannot stat drive backing file")]
    Stat(#[source] std::io::Error),
    /// A read, write or fsync on the backing file failed.
    #[error("backing file I/O")]
    Io(#[source] std::io::Error),
    /// Guest memory went away under a validated segment (cannot happen
    /// unless the memory map changed).
    #[error("guest memory at {0:#x} not accessible")]
    Memory(u64),
    /// The request was refused by the parser.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// When the file's data is made durable (Firecracker's `cache_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum CacheType {
    /// No flush offered to the guest; the host page cache decides.
    #[default]
    Unsafe,
    /// `VIRTIO_BLK_F_FLUSH` offered; a flush request is an `fsync`.
    Writeback,
}

/// An open drive.
#[derive(Debug)]
pub struct Disk {
    file: File,
    geometry: DiskGeometry,
    cache: CacheType,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
}

impl Disk {
    /// Opens `path`; `drive_id` is truncated to 20 bytes for GET_ID.
    pub fn open(
        path: &Path,
        read_only: bool,
        cache: CacheType,
        drive_id: &str,
    ) -> Result<Self, DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| DiskError::Open {
                path: path.to_owned(),
                source,
            })?;
        let len = file.metadata().map_err(DiskError::Stat)?.len();
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = drive_id.len().min(id.len());
        id[..n].copy_from_slice(&drive_id.as_bytes()[..n]);
        Ok(Disk {
            file,
            geometry: DiskGeometry {
                sectors: len / SECTOR_SIZE,
                read_only,
            },
            cache,
            id,
        })
    }

    /// Capacity and access mode, for the parser and the config space.
    pub fn geometry(&self) -> DiskGeometry {
        self.geometry
    }

    /// The cache mode.
    pub fn cache_type(&self) -> CacheType {
        self.cache
    }

    /// Runs a validated request. Returns the number of data bytes written
    /// into guest memory (for the used-ring length).
    pub fn execute(&mut self, mem: &GuestMemoryMmap, req: &Request) -> Result<u32, DiskError> {
        match req.kind {
            RequestKind::In => {
                self.transfer(mem, &req.data, req.sector * SECTOR_SIZE, false)?;
                // data_len <= MAX_DATA_LEN (16 MiB): fits u32.
                Ok(req.data_len as u32)
            }
            RequestKind::Out => {
                self.transfer(mem, &req.data, req.sector * SECTOR_SIZE, true)?;
                Ok(0)
            }
            RequestKind::Flush => {
                if self.cache == CacheType::Writeback && !self.geometry.read_only {
                    self.file.sync_all().map_err(DiskError::Io)?;
                }
                Ok(0)
            }
            RequestKind::GetId => {
                let mut left: &[u8] = &self.id;
                for seg in &req.data {
                    let n = (seg.len as usize).min(left.len());
                    vm_memory::Bytes::write_slice(mem, &left[..n], seg.addr)
                        .map_err(|_| DiskError::Memory(seg.addr.0))?;
                    left = &left[n..];
                }
                Ok(VIRTIO_BLK_ID_BYTES)
            }
        }
    }

    /// Moves bytes between the file at `offset` and the guest buffers.
    fn transfer(
        &self,
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        mut offset: u64,
        to_file: bool,
    ) -> Result<(), DiskError> {
        let fd = self.file.as_raw_fd();
        for seg in segs {
            for slice in mem.get_slices(seg.addr, seg.len as usize) {
                let slice = slice.map_err(|_| DiskError::Memory(seg.addr.0))?;
                let mut done = 0usize;
                while done < slice.len() {
                    let guard = slice.ptr_guard_mut();
                    // SAFETY: `done < slice.len()`, so the pointer and length stay
                    // inside this VolatileSlice, which maps guest memory that
                    // lives as long as `mem`; the guard keeps it valid for the call.
                    let ptr = unsafe { guard.as_ptr().add(done) };
                    let len = slice.len() - done;
                    let off =
                        libc::off_t::try_from(offset).map_err(|_| DiskError::Memory(seg.addr.0))?;
                    let n = if to_file {
                        // SAFETY: ptr..ptr+len is readable guest memory (see above).
                        unsafe { libc::pwrite(fd, ptr.cast(), len, off) }
                    } else {
                        // SAFETY: ptr..ptr+len is writable guest memory (see above);
                        // the guest may observe the bytes change, which is the point.
                        unsafe { libc::pread(fd, ptr.cast(), len, off) }
                    };
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        return Err(DiskError::Io(e));
                    }
                    if n == 0 {
                        // The file shrank under us.
                        return Err(DiskError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    done += n as usize;
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}
