//! Snapshot state of a virtio device behind its transport: the virtio-mmio
//! registers and per-queue state ([`TransportState`], [`QueueState`]) and
//! the device's own state ([`DeviceState`], e.g. [`VsockState`], [`EntropyState`]). Typed and
//! versioned ([`STATE_VERSION`]); the VMM encodes it into its state file.
//! Restoring validates every field against the device (type, queue count,
//! each queue's maximum size, offered features) and guest memory (every
//! ring of an active device inside it) and fails with a [`StateError`]:
//! a hostile state file never reaches a queue the device would then walk.

/// Version of the layout of these structs (the VMM writes it next to them
/// and refuses others).
pub const STATE_VERSION: u16 = 1;

/// One queue: the registers the driver wrote, and where the device stands
/// in the rings (meaningful while the device is active).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    /// QueueNum; 0 if the driver wrote a size the device would refuse at
    /// activation (which a not-yet-active device may hold).
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub next_avail: u16,
    pub next_used: u16,
}

/// Where an active device stands in one queue's rings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingPosition {
    pub next_avail: u16,
    pub next_used: u16,
}

/// The virtio-mmio transport's registers (virtio 1.x §4.2.2) and queues.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportState {
    pub device_type: u32,
    /// The status register (DEVICE_NEEDS_RESET is `needs_reset`).
    pub status: u32,
    /// DRIVER_OK was accepted and the device runs its queues.
    pub activated: bool,
    pub needs_reset: bool,
    pub driver_features: u64,
    pub queue_select: u32,
    pub device_features_select: u32,
    pub driver_features_select: u32,
    pub interrupt_status: u32,
    pub config_generation: u32,
    pub queues: Vec<QueueState>,
}

/// What a vsock device keeps across a snapshot: its CID and the features
/// the driver accepted. No host connection survives: at restore the device
/// sends the driver VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VsockState {
    pub guest_cid: u64,
    pub acked_features: u64,
}

/// What an entropy (virtio-rng) device keeps: the features the driver
/// accepted. The rate limiter starts full again, as a fresh device's would.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntropyState {
    pub acked_features: u64,
}

/// A device's own state, by device type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceState {
    Vsock(VsockState),
    Entropy(EntropyState),
}

/// Everything a virtio device behind virtio-mmio needs to resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioState {
    pub transport: TransportState,
    pub device: DeviceState,
}

/// Why a device state was refused (or could not be taken).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("virtio device type {0} has no snapshot support")]
    Unsupported(u32),
    #[error("saved device type {saved}, this device is type {actual}")]
    DeviceType { saved: u32, actual: u32 },
    #[error("saved {saved} queues, the device has {actual}")]
    QueueCount { saved: usize, actual: usize },
    #[error("queue {index}: size {size} is not a power of two up to the maximum {max}")]
    QueueSize { index: usize, size: u16, max: u16 },
    #[error("queue {index}: {what}")]
    Queue { index: usize, what: &'static str },
    #[error("status {0:#x} is not a state the status machine reaches")]
    Status(u32),
    #[error(
        "driver features {acked:#x} are not a subset of the offered {offered:#x} with VERSION_1"
    )]
    Features { acked: u64, offered: u64 },
    #[error("interrupt status {0:#x} has unknown bits")]
    InterruptStatus(u32),
    #[error("saved guest CID {saved}, the device is configured with {actual}")]
    Cid { saved: u64, actual: u64 },
    #[error("the saved device state is of another device kind")]
    DeviceKind,
    #[error("the device refused to activate: {0}")]
    Activate(String),
}
