//! Test-only hook: `--test-hook ACTION@THREAD` makes one thread try a
//! forbidden action right after entering its sandbox, so the isolation tests
//! can show from the outside what the jail, Landlock and seccomp stop. Only
//! debug builds and builds with the `test-hooks` feature accept the flag; a
//! release build refuses it.
//!
//! Actions: `forbidden-syscall` (a syscall no allowlist has: SIGSYS),
//! `open-host-file` (/etc/passwd and /proc/1/status; seccomp answers EACCES,
//! and without it Landlock does, and without that the jail: ENOENT), `exec` (/bin/sh),
//! `inet-socket` (TCP socket + connect), `host-procs` (count of /proc
//! entries). Each prints one line `ember-vmm test-hook: ACTION@THREAD: RESULT`
//! on stderr (unless the kernel killed the process first).
//!
//! `ACTION@payload` (`test-hooks` builds only) waits instead: the event-loop
//! thread performs the action when the host sends the guest bytes containing
//! `PAYLOAD_TRIGGER` over vsock, e.g. in an invocation's payload. emberd
//! passes the flag to every VMM with its hidden `--vmm-test-hook`, so a test
//! can make one environment's VMM misbehave mid-invocation while the others
//! serve normally.

use super::{SandboxError, ThreadKind};

/// Host-to-guest bytes that fire an `ACTION@payload` hook.
#[cfg(feature = "test-hooks")]
pub const PAYLOAD_TRIGGER: &[u8] = b"ember-test-hook:fire";

/// One forbidden action and when it is performed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestHook {
    pub action: Action,
    pub at: At,
}

/// When a hook fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// As soon as a thread of this kind has entered its sandbox.
    Thread(ThreadKind),
    /// On the event-loop thread, when host bytes hold `PAYLOAD_TRIGGER`.
    Payload,
}

/// The forbidden things a hook can try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    ForbiddenSyscall,
    OpenHostFile,
    Exec,
    InetSocket,
    HostProcs,
}

const ACTIONS: &[(&str, Action)] = &[
    ("forbidden-syscall", Action::ForbiddenSyscall),
    ("open-host-file", Action::OpenHostFile),
    ("exec", Action::Exec),
    ("inet-socket", Action::InetSocket),
    ("host-procs", Action::HostProcs),
];

impl TestHook {
    /// Parses `ACTION@THREAD` (thread: vcpu, event-loop, main) or
    /// `ACTION@payload`.
    pub fn parse(s: &str) -> Result<Self, SandboxError> {
        if !cfg!(any(debug_assertions, feature = "test-hooks")) {
            return Err(SandboxError::Flag(
                "--test-hook exists only in debug and `test-hooks` builds".into(),
            ));
        }
        let bad = || {
            SandboxError::Flag(format!(
                "--test-hook {s}: expected ACTION@vcpu|event-loop|main|payload"
            ))
        };
        let (a, k) = s.split_once('@').ok_or_else(bad)?;
        let action = ACTIONS
            .iter()
            .find(|(n, _)| *n == a)
            .map(|(_, act)| *act)
            .ok_or_else(bad)?;
        let at = match k {
            // The vsock tap exists only with the feature (not in plain debug builds).
            "payload" if cfg!(feature = "test-hooks") => At::Payload,
            "payload" => {
                return Err(SandboxError::Flag(
                    "--test-hook ACTION@payload needs a `test-hooks` build".into(),
                ))
            }
            _ => At::Thread(ThreadKind::parse(k).ok_or_else(bad)?),
        };
        Ok(Self { action, at })
    }

    /// Runs the hook if it targets `kind`.
    pub fn run_if(&self, kind: ThreadKind) {
        #[cfg(any(debug_assertions, feature = "test-hooks"))]
        if self.at == At::Thread(kind) {
            report(self.action, kind.name());
        }
        #[cfg(not(any(debug_assertions, feature = "test-hooks")))]
        let _ = kind;
    }

