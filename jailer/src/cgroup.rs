//! The VM's cgroups: memory (guest memory + bounded overhead), CPU quota and
//! pids, under `ember/<id>`; optionally a CPU quota on `ember` itself, the
//! most all VMs of the host get together. cgroup v1 when its memory controller is mounted
//! (this machine: v1 controllers with an empty v2 `unified` beside them), v2
//! where it is the only hierarchy. The jailer creates and configures them
//! ([`relimit`] changes a running VM's limits, for emberd's restore slots); the
//! jailer moves the child into them before it execs, so every
//! thread and any child it might fork is charged from its first instruction.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{CgroupVersion, JailConfig, Limits};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Why the cgroups could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy under {CGROUP_ROOT} (need v1 memory/cpu/pids or v2)")]
    NoHierarchy,
    #[error("cgroup v1 controller {0} is not mounted under {CGROUP_ROOT}")]
    NoController(&'static str),
    #[error("not a VM id: {0:?}")]
    BadId(String),
    #[error("cannot create cgroup {0}")]
    Create(PathBuf, #[source] io::Error),
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
}

/// The created leaf cgroups of one VM.
#[derive(Debug)]
pub struct Cgroups {
    /// Leaf directories; the VMM writes itself into each `cgroup.procs`.
    pub leaves: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// The VM's own CPU quota, never above the quota of all VMs together (cgroup
/// v1 refuses a child quota above its parent's with EINVAL; under v2 the
/// smaller one rules anyway). Both use the same period.
fn leaf_quota(l: &Limits) -> Option<u64> {
    match (l.cpu_quota_us, l.all_vms_cpu_quota_us) {
        (Some(q), Some(all)) => Some(q.min(all)),
        (q, _) => q,
    }
}

/// The shared quota protects the host, not one VM from another: a parent
/// that refuses it (v1: a running VM of another emberd holds a larger
/// quota) is reported and the VM starts under the parent as it is.
fn warn_uncapped(set: Result<(), CgroupError>) {
    if let Err(e) = set {
        eprintln!("ember-jailer: all VMs' CPU quota not set: {e}");
    }
}

/// A v1 cgroup's CPU quota scaled to `period_us` (None: no quota, or unreadable).
fn v1_quota_per(dir: &Path, period_us: u64) -> Option<u64> {
    let read = |f: &str| {
        fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse::<i64>()
            .ok()
    };
    let (quota, period) = (read("cpu.cfs_quota_us")?, read("cpu.cfs_period_us")?);
    let (quota, period) = (u64::try_from(quota).ok()?, u64::try_from(period).ok()?);
    (period > 0).then(|| quota.saturating_mul(period_us) / period)
}

/// Creates `dir` (and parents); an empty leftover of a killed jailer is recreated.
fn create_leaf(dir: &Path) -> Result<(), CgroupError> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| CgroupError::Create(parent.to_path_buf(), e))?;
    }
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // rmdir fails (EBUSY) if processes are still in it: then it is not ours.
            fs::remove_dir(dir)
                .and_then(|()| fs::create_dir(dir))
                .map_err(|e| CgroupError::Create(dir.to_path_buf(), e))
        }
        Err(e) => Err(CgroupError::Create(dir.to_path_buf(), e)),
    }
}

/// Resolves `Auto` to the hierarchy this host uses.
pub fn detect(asked: CgroupVersion) -> Result<CgroupVersion, CgroupError> {
    let v1 = Path::new(CGROUP_ROOT)
        .join("memory/memory.limit_in_bytes")
        .exists();
    let v2 = v2_root().is_some();
    match asked {
        CgroupVersion::Auto if v1 => Ok(CgroupVersion::V1),
        CgroupVersion::Auto if v2 => Ok(CgroupVersion::V2),
        CgroupVersion::V1 if v1 => Ok(CgroupVersion::V1),
        CgroupVersion::V2 if v2 => Ok(CgroupVersion::V2),
        _ => Err(CgroupError::NoHierarchy),
    }
}

