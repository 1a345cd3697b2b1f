//! The jailer as a library (`src/main.rs` is the thin `ember-jailer`
//! binary): puts one `ember-vmm` in its own jail, then supervises it. Its
//! own crate: it runs as root and needs nothing of the VMM.
//!
//! Steps (DESIGN.md "Isolation" has the why):
//! 1. close inherited fds, pick a unique unprivileged uid/gid ([`ids`]);
//! 2. build `<base>/<id>/root` with placeholders and `/dev/kvm` ([`fs`]);
//! 3. create the VM's cgroups (memory, cpu, pids; v1 or v2) ([`cgroup`]);
//! 4. fork into a new PID namespace; the child joins the cgroups, enters new
//!    mount/IPC/UTS/cgroup (and network) namespaces, bind-mounts what the VM
//!    needs, `pivot_root`s into the jail, sets rlimits, drops every capability
//!    and its uid/gid, sets no_new_privs and execs `/ember-vmm` with an empty
//!    environment ([`child`]);
//! 5. the parent stays as a thin supervisor: it forwards termination signals,
//!    reaps the VMM, removes jail and cgroups, and exits the way the VMM did
//!    (same exit code, or the same fatal signal — SIGSYS for a seccomp kill).

pub mod args;
mod cgroup;
mod child;
mod elf;
mod fs;
mod ids;
mod supervise;

use std::path::PathBuf;
use std::time::Instant;

pub use args::{parse, USAGE};
pub use cgroup::{relimit, CgroupError};

/// Which cgroup hierarchy to use (`--cgroup-version`).
pub use ember_abi::jailer_args::CgroupVersion;

/// One host file made visible inside the jail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailFile {
    /// Host path (resolved by the jailer, as root).
    pub src: PathBuf,
    /// Path inside the jail.
    pub dst: PathBuf,
    /// Bind-mounted writable (else read-only).
    pub writable: bool,
}

/// Resource limits for one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// cgroup memory limit; None = no memory limit.
    pub mem_limit_mib: Option<u64>,
    /// CFS quota per period; None = no CPU limit.
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: u64,
    /// CFS quota per period of the `ember` parent cgroup, shared by every
    /// jailed VM on the host; None = leave the parent as it is.
    pub all_vms_cpu_quota_us: Option<u64>,
    /// cgroup pids limit (threads count).
    pub pids_max: u64,
    /// (RLIMIT_*, soft = hard value).
    pub rlimits: Vec<(u32, u64)>,
}

/// Everything the jailer needs for one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailConfig {
    pub id: String,
    pub exec_file: PathBuf,
    /// None = allocate a unique id.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub chroot_base: PathBuf,
    pub files: Vec<JailFile>,
    pub rw_dirs: Vec<PathBuf>,
    /// Host directories bind-mounted writable: (host path, jail path).
    pub bind_dirs: Vec<(PathBuf, PathBuf)>,
    /// Host directories bind-mounted read-only and not chowned: (host path,
    /// jail path).
    pub ro_dirs: Vec<(PathBuf, PathBuf)>,
    pub tun: bool,
    /// Network namespace to join; None = a new, empty one.
    pub netns: Option<PathBuf>,
    pub cgroup_version: CgroupVersion,
    pub limits: Limits,
    pub pid_file: Option<PathBuf>,
    pub keep: bool,
    pub timing: bool,
    pub vmm_args: Vec<String>,
}

/// Where jails live unless `--chroot-base` says otherwise.
pub const DEFAULT_CHROOT_BASE: &str = "/srv/ember/jail";
/// Inside the jail, the VMM binary is always here.
pub const JAILED_EXEC: &str = "/ember-vmm";

/// Why a VM could not be jailed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("the jailer must run as root (it creates namespaces, cgroups and device nodes)")]
    NotRoot,
    #[error(transparent)]
    Ids(#[from] ids::IdsError),
    #[error(transparent)]
    Fs(#[from] fs::FsError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Supervise(#[from] supervise::SuperviseError),
}

/// How the jailed VMM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmmExit {
    Code(i32),
    Signal(i32),
}

/// Jails and runs the VMM described by `cfg`; returns how it ended. Cleans up
/// the jail and cgroups on every path (unless `cfg.keep`).
pub fn run(mut cfg: JailConfig) -> Result<VmmExit, JailError> {
    let start = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(JailError::NotRoot);
    }
    child::close_inherited_fds();
    let lease = ids::allocate(&cfg.chroot_base, cfg.uid, cfg.gid)?;
    cfg.uid = Some(lease.uid);
    cfg.gid = Some(lease.gid);
    // Jails of jailers that were SIGKILLed (no cleanup ran) go first.
    for stale in fs::stale_jails(&cfg.chroot_base) {
        cgroup::remove_stale(&stale);
    }
    let t_ids = start.elapsed();
    let jail = fs::Jail::create(&cfg, lease.uid, lease.gid)?;
    let t_jail = start.elapsed();
    let cgroups = match cgroup::Cgroups::create(&cfg) {
        Ok(c) => c,
        Err(e) => {
            jail.remove(cfg.keep);
            return Err(e.into());
        }
    };
    if cfg.timing {
        eprintln!(
            "ember-jailer: parent: uid lease {} us, jail dir {} us, cgroups {} us",
            t_ids.as_micros(),
            (t_jail - t_ids).as_micros(),
            (start.elapsed() - t_jail).as_micros()
        );
    }
    let result = supervise::spawn_and_wait(&cfg, &jail, &cgroups, lease.uid, lease.gid, start);
    cgroups.remove(cfg.keep);
    jail.remove(cfg.keep);
    drop(lease);
    Ok(result?)
}
