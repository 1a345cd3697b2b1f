//! Running an environment's `ember-vmm` through `ember-jailer`: the jailer
//! command line (the work directory bind-mounted as `/run`, the guest images
//! as read-only files, in-jail paths in the VMM's own arguments) and killing
//! a jailed VMM so that its jailer reaps it, removes the jail and exits.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use ember_abi::jailer_args::{JailFileArg, JailerArgs};

use super::spawn::{pidfd_open, vmm_args, Console, Guest, LaunchConfig};
use super::AgentError;

/// Where the per-environment work directory appears inside the jail.
const JAIL_RUN: &str = "/run";
/// Where a restored environment's snapshot files appear inside the jail.
pub(crate) const JAIL_SNAP_STATE: &str = "/snap.state";
pub(crate) const JAIL_SNAP_MEM: &str = "/snap.mem";
/// Where a restore slot's snapshot directory appears inside the jail (read-only).
pub(crate) const JAIL_SLOT_DIR: &str = "/snap";

/// The VMM's vsock socket path inside the jail.
pub(crate) fn jail_uds() -> String {
    Path::new(JAIL_RUN).join("v.sock").display().to_string()
}
/// How long a jailer gets to reap its killed VMM and clean up before it is
/// killed too (its jail is then swept by the next jailer).
const JAILER_EXIT_WAIT: Duration = Duration::from_secs(2);

/// How to jail every VMM of a [`LaunchConfig`].
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The `ember-jailer` binary.
    pub jailer: PathBuf,
    /// Jail parent directory (`None`: the jailer's default, `/srv/ember/jail`).
    pub chroot_base: Option<PathBuf>,
    /// cgroup memory allowed above guest memory (VMM heap, device buffers,
    /// page tables).
    pub mem_overhead_mib: u32,
    /// CPU time the VM may use per [`CPU_PERIOD_US`] (`None`: no quota); see
    /// [`cpu_quota_us`].
    pub cpu_quota_us: Option<u32>,
    /// CPU time all jailed VMs of the host together may use per
    /// [`CPU_PERIOD_US`] (`None`: no such cap); see [`all_vms_cpu_quota_us`].
    pub all_vms_cpu_quota_us: Option<u32>,
}

/// The CFS period of every VM's CPU quota.
pub const CPU_PERIOD_US: u32 = 100_000;
/// The least CPU a VM gets, in thousandths of a core: the VMM's own work
/// (virtio queues, vsock) runs in the same cgroup, and a boot must not crawl.
const MIN_CPU_MILLICORES: u64 = 500;

/// Lambda's CPU-per-memory rule: `mib_per_vcpu` MiB of function memory buy
/// one core (Lambda: 1,769 MB = 1 vCPU), never less than half a core. The
/// quota per [`CPU_PERIOD_US`], or `None` when `mib_per_vcpu` is 0.
pub fn cpu_quota_us(memory_mib: u32, mib_per_vcpu: u32) -> Option<u32> {
    if mib_per_vcpu == 0 {
        return None;
    }
    let millicores =
        (u64::from(memory_mib) * 1000 / u64::from(mib_per_vcpu)).max(MIN_CPU_MILLICORES);
    let quota = millicores * u64::from(CPU_PERIOD_US) / 1000;
    Some(u32::try_from(quota).unwrap_or(u32::MAX))
}

/// The CPU quota all VMs share: the host's `host_millicores` less
/// `reserve_millicores` kept for emberd, its jailers and the rest of the
/// host, so that guests, whatever they do, never take every core (issue 13:
/// 50 hostile guests once held both cores of a 2-core host for 15 s). `None`
/// when the reserve is 0 (no cap); an error when nothing would be left.
pub fn all_vms_cpu_quota_us(
    host_millicores: u64,
    reserve_millicores: u64,
) -> Result<Option<u32>, String> {
    if reserve_millicores == 0 {
        return Ok(None);
    }
    let left = host_millicores.saturating_sub(reserve_millicores);
    if left < MIN_CPU_MILLICORES {
        return Err(format!(
            "a CPU reserve of {reserve_millicores} millicores leaves {left} of this host's \
             {host_millicores} for VMs; at least {MIN_CPU_MILLICORES} are needed"
        ));
    }
    let quota = left * u64::from(CPU_PERIOD_US) / 1000;
    Ok(Some(u32::try_from(quota).unwrap_or(u32::MAX)))
}

/// The default host CPU reserve: a tenth of the host, at least a quarter core.
pub fn default_cpu_reserve_millicores(host_millicores: u64) -> u64 {
    (host_millicores / 10).max(250)
}

impl JailConfig {
    pub fn new(jailer: impl Into<PathBuf>) -> Self {
        Self {
            jailer: jailer.into(),
            chroot_base: None,
            mem_overhead_mib: 64,
            cpu_quota_us: None,
            all_vms_cpu_quota_us: None,
        }
    }
}

/// The cgroup memory limit of a VM with `guest_mib` of guest memory.
pub(crate) fn mem_limit_mib(guest_mib: u32, jail: &JailConfig) -> u64 {
    guest_mib.saturating_add(jail.mem_overhead_mib).into()
}

