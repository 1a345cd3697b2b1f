//! Blob pins: a put pins its blob's address before it looks for (or writes)
//! the blob, and holds the pin until the metadata record naming the blob has
//! committed. Garbage collection decides under the pin set's lock (see
//! [`Pins::hold`]) and skips pinned addresses, so a blob some in-flight put
//! is about to name is never collected — not even one the put found already
//! stored (the dedup path) just as another function's delete let it go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Addresses pinned by in-flight puts, with how many puts pin each.
#[derive(Default, Clone)]
pub struct Pins(Arc<Mutex<HashMap<String, usize>>>);

/// One put's pin on a blob address; dropping it unpins.
#[must_use = "the blob is only protected from garbage collection while the pin lives"]
pub struct Pin {
    pins: Pins,
    hex: String,
}

/// The pin set, locked: while it is held no pin is taken or released.
pub struct Held<'a>(MutexGuard<'a, HashMap<String, usize>>);

impl Pins {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // counts themselves are always consistent (updated in one statement).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `hex` (blocks while a garbage collection holds the set).
    pub fn pin(&self, hex: &str) -> Pin {
        *self.lock().entry(hex.to_string()).or_insert(0) += 1;
        Pin {
            pins: self.clone(),
            hex: hex.to_string(),
        }
    }

    /// Locks the set for a garbage collection: take it before reading which
    /// blobs records name, keep it until the unnamed blobs are removed. A put
    /// that unpinned before the lock committed before it, so the read sees
    /// its record; a put that pins after it waits, and then writes its blob
    /// anew if the collection removed it.
    pub fn hold(&self) -> Held<'_> {
        Held(self.lock())
    }

    /// Number of distinct pinned addresses (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Held<'_> {
    pub fn contains(&self, hex: &str) -> bool {
        self.0.contains_key(hex)
    }
}

impl Pin {
    /// The pinned blob address.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut m = self.pins.lock();
        if let Some(n) = m.get_mut(&self.hex) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.hex);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nested_pins() {
        let p = Pins::default();
        let a = p.pin("a");
        let b = p.pin("a");
        assert!(p.hold().contains("a"));
        drop(a);
        assert!(p.hold().contains("a"));
        drop(b);
        assert!(!p.hold().contains("a"));
        assert_eq!(p.len(), 0);
    }
}
