//! The seam between the pool and whatever starts one execution environment.
//! Production: H5's `host::agent` launcher (an `ember-vmm` child running the
//! kernel-less wasm agent, talked to over hybrid vsock). Pool-policy unit
//! tests use a fake. Calls are blocking (the protocol library is std I/O);
//! the pool runs them on tokio's blocking threads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

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
}

/// One invocation handed to an environment.
#[derive(Clone, Debug)]
pub struct InvokeInput {
    pub request_id: String,
    pub payload: bytes::Bytes,
    /// Unix milliseconds after which the function has timed out.
    pub deadline_ms: u64,
    pub invoked_function_arn: String,
    pub client_context: String,
}

/// What the agent answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvokeOutput {
    Success {
        payload: Vec<u8>,
        logs: Vec<String>,
        report: Report,
    },
    /// The function failed; `fatal` means the environment must be replaced.
    FunctionError {
        error_type: String,
        message: String,
        fatal: bool,
        /// The runtime's own error document, returned to the caller
        /// unchanged (empty when the agent or emberd made the error).
        document: Vec<u8>,
        logs: Vec<String>,
        report: Report,
    },
}

impl InvokeOutput {
    /// Lambda's timeout error: the function ran past `timeout` and its
    /// environment is replaced.
    pub fn timed_out(timeout: std::time::Duration) -> Self {
        let secs = timeout.as_secs_f64();
        InvokeOutput::FunctionError {
            error_type: "Sandbox.Timedout".into(),
            message: format!("Task timed out after {secs:.2} seconds"),
            fatal: true,
            document: Vec::new(),
            logs: vec![],
            report: Report::default(),
        }
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
    /// How many of the invocation's leading log lines the function printed
    /// during its init phase (first invocation only): they belong before
    /// `START`, as in Lambda's log stream.
    pub init_log_lines: usize,
}

/// Why an environment could not start or serve.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("environment failed to start: {0}")]
    Launch(String),
    #[error("{error_type}: {message}")]
    Init {
        error_type: String,
        message: String,
        /// The runtime's own error document (empty when none).
        document: Vec<u8>,
    },
    /// The VM exited or the stream broke mid-invocation (`Runtime.ExitError`).
    #[error("environment died: {0}")]
    Died(String),
}

/// Starts environments. `launch` returns once the agent has sent `InitDone`;
/// it tells `on_spawn` the environment's pid as soon as its process exists,
/// so that a start can be killed (shutdown, crash cleanup) before it is ready.
pub trait EnvLauncher: Send + Sync + 'static {
    fn launch(&self, spec: &EnvSpec, on_spawn: &OnSpawn) -> Result<Box<dyn RunningEnv>, EnvError>;
    /// Stops whatever the launcher keeps running on its own (spare VMs).
    fn close(&self) {}
}

/// One running environment: exactly one invocation at a time (`&mut self`).
pub trait RunningEnv: Send + 'static {
    fn invoke(&mut self, input: &InvokeInput) -> Result<InvokeOutput, EnvError>;
    /// The `ember-vmm` process id (for the pid file and the timeout backstop).
    fn pid(&self) -> Option<u32>;
    /// Whether the VM is still running (a cheap, non-blocking check).
    fn is_alive(&mut self) -> bool;
    /// Stops the VM (graceful `Shutdown`, then kill) and reaps it.
    fn shutdown(self: Box<Self>);
}
