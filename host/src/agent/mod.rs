//! The host side of the host↔agent protocol: launch ONE execution
//! environment (an `ember-vmm` child running an agent), drive its agent
//! (`Ready` → `Init` → `Invoke`… → `Shutdown`), and turn every way it can
//! fail into an [`AgentError`]. `emberd`'s pool builds on [`Environment`];
//! [`AgentConn`] runs the same protocol over any [`Transport`] (Unix socket
//! pairs in the Linux agent's tests). DESIGN.md, "Host↔agent protocol".

pub mod bench;
mod conn;
mod env;
mod jail;
mod launch;

use std::path::PathBuf;
use std::time::Duration;

use ember_abi::exit::VmmStatus;
use ember_abi::protocol::ProtocolError;

pub use conn::{
    fresh_seed, AgentConn, FunctionError, InitReport, InitSpec, Invocation, InvokeRequest, LogLine,
    Logs, ReadyInfo, Transport, MAX_LOG_BYTES,
};
pub use ember_abi::protocol::{AgentKind, Code, LogStream, AGENT_PORT, MAX_PAYLOAD};
pub use env::Environment;
pub use jail::{cpu_quota_us, kill_started, JailConfig, CPU_PERIOD_US};
#[cfg(test)]
pub(crate) use launch::command;
pub(crate) use launch::last_log_line;
pub use launch::{vm_memory_mib, Console, Guest, LaunchConfig, GUEST_CID};

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
    #[error("init failed: {error_type}: {message}")]
    InitFailed {
        error_type: String,
        message: String,
        init_us: u64,
        logs: Logs,
        /// The runtime's own error document (empty when the agent made the error).
        document: Vec<u8>,
    },
    /// The request itself is invalid (e.g. payload over 6 MiB); the
    /// environment is still usable.
    #[error("invalid request")]
    Request(#[source] ProtocolError),
    #[error("the environment is no longer usable after an earlier error")]
    Broken,
    #[error("cannot draw a random seed: {0}")]
    Random(String),
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
