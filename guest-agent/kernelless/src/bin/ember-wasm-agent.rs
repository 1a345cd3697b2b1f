//! `ember-wasm-agent`: the kernel-less WebAssembly function runtime. Boots
//! from the start-info page, connects to the host over vsock (CID 2, port
//! 9000), announces itself with `Ready`, then serves `Init`/`Invoke`/
//! `Shutdown` (DESIGN.md, "Host↔agent protocol"). Exit codes: see
//! `agent::exit`; 101 = agent panic (ember_rt).
//!
//! A second vCPU, when the VM has one, is the epoch timer of compiled
//! (wasmtime) code: it bumps the epoch every [`TICK_US`], and at each bump a
//! running call compares the clock with its deadline.
#![no_std]
#![no_main]

extern crate alloc;

#[path = "../agent/mod.rs"]
mod agent;

/// Epoch period: how late past its deadline a runaway call can stop.
const TICK_US: u32 = 2_000;

ember_rt::entry!(main, secondary = tick);

fn main(info: &'static ember_rt::StartInfo) -> i32 {
    agent::run(info)
}

fn tick(_cpu: u64) -> ! {
    loop {
        ember_rt::sleep(TICK_US);
        ember_guest::wasm::compiled::tick();
    }
}
