//! The WebAssembly function runtime (`no_std` + `alloc`): loads a
//! `wasm32-wasip1` module once per environment — compiled ahead of time by
//! the host and run by wasmtime (`compiled`, `aot`), or interpreted by wasmi
//! (`interp`) — and runs invocations with the WAGI convention (stdin =
//! event, stdout = response, stderr = log lines).
//!
//! Module kinds: a **command** (exports `_start`) gets a fresh instance per
//! invocation; a **reactor** (no `_start`; exports the handler named in
//! `Init.handler`, default `handle`, type `() -> ()`, and optionally
//! `_initialize`, run once at init) keeps one instance per environment, so its
//! memory persists across that environment's invocations. Limits: deadline
//! (epoch interruption for wasmtime, fuel slices for wasmi, both checked
//! against the clock), linear memory capped at the function's memory size,
//! 6 MiB response.
//!
//! Without the `wasm` feature this module holds just [`aot`]: the CPU
//! feature masks (any build), and with `aot` the engine
//! configuration the host's compiler shares with the guest.

#[cfg(feature = "wasm")]
mod agent;
pub mod aot;
#[cfg(feature = "wasm")]
pub mod compiled;
#[cfg(feature = "wasm")]
mod engine;
#[cfg(feature = "wasm")]
pub mod fs;
#[cfg(feature = "wasm")]
mod interp;
#[cfg(feature = "wasm")]
pub mod rng;
#[cfg(feature = "wasm")]
mod runtime;
#[cfg(feature = "wasm")]
mod wasi;
#[cfg(feature = "wasm")]
mod wasi_fs;
#[cfg(feature = "wasm")]
mod wasi_poll;
#[cfg(feature = "wasm")]
mod wasi_table;

#[cfg(feature = "wasm")]
pub use agent::{Control, WasmAgent};
#[cfg(feature = "wasm")]
pub use runtime::{
    FunctionConfig, InitFailure, InvokeContext, InvokeOutput, ModuleKind, Outcome, Runtime,
};

#[cfg(feature = "wasm")]
/// Time as the function sees it. The kernel-less agent reads the TSC against
/// the start-info wall clock; host tests use the system clock.
pub trait Clock: Send + Sync {
    /// Nanoseconds since the Unix epoch.
    fn realtime_ns(&self) -> u64;
    /// Nanoseconds since an arbitrary fixed point; never goes back.
    fn monotonic_ns(&self) -> u64;
}

// The runtime tests, once per engine (tests.rs picks the engine from its
// module name).
#[cfg(all(test, feature = "wasm"))]
#[path = "tests.rs"]
mod tests_compiled;
#[cfg(all(test, feature = "wasm"))]
#[path = "tests.rs"]
mod tests_interp;
