//! The seccomp allowlists, one per thread kind, with argument filters on
//! `ioctl` (only the KVM requests each thread issues after setup), `mmap` /
//! `mprotect` (never executable memory), `socket` (Unix sockets only, for the
//! hybrid vsock), `fcntl` and `tgkill` (own process, kick/abort signals only).
//!
//! Found by tracing (`strace -ff`) the kernel-less hello guest and a guest
//! with a vsock device, per thread; see DESIGN.md "Isolation" for how to
//! redo it. Everything the VMM does before a thread enters its sandbox
//! (opening /dev/kvm and images, creating the VM, mapping memory, TAP and
//! socket setup) needs no entry here.

use super::seccomp::{Allowlist, Cond};
use super::ThreadKind;

const KVMIO: u64 = 0xAE;

const fn io(nr: u64) -> u64 {
    (KVMIO << 8) | nr
}
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}
const fn iow(nr: u64, size: usize) -> u64 {
    (1 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}

/// `KVM_RUN`.
pub const KVM_RUN: u64 = io(0x80);
/// `KVM_GET_REGS` (the crash report reads RIP).
pub const KVM_GET_REGS: u64 = ior(0x81, std::mem::size_of::<kvm_bindings::kvm_regs>());
/// `KVM_GET_SREGS` (the crash report reads CR2).
pub const KVM_GET_SREGS: u64 = ior(0x83, std::mem::size_of::<kvm_bindings::kvm_sregs>());
/// What a paused vCPU thread reads for a snapshot (`VcpuState::save`):
/// `KVM_GET_FPU`, `KVM_GET_XCRS`, `KVM_GET_XSAVE`, `KVM_GET_MSRS`.
pub const KVM_GET_FPU: u64 = ior(0x8c, std::mem::size_of::<kvm_bindings::kvm_fpu>());
pub const KVM_GET_XCRS: u64 = ior(0xa6, std::mem::size_of::<kvm_bindings::kvm_xcrs>());
pub const KVM_GET_XSAVE: u64 = ior(0xa4, std::mem::size_of::<kvm_bindings::kvm_xsave>());
pub const KVM_GET_MSRS: u64 = (3 << 30)
    | ((std::mem::size_of::<kvm_bindings::kvm_msrs>() as u64) << 16)
    | (KVMIO << 8)
    | 0x88;
/// `KVM_IRQ_LINE` (a device raising a line of the in-kernel irqchip).
pub const KVM_IRQ_LINE: u64 = iow(0x61, std::mem::size_of::<kvm_bindings::kvm_irq_level>());
/// `TUNSETOFFLOAD` = _IOW('T', 208, int): virtio-net applies the guest's
/// offload features to the TAP when the driver activates the device.
pub const TUNSETOFFLOAD: u64 = (1 << 30) | (4 << 16) | ((b'T' as u64) << 8) | 208;
/// `FIONBIO`: Rust's `set_nonblocking` on accepted/connected vsock sockets.
pub const FIONBIO: u64 = libc::FIONBIO;
/// `TUNSETVNETHDRSZ` = _IOW('T', 216, int).
pub const TUNSETVNETHDRSZ: u64 = (1 << 30) | (4 << 16) | ((b'T' as u64) << 8) | 216;

/// What every thread of a Rust process needs once it runs: memory
/// management, locks, time, its own exit, signal return, stdio and logs.
const BASE: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getrandom,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // A vsock device removes its Unix socket when dropped; Landlock decides
    // whether that may happen (outside the allowed dirs: EACCES).
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    // Always answered EACCES by the second filter (seccomp.rs).
    libc::SYS_open,
    libc::SYS_openat,
];

/// Reading and writing device backends and eventfds.
const IO: &[i64] = &[
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_poll,
    libc::SYS_ppoll,
];

/// Device activation and rate limiting, which run on the vCPU thread that
/// writes the virtio status register as well as on the event loop: eventfds
/// duplicated or created, timers armed, fds registered with the event loop.
const DEVICE: &[i64] = &[
    libc::SYS_epoll_ctl,
    libc::SYS_eventfd2,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
];

/// The device event loop's own: epoll, the hybrid vsock's Unix sockets (a
/// guest-initiated connection connects to the host's listener).
const EVENT_LOOP: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
];

/// The main thread once the VM runs: wait for the end, stop the vCPUs.
const MAIN: &[i64] = &[
    libc::SYS_wait4,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_getrusage,
];

/// The API thread: poll its sockets and eventfd, accept clients, read
/// requests and write answers. No files (it starts before Landlock, so it
/// may not unlink either), no KVM.
const API: &[i64] = &[
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_shutdown,
];

/// The main thread of an API-driven VMM writing a snapshot
/// (`snapshot::create`): create the two files, size the memory file, write
/// it at offsets, find the resident guest pages.
const SNAPSHOT_FILES: &[i64] = &[
    libc::SYS_openat,
    libc::SYS_ftruncate,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_mincore,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_fsync,
];

/// `KVM_GET_DIRTY_LOG`: a diff snapshot reads the pages written since the
/// last one (main thread, VM fd).
pub const KVM_GET_DIRTY_LOG: u64 = iow(0x42, std::mem::size_of::<kvm_bindings::kvm_dirty_log>());

/// Adds [`SNAPSHOT_FILES`] and the dirty-log read to an allowlist.
pub fn add_snapshot_files(list: &mut Allowlist) {
    add(list, SNAPSHOT_FILES);
    ioctls(list, &[KVM_GET_DIRTY_LOG]);
}

