//! The guest's virtio-rng driver (virtio 1.x §5.4) for kernel-less guests:
//! one request in flight, the caller's buffer handed to the device as a
//! single device-writable descriptor; the device says how many bytes it
//! filled.

use super::block::dma_zeroed;
use super::mmio::MmioTransport;
use super::queue::{Buf, VirtQueue};
use super::{DriverError, Wait};

/// virtio device id of the entropy source.
pub const DEVICE_ID: u32 = 4;
const QUEUE_SIZE: u16 = 16;

/// Errors of the rng driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RngError {
    /// The buffer is empty or over 4 GiB.
    #[error("buffer length {0} is not between 1 byte and 4 GiB")]
    BadLength(usize),
    /// No memory for the driver's queue.
    #[error("out of memory")]
    NoMemory,
    /// The transport failed.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
}

/// A virtio-rng device.
pub struct RngDevice {
    t: MmioTransport,
    q: VirtQueue,
}

impl RngDevice {
    /// Brings up the device whose MMIO window is at `base`.
    ///
    /// # Safety
    /// As [`MmioTransport::probe`]: `base` is a virtio-mmio window nothing
    /// else drives, in an identity-mapped guest.
    pub unsafe fn new(base: usize) -> Result<Self, RngError> {
        // SAFETY: forwarded from this function's contract.
        let mut t = unsafe { MmioTransport::probe(base, DEVICE_ID)? };
        t.negotiate(0)?;
        let mem = dma_zeroed(VirtQueue::mem_size(QUEUE_SIZE), 4096).ok_or(RngError::NoMemory)?;
        let q = VirtQueue::new(mem, QUEUE_SIZE)?;
        t.setup_queue(0, &q)?;
        t.driver_ok()?;
        Ok(RngDevice { t, q })
    }

    /// The transport (e.g. to ack interrupts).
    pub fn transport(&self) -> &MmioTransport {
        &self.t
    }

    /// Asks for `buf.len()` random bytes; returns how many the device wrote
    /// (from the start of `buf`).
    pub fn read(&mut self, buf: &mut [u8], wait: &mut dyn Wait) -> Result<usize, RngError> {
        let len = u32::try_from(buf.len())
            .ok()
            .filter(|&l| l > 0)
            .ok_or(RngError::BadLength(buf.len()))?;
        let data = Buf {
            addr: buf.as_mut_ptr() as u64,
            len,
            device_writes: true,
        };
        let n = self.raw_chain(&[data], wait)?;
        Ok((n as usize).min(buf.len()))
    }

    /// Sends `bufs` exactly as given (tests of a hostile guest) and waits
    /// for the device to return the chain. Returns the length it reported.
    pub fn raw_chain(&mut self, bufs: &[Buf], wait: &mut dyn Wait) -> Result<u32, RngError> {
        Ok(super::send_chain(&self.t, &mut self.q, 0, bufs, wait)?)
    }
}
