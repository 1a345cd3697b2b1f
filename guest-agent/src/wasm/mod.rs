//! The WebAssembly function runtime (`no_std` + `alloc`, wasmi): compiles a
//! `wasm32-wasip1` module once per environment and runs invocations with the
//! WAGI convention (stdin = event, stdout = response, stderr = log lines).
//!
//! Module kinds: a **command** (exports `_start`) gets a fresh instance per
//! invocation; a **reactor** (no `_start`; exports the handler named in
//! `Init.handler`, default `handle`, type `() -> ()`, and optionally
//! `_initialize`, run once at init) keeps one instance per environment, so its
//! memory persists across that environment's invocations. Limits: deadline via
//! fuel slices checked against the clock, linear memory capped at the
//! function's memory size, 6 MiB response.

mod agent;
mod rng;
mod runtime;
mod wasi;

pub use agent::{Control, WasmAgent};
pub use runtime::{
    FunctionConfig, InitFailure, InvokeContext, InvokeOutput, ModuleKind, Outcome, Runtime,
};

/// Time as the function sees it. The kernel-less agent reads the TSC against
/// the start-info wall clock; host tests use the system clock.
pub trait Clock: Send + Sync {
    /// Nanoseconds since the Unix epoch.
    fn realtime_ns(&self) -> u64;
    /// Nanoseconds since an arbitrary fixed point; never goes back.
    fn monotonic_ns(&self) -> u64;
}

#[cfg(test)]
mod tests;
