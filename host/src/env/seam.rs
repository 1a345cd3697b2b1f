//! What the pool asks of an environment: the spec it starts from, one
//! invocation in and its answer out, the `EnvLauncher`/`RunningEnv` traits
//! and the typed errors. Production: [`super::launcher::VmLauncher`] (an
//! `ember-vmm` child running an agent, talked to over hybrid vsock).
//! Pool-policy unit tests use a fake. Calls are blocking (the protocol library is std I/O);
//! the pool runs them on tokio's blocking threads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Code, FunctionError, InitSpec, InvokeRequest};

pub use crate::util::OnSpawn;

/// Everything needed to start and initialize one environment.
#[derive(Clone, Debug)]
pub struct EnvSpec {
    pub env_id: u64,
    pub function_name: String,
    pub function_version: String,
    pub handler: String,
    pub runtime: String,
    /// The runnable artifact (wasm module; the ZIP for Linux runtimes),
    /// already decrypted and verified.
    pub code: Arc<Vec<u8>>,
    /// The code's blob address (Linux code images are cached by it).
    pub code_blob: String,
    /// Layer version ARNs, in order (Linux runtimes only).
    pub layers: Vec<String>,
    /// MiB of `/tmp` (Linux runtimes).
    pub ephemeral_mib: u32,
    pub env_vars: BTreeMap<String, String>,
    pub memory_mib: u32,
    pub timeout_ms: u32,
    /// A fresh directory owned by this environment (sockets, images);
    /// emberd removes it after the environment is gone.
    pub work_dir: PathBuf,
    /// Start from this SnapStart snapshot instead of boot + Init (falls
    /// back to boot + Init when it cannot be restored).
    pub snapshot: Option<crate::snapstart::vault::SnapKey>,
}

impl EnvSpec {
    /// `Init` for this spec with its code delivered as `code` (a wasm module travels
    /// inline; a Linux guest gets the path of its mounted code image).
    pub fn init_spec(&self, code: Code) -> InitSpec {
        InitSpec {
            function_name: self.function_name.clone(),
            function_version: self.function_version.clone(),
            handler: self.handler.clone(),
            code,
            env: self
                .env_vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            memory_mib: self.memory_mib,
            timeout_ms: self.timeout_ms,
            random_seed: None,
            trees: Vec::new(),
            ephemeral_mib: self.ephemeral_mib,
        }
    }
}

/// What the environment answered: the function's response or its error
/// (a `fatal` one means the environment must be replaced), with the
/// invocation's log lines and the agent's measurements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvokeOutput {
    pub result: Result<Vec<u8>, FunctionError>,
    pub logs: Vec<String>,
    pub report: Report,
}

impl InvokeOutput {
    /// Lambda's timeout error, with no logs or measurements.
    pub fn timed_out(timeout: std::time::Duration) -> Self {
        InvokeOutput {
            result: Err(FunctionError::timed_out(timeout)),
            logs: vec![],
            report: Report::default(),
        }
    }

    /// Whether the environment may serve again.
    pub fn reusable(&self) -> bool {
        !matches!(&self.result, Err(f) if f.fatal)
    }
}

/// What the agent measured, for the REPORT log line (None when unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub duration_us: Option<u64>,
    pub max_memory_kib: Option<u64>,
    /// The environment's init phase, on its first invocation only (Lambda
    /// prints `Init Duration` on cold starts).
    pub init_us: Option<u64>,
    /// The SnapStart restore of the environment, on its first invocation
    /// only (Lambda prints `Restore Duration` instead of `Init Duration`).
    pub restore_us: Option<u64>,
    /// How many of the invocation's leading log lines the function printed
    /// during its init phase (first invocation only): they belong before
    /// `START`, as in Lambda's log stream.
    pub init_log_lines: usize,
}

