//! Ahead-of-time compiled WebAssembly: the wasmtime engine configuration
//! that `emberd`'s compiler and the kernel-less guest must share exactly
//! (wasmtime refuses an artefact compiled under another configuration), and
//! CPU feature masks. The sealed artefact format is `ember_abi::artefact`.
//!
//! The configuration fits a guest with no signals, no guard pages and no
//! page-table changes: bounds checks are explicit (`signals_based_traps`
//! off), a linear memory is one fixed reservation that never moves, and
//! deadlines use epoch interruption (a secondary vCPU bumps the epoch).

#[cfg(any(all(test, feature = "aot"), feature = "compile"))]
pub mod compile;
pub mod features;

#[cfg(feature = "aot")]
use wasmtime::Config;

#[cfg(feature = "aot")]
/// wasm stack limit (the guest's vCPU stack is 1 MiB; host calls run below).
pub const MAX_WASM_STACK: usize = 512 * 1024;

/// Bytes reserved for a linear memory of a function with `memory_mib` MiB:
/// three quarters of the VM's memory (the rest holds the agent, its buffers
/// and the compiled code), at most 4 GiB, whole 64 KiB wasm pages. Linear
/// memory cannot grow beyond it.
pub fn memory_reservation(memory_mib: u32) -> u64 {
    let bytes = (u64::from(memory_mib) << 20) / 4 * 3;
    bytes.min(4 << 30) & !0xffff
}

/// The engine configuration for a function of `memory_mib` MiB. The compiler
/// adds only its target and CPU flags; the guest only its feature probe.
#[cfg(feature = "aot")]
pub fn config(memory_mib: u32) -> Config {
    let mut c = Config::new();
    c.signals_based_traps(false)
        .memory_guard_size(0)
        .guard_before_linear_memory(false)
        .memory_reservation(memory_reservation(memory_mib))
        .memory_reservation_for_growth(0)
        .memory_init_cow(false)
        .memory_may_move(false)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK);
    c
}
