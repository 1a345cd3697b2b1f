//! The Uffd backend against a page-fault handler written the way
//! Firecracker's examples are (accept, receive the mappings and the fd,
//! UFFDIO_COPY each missing page from the memory file): a clone loaded
//! this way runs, and only the pages it touches are ever copied.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::tests::{clone_snapshot, TOP};
use super::*;
use crate::exit::VmExit;

/// _IOWR(0xAA, 0x03, struct uffdio_copy).
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// Serves page faults from `mem_file` until `stop`; returns how many.
fn handler(listener: UnixListener, mem_file: PathBuf, stop: Arc<AtomicBool>) -> usize {
    let (stream, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4096];
    let (n, uffd) = stream.recv_with_fd(&mut buf).unwrap();
    let uffd = uffd.expect("the userfaultfd");
    let maps: Vec<serde_json::Value> = serde_json::from_slice(&buf[..n]).unwrap();
    let field = |m: &serde_json::Value, k: &str| m[k].as_u64().expect(k);
    assert!(maps.iter().all(|m| field(m, "page_size") == 4096));
    let data = File::open(mem_file).unwrap();
    let mut page = vec![0u8; 4096];
    let mut served = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: uffd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 20) } <= 0 {
            continue;
        }
        let mut msg = [0u8; 32];
        // SAFETY: reads at most 32 bytes into `msg`.
        if unsafe { libc::read(uffd.as_raw_fd(), msg.as_mut_ptr().cast(), 32) } != 32 {
            continue;
        }
        if msg[0] != UFFD_EVENT_PAGEFAULT {
            continue;
        }
        let addr = u64::from_le_bytes(msg[16..24].try_into().unwrap()) & !0xfff;
        let m = maps
            .iter()
            .find(|m| {
                let base = field(m, "base_host_virt_addr");
                (base..base + field(m, "size")).contains(&addr)
            })
            .expect("a fault inside the mappings");
        let off = field(m, "offset") + addr - field(m, "base_host_virt_addr");
        data.read_exact_at(&mut page, off).unwrap();
        let mut copy = UffdioCopy {
            dst: addr,
            src: page.as_ptr() as u64,
            len: 4096,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY reads `page` (4 KiB, live) and writes `copy`.
        unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_COPY, &mut copy) };
        served += 1;
    }
    served
}

#[test]
fn a_clone_loaded_through_a_page_fault_handler_runs_and_faults_in_only_what_it_touches() {
    let files = clone_snapshot("uffd");
    let socket = files.state.with_extension("sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (mem, flag) = (files.mem.clone(), stop.clone());
    let served = std::thread::spawn(move || handler(listener, mem, flag));

    let params = LoadParams {
        mem_path: socket.clone(),
        backend: MemBackend::Uffd,
        ..files.params()
    };
    let mut vm = load(&params, Instant::now()).unwrap();
    vm.start().unwrap();
    assert_eq!(vm.wait(), VmExit::Guest(5));
    let gen: u64 = vm.memory().read_obj(GuestAddress(TOP - 32)).unwrap();
    assert_eq!(gen, 1);
    vm.stop();
    stop.store(true, Ordering::Relaxed);
    let served = served.join().unwrap();
    let _ = std::fs::remove_file(socket);
    // 16 MiB is 4096 pages: the clone (and the VMM at load) touched a few.
    assert!(served > 0 && served < 200, "{served} pages served");

    // No handler listening: a clear error, no VM.
    let params = LoadParams {
        mem_path: files.state.with_extension("nobody"),
        backend: MemBackend::Uffd,
        ..files.params()
    };
    match load(&params, Instant::now()) {
        Ok(_) => panic!("loaded without a page-fault handler"),
        Err(e) => assert!(matches!(e, SnapshotError::Uffd(_)), "{e}"),
    }
}
