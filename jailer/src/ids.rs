//! Unique unprivileged uid/gid per VM: a lease is a lock file
//! `<base>/.ids/<uid>` created with O_EXCL and holding the jailer's pid, so
//! concurrent jailers never share an id, and a lease left by a dead jailer
//! (SIGKILL) is reclaimed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// First id of the range `auto` picks from: far above any login account.
pub const AUTO_ID_BASE: u32 = 3_000_000;
/// Size of that range.
pub const AUTO_ID_COUNT: u32 = 65_536;

/// Why no id could be leased.
#[derive(Debug, thiserror::Error)]
pub enum IdsError {
    #[error("cannot create the id lease directory {0}")]
    Dir(PathBuf, #[source] io::Error),
    #[error("uid {0} is in use by another live VM")]
    InUse(u32),
    #[error("no free uid in {AUTO_ID_BASE}..+{AUTO_ID_COUNT}")]
    Exhausted,
    #[error("cannot write id lease {0}")]
    Lease(PathBuf, #[source] io::Error),
}

/// A held uid/gid; dropping it releases the id.
#[derive(Debug)]
pub struct Lease {
    pub uid: u32,
    pub gid: u32,
    path: PathBuf,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Leases `uid` (or a free one when None); gid defaults to the uid.
pub fn allocate(base: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<Lease, IdsError> {
    let dir = base.join(".ids");
    fs::create_dir_all(&dir).map_err(|e| IdsError::Dir(dir.clone(), e))?;
    if let Some(uid) = uid {
        let path = try_lease(&dir, uid)?.ok_or(IdsError::InUse(uid))?;
        return Ok(Lease {
            uid,
            gid: gid.unwrap_or(uid),
            path,
        });
    }
    // Start at a pid-derived slot so concurrent jailers rarely collide.
    // SAFETY: getpid has no preconditions.
    let start = unsafe { libc::getpid() } as u32;
    for i in 0..AUTO_ID_COUNT {
        let uid = AUTO_ID_BASE + (start.wrapping_add(i) % AUTO_ID_COUNT);
        if let Some(path) = try_lease(&dir, uid)? {
            return Ok(Lease {
                uid,
                gid: gid.unwrap_or(uid),
                path,
            });
        }
    }
    Err(IdsError::Exhausted)
}

/// Takes the lease file for `uid`; Ok(None) when a live jailer holds it.
fn try_lease(dir: &Path, uid: u32) -> Result<Option<PathBuf>, IdsError> {
    let path = dir.join(uid.to_string());
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                // SAFETY: getpid has no preconditions.
                let pid = unsafe { libc::getpid() };
                f.write_all(pid.to_string().as_bytes())
                    .map_err(|e| IdsError::Lease(path.clone(), e))?;
                return Ok(Some(path));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if holder_alive(&path) {
                    return Ok(None);
                }
                // Stale lease of a killed jailer: reclaim it once.
                let _ = fs::remove_file(&path);
            }
            Err(e) => return Err(IdsError::Lease(path, e)),
        }
    }
    Ok(None)
}

/// True when the pid in the lease file is a running process (or the file is
/// being written right now: empty content counts as alive).
pub(super) fn holder_alive(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string(path) else {
        return true;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return text.trim().is_empty();
    };
    // SAFETY: kill with signal 0 only checks for existence.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_and_released() {
        let base = std::env::temp_dir().join(format!("ember-ids-test-{}", std::process::id()));
        let a = allocate(&base, None, None).expect("first");
        let b = allocate(&base, None, None).expect("second");
        assert_ne!(a.uid, b.uid);
        assert_eq!(a.gid, a.uid);
        assert!(matches!(
            allocate(&base, Some(a.uid), None),
            Err(IdsError::InUse(_))
        ));
        let uid = a.uid;
        drop(a);
        let c = allocate(&base, Some(uid), Some(7)).expect("released id is free again");
        assert_eq!(c.gid, 7);
        drop((b, c));
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn stale_lease_is_reclaimed() {
        let base = std::env::temp_dir().join(format!("ember-ids-stale-{}", std::process::id()));
        fs::create_dir_all(base.join(".ids")).expect("dir");
        // pid_max is at most 2^22, so this pid cannot be alive.
        fs::write(base.join(".ids").join("4242"), "99999999").expect("write");
        let l = allocate(&base, Some(4242), None).expect("reclaimed");
        assert_eq!(l.uid, 4242);
        drop(l);
        let _ = fs::remove_dir_all(&base);
    }
}
