//! The compiler side (cranelift, host only): a wasm module to a sealed
//! artefact for a function of `memory_mib` MiB, targeting exactly the CPU
//! features in `features` (those the guest has; never the host's own set).

use alloc::vec::Vec;

use wasmtime::Engine;

use super::features::FEATURES;
use ember_abi::artefact::{self, Header};

/// Compiles `module` (wasm binary) into a sealed artefact. Errors are the
/// module's (invalid wasm, unsupported proposal) or the configuration's.
pub fn compile(
    module: &[u8],
    memory_mib: u32,
    features: u64,
    module_sha256: [u8; 32],
) -> wasmtime::Result<Vec<u8>> {
    let mut c = super::config(memory_mib);
    // An explicit target turns off cranelift's native feature detection:
    // only the flags set below are used.
    c.target("x86_64-unknown-linux-gnu")?;
    for (i, (_, flag)) in FEATURES.iter().enumerate() {
        let on = if features & (1 << i) != 0 {
            "true"
        } else {
            "false"
        };
        // SAFETY: code compiled with these flags runs only where the guest's
        // runtime confirmed each enabled feature (artefact header check and
        // wasmtime's own check against `features::detect`).
        unsafe { c.cranelift_flag_set(flag, on) };
    }
    let engine = Engine::new(&c)?;
    let payload = engine.precompile_module(module)?;
    Ok(artefact::seal(
        &Header {
            memory_mib,
            features,
            module_sha256,
        },
        &payload,
    ))
}
