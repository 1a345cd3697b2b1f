//! One environment's function, whichever engine runs it: the types the agent
//! sees, and what both engines share (module kinds, the Lambda environment
//! variables, turning how a call ended into an outcome).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::compiled::Compiled;
use super::fs::Files;
use super::interp::Interp;
use super::wasi;
use super::Clock;
use ember_abi::protocol::{Code, LogStream};

/// The function's settings, from `Init`.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub function_name: String,
    pub function_version: String,
    pub handler: String,
    pub memory_mib: u32,
    pub timeout_ms: u32,
    pub env: Vec<(String, String)>,
    pub random_seed: [u8; 32],
    /// Read-only trees (mount path, ZIP archive), merged in order; taken
    /// by the engine at init.
    pub trees: Vec<(String, Vec<u8>)>,
    /// `/tmp`'s cap in MiB (`EphemeralStorage`); 0 = no `/tmp`.
    pub ephemeral_mib: u32,
}

/// The reactor export run just before a SnapStart snapshot is taken.
pub const BEFORE_SNAPSHOT: &str = "ember_before_snapshot";
/// The reactor export run in every environment restored from a snapshot,
/// after its random streams were re-keyed and before its first invocation.
pub const AFTER_RESTORE: &str = "ember_after_restore";

/// Whether this Init prepares a SnapStart snapshot: the host sets Lambda's
/// `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`, as Lambda does.
pub fn snap_start(cfg: &FunctionConfig) -> bool {
    cfg.env
        .iter()
        .any(|(k, v)| k == "AWS_LAMBDA_INITIALIZATION_TYPE" && v == "snap-start")
}

/// Why init failed, as reported in `InitError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitFailure {
    pub error_type: &'static str,
    pub message: String,
    /// The runtime's own error document (a reactor's `_initialize` that
    /// exited non-zero after writing one to stdout); empty otherwise.
    pub document: Vec<u8>,
    /// What the failing hook logged before it failed (the host writes it
    /// to the function's log, as Lambda does).
    pub logs: Vec<(LogStream, String)>,
}

/// How the module is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleKind {
    Command,
    Reactor { handler: String },
}

/// The invocation's request data: the `Invoke` message's fields, borrowed
/// from the frame (the protocol's own [`InvokeRef`]).
pub use ember_abi::protocol::InvokeRef as InvokeContext;

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Response(Vec<u8>),
    Error {
        error_type: &'static str,
        message: String,
        fatal: bool,
        /// The function's own error document (see [`CallEnd::Failed`]);
        /// empty when the agent made the error.
        document: Vec<u8>,
    },
}

/// Everything an invocation produced.
#[derive(Debug, Clone)]
pub struct InvokeOutput {
    pub outcome: Outcome,
    pub logs: Vec<(LogStream, String)>,
    pub duration_us: u64,
    pub max_memory_kib: u64,
}

/// How a guest call ended.
pub(crate) enum CallEnd {
    Finished,
    /// A reactor's handler returned non-zero: stdout holds its error
    /// document (Lambda's `{errorMessage, errorType, ...}`), not a response.
    Failed,
    Exit(i32),
    Trap(String),
    Timeout,
}

impl CallEnd {
    /// How a call that returned ended, from its i32 status if it has one.
    pub(crate) fn returned(status: Option<i32>) -> CallEnd {
        match status {
            Some(s) if s != 0 => CallEnd::Failed,
            _ => CallEnd::Finished,
        }
    }
}

/// The function's file system from its configuration (the trees are moved
/// out of `cfg`). `/tmp` lives in guest memory, so its cap is also bounded
/// by the function's memory size.
pub(crate) fn files_for(cfg: &mut FunctionConfig) -> Result<Files, InitFailure> {
    let trees = core::mem::take(&mut cfg.trees);
    let tmp_mib = cfg.ephemeral_mib.min(cfg.memory_mib) as usize;
    Files::new(trees, tmp_mib * 1024 * 1024).map_err(|e| fail("Runtime.InvalidCode", e))
}

pub(crate) fn fail(error_type: &'static str, message: impl ToString) -> InitFailure {
    InitFailure {
        error_type,
        message: message.to_string(),
        document: Vec::new(),
        logs: Vec::new(),
    }
}

/// The module's kind: a command if it exports `_start`, else a reactor whose
/// handler is `cfg.handler` if exported, else `handle`.
pub(crate) fn module_kind(
    cfg: &FunctionConfig,
    exports: impl Fn(&str) -> bool,
) -> Result<ModuleKind, InitFailure> {
    if exports("_start") {
        return Ok(ModuleKind::Command);
    }
    let handler = if !cfg.handler.is_empty() && exports(&cfg.handler) {
        cfg.handler.clone()
    } else {
        "handle".into()
    };
    if !exports(&handler) {
        return Err(fail(
            "Runtime.HandlerNotFound",
            format!("module exports neither _start nor the handler function `{handler}`"),
        ));
    }
    Ok(ModuleKind::Reactor { handler })
}

