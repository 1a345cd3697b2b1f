//! The compiled engine (wasmtime, no compiler inside) for artefacts the host
//! compiled ahead of time: the artefact is checked and deserialized at init,
//! instantiated per invocation for commands and once for reactors. Deadlines
//! use epoch interruption: something outside the call bumps the engines'
//! epoch ([`tick`]: the guest's secondary vCPU, a thread in host tests), and
//! at each bump the running call checks the clock against its deadline.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use wasmtime::{
    Engine, Error, ExternType, Func, Instance, Linker, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline, Val,
};

use super::aot;
use ember_abi::artefact;

use super::fs::Files;
use super::rng::ChaCha20;
use super::runtime::{
    env_for, fail, files_for, finish, module_kind, CallEnd, FunctionConfig, InitFailure,
    InvokeContext, InvokeOutput, ModuleKind,
};
use super::wasi::{self, WASI};
use super::Clock;
use ember_abi::protocol::LogStream;

type Ctx = wasi::Ctx<StoreLimits>;

/// `proc_exit(status)`, carried through wasmtime as an error.
#[derive(Debug)]
struct Exit(i32);

impl core::fmt::Display for Exit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl core::error::Error for Exit {}

/// The call passed its deadline.
#[derive(Debug)]
struct TimedOut;

impl core::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("deadline passed")
    }
}

impl core::error::Error for TimedOut {}

/// The WASI functions, for wasmtime.
mod wasi_impl {
    use wasmtime::{Caller, Error, Extern, FuncType, Linker, Val, ValType};
    type LinkerError = Error;
    type Ctx = super::Ctx;
    crate::wasm::wasi::define_wasi!(|code| Error::new(super::Exit(code)), Error::msg);
}

/// Engines whose epoch [`tick`] bumps, one per engine configuration (the
/// guest has exactly one; host tests a few).
const MAX_ENGINES: usize = 16;
static ENGINES: [AtomicPtr<Engine>; MAX_ENGINES] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_ENGINES];
static ENGINE_MIB: [AtomicU32; MAX_ENGINES] = [const { AtomicU32::new(0) }; MAX_ENGINES];

/// Instantiations and calls of compiled code running now: the timer that
/// calls [`tick`] needs to tick fast only while this is non-zero.
static RUNNING: AtomicU32 = AtomicU32::new(0);

/// Whether compiled code is running (the epoch timer's fast period applies).
pub fn running() -> bool {
    RUNNING.load(Ordering::Acquire) != 0
}

/// Counts one running instantiation or call for as long as it lives.
struct Running;

