//! The jailer's parent side: fork the VMM into a new PID namespace, learn
//! whether the jail setup succeeded (error pipe: EOF = exec done), then stay
//! as a thin supervisor. The VMM is PID 1 of its namespace, so it only gets
//! signals it handles: a forwarded SIGTERM/SIGINT/SIGHUP is followed by
//! SIGKILL after a grace period.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::cgroup::Cgroups;
use super::child::{self, ChildPlan};
use super::fs::Jail;
use super::{JailConfig, VmmExit, JAILED_EXEC};

/// How long a forwarded termination signal may take before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// Why the VMM could not be started or supervised.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot open network namespace {0}")]
    Netns(std::path::PathBuf, #[source] io::Error),
    #[error("{0} failed")]
    Sys(&'static str, #[source] io::Error),
    #[error("jail setup failed in the child: {0}")]
    Child(String),
    #[error("argument contains a NUL byte")]
    Nul,
    #[error(transparent)]
    Cgroup(#[from] super::cgroup::CgroupError),
}

fn sys(what: &'static str) -> SuperviseError {
    SuperviseError::Sys(what, io::Error::last_os_error())
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd), SuperviseError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a writable array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys("pipe2"));
    }
    // SAFETY: pipe2 just returned these two fds; each is owned exactly once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn plan(
    cfg: &JailConfig,
    jail: &Jail,
    uid: u32,
    gid: u32,
    netns: Option<&File>,
    go_fd: std::os::fd::RawFd,
) -> Result<ChildPlan, SuperviseError> {
    let cs = |b: &[u8]| CString::new(b).map_err(|_| SuperviseError::Nul);
    let mut argv = vec![cs(b"ember-vmm")?];
    for a in &cfg.vmm_args {
        argv.push(cs(a.as_bytes())?);
    }
    let binds = jail.binds.clone();
    Ok(ChildPlan {
        go_fd,
        netns_fd: netns.map(|f| f.as_raw_fd()),
        root: jail.root_c.clone(),
        binds,
        hostname: cfg.id.as_bytes().to_vec(),
        rlimits: cfg.limits.rlimits.clone(),
        uid,
        gid,
        exec: cs(JAILED_EXEC.as_bytes())?,
        argv,
        timing: cfg.timing,
    })
}

/// The signals the supervisor handles synchronously.
fn supervised_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
        ] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Forks the jailed VMM, waits for it, and returns how it ended.
pub fn spawn_and_wait(
    cfg: &JailConfig,
    jail: &Jail,
    cgroups: &Cgroups,
    uid: u32,
    gid: u32,
    start: Instant,
) -> Result<VmmExit, SuperviseError> {
    let netns = match &cfg.netns {
        Some(p) => Some(File::open(p).map_err(|e| SuperviseError::Netns(p.clone(), e))?),
        None => None,
    };
    let (err_r, err_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let plan = plan(cfg, jail, uid, gid, netns.as_ref(), go_r.as_raw_fd())?;
    let set = supervised_set();
    let mut old: libc::sigset_t = supervised_set();
    // SAFETY: set and old are initialised signal sets.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) };
    // SAFETY: unshare(CLONE_NEWPID) only affects children forked after it.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(sys("unshare(CLONE_NEWPID)"));
    }
    // SAFETY: the jailer is single-threaded, so the child is a full copy and
    // may allocate; it only runs child::run, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sys("fork"));
    }
    if pid == 0 {
        drop((err_r, go_w));
        child::run(&plan, err_w.as_raw_fd());
    }
    drop((err_w, go_r));
    // Join the cgroups while the child builds its jail (see child.rs step 3).
    let joined = cgroups.join(pid);
    let mut go_w = File::from(go_w);
    if let Err(e) = joined {
        drop(go_w);
        // SAFETY: pid is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = wait_exit(pid, &set, false);
        return Err(SuperviseError::Cgroup(e));
    }
    let _ = go_w.write_all(b"g");
    drop(go_w);
    let mut msg = String::new();
    let _ = File::from(err_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = wait_exit(pid, &set, false);
        return Err(SuperviseError::Child(msg));
    }
    if cfg.timing {
        eprintln!(
            "ember-jailer: jail ready, ember-vmm exec'd after {} us",
            start.elapsed().as_micros()
        );
    }
    if let Some(p) = &cfg.pid_file {
        if let Err(e) = std::fs::write(p, pid.to_string()) {
            eprintln!("ember-jailer: cannot write pid file {}: {e}", p.display());
        }
    }
    let exit = wait_exit(pid, &set, true);
    // SAFETY: old is the mask saved above.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    Ok(exit)
}

/// Waits for `pid`, forwarding termination signals when `forward`.
fn wait_exit(pid: libc::pid_t, set: &libc::sigset_t, forward: bool) -> VmmExit {
    let mut kill_at: Option<Instant> = None;
    loop {
        let mut status = 0;
        // SAFETY: status is a writable int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return VmmExit::Code(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return VmmExit::Signal(libc::WTERMSIG(status));
            }
            continue;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // Not our child any more (cannot happen): report it as killed.
            return VmmExit::Signal(libc::SIGKILL);
        }
        let timeout = match kill_at {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(1),
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: set is initialised; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            // SAFETY: pid is our child (not yet reaped, so not reused).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            kill_at = None;
        }
        if sig > 0 && sig != libc::SIGCHLD && forward {
            // SAFETY: pid is our child (not yet reaped, so not reused).
            unsafe { libc::kill(pid, sig) };
            kill_at.get_or_insert_with(|| Instant::now() + GRACE);
        }
    }
}
