//! The `Uffd` memory backend of a snapshot load (Firecracker's
//! `mem_backend.backend_type = "Uffd"`): guest memory is fresh anonymous
//! memory registered with a userfaultfd for missing pages, and the fd goes
//! to the page-fault handler listening on `backend_path` with Firecracker's
//! message: a JSON array of `{base_host_virt_addr, size, offset, page_size,
//! page_size_kib}` (one per region; `offset` into the memory file) sent with
//! the fd as SCM_RIGHTS. The handler fills every page on first touch (the
//! VMM's own reads at load included), so Firecracker's example handlers
//! work unchanged.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::memory_file::Region;

const UFFD_API: u64 = 0xaa;
/// _IOWR(0xAA, 0x3F, struct uffdio_api) and _IOWR(0xAA, 0x00, struct
/// uffdio_register) (linux/userfaultfd.h).
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const PAGE: u64 = 4096;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// Why the userfaultfd backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    #[error("cannot map guest memory")]
    Memory(#[from] crate::memory::MemoryError),
    #[error("userfaultfd: {0}")]
    Uffd(&'static str, #[source] std::io::Error),
    #[error("cannot reach the page-fault handler at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("cannot send the userfaultfd to the page-fault handler")]
    Send(#[source] std::io::Error),
}

/// Guest memory for `regions` (which must describe `mem_mib` of RAM: the
/// state file's validated layout), its missing pages served by the handler
/// at `socket`.
pub fn map(socket: &Path, mem_mib: u64, regions: &[Region]) -> Result<GuestMemoryMmap, UffdError> {
    let mem = crate::memory::create(mem_mib)?;
    // SAFETY: the userfaultfd syscall takes flags only; a non-negative
    // result is a new fd that we own from here on.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(UffdError::Uffd("create", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    let uffd = unsafe { File::from_raw_fd(fd as i32) };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes one uffdio_api, which `api` is.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) } != 0 {
        return Err(UffdError::Uffd(
            "UFFDIO_API",
            std::io::Error::last_os_error(),
        ));
    }
    let mut mappings = Vec::with_capacity(regions.len());
    for (region, r) in mem.iter().zip(regions) {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|_| UffdError::Uffd("region", std::io::Error::other("no host address")))?;
        let mut reg = UffdioRegister {
            start: host as u64,
            len: region.len(),
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one uffdio_register; the
        // range is this region's live anonymous mapping.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } != 0 {
            return Err(UffdError::Uffd(
                "UFFDIO_REGISTER",
                std::io::Error::last_os_error(),
            ));
        }
        mappings.push(serde_json::json!({
            "base_host_virt_addr": host as u64,
            "size": region.len(),
            "offset": r.file_offset,
            "page_size": PAGE,
            "page_size_kib": PAGE / 1024,
        }));
        debug_assert_eq!(region.start_addr().raw_value(), r.guest_addr);
    }
    let stream = UnixStream::connect(socket)
        .map_err(|e| UffdError::Connect(socket.display().to_string(), e))?;
    let body = serde_json::Value::Array(mappings).to_string();
    stream
        .send_with_fd(body.as_bytes(), uffd.as_raw_fd())
        .map_err(|e| UffdError::Send(std::io::Error::from_raw_os_error(e.errno())))?;
    // The handler holds its own reference to the userfaultfd now.
    Ok(mem)
}
