//! The guest-side virtio driver for kernel-less guests (`no_std`): probing a
//! virtio-mmio window ([`mmio`]), split virtqueues in memory the caller
//! provides ([`queue`]), and the drivers on top ([`vsock`], [`block`],
//! [`net`], [`rng`]).
//!
//! Kernel-less guests are identity-mapped, so a buffer's address is its
//! guest-physical address: the driver hands pointers to the device as is.
//! The driver never sleeps by itself: where it must wait for the device it
//! calls a [`Wait`] hook (kernel-less guests pass `ember_rt::wait`, which
//! sleeps on PORT_WAIT until a device interrupt), so it does not depend on
//! the runtime.

pub mod block;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod vsock;

/// Feature bit: virtio 1.x device (required by ember's transport).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Something to do while the device works: sleep until an interrupt, spin,
/// or yield. Closures implement it.
pub trait Wait {
    /// Blocks until the device may have made progress (or just returns).
    fn wait(&mut self);
}

impl<F: FnMut()> Wait for F {
    fn wait(&mut self) {
        self()
    }
}

/// Puts `bufs` on queue `index` exactly as given (tests of a hostile
/// guest: any addresses, lengths and directions), notifies, and waits for
/// the device to return a chain. Returns the length the device reported.
pub fn send_chain(
    t: &mmio::MmioTransport,
    q: &mut queue::VirtQueue,
    index: u16,
    bufs: &[queue::Buf],
    wait: &mut dyn Wait,
) -> Result<u32, DriverError> {
    q.add(bufs)?;
    t.notify(index);
    loop {
        if let Some((_, len)) = q.pop_used() {
            return Ok(len);
        }
        let st = t.status();
        if st & (mmio::status::DEVICE_NEEDS_RESET | mmio::status::FAILED) != 0 {
            return Err(DriverError::DeviceFailed(st));
        }
        wait.wait();
    }
}

/// Why the driver gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// No virtio-mmio device at that address (bad magic).
    #[error("no virtio-mmio device (magic {0:#x})")]
    BadMagic(u32),
    /// A legacy (version 1) or unknown transport.
    #[error("unsupported virtio-mmio version {0}")]
    BadVersion(u32),
    /// A device of another type.
    #[error("device id {found}, expected {expected}")]
    WrongDevice { expected: u32, found: u32 },
    /// The device refused our features (FEATURES_OK did not stick).
    #[error("device refused features {0:#x}")]
    FeaturesRefused(u64),
    /// The device does not offer VIRTIO_F_VERSION_1.
    #[error("device is not a virtio 1.x device")]
    NotModern,
    /// The queue does not exist or is smaller than asked.
    #[error("queue {index}: device max size {max}, asked {asked}")]
    QueueSize { index: u16, max: u32, asked: u16 },
    /// Queue memory too small or misaligned, or a size not a power of two.
    #[error("bad queue memory or size")]
    QueueMemory,
    /// The device set DEVICE_NEEDS_RESET or FAILED.
    #[error("device failed (status {0:#x})")]
    DeviceFailed(u32),
    /// No free descriptors.
    #[error("virtqueue full")]
    QueueFull,
}
