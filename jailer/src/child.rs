//! The jailer's child, between `fork` (already in the new PID namespace) and
//! `execve("/ember-vmm")`: new namespaces, bind mounts, `pivot_root`, wait
//! until the parent has moved it into its cgroups, rlimits, drop every
//! privilege, exec with an empty environment.
//! A failure is written to the error pipe and the child `_exit`s: the parent
//! turns it into a clean error for its caller.
//!
//! Runs in a forked copy of a single-threaded process, so allocation is safe;
//! everything it needs is prepared by the parent in [`ChildPlan`].

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::fs::BindMount;

/// Everything the child needs, prepared before `fork`.
pub struct ChildPlan {
    /// Read end of the "cgroups joined" pipe: one byte = go on, EOF = abort.
    pub go_fd: RawFd,
    /// fd of the network namespace to join; None = unshare a new one.
    pub netns_fd: Option<RawFd>,
    pub root: CString,
    pub binds: Vec<BindMount>,
    pub hostname: Vec<u8>,
    pub rlimits: Vec<(u32, u64)>,
    pub uid: u32,
    pub gid: u32,
    pub exec: CString,
    pub argv: Vec<CString>,
    /// Print how long each step took (stderr) before exec.
    pub timing: bool,
}

/// Closes every fd above stderr the jailer inherited (sockets, pipes of the
/// caller): none of them may leak into the jail.
pub fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; no memory is touched. The
    // jailer holds no fd above 2 at this point (this runs first).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc != 0 {
        // Kernels before 5.9: close them one by one.
        for fd in 3..1024 {
            // SAFETY: closing an fd we do not use; EBADF is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

fn check(rc: libc::c_int, what: &str) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    }
}

