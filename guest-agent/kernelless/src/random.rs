//! Randomness and snapshot clones. `ember-vmm` may snapshot a guest and load
//! it many times; every clone then holds the same memory, so any generator
//! or id counter seeded before the snapshot would repeat across clones. The
//! VMM's contract (DESIGN.md "Snapshots"): at each load it bumps
//! `StartInfo::generation` and writes a fresh `random_seed`. [`Random`] checks
//! the generation before every draw and re-keys itself with the new seed
//! when it changed; [`new_generation`] gives other derived state the same
//! check.

use core::ptr::{addr_of, read_volatile};

use ember_guest::wasm::rng::ChaCha20;

use crate::{start_info, StartInfo};

/// The start-info's generation (0 at boot, +1 at each snapshot load), read
/// volatile: the VMM rewrites it while the guest is paused.
pub fn generation() -> u64 {
    match start_info() {
        // SAFETY: the pointer is the VMM's start-info page (valid for the
        // guest's lifetime); a volatile read of an aligned u64 field.
        Some(info) => unsafe { read_volatile(addr_of!(info.generation)) },
        None => 0,
    }
}

/// The generation and the seed that goes with it, read consistently (the
/// generation re-read after the seed; a load in between is retried).
fn seed_and_generation(info: &StartInfo) -> (u64, [u8; 32]) {
    loop {
        // SAFETY: as in `generation`: volatile reads of the live page.
        let (g, seed, again) = unsafe {
            let g = read_volatile(addr_of!(info.generation));
            let seed = read_volatile(addr_of!(info.random_seed));
            (g, seed, read_volatile(addr_of!(info.generation)))
        };
        if g == again {
            return (g, seed);
        }
    }
}

/// If a snapshot was loaded since `seen` was recorded: the fresh seed of
/// this clone (and `seen` updated). Call it before handing out anything
/// derived from state that predates the snapshot (ids, nonces, keys).
pub fn new_generation(seen: &mut u64) -> Option<[u8; 32]> {
    let info = start_info()?;
    if generation() == *seen {
        return None;
    }
    let (g, seed) = seed_and_generation(info);
    *seen = g;
    Some(seed)
}

/// A ChaCha20 stream keyed by the start-info seed, re-keyed with each
/// clone's fresh seed before its first draw after a snapshot load.
pub struct Random {
    rng: ChaCha20,
    seen: u64,
}

impl Random {
    /// A generator keyed by this VM's seed.
    pub fn new() -> Random {
        let (seen, seed) = start_info().map_or((0, [0; 32]), seed_and_generation);
        Random {
            rng: ChaCha20::new(&seed),
            seen,
        }
    }

    /// Fills `out` with random bytes (never the same bytes in two clones).
    pub fn fill(&mut self, out: &mut [u8]) {
        if let Some(seed) = new_generation(&mut self.seen) {
            self.rng.rekey(&seed);
        }
        self.rng.fill(out);
    }

    /// A random u64.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::new()
    }
}
