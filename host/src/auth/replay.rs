//! The optional replay cache (`emberd --replay-cache`): every accepted
//! signature is remembered until its request's `X-Amz-Date` leaves the
//! skew window (after that the clock check refuses it anyway), and a second
//! request with a remembered signature is refused. The SDKs sign a fresh
//! `amz-sdk-invocation-id` into every attempt, so honest retries differ.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most signatures remembered at once (about 64 bytes each); past it new
/// requests are refused until old ones expire (fail closed).
pub const MAX_ENTRIES: usize = 1_000_000;

/// Seconds between sweeps of expired entries.
const SWEEP_EVERY: i64 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("this request was already received (a signature is accepted once)")]
    Replayed,
    #[error("too many requests within the signature window to check for replays; retry later")]
    Full,
}

#[derive(Default)]
struct Inner {
    /// Signature → Unix second after which it can no longer be accepted.
    seen: HashMap<[u8; 32], i64>,
    next_sweep: i64,
}

/// Signatures accepted within the skew window.
#[derive(Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

impl ReplayCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `signature` (valid until `expires`) if it is new at `now`.
    pub fn admit(&self, signature: [u8; 32], expires: i64, now: i64) -> Result<(), ReplayError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now >= inner.next_sweep || inner.seen.len() >= MAX_ENTRIES {
            inner.seen.retain(|_, exp| *exp >= now);
            inner.next_sweep = now + SWEEP_EVERY;
        }
        match inner.seen.get(&signature) {
            Some(exp) if *exp >= now => return Err(ReplayError::Replayed),
            _ => {}
        }
        if inner.seen.len() >= MAX_ENTRIES {
            return Err(ReplayError::Full);
        }
        inner.seen.insert(signature, expires);
        Ok(())
    }

    /// How many signatures are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_within_its_window() {
        let c = ReplayCache::new();
        assert_eq!(c.admit([1; 32], 1300, 1000), Ok(()));
        assert_eq!(c.admit([2; 32], 1300, 1000), Ok(()));
        assert_eq!(c.admit([1; 32], 1300, 1200), Err(ReplayError::Replayed));
        // Past its window it is swept (the clock check refuses it by then).
        assert_eq!(c.admit([3; 32], 1700, 1400), Ok(()));
        assert_eq!(c.len(), 1);
    }
}