/// The v2 mount: `/sys/fs/cgroup` itself, or `unified` beside v1.
fn v2_root() -> Option<PathBuf> {
    [CGROUP_ROOT, "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
}

/// Changes the memory limit and CPU quota of the running VM `id` (its
/// jailer created the cgroups): a restore slot's VMM starts before it knows
/// its function, with the least limits, and gets the function's at claim
/// time. `mem_limit_mib` is the whole limit (guest + overhead); `cpu` is
/// (quota, period) in µs. The id must be one the jailer accepts.
pub fn relimit(
    id: &str,
    mem_limit_mib: Option<u64>,
    cpu: Option<(u64, u64)>,
) -> Result<(), CgroupError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(CgroupError::BadId(id.to_string()));
    }
    let root = Path::new(CGROUP_ROOT);
    match detect(CgroupVersion::Auto)? {
        CgroupVersion::V2 => {
            let leaf = v2_root()
                .ok_or(CgroupError::NoHierarchy)?
                .join("ember")
                .join(id);
            if let Some(mib) = mem_limit_mib {
                write(&leaf.join("memory.max"), &(mib << 20).to_string())?;
            }
            if let Some((q, p)) = cpu {
                write(&leaf.join("cpu.max"), &format!("{q} {p}"))?;
            }
        }
        _ => {
            if let Some(mib) = mem_limit_mib {
                let leaf = root.join("memory/ember").join(id);
                let bytes = (mib << 20).to_string();
                // memsw may never be below the memory limit: raising, it goes
                // first; lowering, it must follow.
                let memsw = leaf.join("memory.memsw.limit_in_bytes");
                let has_memsw = memsw.exists();
                let first = if has_memsw {
                    write(&memsw, &bytes)
                } else {
                    Ok(())
                };
                write(&leaf.join("memory.limit_in_bytes"), &bytes)?;
                if has_memsw && first.is_err() {
                    write(&memsw, &bytes)?;
                }
            }
            if let Some((q, p)) = cpu {
                // v1 refuses a leaf quota above its parent's (as at create).
                let q = v1_quota_per(&root.join("cpu/ember"), p).map_or(q, |cap| q.min(cap));
                let leaf = root.join("cpu/ember").join(id);
                write(&leaf.join("cpu.cfs_period_us"), &p.to_string())?;
                write(&leaf.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
        }
    }
    Ok(())
}

/// Removes the (empty) cgroups a SIGKILLed jailer left for `id`.
pub fn remove_stale(id: &str) {
    let root = Path::new(CGROUP_ROOT);
    let mut dirs: Vec<PathBuf> = ["memory", "cpu", "pids"]
        .iter()
        .map(|c| root.join(c).join("ember").join(id))
        .collect();
    if let Some(v2) = v2_root() {
        dirs.push(v2.join("ember").join(id));
    }
    for d in dirs {
        let _ = fs::remove_dir(d);
    }
}

impl Cgroups {
    /// Creates and configures the VM's cgroups. On error nothing is left behind.
    pub fn create(cfg: &JailConfig) -> Result<Self, CgroupError> {
        let version = detect(cfg.cgroup_version)?;
        let mut cg = Self { leaves: Vec::new() };
        let res = match version {
            CgroupVersion::V2 => cg.create_v2(cfg),
            _ => cg.create_v1(cfg),
        };
        if let Err(e) = res {
            cg.remove(false);
            return Err(e);
        }
        Ok(cg)
    }

    fn create_v1(&mut self, cfg: &JailConfig) -> Result<(), CgroupError> {
        let l = &cfg.limits;
        for ctrl in ["memory", "cpu", "pids"] {
            let mount = Path::new(CGROUP_ROOT).join(ctrl);
            if !mount.join("cgroup.procs").exists() {
                return Err(CgroupError::NoController(ctrl));
            }
            let leaf = mount.join("ember").join(&cfg.id);
            create_leaf(&leaf)?;
            self.leaves.push(leaf.clone());
            match ctrl {
                "memory" => {
                    if let Some(mib) = l.mem_limit_mib {
                        let bytes = (mib << 20).to_string();
                        write(&leaf.join("memory.limit_in_bytes"), &bytes)?;
                        // Where swap accounting exists, forbid escaping to swap.
                        let memsw = leaf.join("memory.memsw.limit_in_bytes");
                        if memsw.exists() {
                            write(&memsw, &bytes)?;
                        }
                    }
                }
                "cpu" => {
                    if let Some(all) = l.all_vms_cpu_quota_us {
                        let parent = mount.join("ember");
                        let set = write(
                            &parent.join("cpu.cfs_period_us"),
                            &l.cpu_period_us.to_string(),
                        )
                        .and_then(|()| write(&parent.join("cpu.cfs_quota_us"), &all.to_string()));
                        warn_uncapped(set);
                    }
                    // Another emberd (or an earlier one) may have capped
                    // the parent: v1 refuses a leaf quota above it.
                    let cap = v1_quota_per(&mount.join("ember"), l.cpu_period_us);
                    if let Some(q) = leaf_quota(l).map(|q| cap.map_or(q, |c| q.min(c))) {
                        write(
                            &leaf.join("cpu.cfs_period_us"),
                            &l.cpu_period_us.to_string(),
                        )?;
                        write(&leaf.join("cpu.cfs_quota_us"), &q.to_string())?;
                    }
                }
                _ => write(&leaf.join("pids.max"), &l.pids_max.to_string())?,
            }
        }
        Ok(())
    }

    fn create_v2(&mut self, cfg: &JailConfig) -> Result<(), CgroupError> {
        let root = v2_root().ok_or(CgroupError::NoHierarchy)?;
        let parent = root.join("ember");
        fs::create_dir_all(&parent).map_err(|e| CgroupError::Create(parent.clone(), e))?;
        for dir in [&root, &parent] {
            // Already enabled is fine; a missing controller shows up below.
            let _ = fs::write(dir.join("cgroup.subtree_control"), "+memory +cpu +pids");
        }
        let leaf = parent.join(&cfg.id);
        create_leaf(&leaf)?;
        self.leaves.push(leaf.clone());
        let l = &cfg.limits;
        if let Some(mib) = l.mem_limit_mib {
            write(&leaf.join("memory.max"), &(mib << 20).to_string())?;
            let swap = leaf.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(all) = l.all_vms_cpu_quota_us {
            warn_uncapped(write(
                &parent.join("cpu.max"),
                &format!("{all} {}", l.cpu_period_us),
            ));
        }
        if let Some(q) = leaf_quota(l) {
            write(&leaf.join("cpu.max"), &format!("{q} {}", l.cpu_period_us))?;
        }
        write(&leaf.join("pids.max"), &l.pids_max.to_string())
    }

    /// Moves process `pid` (with all its threads) into every leaf.
    pub fn join(&self, pid: libc::pid_t) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        self.leaves
            .iter()
            .try_for_each(|leaf| write(&leaf.join("cgroup.procs"), &pid))
    }

    /// Removes the leaves (empty once the VMM is reaped).
    pub fn remove(&self, keep: bool) {
        if keep {
            return;
        }
        for leaf in &self.leaves {
            // The kernel may need a moment to finish the exit of the last task.
            let mut res = fs::remove_dir(leaf);
            for _ in 0..50 {
                match &res {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        res = fs::remove_dir(leaf);
                    }
                    _ => break,
                }
            }
            if let Err(e) = res {
                if e.kind() != io::ErrorKind::NotFound {
                    eprintln!("ember-jailer: cannot remove cgroup {}: {e}", leaf.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_quota_never_exceeds_the_quota_all_vms_share() {
        let mut l = Limits::default();
        assert_eq!(leaf_quota(&l), None);
        l.all_vms_cpu_quota_us = Some(175_000);
        assert_eq!(leaf_quota(&l), None);
        l.cpu_quota_us = Some(50_000);
        assert_eq!(leaf_quota(&l), Some(50_000));
        l.cpu_quota_us = Some(578_800);
        assert_eq!(leaf_quota(&l), Some(175_000));
        l.all_vms_cpu_quota_us = None;
        assert_eq!(leaf_quota(&l), Some(578_800));
    }
}
