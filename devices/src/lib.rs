//! ember's emulated devices. This crate knows nothing of the VMM: it sees guest
//! memory, file descriptors and the small traits below, and nothing else.

pub mod bus;
pub mod irq;
pub mod legacy;
pub mod rate_limiter;
#[cfg(feature = "test-hooks")]
pub mod test_tap;
pub mod virtio;