impl Running {
    fn enter() -> Self {
        RUNNING.fetch_add(1, Ordering::AcqRel);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Advances every engine's epoch by one: running calls then check their
/// deadline. Lock-free and allocation-free (the guest's secondary vCPU calls
/// it before the heap exists).
pub fn tick() {
    for slot in &ENGINES {
        let p = slot.load(Ordering::Acquire);
        // SAFETY: non-null pointers here come from Box::into_raw in
        // `engine_for` and are never freed.
        if let Some(e) = unsafe { p.as_ref() } {
            e.increment_epoch();
        }
    }
}

/// The engine for functions of `memory_mib` MiB (created once, then shared).
fn engine_for(memory_mib: u32) -> Result<Engine, InitFailure> {
    for (slot, mib) in ENGINES.iter().zip(&ENGINE_MIB) {
        let p = slot.load(Ordering::Acquire);
        // SAFETY: see `tick`.
        if let Some(e) = unsafe { p.as_ref() } {
            if mib.load(Ordering::Acquire) == memory_mib {
                return Ok(e.clone());
            }
        }
    }
    let mut config = aot::config(memory_mib);
    // SAFETY: `features::detect` reports what CPUID/XCR0 say this CPU runs.
    unsafe { config.detect_host_feature(aot::features::detect) };
    let engine = Engine::new(&config).map_err(|e| fail("Runtime.InvalidArtefact", e))?;
    for (slot, mib) in ENGINES.iter().zip(&ENGINE_MIB) {
        mib.store(memory_mib, Ordering::Release);
        let p = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(engine.clone()));
        if slot
            .compare_exchange(
                core::ptr::null_mut(),
                p,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            return Ok(engine);
        }
        // SAFETY: `p` was not published; reclaim it.
        drop(unsafe { alloc::boxed::Box::from_raw(p) });
    }
    // Out of slots (never in a guest): this engine's calls cannot time out
    // by epoch, only by the host's own deadline.
    Ok(engine)
}

crate::wasm::engine::define_engine!(Compiled);

/// Checks the sealed artefact (format, checksum, what it was compiled for)
/// and deserializes it.
fn load(code: &[u8], cfg: &FunctionConfig) -> Result<(Engine, Module), InitFailure> {
    let bad = |m: String| fail("Runtime.InvalidArtefact", m);
    let (header, payload) = artefact::open(code).map_err(|e| bad(format!("{e}")))?;
    if header.memory_mib != cfg.memory_mib {
        return Err(bad(format!(
            "artefact compiled for {} MiB of memory, the function has {}",
            header.memory_mib, cfg.memory_mib
        )));
    }
    let have = aot::features::detected();
    if header.features & !have != 0 {
        return Err(fail(
            "Runtime.ArtefactCpuMismatch",
            format!(
                "artefact compiled for CPU features [{}] this guest lacks; guest features {:#x}",
                aot::features::names(header.features & !have),
                have
            ),
        ));
    }
    let engine = engine_for(cfg.memory_mib)?;
    // SAFETY: the payload is what wasmtime's own compiler produced in emberd
    // (artefacts come only from it, never from users) and it arrived intact
    // (checksum above); wasmtime checks its version, configuration and CPU
    // features again.
    let module =
        unsafe { Module::deserialize(&engine, payload) }.map_err(|e| bad(format!("{e:#}")))?;
    Ok((engine, module))
}

/// A store whose epoch callback ends the call once the clock passes the
/// store's `deadline_ms`.
fn new_store(engine: &Engine, ctx: Ctx, clock: &Arc<dyn Clock>) -> Store<Ctx> {
    let mut store = Store::new(engine, ctx);
    store.limiter(|ctx| &mut ctx.limits);
    let clock = clock.clone();
    store.epoch_deadline_callback(move |ctx| {
        if clock.realtime_ns() / 1_000_000 >= ctx.data().deadline_ms {
            return Err(Error::new(TimedOut));
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store
}

fn instantiate(
    linker: &Linker<Ctx>,
    store: &mut Store<Ctx>,
    module: &Module,
    cfg: &FunctionConfig,
    clock: &dyn Clock,
) -> Result<Instance, Error> {
    // Start sections run under the init timeout.
    store.data_mut().deadline_ms = clock.realtime_ns() / 1_000_000 + u64::from(cfg.timeout_ms);
    store.set_epoch_deadline(1);
    let _running = Running::enter();
    linker.instantiate(store, module)
}

fn get_func(store: &mut Store<Ctx>, instance: Instance, name: &str) -> Option<Func> {
    instance.get_func(&mut *store, name)
}

/// Linear memory size of the instance's exported memory, in KiB.
fn memory_kib(store: &mut Store<Ctx>, instance: Instance) -> u64 {
    match instance.get_memory(&mut *store, "memory") {
        Some(m) => (m.data_size(&*store) / 1024) as u64,
        None => 0,
    }
}

/// Calls `f` until it finishes, traps, exits, or the epoch callback finds
/// the clock past `deadline_ms`.
fn call(store: &mut Store<Ctx>, f: Func, _clock: &dyn Clock, deadline_ms: u64) -> CallEnd {
    store.data_mut().deadline_ms = deadline_ms;
    store.set_epoch_deadline(1);
    let _running = Running::enter();
    // A reactor's handler may return an i32 status (0: stdout is the
    // response; non-zero: stdout is the function's error document).
    let mut out = [Val::I32(0)];
    let n = f.ty(&*store).results().len().min(1);
    match f.call(&mut *store, &[], &mut out[..n]) {
        Ok(()) => CallEnd::returned(out[..n].first().and_then(Val::i32)),
        Err(e) => classify(&e),
    }
}

fn classify(e: &Error) -> CallEnd {
    if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
        return CallEnd::Exit(*code);
    }
    if e.downcast_ref::<TimedOut>().is_some() {
        return CallEnd::Timeout;
    }
    match e.downcast_ref::<Trap>() {
        Some(t) => CallEnd::Trap(format!("wasm trap: {t}")),
        None => CallEnd::Trap(format!("{e}")),
    }
}