fn add(list: &mut Allowlist, syscalls: &[i64]) {
    for &s in syscalls {
        list.insert(s, Vec::new());
    }
}

/// mmap/mprotect: never PROT_EXEC (no new code at run time).
fn no_exec_mappings(list: &mut Allowlist) {
    let no_exec = vec![vec![Cond::NoBits(2, libc::PROT_EXEC as u64)]];
    list.insert(libc::SYS_mmap, no_exec.clone());
    list.insert(libc::SYS_mprotect, no_exec);
}

/// tgkill only to this process, only the vCPU kick (SIGRTMIN) and abort.
fn own_signals(list: &mut Allowlist) {
    // SAFETY: getpid and __libc_current_sigrtmin have no preconditions.
    let (pid, rtmin) = unsafe { (libc::getpid(), libc::SIGRTMIN()) };
    let alts = [rtmin, libc::SIGABRT]
        .iter()
        .map(|&sig| vec![Cond::Eq(0, pid as u64), Cond::Eq(2, sig as u64)])
        .collect();
    list.insert(libc::SYS_tgkill, alts);
}

/// fcntl: only status/descriptor flags and close-on-exec duplication
/// (`EventFd::try_clone`).
fn fcntl_flags(list: &mut Allowlist) {
    let alts = [
        libc::F_GETFL,
        libc::F_SETFL,
        libc::F_GETFD,
        libc::F_SETFD,
        libc::F_DUPFD_CLOEXEC,
    ]
    .iter()
    .map(|&cmd| vec![Cond::Eq(1, cmd as u64)])
    .collect();
    list.insert(libc::SYS_fcntl, alts);
}

/// socket: Unix stream sockets only (hybrid vsock); no network at all.
fn unix_sockets(list: &mut Allowlist) {
    list.insert(
        libc::SYS_socket,
        vec![vec![Cond::Eq(0, libc::AF_UNIX as u64)]],
    );
}

fn ioctls(list: &mut Allowlist, requests: &[u64]) {
    let alts = requests.iter().map(|&r| vec![Cond::Eq(1, r)]).collect();
    list.insert(libc::SYS_ioctl, alts);
}

/// The allowlist of `kind`.
pub fn allowlist(kind: ThreadKind) -> Allowlist {
    let mut list = Allowlist::new();
    add(&mut list, BASE);
    no_exec_mappings(&mut list);
    own_signals(&mut list);
    match kind {
        ThreadKind::Vcpu => {
            add(&mut list, IO);
            add(&mut list, DEVICE);
            fcntl_flags(&mut list);
            // The vCPU thread runs MMIO/port handlers: they may raise a line
            // or activate a virtio-net device.
            ioctls(
                &mut list,
                &[
                    KVM_RUN,
                    KVM_GET_REGS,
                    KVM_GET_SREGS,
                    KVM_GET_FPU,
                    KVM_GET_XCRS,
                    KVM_GET_XSAVE,
                    KVM_GET_MSRS,
                    KVM_IRQ_LINE,
                    TUNSETOFFLOAD,
                    TUNSETVNETHDRSZ,
                    FIONBIO,
                ],
            );
        }
        ThreadKind::EventLoop => {
            add(&mut list, IO);
            add(&mut list, DEVICE);
            add(&mut list, EVENT_LOOP);
            fcntl_flags(&mut list);
            unix_sockets(&mut list);
            ioctls(
                &mut list,
                &[KVM_IRQ_LINE, TUNSETOFFLOAD, TUNSETVNETHDRSZ, FIONBIO],
            );
        }
        ThreadKind::Main => {
            add(&mut list, MAIN);
            list.insert(libc::SYS_poll, Vec::new());
            list.insert(libc::SYS_ppoll, Vec::new());
        }
        ThreadKind::Api => {
            add(&mut list, API);
            list.remove(&libc::SYS_unlink);
            list.remove(&libc::SYS_unlinkat);
            ioctls(&mut list, &[FIONBIO]);
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_request_numbers_match_the_kernel_headers() {
        // From linux/kvm.h on x86_64.
        assert_eq!(KVM_RUN, 0xAE80);
        assert_eq!(KVM_GET_REGS, 0x8090_AE81);
        assert_eq!(KVM_GET_SREGS, 0x8138_AE83);
        assert_eq!(KVM_IRQ_LINE, 0x4008_AE61);
        assert_eq!(KVM_GET_FPU, 0x81A0_AE8C);
        assert_eq!(KVM_GET_XCRS, 0x8188_AEA6);
        assert_eq!(KVM_GET_XSAVE, 0x9000_AEA4);
        assert_eq!(KVM_GET_MSRS, 0xC008_AE88);
        assert_eq!(KVM_GET_DIRTY_LOG, 0x4010_AE42);
        assert_eq!(TUNSETOFFLOAD, 0x4004_54D0);
        assert_eq!(TUNSETVNETHDRSZ, 0x4004_54D8);
    }

    #[test]
    fn no_thread_may_exec_fork_or_open_the_network() {
        let forbidden = [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_setns,
            libc::SYS_unshare,
            libc::SYS_bind,
            libc::SYS_listen,
        ];
        for kind in super::super::ALL {
            let list = allowlist(kind);
            for s in forbidden {
                assert!(!list.contains_key(&s), "{} allows syscall {s}", kind.name());
            }
        }
    }
}
