//! virtio-net (virtio 1.x §5.1) over a host TAP.
//!
//! - `tap.rs`: the TAP (`/dev/net/tun`, vnet header, offloads) and the
//!   [`NetBackend`] trait the queues talk to;
//! - `handler.rs`: rx/tx queue processing with the rate limiters (no fds);
//! - `device.rs`: the `VirtioDevice` and event-loop glue (registers the TAP
//!   fd edge-triggered, both queue notify eventfds, both limiter timers).
//!
//! Features offered: `VIRTIO_F_VERSION_1`, `VIRTIO_NET_F_MAC` when a MAC is
//! configured, and checksum/TSO offloads only when the TAP accepted them
//! (`TUNSETOFFLOAD` probe). No `MRG_RXBUF`: each receive chain must hold a
//! whole frame. Config space: `mac` (6 bytes).

pub mod device;
pub mod handler;
pub mod tap;
#[cfg(test)]
mod tests;

pub use device::{Net, NetError};
pub use tap::{NetBackend, Tap, TapError};

use crate::rate_limiter::RateLimiterConfig;

/// Receive and transmit queue size.
pub const QUEUE_SIZE: u16 = 256;

/// One network interface, as the VMM hands it to the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// Name used in logs.
    pub iface_id: String,
    /// The host TAP to attach to.
    pub host_dev_name: String,
    /// The guest's MAC address (offered with `VIRTIO_NET_F_MAC`).
    pub guest_mac: Option<[u8; 6]>,
    /// Limits on frames delivered to the guest.
    pub rx_rate_limiter: RateLimiterConfig,
    /// Limits on frames sent by the guest.
    pub tx_rate_limiter: RateLimiterConfig,
}

/// Parses `aa:bb:cc:dd:ee:ff` (the `--net` flag's format and Firecracker's `guest_mac`).
pub use ember_abi::vmm_args::parse_mac;
