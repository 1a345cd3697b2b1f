//! virtio-rng, Firecracker's "entropy device" (virtio 1.x §5.4, device id 4):
//! one request queue whose device-writable buffers the device fills with
//! random bytes from the host (`getrandom(2)`).
//!
//! - `handler.rs`: the queue loop with the rate limiter (pure, no fds);
//! - `device.rs`: the `VirtioDevice` and the event-loop glue (registers the
//!   activate eventfd and the limiter's timer fd for the device's lifetime,
//!   the queue's notify eventfd from activation until reset).
//!
//! Features offered: `VIRTIO_F_VERSION_1` only. No config space.

pub mod device;
pub mod handler;
#[cfg(test)]
mod tests;

pub use device::{Entropy, EntropyError};
pub use handler::{host_random, EntropyMetrics, RandomSource};

use crate::rate_limiter::RateLimiterConfig;

/// Queue size offered to the driver (Firecracker's).
pub const QUEUE_SIZE: u16 = 256;

/// Most bytes written into one request chain. virtio-rng lets the device
/// fill less than the buffer (the used length says how much); the cap keeps
/// one chain of a hostile driver (up to 256 descriptors of 4 GiB each over
/// the same memory) from holding the device thread, which other devices
/// share, for seconds.
pub const MAX_CHAIN_FILL: u32 = 64 * 1024;

/// The device's configuration, as the VMM hands it over (Firecracker's
/// `EntropyDeviceConfig`: only a rate limiter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntropyConfig {
    /// Bytes (`bandwidth`) and requests (`ops`) per refill period.
    pub rate_limiter: RateLimiterConfig,
}
