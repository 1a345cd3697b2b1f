//! Memory admission, pure: a host-wide budget of bytes, and the claim each
//! environment holds on it from the moment its start is admitted until it
//! is discarded — busy, idle (warm) or starting alike. A claim is the
//! function's memory plus [`OVERHEAD_MIB`] for the VMM process itself.
//! Which idle environments make room for a start is the pool's choice
//! ([`super::Pool`], least recently used first); this only counts.

use std::collections::HashMap;

/// What one environment costs beyond its guest memory: the VMM's own heap,
/// page tables, device buffers and the jailer (measured RSS of an idle
/// 128 MiB wasm environment's processes minus touched guest memory is a
/// few MiB; 16 leaves room).
pub const OVERHEAD_MIB: u64 = 16;

/// The bytes an environment of a `memory_mib` function claims.
pub fn claim_bytes(memory_mib: u32) -> u64 {
    (u64::from(memory_mib) + OVERHEAD_MIB) << 20
}

#[derive(Debug, Default)]
pub struct Claims {
    budget: u64,
    claimed: u64,
    /// Environment id -> bytes it claims.
    held: HashMap<u64, u64>,
}

impl Claims {
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            ..Default::default()
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn claimed(&self) -> u64 {
        self.claimed
    }

    /// Bytes still free.
    pub fn free(&self) -> u64 {
        self.budget.saturating_sub(self.claimed)
    }

    /// What environment `id` claims (0 if none).
    pub fn of(&self, id: u64) -> u64 {
        self.held.get(&id).copied().unwrap_or(0)
    }

    /// Claims `bytes` for environment `id` if they fit; false otherwise.
    pub fn claim(&mut self, id: u64, bytes: u64) -> bool {
        if bytes > self.free() {
            return false;
        }
        self.claimed += bytes;
        *self.held.entry(id).or_default() += bytes;
        true
    }

    /// Gives back whatever environment `id` claimed.
    pub fn release(&mut self, id: u64) {
        if let Some(b) = self.held.remove(&id) {
            self.claimed = self.claimed.saturating_sub(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_fit_the_budget_and_come_back() {
        let mut c = Claims::new(claim_bytes(128) * 2);
        assert!(c.claim(1, claim_bytes(128)));
        assert!(c.claim(2, claim_bytes(128)));
        assert!(!c.claim(3, claim_bytes(128)));
        assert_eq!(c.free(), 0);
        c.release(1);
        c.release(1);
        assert_eq!(c.claimed(), claim_bytes(128));
        assert!(c.claim(3, claim_bytes(128)));
        assert_eq!((c.of(3), c.of(1)), (claim_bytes(128), 0));
    }

    #[test]
    fn a_claim_larger_than_the_budget_never_fits() {
        let mut c = Claims::new(1 << 30);
        assert!(!c.claim(1, claim_bytes(2048)));
        assert_eq!(c.claimed(), 0);
    }
}