/// Why an environment could not start or serve, typed down to the cause;
/// its text is made once, where it is shown ([`EnvError::detail`]).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("environment failed to start")]
    Launch(#[source] LaunchError),
    /// Init failed: the error, and the lines Init logged (they belong in
    /// the function's log before the failed invocation's `START`).
    #[error("{}: {}", .0.error_type, .0.message)]
    Init(FunctionError, Vec<String>),
    /// A restored (SnapStart) environment's after-restore hook failed:
    /// Lambda's `SnapStartException`, not an invocation error.
    #[error("the after-restore hook failed: {0}")]
    Restore(String),
    /// The VM exited or the stream broke mid-invocation (`Runtime.ExitError`).
    #[error("environment died")]
    Died(#[source] Fault),
}

impl EnvError {
    /// The cause, for the caller's error message ("Could not start an
    /// execution environment: ...", "Runtime exited: ...").
    pub fn detail(&self) -> String {
        match self {
            EnvError::Launch(e) => crate::util::error_chain(e),
            EnvError::Died(f) => crate::util::error_chain(f),
            EnvError::Init(f, _) => f.message.clone(),
            EnvError::Restore(m) => m.clone(),
        }
    }
}

/// Why no environment could be started (not the function's fault).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// This emberd cannot start environments at all (a binary is missing).
    #[error("{0}")]
    Unavailable(String),
    #[error("no memory left for an environment")]
    NoMemory,
    #[error("emberd is shutting down")]
    ShuttingDown,
    #[error("work dir")]
    WorkDir(#[source] std::io::Error),
    #[error("launcher panicked")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("start task failed")]
    StartTask(#[source] tokio::task::JoinError),
    #[error("no environment checkout")]
    NoCheckout,
    #[error("code blob")]
    CodeBlob(#[source] crate::store::blob::BlobError),
    #[error("layers")]
    Layers(#[source] crate::catalog::CatalogError),
    #[error("compiling the module")]
    Compile(#[source] crate::aot::AotError),
    #[error("runtime {0} needs a Linux guest, which this emberd does not offer")]
    NoLinux(String),
    /// The Linux function's drive images could not be prepared.
    #[error(transparent)]
    Images(crate::linux::LinuxError),
    #[error(transparent)]
    Agent(super::AgentError),
    /// A Linux guest that did not come up, with its console's last line.
    #[error("{}{}", crate::util::error_chain(.agent), console_tail(.console))]
    LinuxBoot {
        agent: super::AgentError,
        console: String,
    },
}

fn console_tail(console: &str) -> String {
    if console.is_empty() {
        String::new()
    } else {
        format!(" (guest console: {console})")
    }
}

/// Why a running environment stopped serving mid-invocation.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The VM exited or broke the conversation.
    #[error(transparent)]
    Agent(super::AgentError),
    #[error("invoke task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The host's backstop fired (the agent ignored its own deadline).
    #[error("timed out")]
    TimedOut,
}

/// Starts environments. `launch` returns once the agent has sent `InitDone`;
/// it tells `on_spawn` the environment's pid as soon as its process exists,
/// so that a start can be killed (shutdown, crash cleanup) before it is ready.
pub trait EnvLauncher: Send + Sync + 'static {
    fn launch(&self, spec: &EnvSpec, on_spawn: &OnSpawn) -> Result<Box<dyn RunningEnv>, EnvError>;
    /// Stops whatever the launcher keeps running on its own (spare VMs).
    fn close(&self) {}
    /// SnapStart: starts a fresh environment for `spec`, initialises it
    /// (`AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`, so the function's
    /// `ember_before_snapshot` hook runs) and snapshots it into `out_dir`
    /// as `state` and `mem`.
    fn take_snapshot(&self, spec: &EnvSpec, out_dir: &std::path::Path) -> Result<(), EnvError> {
        let _ = (spec, out_dir);
        Err(EnvError::Launch(LaunchError::Unavailable(
            "this launcher takes no snapshots".into(),
        )))
    }
}

/// One running environment: exactly one invocation at a time (`&mut self`).
pub trait RunningEnv: Send + 'static {
    fn invoke(&mut self, req: &InvokeRequest) -> Result<InvokeOutput, EnvError>;
    /// How long past the invocation's deadline the environment itself waits
    /// for the agent's answer (a timed-out Linux runtime re-initialises
    /// before it answers); the pool's backstop allows this much and more.
    fn deadline_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// The `ember-vmm` process id (for the pid file and the timeout backstop).
    fn pid(&self) -> Option<u32>;
    /// Whether the VM is still running (a cheap, non-blocking check).
    fn is_alive(&mut self) -> bool;
    /// Stops the VM (graceful `Shutdown`, then kill) and reaps it.
    fn shutdown(self: Box<Self>);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::env::AgentError;

    /// The caller's message is the cause's chain, as the string-typed
    /// errors carried it before.
    #[test]
    fn detail_is_the_cause_chain() {
        let boot = EnvError::Launch(LaunchError::LinuxBoot {
            agent: AgentError::BootTimeout(Duration::from_secs(5)),
            console: "Kernel panic".into(),
        });
        assert_eq!(
            boot.detail(),
            "the agent did not connect within 5s (guest console: Kernel panic)"
        );
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let died = EnvError::Died(Fault::Agent(AgentError::Io(io)));
        assert_eq!(died.detail(), "agent connection I/O failed: broken pipe");
        assert_eq!(
            crate::util::error_chain(&EnvError::Launch(LaunchError::ShuttingDown)),
            "environment failed to start: emberd is shutting down"
        );
    }
}