    /// Arms an `ACTION@payload` hook (at most one per process): from now on
    /// the vsock device shows it every chunk of host bytes.
    pub fn arm(&self) {
        #[cfg(feature = "test-hooks")]
        if self.at == At::Payload && PAYLOAD_ACTION.set(self.action).is_ok() {
            ember_devices::test_tap::set(on_host_bytes);
        }
    }
}

#[cfg(feature = "test-hooks")]
static PAYLOAD_ACTION: std::sync::OnceLock<Action> = std::sync::OnceLock::new();

/// The vsock tap: fires the armed action when `bytes` hold the trigger.
#[cfg(feature = "test-hooks")]
fn on_host_bytes(bytes: &[u8]) {
    let Some(action) = PAYLOAD_ACTION.get() else {
        return;
    };
    if bytes
        .windows(PAYLOAD_TRIGGER.len())
        .any(|w| w == PAYLOAD_TRIGGER)
    {
        report(*action, "payload");
    }
}

/// Runs `action` on this thread and prints its one-line result.
#[cfg(any(debug_assertions, feature = "test-hooks"))]
fn report(action: Action, at: &str) {
    let name = ACTIONS
        .iter()
        .find(|(_, a)| *a == action)
        .map_or("?", |(n, _)| n);
    let result = run(action);
    eprintln!("ember-vmm test-hook: {name}@{at}: {result}");
}

#[cfg(any(debug_assertions, feature = "test-hooks"))]
fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ALLOWED".to_string(),
        Err(e) => format!(
            "denied ({})",
            e.raw_os_error().map_or(e.to_string(), errno_name)
        ),
    }
}

#[cfg(any(debug_assertions, feature = "test-hooks"))]
fn errno_name(e: i32) -> String {
    match e {
        libc::ENOENT => "ENOENT".into(),
        libc::EACCES => "EACCES".into(),
        libc::EPERM => "EPERM".into(),
        libc::ENETUNREACH => "ENETUNREACH".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        other => format!("errno {other}"),
    }
}

#[cfg(any(debug_assertions, feature = "test-hooks"))]
fn run(action: Action) -> String {
    use std::io::Error;
    match action {
        Action::ForbiddenSyscall => {
            // sysinfo: harmless, and on no allowlist.
            // SAFETY: info is a writable sysinfo struct.
            let rc = unsafe {
                let mut info: libc::sysinfo = std::mem::zeroed();
                libc::syscall(libc::SYS_sysinfo, &mut info)
            };
            if rc == 0 {
                "ALLOWED".into()
            } else {
                outcome::<()>(Err(Error::last_os_error()))
            }
        }
        Action::OpenHostFile => {
            let a = outcome(std::fs::File::open("/etc/passwd"));
            let b = outcome(std::fs::File::open("/proc/1/status"));
            // A file that exists in the jail: only Landlock (or seccomp) stops it.
            let c = outcome(std::fs::File::open("/ember-vmm"));
            format!("/etc/passwd {a}, /proc/1/status {b}, /ember-vmm {c}")
        }
        Action::Exec => {
            let sh = c"/bin/sh";
            let argv = [sh.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: NULL-terminated arrays of valid strings; execve only
            // returns on failure (on success this hook has escaped the test).
            unsafe { libc::execve(sh.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            outcome::<()>(Err(Error::last_os_error()))
        }
        Action::InetSocket => {
            // SAFETY: socket() with constant arguments touches no memory.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if fd < 0 {
                return format!("socket {}", outcome::<()>(Err(Error::last_os_error())));
            }
            // SAFETY: fd was just returned by socket().
            unsafe { libc::close(fd) };
            let c = outcome(std::net::TcpStream::connect("1.1.1.1:80"));
            format!("socket ALLOWED, connect {c}")
        }
        Action::HostProcs => match std::fs::read_dir("/proc") {
            Ok(d) => format!("{} /proc entries visible", d.count()),
            Err(e) => format!("/proc {}", outcome::<()>(Err(e))),
        },
    }
}
