//! virtio-block (virtio 1.x §5.2): a drive backed by a host file.
//!
//! - `request.rs`: chain → validated request (pure);
//! - `disk.rs`: the backing file and request execution;
//! - `handler.rs`: the queue loop with the rate limiter (no fds);
//! - `device.rs`: the `VirtioDevice` and the event-loop glue (registers the
//!   queue notify eventfd and the rate limiter's timer fd).
//!
//! Features offered: `VIRTIO_F_VERSION_1`, `VIRTIO_BLK_F_FLUSH` when the cache
//! type is Writeback, `VIRTIO_BLK_F_RO` for read-only drives. Config space:
//! `capacity` (u64 sectors) at offset 0.

pub(crate) mod activation;
pub mod device;
#[cfg(test)]
pub(crate) mod device_tests;
pub mod disk;
pub mod handler;
pub mod request;
#[cfg(test)]
pub(crate) mod test_guest;
#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;

pub use device::{Block, BlockError};
pub use disk::{CacheType, Disk, DiskError};

use crate::rate_limiter::RateLimiterConfig;

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;

/// One drive, as the VMM hands it to the device (translated from its own config).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockConfig {
    /// Name, returned by GET_ID (first 20 bytes).
    pub drive_id: String,
    /// Backing file.
    pub path: PathBuf,
    /// Refuse writes and offer `VIRTIO_BLK_F_RO`.
    pub read_only: bool,
    /// When writes are made durable.
    pub cache_type: CacheType,
    /// Bandwidth/ops limits.
    pub rate_limiter: RateLimiterConfig,
}
