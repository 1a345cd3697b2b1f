//! One environment's compiled function: validation + compilation at init,
//! instantiation (per invocation for commands, once for reactors), and the
//! fuel-sliced call loop that enforces the deadline.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use wasmi::{
    CompilationMode, Config, Engine, Error, ExternType, Func, Instance, Linker, Module,
    ResumableCall, Store, StoreLimitsBuilder,
};

use super::rng::ChaCha20;
use super::wasi::{self, Ctx, WASI};
use super::Clock;
use crate::protocol::LogStream;

/// Fuel per slice: the clock is checked each time a slice runs out (a few
/// milliseconds of interpretation), which bounds how late a timeout fires.
const FUEL_SLICE: u64 = 2_000_000;

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
}

/// Why init failed, as reported in `InitError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitFailure {
    pub error_type: &'static str,
    pub message: String,
}

/// How the module is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleKind {
    Command,
    Reactor { handler: String },
}

/// The invocation's request data.
#[derive(Debug, Clone, Default)]
pub struct InvokeContext<'a> {
    pub request_id: &'a str,
    pub payload: &'a [u8],
    pub deadline_ms: u64,
    pub invoked_function_arn: &'a str,
    pub trace_id: &'a str,
    pub client_context: &'a str,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Response(Vec<u8>),
    Error {
        error_type: &'static str,
        message: String,
        fatal: bool,
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
enum CallEnd {
    Finished,
    Exit(i32),
    Trap(String),
    Timeout,
}

/// The reactor's long-lived instance.
struct Resident {
    store: Store<Ctx>,
    instance: Instance,
}

/// A compiled function, ready to be invoked.
pub struct Runtime {
    engine: Engine,
    module: Module,
    linker: Linker<Ctx>,
    kind: ModuleKind,
    cfg: FunctionConfig,
    clock: Arc<dyn Clock>,
    /// Reactor instance (None for commands, or after a reactor exited).
    resident: Option<Resident>,
    /// State carried between command invocations (the random stream).
    spare: Option<Ctx>,
}

fn fail(error_type: &'static str, message: impl ToString) -> InitFailure {
    InitFailure {
        error_type,
        message: message.to_string(),
    }
}

impl Runtime {
    /// Validates and compiles `code`, links WASI, and (for reactors)
    /// instantiates and runs `_initialize`. Returns the init-time log lines.
    pub fn new(
        code: &[u8],
        cfg: FunctionConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Runtime, Vec<(LogStream, String)>), InitFailure> {
        let mut config = Config::default();
        config
            .consume_fuel(true)
            .compilation_mode(CompilationMode::Eager);
        let engine = Engine::new(&config);
        let module = Module::new(&engine, code).map_err(|e| fail("Runtime.InvalidModule", e))?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(|e| fail("Runtime.InvalidModule", e))?;
        let mut defined: Vec<String> = Vec::new();
        for import in module.imports() {
            let (m, name) = (import.module(), import.name());
            let known = wasi::IMPLEMENTED.contains(&name);
            if m != WASI {
                return Err(fail(
                    "Runtime.InvalidModule",
                    format!("unsupported import {m}.{name}"),
                ));
            }
            if known || defined.iter().any(|d| d == name) {
                continue;
            }
            let ExternType::Func(ty) = import.ty() else {
                return Err(fail(
                    "Runtime.InvalidModule",
                    format!("unsupported import {m}.{name}"),
                ));
            };
            wasi::add_enosys_stub(&mut linker, name, ty.clone())
                .map_err(|e| fail("Runtime.InvalidModule", e))?;
            defined.push(name.into());
        }
        let exports = |n: &str| {
            module
                .exports()
                .any(|e| e.name() == n && matches!(e.ty(), ExternType::Func(_)))
        };
        let kind = if exports("_start") {
            ModuleKind::Command
        } else {
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
            ModuleKind::Reactor { handler }
        };
        let mut rt = Runtime {
            engine,
            module,
            linker,
            kind,
            spare: None,
            resident: None,
            clock,
            cfg,
        };
        let ctx = rt.new_ctx(ChaCha20::new(&rt.cfg.random_seed));
        // Instantiate once now: link errors and oversized memories surface at
        // init, and a reactor's instance is the one it keeps.
        let mut store = rt.new_store(ctx);
        let instance = rt
            .instantiate(&mut store)
            .map_err(|e| fail("Runtime.InvalidModule", e))?;
        let mut logs = Vec::new();
        match &rt.kind {
            ModuleKind::Command => rt.spare = Some(store.into_data()),
            ModuleKind::Reactor { .. } => {
                if let Some(init) = instance.get_func(&store, "_initialize") {
                    let deadline =
                        rt.clock.realtime_ns() / 1_000_000 + u64::from(rt.cfg.timeout_ms);
                    let env = rt.env_for(&InvokeContext {
                        deadline_ms: deadline,
                        ..Default::default()
                    });
                    store.data_mut().start_invocation(&[], env);
                    let end = call(&mut store, init, &*rt.clock, deadline);
                    store.data_mut().flush_stderr();
                    logs = core::mem::take(&mut store.data_mut().logs);
                    match end {
                        CallEnd::Finished | CallEnd::Exit(0) => {}
                        CallEnd::Exit(n) => {
                            return Err(fail(
                                "Runtime.ExitError",
                                format!("_initialize exited with status {n}"),
                            ))
                        }
                        CallEnd::Trap(m) => return Err(fail("Runtime.InitError", m)),
                        CallEnd::Timeout => return Err(fail("Sandbox.Timedout", "init timed out")),
                    }
                }
                rt.resident = Some(Resident { store, instance });
            }
        }
        Ok((rt, logs))
    }

    pub fn kind(&self) -> &ModuleKind {
        &self.kind
    }

    fn new_ctx(&self, rng: ChaCha20) -> Ctx {
        let limits = StoreLimitsBuilder::new()
            .memory_size((self.cfg.memory_mib as usize).saturating_mul(1024 * 1024))
            .instances(1)
            .tables(4)
            .memories(1)
            .table_elements(1 << 20)
            .build();
        let mut ctx = Ctx::new(rng, self.clock.clone(), limits);
        let name = if self.cfg.handler.is_empty() {
            &self.cfg.function_name
        } else {
            &self.cfg.handler
        };
        ctx.args = alloc::vec![name.as_bytes().to_vec()];
        ctx
    }

    fn new_store(&self, ctx: Ctx) -> Store<Ctx> {
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| &mut ctx.limits);
        store
    }

    fn instantiate(&self, store: &mut Store<Ctx>) -> Result<Instance, Error> {
        // Start sections run under one slice of fuel: they are meant to be short.
        store.set_fuel(FUEL_SLICE * 16)?;
        self.linker.instantiate_and_start(store, &self.module)
    }

    /// The environment variables for one invocation: the user's, then the
    /// Lambda-defined ones (which win).
    fn env_for(&self, ctx: &InvokeContext<'_>) -> Vec<Vec<u8>> {
        let c = &self.cfg;
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

    /// Runs one invocation. Never fails as a Rust error: every failure of the
    /// function is an [`Outcome::Error`].
    pub fn invoke(&mut self, req: &InvokeContext<'_>) -> InvokeOutput {
        let start = self.clock.monotonic_ns();
        let env = self.env_for(req);
        let (end, ctx, mem_kib) = match self.kind.clone() {
            ModuleKind::Command => self.run_command(req, env),
            ModuleKind::Reactor { handler } => self.run_reactor(req, env, &handler),
        };
        let mut ctx = ctx;
        ctx.flush_stderr();
        if ctx.logs_dropped > 0 {
            let n = ctx.logs_dropped;
            ctx.logs.push((
                LogStream::Agent,
                format!("{n} log lines dropped (over {} bytes)", wasi::MAX_LOG_BYTES),
            ));
        }
        let outcome = self.outcome(end, &mut ctx);
        let logs = core::mem::take(&mut ctx.logs);
        self.put_back(ctx);
        InvokeOutput {
            outcome,
            logs,
            duration_us: (self.clock.monotonic_ns().saturating_sub(start)) / 1000,
            max_memory_kib: mem_kib,
        }
    }

    fn outcome(&self, end: CallEnd, ctx: &mut Ctx) -> Outcome {
        let err = |error_type, message: String, fatal| Outcome::Error {
            error_type,
            message,
            fatal,
        };
        match end {
            _ if ctx.stdout_overflow => err(
                "Function.ResponseSizeTooLarge",
                format!(
                    "response exceeds the {} byte limit",
                    crate::protocol::MAX_PAYLOAD
                ),
                false,
            ),
            CallEnd::Finished | CallEnd::Exit(0) => {
                Outcome::Response(core::mem::take(&mut ctx.stdout))
            }
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
                    self.cfg.timeout_ms / 1000,
                    (self.cfg.timeout_ms % 1000) / 10
                ),
                true,
            ),
        }
    }

    fn run_command(&mut self, req: &InvokeContext<'_>, env: Vec<Vec<u8>>) -> (CallEnd, Ctx, u64) {
        let rng = match self.spare.take() {
            Some(old) => old.rng,
            None => ChaCha20::new(&self.cfg.random_seed),
        };
        let mut ctx = self.new_ctx(rng);
        ctx.start_invocation(req.payload, env);
        let mut store = self.new_store(ctx);
        let (end, mem) = match self.instantiate(&mut store) {
            Ok(instance) => {
                let end = match instance.get_func(&store, "_start") {
                    Some(f) => call(&mut store, f, &*self.clock, req.deadline_ms),
                    None => CallEnd::Trap("_start disappeared".into()),
                };
                (end, memory_kib(&store, instance))
            }
            Err(e) => (classify(&e), 0),
        };
        (end, store.into_data(), mem)
    }

    fn run_reactor(
        &mut self,
        req: &InvokeContext<'_>,
        env: Vec<Vec<u8>>,
        handler: &str,
    ) -> (CallEnd, Ctx, u64) {
        if self.resident.is_none() {
            // The previous instance called proc_exit: start a fresh one, as
            // Lambda re-inits a runtime that exited.
            let rng = match self.spare.take() {
                Some(old) => old.rng,
                None => ChaCha20::new(&self.cfg.random_seed),
            };
            let mut store = self.new_store(self.new_ctx(rng));
            match self.instantiate(&mut store) {
                Ok(instance) => self.resident = Some(Resident { store, instance }),
                Err(e) => return (classify(&e), store.into_data(), 0),
            }
        }
        let Some(mut res) = self.resident.take() else {
            return (
                CallEnd::Trap("no instance".into()),
                self.new_ctx(ChaCha20::new(&[0; 32])),
                0,
            );
        };
        res.store.data_mut().start_invocation(req.payload, env);
        let end = match res.instance.get_func(&res.store, handler) {
            Some(f) => call(&mut res.store, f, &*self.clock, req.deadline_ms),
            None => CallEnd::Trap(format!("handler `{handler}` not found")),
        };
        let mem = memory_kib(&res.store, res.instance);
        // Move the per-invocation output out; the state stays in the store.
        let ctx = res.store.data_mut();
        let mut out = Ctx::new(
            ChaCha20::new(&[0; 32]),
            self.clock.clone(),
            StoreLimitsBuilder::new().build(),
        );
        out.stdout = core::mem::take(&mut ctx.stdout);
        out.stdout_overflow = ctx.stdout_overflow;
        ctx.flush_stderr();
        out.logs = core::mem::take(&mut ctx.logs);
        out.logs_dropped = ctx.logs_dropped;
        if let CallEnd::Exit(_) = end {
            // The instance is finished; keep its random stream for the next one.
            self.spare = Some(res.store.into_data());
        } else {
            self.resident = Some(res);
        }
        (end, out, mem)
    }

    fn put_back(&mut self, ctx: Ctx) {
        if self.kind == ModuleKind::Command {
            self.spare = Some(ctx);
        }
    }
}

