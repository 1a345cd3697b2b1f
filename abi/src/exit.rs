//! How `ember-vmm` ends, as its parent sees it: the process exit codes
//! ([`ExitCode`], DESIGN.md "Exit codes") and the wait status around them
//! ([`VmmStatus`]). `ember-jailer` exits the way the VMM it ran did (same
//! code, or the same fatal signal) and adds a usage code of its own. One definition: the VMM and the jailer exit with
//! [`ExitCode::code`]; `emberd` reads a status back with
//! [`VmmStatus::from_wait`].
//!
//! The guest's own code shares the byte: a guest that writes 1, 2, 124 or
//! 125 or 70 to `PORT_EXIT` (or 64 under the jailer) reads as that reason. Ember's
//! agents never exit with those codes on purpose.

use core::fmt;

/// A process exit code of `ember-vmm` or `ember-jailer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// The guest's own exit: the code it wrote to `PORT_EXIT` (masked to
    /// 0..=255), or 0 for a reset or shutdown.
    Guest(u8),
    /// Bad input or a VMM failure (one `ember-vmm: error:` line on stderr).
    VmmError,
    /// Command-line usage error.
    Usage,
    /// `--timeout-ms` expired.
    Timeout,
    /// The guest crashed (fault, triple fault, emulation failure, kernel panic).
    GuestCrash,
    /// Isolation could not be set up (EX_SOFTWARE): the jailer's jail, or
    /// the VMM's own seccomp filters.
    SetupFailed,
    /// `ember-jailer` only: its command line was refused (EX_USAGE).
    JailerUsage,
}

impl ExitCode {
    /// The process exit code.
    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Guest(c) => c as i32,
            ExitCode::VmmError => 1,
            ExitCode::Usage => 2,
            ExitCode::Timeout => 124,
            ExitCode::GuestCrash => 125,
            ExitCode::SetupFailed => 70,
            ExitCode::JailerUsage => 64,
        }
    }

    /// What exit code `code` of an `ember-vmm` means (`jailed`: it came
    /// from the `ember-jailer` that ran it, which adds its own codes).
    pub fn from_code(code: u8, jailed: bool) -> ExitCode {
        match code {
            1 => ExitCode::VmmError,
            2 => ExitCode::Usage,
            124 => ExitCode::Timeout,
            125 => ExitCode::GuestCrash,
            70 => ExitCode::SetupFailed,
            64 if jailed => ExitCode::JailerUsage,
            c => ExitCode::Guest(c),
        }
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitCode::Guest(c) => write!(f, "the guest exited with code {c}"),
            ExitCode::VmmError => f.write_str("the VMM failed"),
            ExitCode::Usage => f.write_str("the VMM refused its command line"),
            ExitCode::Timeout => f.write_str("the VM ran past its timeout"),
            ExitCode::GuestCrash => f.write_str("the guest crashed"),
            ExitCode::SetupFailed => {
                f.write_str("the jail or the VMM's sandbox could not be set up")
            }
            ExitCode::JailerUsage => f.write_str("the jailer refused its command line"),
        }
    }
}

/// How a VMM process ended (its wait status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmmStatus {
    /// It exited with this code.
    Exited(ExitCode),
    /// It was killed by this signal (SIGSYS: a seccomp violation; SIGKILL:
    /// the host, or the memory cgroup).
    Signaled(i32),
}

impl VmmStatus {
    /// The status of a wait: `code` and `signal` as
    /// `std::process::ExitStatus::{code, signal}` report them. None when
    /// neither is set (a stopped, not ended, process).
    pub fn from_wait(code: Option<i32>, signal: Option<i32>, jailed: bool) -> Option<VmmStatus> {
        match (code, signal) {
            (Some(c), _) => Some(VmmStatus::Exited(ExitCode::from_code(
                (c & 0xff) as u8,
                jailed,
            ))),
            (None, Some(s)) => Some(VmmStatus::Signaled(s)),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        let all = [
            ExitCode::Guest(0),
            ExitCode::Guest(3),
            ExitCode::Guest(255),
            ExitCode::VmmError,
            ExitCode::Usage,
            ExitCode::Timeout,
            ExitCode::GuestCrash,
            ExitCode::SetupFailed,
            ExitCode::JailerUsage,
        ];
        for c in all {
            assert_eq!(ExitCode::from_code(c.code() as u8, true), c, "{c:?}");
        }
        // Unjailed, the jailer's usage code is the guest's.
        assert_eq!(ExitCode::from_code(64, false), ExitCode::Guest(64));
        assert_eq!(ExitCode::from_code(70, false), ExitCode::SetupFailed);
    }

    #[test]
    fn wait_statuses() {
        assert_eq!(
            VmmStatus::from_wait(Some(125), None, false),
            Some(VmmStatus::Exited(ExitCode::GuestCrash))
        );
        assert_eq!(
            VmmStatus::from_wait(None, Some(31), true),
            Some(VmmStatus::Signaled(31))
        );
        assert_eq!(VmmStatus::from_wait(None, None, true), None);
    }
}
