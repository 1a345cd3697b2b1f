//! virtio-vsock (virtio 1.x §5.10), Firecracker-compatible: the device
//! ([`device::Vsock`]: rx / tx / event queues, config = guest CID) moves
//! packets between guest memory and a [`VsockBackend`]; the backend here is
//! the hybrid Unix-socket muxer ([`muxer::UnixMuxer`], Firecracker's
//! docs/vsock.md protocol). Packet parsing is in [`packet`].
//!
//! Fds on the event loop: the device's activate eventfd, the three queue
//! notify eventfds once active, and the backend's sockets (the listener on
//! `uds_path`, handshaking streams, one stream per connection).

pub mod device;
pub mod muxer;
mod muxer_conn;
pub mod packet;

pub use device::Vsock;
pub use ember_abi::vsock::{op, shut, Hdr, HDR_LEN, TYPE_STREAM};
pub use muxer::UnixMuxer;

use event_manager::{EventOps, Events};

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Queue indexes.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const EVENT_QUEUE: usize = 2;
/// Queue size offered for every queue.
pub const QUEUE_SIZE: u16 = 256;

/// The device's host side: where guest packets go and host packets come from.
/// Every call happens on the event-loop thread, with its `EventOps` so the
/// backend can add and remove its own fds.
pub trait VsockBackend: Send {
    /// Takes a packet the guest sent (already bounds-checked).
    fn send_pkt(&mut self, hdr: &Hdr, payload: &[u8], ops: &mut EventOps);
    /// Produces the next packet for the guest, its payload written into
    /// `payload` (at most its length); `None` if nothing is ready after all.
    fn recv_pkt(&mut self, payload: &mut [u8], ops: &mut EventOps) -> Option<(Hdr, usize)>;
    /// Whether `recv_pkt` may have something.
    fn has_pending_rx(&self) -> bool;
    /// Registers the backend's fds (the device was activated).
    fn activate(&mut self, ops: &mut EventOps);
    /// Handles an event on a backend fd; false if the fd is not the backend's.
    fn process(&mut self, events: &Events, ops: &mut EventOps) -> bool;
    /// Drops every connection (device reset), unregistering their fds.
    fn reset(&mut self, ops: &mut EventOps);
    /// Guest bytes accepted but not yet written to a host peer.
    fn undelivered_bytes(&self) -> usize {
        0
    }
}

/// Errors setting up vsock.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// CIDs 0-2 and u32::MAX are reserved (vsock(7)); guests use ≥ 3.
    #[error("invalid guest CID {0}: must be between 3 and 2^32-2")]
    BadCid(u64),
    /// The host-side Unix socket could not be bound.
    #[error("cannot listen on {path}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An eventfd could not be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
}

/// Checks a guest CID.
pub fn check_cid(cid: u64) -> Result<(), VsockError> {
    if (3..u64::from(u32::MAX)).contains(&cid) {
        Ok(())
    } else {
        Err(VsockError::BadCid(cid))
    }
}

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
pub(crate) mod test_guest;