/// Linear memory size of the instance's exported memory, in KiB.
fn memory_kib(store: &Store<Ctx>, instance: Instance) -> u64 {
    match instance.get_memory(store, "memory") {
        Some(m) => (m.data_size(store) / 1024) as u64,
        None => 0,
    }
}

/// Calls `f` with fuel slices until it finishes, traps, exits, or the clock
/// passes `deadline_ms`.
fn call(store: &mut Store<Ctx>, f: Func, clock: &dyn Clock, deadline_ms: u64) -> CallEnd {
    if store.set_fuel(FUEL_SLICE).is_err() {
        return CallEnd::Trap("fuel metering unavailable".into());
    }
    let mut state = f.call_resumable(&mut *store, &[], &mut []);
    loop {
        match state {
            Ok(ResumableCall::Finished) => return CallEnd::Finished,
            Ok(ResumableCall::OutOfFuel(pending)) => {
                if clock.realtime_ns() / 1_000_000 >= deadline_ms {
                    return CallEnd::Timeout;
                }
                if store
                    .set_fuel(FUEL_SLICE.max(pending.required_fuel()))
                    .is_err()
                {
                    return CallEnd::Trap("fuel metering unavailable".into());
                }
                state = pending.resume(&mut *store, &mut []);
            }
            Ok(ResumableCall::HostTrap(pending)) => return classify(pending.host_error()),
            Err(e) => return classify(&e),
        }
    }
}

fn classify(e: &Error) -> CallEnd {
    if let Some(code) = e.i32_exit_status() {
        return CallEnd::Exit(code);
    }
    CallEnd::Trap(e.to_string())
}
