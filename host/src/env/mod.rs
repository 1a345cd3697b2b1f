//! One execution environment, end to end: what the pool asks of it
//! ([`seam`]: the spec, the `EnvLauncher`/`RunningEnv` traits, typed
//! errors), the production launcher ([`launcher`]: wasm and Linux variants,
//! spare VMs from [`spares`]), starting the `ember-vmm` child ([`spawn`],
//! jailed by [`jail`]), the running VM with its agent ([`vm`]) and the
//! host↔agent conversation ([`agent`]: `Ready` → `Init` → `Invoke`… →
//! `Shutdown`, every failure an [`AgentError`]; it runs over any
//! [`Transport`], Unix socket pairs in the Linux agent's tests), the Linux
//! drives and command line ([`linux`]) and the pid files crash cleanup reads
//! ([`pidfile`]). DESIGN.md, "Host↔agent protocol".

pub mod agent;
pub mod bench;
pub mod jail;
pub mod launcher;
pub mod linux;
pub mod pidfile;
pub mod restored;
pub mod seam;
pub mod slots;
pub mod snapstart;
pub mod spares;
pub mod spawn;
pub mod vm;
pub mod vmm_api;

use std::path::PathBuf;
use std::time::Duration;

use ember_abi::exit::VmmStatus;
use ember_abi::protocol::ProtocolError;

pub use agent::{
    fresh_seed, AgentConn, FunctionError, InitReport, InitSpec, InvokeReply, InvokeRequest,
    LogLine, Logs, ReadyInfo, Transport, MAX_LOG_BYTES,
};
pub use ember_abi::protocol::{AgentKind, Code, LogStream, AGENT_PORT, MAX_PAYLOAD};
pub use jail::{
    all_vms_cpu_quota_us, cpu_quota_us, default_cpu_reserve_millicores, kill_started, JailConfig,
    CPU_PERIOD_US,
};
pub use seam::{
    EnvError, EnvLauncher, EnvSpec, Fault, InvokeOutput, LaunchError, OnSpawn, Report, RunningEnv,
};
#[cfg(test)]
pub(crate) use spawn::command;
pub(crate) use spawn::last_log_line;
pub use spawn::{vm_memory_mib, Console, Guest, LaunchConfig, RestoreFrom, GUEST_CID};
pub use vm::Environment;

/// Why an environment could not be launched or used. Every variant except
/// `Request` leaves the environment unusable.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot prepare work path {0}")]
    WorkDir(PathBuf, #[source] std::io::Error),
    #[error("socket path {0} is longer than a Unix socket address allows")]
    PathTooLong(PathBuf),
    #[error("cannot jail the environment: {0}")]
    Jail(String),
    #[error("cannot start {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error("the agent did not connect within {0:?}")]
    BootTimeout(Duration),
    /// The VMM ended: `status` as the OS says it, `exit` what its exit code
    /// means (`None`: neither a code nor a signal), `reason` the VMM's own
    /// last stderr line (display only).
    #[error("the microVM exited ({status}): {reason}")]
    VmExited {
        status: String,
        exit: Option<VmmStatus>,
        reason: String,
    },
    #[error("the agent did not answer in time")]
    Timeout,
    #[error("the agent closed the connection")]
    Closed,
    #[error("agent connection I/O failed")]
    Io(#[from] std::io::Error),
    #[error("the agent sent a malformed frame")]
    Protocol(#[source] ProtocolError),
    #[error("the agent speaks protocol version {0}")]
    Version(u8),
    #[error("expected {wanted} from the agent, got message kind {got}")]
    Unexpected { wanted: &'static str, got: u8 },
    #[error("the agent failed: {0}")]
    AgentFatal(String),
    /// Init failed: the error as an invocation's caller sees it (with the
    /// runtime's own document, if any), and the lines Init logged.
    #[error("init failed: {}: {}", .error.error_type, .error.message)]
    InitFailed {
        error: FunctionError,
        init_us: u64,
        logs: Logs,
    },
    /// The request itself is invalid (e.g. payload over 6 MiB); the
    /// environment is still usable.
    #[error("invalid request")]
    Request(#[source] ProtocolError),
    #[error("the environment is no longer usable after an earlier error")]
    Broken,
    #[error("cannot draw a random seed: {0}")]
    Random(String),
    /// A call on the VMM's API socket failed (SnapStart snapshot or restore).
    #[error("VMM API")]
    VmmApi(#[source] vmm_api::VmmApiError),
}

impl From<ember_abi::protocol::FrameIoError> for AgentError {
    fn from(e: ember_abi::protocol::FrameIoError) -> Self {
        use ember_abi::protocol::FrameIoError;
        match e {
            FrameIoError::Io(e) => AgentError::Io(e),
            FrameIoError::Protocol(e) => AgentError::Request(e),
            FrameIoError::Closed => AgentError::Closed,
        }
    }
}

impl AgentError {
    /// The Lambda error type a caller should see when this ends an invocation.
    pub fn error_type(&self) -> &'static str {
        match self {
            AgentError::Timeout => "Sandbox.Timedout",
            AgentError::Request(ProtocolError::PayloadTooLarge { .. }) => {
                "RequestTooLargeException"
            }
            AgentError::InitFailed { .. } => "Runtime.InitError",
            _ => "Runtime.ExitError",
        }
    }
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
