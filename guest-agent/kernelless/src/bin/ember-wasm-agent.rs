//! `ember-wasm-agent`: the kernel-less WebAssembly function runtime. Boots
//! from the start-info page, connects to the host over vsock (CID 2, port
//! 9000), announces itself with `Ready`, then serves `Init`/`Invoke`/
//! `Shutdown` (DESIGN.md, "Host↔agent protocol"). Exit codes: see
//! `agent::exit`; 101 = agent panic (ember_rt).
//!
//! A second vCPU, when the VM has one, is the epoch timer of compiled
//! (wasmtime) code: while compiled code runs it bumps the epoch every
//! [`TICK_US`], and at each bump the running call compares the clock with
//! its deadline; otherwise it wakes only every [`IDLE_TICK_US`], so an idle
//! warm environment costs its host almost nothing.
#![no_std]
#![no_main]

extern crate alloc;

#[path = "../agent/mod.rs"]
mod agent;

/// Epoch period: how late past its deadline a runaway call can stop.
const TICK_US: u32 = 2_000;
/// Period while no compiled code runs. A call that starts during this
/// sleep gets its first deadline check at most this late (deadlines are
/// at least a second away; the host's own backstop stays).
const IDLE_TICK_US: u32 = 20_000;

ember_rt::entry!(main, secondary = tick);

fn main(info: &'static ember_rt::StartInfo) -> i32 {
    agent::run(info)
}

fn tick(_cpu: u64) -> ! {
    loop {
        let fast = ember_guest::wasm::compiled::running();
        ember_rt::sleep(if fast { TICK_US } else { IDLE_TICK_US });
        ember_guest::wasm::compiled::tick();
    }
}
