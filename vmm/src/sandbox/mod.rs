//! The sandbox `ember-vmm` puts itself in: Landlock for the whole process
//! (before any vCPU or device thread exists) and a seccomp-bpf allowlist per
//! thread kind (vCPU, device event loop, main/control), each installed by the
//! thread itself before it runs guest-driven code. A violation kills the whole
//! process with SIGSYS (SECCOMP_RET_KILL_PROCESS).
//!
//! How the VMM uses it (DESIGN.md "Isolation"):
//! 1. `init(options)` first thing in `main`, with the switches the command
//!    line set (`--no-seccomp`, `--no-landlock`, `--test-hook`): it warns
//!    about every protection switched off and arms an `ACTION@payload` hook.
//! 2. after /dev/kvm, the images, the console/log files and device fds are
//!    open, and before the first thread is spawned: `restrict_filesystem(..)`.
//! 3. first thing in each vCPU thread: `enter(ThreadKind::Vcpu)`; in the
//!    event-loop thread: `enter(ThreadKind::EventLoop)`; in the main thread
//!    once every thread runs: `enter(ThreadKind::Main)`; in the API thread
//!    (`--api-sock`) first thing: `enter(ThreadKind::Api)`.

mod filters;
mod hooks;
mod landlock;
mod seccomp;

use std::sync::OnceLock;

pub use hooks::TestHook;
pub use landlock::restrict_filesystem;

/// The kinds of threads, each with its own allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// Runs KVM_RUN and the port/MMIO buses.
    Vcpu,
    /// Runs the device event loop (virtio queues, vsock, TAP, timers).
    EventLoop,
    /// Builds the VM, then waits for it to end and tears it down (and, with
    /// `--api-sock`, applies the API's actions).
    Main,
    /// Serves the Firecracker API socket (`api/server.rs`).
    Api,
}

/// Every thread kind.
pub const ALL: [ThreadKind; 4] = [
    ThreadKind::Vcpu,
    ThreadKind::EventLoop,
    ThreadKind::Main,
    ThreadKind::Api,
];

impl ThreadKind {
    /// Name used in flags and messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::EventLoop => "event-loop",
            ThreadKind::Main => "main",
            ThreadKind::Api => "api",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Why the sandbox could not be set up. Every one of these stops the VMM:
/// running a guest without the sandbox that was asked for is never silent.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot build the {0} seccomp filter")]
    Build(&'static str, #[source] seccompiler::BackendError),
    #[error("cannot install the {0} seccomp filter")]
    Install(&'static str, #[source] seccompiler::Error),
    #[error("cannot apply the Landlock ruleset")]
    Landlock(#[source] ::landlock::RulesetError),
    #[error("bad sandbox flag: {0}")]
    Flag(String),
}

/// The sandbox switches of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub seccomp: bool,
    pub landlock: bool,
    /// Test builds only: a forbidden action one thread performs on purpose.
    pub test_hook: Option<TestHook>,
    /// With `--api-sock`: the API socket's directory, the one place the VMM
    /// thread may create files once the VM runs (snapshot files), as
    /// Firecracker under its jailer writes inside its chroot. Landlock
    /// allows it; the main thread's filter then allows opening files.
    pub api_dir: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seccomp: true,
            landlock: true,
            test_hook: None,
            api_dir: None,
        }
    }
}

static OPTIONS: OnceLock<Options> = OnceLock::new();

/// Records the options for this process (first call wins). `ember-vmm`'s
/// `main` always calls it; without it (in-process VM tests of the VMM's unit
/// test binary) the sandbox stays off, or it would kill the test runner.
pub fn init(options: Options) {
    if !options.seccomp {
        eprintln!(
            "ember-vmm: WARNING: --no-seccomp: the VMM runs WITHOUT its syscall filters. \
                 For debugging only; never in production."
        );
    }
    if !options.landlock {
        eprintln!(
            "ember-vmm: WARNING: --no-landlock: the VMM runs WITHOUT its filesystem/network \
                 sandbox. For debugging only; never in production."
        );
    }
    if let Some(hook) = &options.test_hook {
        hook.arm();
    }
    let _ = OPTIONS.set(options);
}

fn options() -> Option<&'static Options> {
    OPTIONS.get()
}

/// The directories Landlock leaves writable once the VM runs.
pub fn writable_dirs() -> Vec<std::path::PathBuf> {
    options()
        .and_then(|o| o.api_dir.clone())
        .into_iter()
        .collect()
}

/// Installs `kind`'s seccomp filter on the calling thread (unless
/// `--no-seccomp`), then runs the test hook if it targets this kind.
pub fn enter(kind: ThreadKind) -> Result<(), SandboxError> {
    let Some(o) = options() else {
        return Ok(());
    };
    if o.seccomp {
        seccomp::install(kind, o.api_dir.is_some())?;
    }
    if let Some(hook) = &o.test_hook {
        hook.run_if(kind);
    }
    Ok(())
}

/// [`enter`], or end the process with a one-line error (exit code 70,
/// `ExitCode::SetupFailed`): a thread that cannot be filtered must not run
/// guest-driven code.
pub fn enter_or_exit(kind: ThreadKind) {
    if let Err(e) = enter(kind) {
        eprintln!("ember-vmm: sandbox: {e}: {}", ember_abi::error::sources(&e));
        std::process::exit(ember_abi::exit::ExitCode::SetupFailed.code());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_hooks_exist_only_in_test_hooks_builds() {
        let hook = TestHook::parse("forbidden-syscall@payload");
        assert_eq!(hook.is_ok(), cfg!(feature = "test-hooks"), "{hook:?}");
        assert!(TestHook::parse("forbidden-syscall@elsewhere").is_err());
    }

    #[test]
    fn thread_kind_names_round_trip() {
        for k in ALL {
            assert_eq!(ThreadKind::parse(k.name()), Some(k));
        }
        assert_eq!(ThreadKind::parse("other"), None);
    }
}
