//! `ember-wasm-agent`: the kernel-less WebAssembly function runtime. Boots
//! from the start-info page, connects to the host over vsock (CID 2, port
//! 9000), announces itself with `Ready`, then serves `Init`/`Invoke`/
//! `Shutdown` (DESIGN.md, "Host↔agent protocol"). Exit codes: see
//! `agent::exit`; 101 = agent panic (ember_rt).
#![no_std]
#![no_main]

extern crate alloc;

#[path = "../agent/mod.rs"]
mod agent;

ember_rt::entry!(main);

fn main(info: &'static ember_rt::StartInfo) -> i32 {
    agent::run(info)
}
