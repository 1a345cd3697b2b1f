//! Landlock for the whole VMM process: no filesystem access at all except
//! beneath the directories the caller names (e.g. its vsock socket
//! directory), no TCP bind/connect, no abstract Unix sockets or signals
//! outside the sandbox. Files the VMM needs (/dev/kvm, /dev/net/tun, the
//! images, the console and log files) are opened before this runs, so they
//! need no rule. `restrict_self` covers the calling thread and the threads it
//! creates afterwards (ABI < 8 has no all-threads flag): call it on the main
//! thread before the first vCPU or device thread exists.

use std::path::Path;

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};

use super::{options, SandboxError};

/// The ABI whose rights we ask for: V6 adds signal and abstract-socket
/// scoping; V7 only adds audit logging flags, nothing to enforce.
const TARGET_ABI: ABI = ABI::V6;

/// How much of the request the kernel enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandlockStatus {
    Full,
    Partial,
    /// The kernel has no Landlock (or `--no-landlock`).
    Off,
}

/// Restricts the process to `rw_dirs` (full access beneath each, for
/// sockets and logs created at run time). Warns loudly unless fully enforced.
pub fn restrict_filesystem<P: AsRef<Path>>(rw_dirs: &[P]) -> Result<LandlockStatus, SandboxError> {
    if !options().is_some_and(|o| o.landlock) {
        return Ok(LandlockStatus::Off);
    }
    apply(rw_dirs)
}

fn apply<P: AsRef<Path>>(rw_dirs: &[P]) -> Result<LandlockStatus, SandboxError> {
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .and_then(|r| r.handle_access(AccessNet::from_all(TARGET_ABI)))
        .and_then(|r| r.scope(Scope::from_all(TARGET_ABI)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(rw_dirs, AccessFs::from_all(TARGET_ABI))))
        .and_then(|r| r.restrict_self())
        .map_err(SandboxError::Landlock)?;
    let s = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::Full,
        RulesetStatus::PartiallyEnforced => LandlockStatus::Partial,
        RulesetStatus::NotEnforced => LandlockStatus::Off,
    };
    if s != LandlockStatus::Full {
        eprintln!(
            "ember-vmm: WARNING: Landlock is {} on this kernel: the filesystem sandbox is weaker",
            if s == LandlockStatus::Off {
                "unavailable"
            } else {
                "only partly enforced"
            }
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_thread_cannot_open_files_outside_its_dirs() {
        let dir = std::env::temp_dir().join(format!("ember-landlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let inside = dir.join("ok");
        let dir2 = dir.clone();
        // restrict_self covers only this (new) thread: the test runner is untouched.
        let res = std::thread::spawn(move || {
            let status = apply(&[&dir2]).expect("landlock");
            let outside = std::fs::read("/etc/hostname");
            let inside_w = std::fs::write(dir2.join("ok"), b"x");
            let tcp = std::net::TcpStream::connect("127.0.0.1:9");
            (
                status,
                outside.is_err(),
                inside_w.is_ok(),
                tcp.err().map(|e| e.raw_os_error()),
            )
        })
        .join()
        .expect("thread");
        if res.0 == LandlockStatus::Off {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        assert!(res.1, "a file outside the allowed dirs was readable");
        assert!(res.2, "the allowed dir was not writable");
        assert_eq!(
            res.3,
            Some(Some(libc::EACCES)),
            "TCP connect was not denied by Landlock"
        );
        assert!(inside.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