/// The environment variables for one invocation: the user's, then the
/// Lambda-defined ones (which win).
pub(crate) fn env_for(c: &FunctionConfig, ctx: &InvokeContext<'_>) -> Vec<Vec<u8>> {
    let mut vars: Vec<(&str, String)> =
        c.env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let lambda = [
        ("AWS_LAMBDA_FUNCTION_NAME", c.function_name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", c.function_version.clone()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", c.memory_mib.to_string()),
        ("_HANDLER", c.handler.clone()),
        ("AWS_LAMBDA_REQUEST_ID", ctx.request_id.into()),
        ("AWS_LAMBDA_DEADLINE_MS", ctx.deadline_ms.to_string()),
        (
            "AWS_LAMBDA_INVOKED_FUNCTION_ARN",
            ctx.invoked_function_arn.into(),
        ),
        ("_X_AMZN_TRACE_ID", ctx.trace_id.into()),
        ("AWS_LAMBDA_CLIENT_CONTEXT", ctx.client_context.into()),
    ];
    vars.retain(|(k, _)| !lambda.iter().any(|(l, _)| l == k));
    vars.extend(lambda.into_iter().filter(|(_, v)| !v.is_empty()));
    vars.into_iter()
        .map(|(k, v)| format!("{k}={v}").into_bytes())
        .collect()
}

/// The invocation's outcome and log lines, once the call ended.
pub(crate) fn finish<L>(
    cfg: &FunctionConfig,
    end: CallEnd,
    ctx: &mut wasi::Ctx<L>,
) -> (Outcome, Vec<(LogStream, String)>) {
    ctx.flush_stderr();
    if ctx.logs_dropped > 0 {
        let n = ctx.logs_dropped;
        ctx.logs.push((
            LogStream::Agent,
            format!("{n} log lines dropped (over {} bytes)", wasi::MAX_LOG_BYTES),
        ));
    }
    let outcome = outcome(cfg, end, ctx);
    (outcome, core::mem::take(&mut ctx.logs))
}

fn outcome<L>(cfg: &FunctionConfig, end: CallEnd, ctx: &mut wasi::Ctx<L>) -> Outcome {
    let err = |error_type, message: String, fatal| Outcome::Error {
        error_type,
        message,
        fatal,
        document: Vec::new(),
    };
    match end {
        _ if ctx.stdout_overflow => err(
            "Function.ResponseSizeTooLarge",
            format!(
                "response exceeds the {} byte limit",
                ember_abi::protocol::MAX_PAYLOAD
            ),
            false,
        ),
        CallEnd::Finished | CallEnd::Exit(0) => Outcome::Response(core::mem::take(&mut ctx.stdout)),
        CallEnd::Failed => Outcome::Error {
            error_type: "Unhandled",
            message: "the function reported an error".into(),
            fatal: false,
            document: core::mem::take(&mut ctx.stdout),
        },
        CallEnd::Exit(n) => {
            // What the function printed before failing explains it best
            // (e.g. a JSON error object); keep the first KiB.
            let out = &ctx.stdout[..ctx.stdout.len().min(1024)];
            let text = String::from_utf8_lossy(out);
            let message = match text.trim() {
                "" => format!("exit status {n}"),
                text => format!("exit status {n}: {text}"),
            };
            err("Runtime.ExitError", message, false)
        }
        CallEnd::Trap(m) => err("Runtime.Trap", m, false),
        CallEnd::Timeout => err(
            "Sandbox.Timedout",
            format!(
                "Task timed out after {}.{:02} seconds",
                cfg.timeout_ms / 1000,
                (cfg.timeout_ms % 1000) / 10
            ),
            true,
        ),
    }
}

/// A function ready to be invoked: compiled ahead of time by the host
/// (wasmtime), or interpreted (wasmi).
pub enum Runtime {
    Compiled(Compiled),
    Interp(Interp),
}

impl Runtime {
    /// Which of `names` the engine's WASI linker defines (tests).
    #[cfg(test)]
    pub(crate) fn wasi_defined(&self, names: &[&'static str]) -> Vec<&'static str> {
        match self {
            Runtime::Compiled(r) => r.wasi_defined(names),
            Runtime::Interp(r) => r.wasi_defined(names),
        }
    }

    /// Loads the code `Init` carried: a sealed artefact from the host's
    /// compiler (`Code::Compiled`), or a module to interpret (`Code::Inline`).
    /// An artefact never runs when sent inline (inline code may be the
    /// user's bytes). Returns the init-time log lines.
    pub fn new(
        code: &Code,
        cfg: FunctionConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Runtime, Vec<(LogStream, String)>), InitFailure> {
        match code {
            Code::Compiled(a) => {
                Compiled::new(a, cfg, clock).map(|(r, l)| (Runtime::Compiled(r), l))
            }
            Code::Inline(m) if ember_abi::artefact::looks_sealed(m) => Err(fail(
                "Runtime.InvalidModule",
                "a compiled artefact is accepted only from the host's compiler",
            )),
            Code::Inline(m) => Interp::new(m, cfg, clock).map(|(r, l)| (Runtime::Interp(r), l)),
            Code::Path(_) => Err(fail(
                "Runtime.InvalidCode",
                "the wasm agent needs the module inline or compiled",
            )),
        }
    }

    pub fn kind(&self) -> &ModuleKind {
        match self {
            Runtime::Compiled(r) => r.kind(),
            Runtime::Interp(r) => r.kind(),
        }
    }

    /// After a snapshot restore: re-keys the function's random streams with
    /// the clone's `seed` and runs its `ember_after_restore` hook, if any.
    pub fn after_restore(
        &mut self,
        seed: &[u8; 32],
    ) -> Result<Vec<(LogStream, String)>, InitFailure> {
        match self {
            Runtime::Compiled(r) => r.after_restore(seed),
            Runtime::Interp(r) => r.after_restore(seed),
        }
    }

    /// Runs one invocation. Never fails as a Rust error: every failure of the
    /// function is an [`Outcome::Error`].
    pub fn invoke(&mut self, req: &InvokeContext<'_>) -> InvokeOutput {
        match self {
            Runtime::Compiled(r) => r.invoke(req),
            Runtime::Interp(r) => r.invoke(req),
        }
    }
}
