//! Test-only tap on the bytes the host sends a guest over vsock. Compiled
//! only with the `test-hooks` feature (which `ember-vmm`'s own `test-hooks`
//! feature turns on and no production build enables): the VMM's sandbox test
//! hook uses it to make the device thread do something forbidden in the
//! middle of an invocation (tests/isolation promise 6).

use std::sync::OnceLock;

static TAP: OnceLock<fn(&[u8])> = OnceLock::new();

/// Installs `f`, called on the event-loop thread with every chunk of host
/// bytes read for a guest (first call wins).
pub fn set(f: fn(&[u8])) {
    let _ = TAP.set(f);
}

/// Shows `bytes` (just read from a host stream) to the tap, if one is set.
pub(crate) fn host_to_guest(bytes: &[u8]) {
    if let Some(f) = TAP.get() {
        f(bytes);
    }
}
