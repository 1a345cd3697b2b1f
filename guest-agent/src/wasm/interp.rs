//! The interpreter engine (wasmi) for modules sent inline: validation at
//! init, instantiation (per invocation for commands, once for reactors), and
//! the fuel-sliced call loop that enforces the deadline.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use wasmi::{
    CompilationMode, Config, Engine, Error, ExternType, Func, Instance, Linker, Module,
    ResumableCall, Store, StoreLimits, StoreLimitsBuilder, Val,
};

use super::fs::Files;
use super::rng::ChaCha20;
use super::runtime::{
    env_for, fail, files_for, finish, module_kind, CallEnd, FunctionConfig, InitFailure,
    InvokeContext, InvokeOutput, ModuleKind,
};
use super::wasi::{self, WASI};
use super::Clock;
use ember_abi::protocol::LogStream;

/// Fuel per slice: the clock is checked each time a slice runs out (a few
/// milliseconds of interpretation), which bounds how late a timeout fires.
const FUEL_SLICE: u64 = 2_000_000;

type Ctx = wasi::Ctx<StoreLimits>;

/// The WASI functions, for wasmi.
mod wasi_impl {
    use wasmi::errors::LinkerError;
    use wasmi::{Caller, Error, Extern, FuncType, Linker, Val, ValType};
    type Ctx = super::Ctx;
    crate::wasm::wasi::define_wasi!(Error::i32_exit, Error::new);
}

crate::wasm::engine::define_engine!(Interp);

/// Validates and compiles an inline module (eagerly, fuel metering on).
fn load(code: &[u8], _cfg: &FunctionConfig) -> Result<(Engine, Module), InitFailure> {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(CompilationMode::Eager);
    let engine = Engine::new(&config);
    let module = Module::new(&engine, code).map_err(|e| fail("Runtime.InvalidModule", e))?;
    Ok((engine, module))
}

fn new_store(engine: &Engine, ctx: Ctx, _clock: &Arc<dyn Clock>) -> Store<Ctx> {
    let mut store = Store::new(engine, ctx);
    store.limiter(|ctx| &mut ctx.limits);
    store
}

fn instantiate(
    linker: &Linker<Ctx>,
    store: &mut Store<Ctx>,
    module: &Module,
    _cfg: &FunctionConfig,
    _clock: &dyn Clock,
) -> Result<Instance, Error> {
    // Start sections run under one slice of fuel: they are meant to be short.
    store.set_fuel(FUEL_SLICE * 16)?;
    linker.instantiate_and_start(store, module)
}

fn get_func(store: &mut Store<Ctx>, instance: Instance, name: &str) -> Option<Func> {
    instance.get_func(&*store, name)
}

/// Linear memory size of the instance's exported memory, in KiB.
fn memory_kib(store: &mut Store<Ctx>, instance: Instance) -> u64 {
    match instance.get_memory(&*store, "memory") {
        Some(m) => (m.data_size(&*store) / 1024) as u64,
        None => 0,
    }
}

/// Calls `f` with fuel slices until it finishes, traps, exits, or the clock
/// passes `deadline_ms`.
fn call(store: &mut Store<Ctx>, f: Func, clock: &dyn Clock, deadline_ms: u64) -> CallEnd {
    // WASI calls that wait (poll_oneoff) stop at the deadline too.
    store.data_mut().deadline_ms = deadline_ms;
    if store.set_fuel(FUEL_SLICE).is_err() {
        return CallEnd::Trap("fuel metering unavailable".into());
    }
    // A reactor's handler may return an i32 status (see compiled.rs).
    let mut out = [Val::I32(0)];
    let n = f.ty(&*store).results().len().min(1);
    let mut state = f.call_resumable(&mut *store, &[], &mut out[..n]);
    loop {
        match state {
            Ok(ResumableCall::Finished) => {
                return CallEnd::returned(out[..n].first().and_then(Val::i32))
            }
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
                state = pending.resume(&mut *store, &mut out[..n]);
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
