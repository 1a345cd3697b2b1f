//! virtio devices apart from their transport: the [`VirtioDevice`] trait a
//! device implements, the [`ActivationContext`] it receives when the driver
//! sets DRIVER_OK, and the [`VirtioInterrupt`] handle it raises interrupts
//! through. Only `mmio.rs` knows register offsets; a device knows its queues,
//! its config space and an interrupt handle, nothing else.
//!
//! How a device joins the event loop: it is also an
//! `event_manager::MutEventSubscriber`. In `init` it registers an
//! [`ActivateEvent`]; `activate` (called on a vCPU thread by the transport)
//! stores the context and signals that eventfd; the event-loop thread then
//! registers the queue notify eventfds (and any backend fds) from `process`.
//! `reset` signals it again so the loop unregisters them.

pub mod block;
pub mod log_limit;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod state;
pub mod vsock;

use std::sync::Arc;

use virtio_queue::Queue;

use state::{DeviceState, RingPosition, StateError};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Feature bit: the device is a virtio 1.x (modern) device. The transport
/// refuses a driver that does not accept it.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Feature bit: the driver uses `used_event`/`avail_event` (virtio 1.x §2.7.10).
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// InterruptStatus bits (virtio 1.x §4.2.2).
pub mod int_status {
    /// A used buffer was placed in one of the queues.
    pub const USED_RING: u32 = 1;
    /// The configuration space changed.
    pub const CONFIG_CHANGE: u32 = 2;
}

/// virtio device types (virtio 1.x §5).
pub mod device_type {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const RNG: u32 = 4;
    pub const VSOCK: u32 = 19;
}

/// How a device raises interrupts, whatever the transport and wiring behind it.
pub trait VirtioInterrupt: Send + Sync {
    /// The device put buffers in the used ring of `queue`.
    fn signal_used_queue(&self, queue: u16);
    /// The device changed its configuration space (or needs a reset).
    fn signal_config_change(&self);
    /// The device hit an error it cannot recover from without a reset (a
    /// broken ring): sets DEVICE_NEEDS_RESET where the transport has it,
    /// then signals a config change (§2.1.2).
    fn set_needs_reset(&self) {
        self.signal_config_change();
    }
}

/// One queue handed to a device at activation.
pub struct ActiveQueue {
    /// The queue as the driver configured it (validated by the transport).
    pub queue: Queue,
    /// Becomes readable when the driver notifies this queue (ioeventfd or the
    /// transport's QueueNotify handler).
    pub notify: EventFd,
}

/// Everything a device needs to run once the driver sets DRIVER_OK.
pub struct ActivationContext {
    /// Guest memory, to walk descriptor chains.
    pub mem: GuestMemoryMmap,
    /// The queues, in index order, one per entry of `queue_max_sizes()`.
    pub queues: Vec<ActiveQueue>,
    /// Where to raise interrupts.
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// The features the driver accepted (a subset of those offered).
    pub acked_features: u64,
}

/// Why a device refused to activate (the transport then sets DEVICE_NEEDS_RESET).
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The device got a different number of queues than it asked for.
    #[error("expected {expected} queues, got {got}")]
    QueueCount { expected: usize, got: usize },
    /// The device is already active.
    #[error("device already active")]
    AlreadyActive,
    /// Signalling the event loop failed.
    #[error("cannot signal the event loop")]
    Signal(#[source] std::io::Error),
    /// A queue notify eventfd could not be duplicated for the device.
    #[error("cannot clone a queue eventfd")]
    EventFd(#[source] std::io::Error),
    /// A device-specific failure.
    #[error("{0}")]
    Device(String),
}

/// A virtio device, independent of its transport.
pub trait VirtioDevice: Send {
    /// The virtio device type ([`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The features the device offers (must include [`VIRTIO_F_VERSION_1`]).
    fn avail_features(&self) -> u64;
    /// The features the driver accepted, once FEATURES_OK is set. The
    /// transport has already checked they are a subset of `avail_features`.
    fn ack_features(&mut self, features: u64);
    /// Reads the device config space at `offset` (out of range reads give 0).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device config space (ignored where read-only).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the queues the driver set up.
    fn activate(&mut self, ctx: ActivationContext) -> Result<(), ActivateError>;
    /// Stops the device and forgets the queues (status 0 written). The device
    /// must be activatable again afterwards.
    fn reset(&mut self);
    /// Whether data the guest handed over still waits for a host peer. When
    /// the VM stops, the event loop keeps running (for a bounded time) until
    /// no device has any, so bytes the device accepted are not dropped.
    fn has_undelivered_output(&self) -> bool {
        false
    }
    /// For a snapshot (the VM paused, the caller holding this device's lock
    /// so the event loop cannot move its rings): the device's own state
    /// and, while it is active, where it stands in each queue. `None`: this
    /// device cannot be snapshotted.
    fn save_state(&self) -> Option<(DeviceState, Vec<RingPosition>)> {
        None
    }
    /// Puts saved state into this freshly built device, before the
    /// transport activates it again. Validates before changing anything.
    fn restore_state(&mut self, _state: &DeviceState) -> Result<(), StateError> {
        Err(StateError::Unsupported(self.device_type()))
    }
}

/// The eventfd a device uses to tell the event-loop thread its activation
/// state changed (Firecracker's activate-evt pattern).
pub struct ActivateEvent(EventFd);

impl ActivateEvent {
    /// A new nonblocking activate eventfd.
    pub fn new() -> std::io::Result<Self> {
        EventFd::new(EFD_NONBLOCK).map(ActivateEvent)
    }
    /// Wakes the event loop (from a vCPU thread).
    pub fn signal(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
    /// Consumes pending signals (on the event-loop thread).
    pub fn drain(&self) {
        // A nonblocking read of a counter that is 0 fails with EAGAIN: nothing to drain.
        let _ = self.0.read();
    }
    /// The eventfd, to register with the event manager.
    pub fn fd(&self) -> &EventFd {
        &self.0
    }
}