fn mount(
    src: Option<&CString>,
    target: &CString,
    flags: libc::c_ulong,
    what: &str,
) -> Result<(), String> {
    let src_ptr = src.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is a valid NUL-terminated string or null, as
    // mount(2) allows for the source, fstype and data of a bind/propagation call.
    let rc = unsafe {
        libc::mount(
            src_ptr,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    check(rc, what)
}

fn fd_num(fd: &OwnedFd) -> RawFd {
    std::os::fd::AsRawFd::as_raw_fd(fd)
}

/// Opens image `src` (in this mount namespace) without following a
/// symlink, and checks it is still the file (st_dev, st_ino) the parent
/// checked and chowned.
fn open_checked(src: &CString, ident: (u64, u64)) -> Result<OwnedFd, String> {
    let name = src.to_string_lossy();
    // SAFETY: src is a valid NUL-terminated path; open does not retain it.
    let raw = unsafe {
        libc::open(
            src.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(format!("open {name}: {}", io::Error::last_os_error()));
    }
    // SAFETY: open just returned this fd; it is owned exactly once.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero stat is a valid out-parameter for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a writable stat.
    check(unsafe { libc::fstat(raw, &mut st) }, "fstat image")?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || (st.st_dev, st.st_ino) != ident {
        return Err(format!(
            "{name} changed after the jailer checked it (a symlink or another file now)"
        ));
    }
    Ok(fd)
}

/// Runs the child's steps; returns only on failure, with the reason.
fn enter(plan: &ChildPlan) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    // 1. namespaces (the PID one was entered by fork; cgroup comes later).
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if plan.netns_fd.is_none() {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: unshare only changes this process's namespaces.
    check(unsafe { libc::unshare(flags) }, "unshare")?;
    if let Some(fd) = plan.netns_fd {
        // SAFETY: fd is an open network namespace file owned by this process.
        check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, "setns(net)")?;
    }
    let t_ns = t0.elapsed();
    // 2. mounts: nothing propagates back to the host; the jail root becomes a
    //    mount point (pivot_root needs one); the VM's files are bound in.
    let slash = CString::from(c"/");
    mount(
        None,
        &slash,
        libc::MS_PRIVATE | libc::MS_REC,
        "make / private",
    )?;
    mount(
        Some(&plan.root),
        &plan.root,
        libc::MS_BIND,
        "bind jail root",
    )?;
    for b in &plan.binds {
        let target = &b.target;
        match b.ident {
            None => mount(Some(&b.src), target, libc::MS_BIND, "bind file")?,
            Some(ident) => {
                let fd = open_checked(&b.src, ident)?;
                // The magic link names exactly the file just checked.
                let via = CString::new(format!("/proc/self/fd/{}", fd_num(&fd)))
                    .map_err(|_| "fd path".to_string())?;
                mount(Some(&via), target, libc::MS_BIND, "bind file")?;
            }
        }
        let mut f = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV;
        if !b.writable {
            f |= libc::MS_RDONLY;
        }
        if !b.exec {
            f |= libc::MS_NOEXEC;
        }
        mount(None, target, f, "remount file")?;
    }
    // SAFETY: root is a valid path string.
    check(unsafe { libc::chdir(plan.root.as_ptr()) }, "chdir jail")?;
    let dot = CString::from(c".");
    // pivot_root(".", ".") stacks the old root on top of the new one; the
    // lazy unmount then drops the whole host tree from this namespace.
    // SAFETY: both arguments are valid path strings.
    let rc =
        unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } as libc::c_int;
    check(rc, "pivot_root")?;
    // SAFETY: dot is a valid path string.
    let rc = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(rc, "unmount old root")?;
    // SAFETY: slash is a valid path string.
    check(unsafe { libc::chdir(slash.as_ptr()) }, "chdir /")?;
    // SAFETY: hostname points to hostname.len() readable bytes.
    let rc = unsafe { libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) };
    check(rc, "sethostname")?;
    let t_mnt = t0.elapsed();
    // 3. the parent moves us into the cgroups meanwhile (a cgroup migration
    //    waits for an RCU grace period, as does the unmount above: overlapping
    //    them halves the jail's cost). The cgroup namespace is rooted there.
    let mut go = [0u8; 1];
    // SAFETY: go is a one-byte writable buffer; go_fd is the pipe's read end.
    if unsafe { libc::read(plan.go_fd, go.as_mut_ptr().cast(), 1) } != 1 {
        return Err("the jailer did not confirm the cgroups".into());
    }
    // SAFETY: unshare only changes this process's namespaces.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWCGROUP) };
    check(rc, "unshare(cgroup)")?;
    let t_cg = t0.elapsed();
    // 4. rlimits (soft = hard, so the VMM cannot raise them).
    for &(resource, value) in &plan.rlimits {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: lim is a valid rlimit; resource is a RLIMIT_* constant.
        check(unsafe { libc::setrlimit(resource as _, &lim) }, "setrlimit")?;
    }
    drop_privileges(plan.uid, plan.gid)?;
    // 5. signals: the parent blocks some and Rust ignores SIGPIPE; both
    //    would survive exec.
    // SAFETY: an empty, initialised signal set; sigprocmask/signal only
    // change this process's signal state.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if plan.timing {
        eprintln!(
            "ember-jailer: child: namespaces {} us, mounts+pivot {} us, cgroup wait {} us, drop {} us",
            t_ns.as_micros(),
            (t_mnt - t_ns).as_micros(),
            (t_cg - t_mnt).as_micros(),
            (t0.elapsed() - t_cg).as_micros()
        );
    }
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: exec is a valid path, argv and envp are NULL-terminated arrays of
    // valid strings that outlive the call (it only returns on failure).
    unsafe { libc::execve(plan.exec.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(format!("execve /ember-vmm: {}", io::Error::last_os_error()))
}

/// Drops the bounding set, supplementary groups, gid, uid, every remaining
/// capability, and sets no_new_privs and the parent-death signal.
fn drop_privileges(uid: u32, gid: u32) -> Result<(), String> {
    // The bounding set needs CAP_SETPCAP, so it goes first. EINVAL = past the
    // last capability this kernel knows.
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(format!(
                "drop bounding cap {cap}: {}",
                io::Error::last_os_error()
            ));
        }
    }
    // SAFETY: setgroups with size 0 reads no memory; set*id take integers.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(libc::setresgid(gid, gid, gid), "setresgid")?;
        check(libc::setresuid(uid, uid, uid), "setresuid")?;
    }
    // Leaving uid 0 cleared permitted/effective/ambient; clear inheritable too.
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and data are the v3 layout capset(2) expects (two u32 triples).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } as libc::c_int;
    check(rc, "capset")?;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
            "clear ambient",
        )?;
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "no_new_privs",
        )?;
        // The credential change cleared it: a dead jailer takes its VMM along.
        check(
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0),
            "pdeathsig",
        )?;
    }
    Ok(())
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Child entry after fork: never returns.
pub fn run(plan: &ChildPlan, err_fd: RawFd) -> ! {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let msg = match enter(plan) {
        Ok(()) => "unreachable: exec returned Ok".to_string(),
        Err(m) => m,
    };
    // SAFETY: msg points to msg.len() readable bytes; err_fd is the pipe's
    // write end; _exit skips the parent's atexit handlers and buffers.
    unsafe {
        libc::write(err_fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(127);
    }
}