/// A host path as a jailer `SRC[:DST]` source: it splits on the first ':'.
fn src(p: &Path) -> Result<String, AgentError> {
    let s = p.display().to_string();
    if s.contains(':') {
        return Err(AgentError::Jail(format!("path {s} contains ':'")));
    }
    Ok(s)
}

/// The `ember-jailer` argument list running `cfg`'s VMM with its work
/// directory `dir` as `/run` (so the VMM's vsock path is `/run/v.sock`, whose
/// `_<port>` listeners the host created in `dir`).
pub(crate) fn jailer_args(
    cfg: &LaunchConfig,
    jail: &JailConfig,
    dir: &Path,
    id: &str,
) -> Result<Vec<String>, AgentError> {
    let mut inner = cfg.clone();
    inner.jail = None;
    let mut a = JailerArgs {
        id: id.to_string(),
        exec_file: cfg.vmm.display().to_string(),
        bind_dirs: vec![(src(dir)?, JAIL_RUN.into())],
        mem_limit_mib: Some(mem_limit_mib(cfg.mem_mib, jail)),
        chroot_base: jail.chroot_base.as_ref().map(|b| b.display().to_string()),
        cpu_quota_us: jail.cpu_quota_us.map(u64::from),
        cpu_period_us: (jail.cpu_quota_us.is_some() || jail.all_vms_cpu_quota_us.is_some())
            .then_some(CPU_PERIOD_US.into()),
        all_vms_cpu_quota_us: jail.all_vms_cpu_quota_us.map(u64::from),
        ..JailerArgs::default()
    };
    let mut file = |host: &Path, in_jail: &str, writable: bool| -> Result<PathBuf, AgentError> {
        a.files.push(JailFileArg {
            src: src(host)?,
            dst: in_jail.into(),
            writable,
        });
        Ok(PathBuf::from(in_jail))
    };
    if let Some(d) = &cfg.slot {
        // Read-only and left root's: the host links the snapshot in at claim.
        a.ro_dirs.push((src(d)?, JAIL_SLOT_DIR.into()));
    }
    if let Some(r) = &mut inner.restore {
        // Read-only binds of the decrypted files (mapped private by the VMM).
        r.state = file(&r.state.clone(), JAIL_SNAP_STATE, false)?;
        r.mem = file(&r.mem.clone(), JAIL_SNAP_MEM, false)?;
    }
    match &mut inner.guest {
        Guest::Kernelless { .. } if inner.restore.is_some() || inner.slot.is_some() => {}
        Guest::Kernelless { elf } => *elf = file(elf, "/agent", false)?,
        Guest::Linux { kernel, initrd, .. } => {
            *kernel = file(kernel, "/kernel", false)?;
            if let Some(initrd) = initrd {
                *initrd = file(initrd, "/initrd", false)?;
            }
        }
    }
    for (i, d) in inner.drives.iter_mut().enumerate() {
        *d = file(&d.clone(), &format!("/drive{i}"), false)?;
    }
    if let Console::File(p) = &inner.console {
        // The bind mount needs an existing file; the jailer chowns it to the VM.
        File::create(p).map_err(|e| AgentError::WorkDir(p.clone(), e))?;
        inner.console = Console::File(file(&p.clone(), "/console", true)?);
    }
    let uds = Path::new(JAIL_RUN).join("v.sock");
    a.vmm_args = vmm_args(&inner, &uds, id);
    Ok(a.to_args())
}

/// The child processes of `pid` (its jailed VMM, for a jailer).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The parent pid in `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    crate::procfs::stat(pid).map(|s| s.ppid)
}

/// SIGKILLs `pid` if it is (still) a child of `parent`, race-free against
/// pid reuse: the pidfd pins the process, then its parent is checked.
fn kill_child_of(pid: u32, parent: u32) {
    let Some(fd) = pidfd_open(pid) else {
        return;
    };
    if parent_of(pid) != Some(parent) {
        return;
    }
    // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo; no
    // memory is passed.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Kills a starting environment's process `pid` from outside the thread that
/// launches it (which then sees the agent's connection fail and reaps it).
/// Only a direct child of this process is touched (a pid already reaped and
/// reused is left alone). Its own children (a jailer's VMM) are killed
/// instead when it has any, so that the jailer removes its jail and cgroups.
pub fn kill_started(pid: u32) {
    let me = std::process::id();
    let kids = children(pid);
    if kids.is_empty() || parent_of(pid) != Some(me) {
        kill_child_of(pid, me);
        return;
    }
    for vmm in kids {
        kill_child_of(vmm, pid);
    }
}

/// Kills an environment's process. A jailer's VMM (its only child) is killed
/// first, so the jailer reaps it, removes the jail and cgroups and exits by
/// itself (SIGKILL would leave them to the next jailer's sweep); a jailer
/// that does not exit in time, or a plain `ember-vmm`, gets SIGKILL. The
/// caller still reaps with `wait`.
pub(crate) fn kill(child: &mut Child, jailed: bool) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    if jailed {
        let pid = child.id();
        for vmm in children(pid) {
            kill_child_of(vmm, pid);
        }
        // With no child left the jailer is cleaning up (or about to exit).
        let until = Instant::now() + JAILER_EXIT_WAIT;
        while Instant::now() < until {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let _ = child.kill();
}
