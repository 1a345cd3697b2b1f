//! The guest's virtio-block driver (virtio 1.x §5.2) for kernel-less guests:
//! one request in flight at a time, the caller's buffer handed to the device
//! directly (identity-mapped guests: its address is guest-physical).
//!
//! Each request is a three-descriptor chain: the 16-byte header
//! (device-readable), the data (readable for writes, writable for reads and
//! GET_ID), and the status byte (device-writable).

use core::alloc::Layout;

use super::mmio::MmioTransport;
use super::queue::{Buf, VirtQueue};
use super::{DriverError, Wait};

/// virtio device id of block.
pub const DEVICE_ID: u32 = 2;
/// Bytes per sector.
pub const SECTOR_SIZE: usize = 512;
/// Feature bit: the drive is read-only.
pub const F_RO: u64 = 1 << 5;
/// Feature bit: the device has a write-back cache and takes FLUSH.
pub const F_FLUSH: u64 = 1 << 9;
const QUEUE_SIZE: u16 = 16;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

/// Errors of the block driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The device answered VIRTIO_BLK_S_IOERR.
    #[error("I/O error")]
    IoErr,
    /// The device answered VIRTIO_BLK_S_UNSUPP.
    #[error("unsupported request")]
    Unsupported,
    /// The device answered with an unknown status byte, or none.
    #[error("bad status byte {0:#x}")]
    BadStatus(u8),
    /// The buffer is empty or not a whole number of sectors.
    #[error("buffer length {0} is not a positive multiple of 512")]
    BadLength(usize),
    /// No memory for the driver's queue.
    #[error("out of memory")]
    NoMemory,
    /// The transport failed.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
}

/// Zeroed memory that lives for the rest of the guest (queues, request
/// headers), aligned as the device needs.
pub(crate) fn dma_zeroed(len: usize, align: usize) -> Option<&'static mut [u8]> {
    let layout = Layout::from_size_align(len.max(1), align).ok()?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` points to `len` fresh zeroed bytes that are never freed, so
    // the slice is valid and exclusively ours for 'static.
    Some(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// A virtio-block drive.
pub struct BlockDevice {
    t: MmioTransport,
    q: VirtQueue,
    /// Header (16 bytes) then status (1 byte), reused by every request.
    req: &'static mut [u8],
    capacity: u64,
    features: u64,
}

impl BlockDevice {
    /// Brings up the drive whose MMIO window is at `base`, accepting FLUSH
    /// and RO when offered.
    ///
    /// # Safety
    /// As [`MmioTransport::probe`]: `base` is a virtio-mmio window nothing
    /// else drives, in an identity-mapped guest.
    pub unsafe fn new(base: usize) -> Result<Self, BlockError> {
        // SAFETY: forwarded from this function's contract.
        let mut t = unsafe { MmioTransport::probe(base, DEVICE_ID)? };
        let features = t.negotiate(F_RO | F_FLUSH)?;
        let mem = dma_zeroed(VirtQueue::mem_size(QUEUE_SIZE), 4096).ok_or(BlockError::NoMemory)?;
        let q = VirtQueue::new(mem, QUEUE_SIZE)?;
        t.setup_queue(0, &q)?;
        t.driver_ok()?;
        let capacity = t.config_u64(0);
        let req = dma_zeroed(32, 16).ok_or(BlockError::NoMemory)?;
        Ok(BlockDevice {
            t,
            q,
            req,
            capacity,
            features,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The device offered VIRTIO_BLK_F_RO.
    pub fn read_only(&self) -> bool {
        self.features & F_RO != 0
    }

    /// The device takes FLUSH (write-back cache).
    pub fn has_flush(&self) -> bool {
        self.features & F_FLUSH != 0
    }

    /// The transport (e.g. to ack interrupts).
    pub fn transport(&self) -> &MmioTransport {
        &self.t
    }

    /// Reads `buf.len()` bytes (whole sectors) from `sector`.
    pub fn read(
        &mut self,
        sector: u64,
        buf: &mut [u8],
        wait: &mut dyn Wait,
    ) -> Result<(), BlockError> {
        check_len(buf.len())?;
        let data = Buf {
            addr: buf.as_mut_ptr() as u64,
            len: buf.len() as u32,
            device_writes: true,
        };
        self.request(T_IN, sector, Some(data), wait)
    }

    /// Writes `buf` (whole sectors) at `sector`.
    pub fn write(
        &mut self,
        sector: u64,
        buf: &[u8],
        wait: &mut dyn Wait,
    ) -> Result<(), BlockError> {
        check_len(buf.len())?;
        let data = Buf {
            addr: buf.as_ptr() as u64,
            len: buf.len() as u32,
            device_writes: false,
        };
        self.request(T_OUT, sector, Some(data), wait)
    }

    /// Makes written data durable (a no-op success if the device has no cache).
    pub fn flush(&mut self, wait: &mut dyn Wait) -> Result<(), BlockError> {
        self.request(T_FLUSH, 0, None, wait)
    }

    /// The drive's id string (20 bytes, NUL-padded).
    pub fn id(&mut self, wait: &mut dyn Wait) -> Result<[u8; 20], BlockError> {
        let mut id = [0u8; 20];
        let data = Buf {
            addr: id.as_mut_ptr() as u64,
            len: 20,
            device_writes: true,
        };
        self.request(T_GET_ID, 0, Some(data), wait)?;
        Ok(id)
    }

    /// Sends any request type (tests use it for unsupported types).
    pub fn raw_request(
        &mut self,
        kind: u32,
        sector: u64,
        buf: &mut [u8],
        wait: &mut dyn Wait,
    ) -> Result<(), BlockError> {
        let data = (!buf.is_empty()).then_some(Buf {
            addr: buf.as_mut_ptr() as u64,
            len: buf.len() as u32,
            device_writes: kind != T_OUT,
        });
        self.request(kind, sector, data, wait)
    }

    /// Sends `bufs` exactly as given (tests of a hostile guest: any
    /// addresses, lengths and directions) and waits for the device to
    /// return the chain. Returns the length the device reported.
    pub fn raw_chain(&mut self, bufs: &[Buf], wait: &mut dyn Wait) -> Result<u32, BlockError> {
        Ok(super::send_chain(&self.t, &mut self.q, 0, bufs, wait)?)
    }

    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        data: Option<Buf>,
        wait: &mut dyn Wait,
    ) -> Result<(), BlockError> {
        self.req[0..4].copy_from_slice(&kind.to_le_bytes());
        self.req[4..8].fill(0);
        self.req[8..16].copy_from_slice(&sector.to_le_bytes());
        self.req[16] = 0xff;
        let base = self.req.as_ptr() as u64;
        let hdr = Buf {
            addr: base,
            len: 16,
            device_writes: false,
        };
        let status = Buf {
            addr: base + 16,
            len: 1,
            device_writes: true,
        };
        let mut chain = [hdr, status, status];
        let n = match data {
            Some(d) => {
                chain[1] = d;
                3
            }
            None => 2,
        };
        self.q.add(&chain[..n])?;
        if self.q.should_notify() {
            self.t.notify(0);
        }
        while self.q.pop_used().is_none() {
            if self.t.status()
                & (super::mmio::status::DEVICE_NEEDS_RESET | super::mmio::status::FAILED)
                != 0
            {
                return Err(DriverError::DeviceFailed(self.t.status()).into());
            }
            wait.wait();
        }
        // SAFETY: the status byte lives in our DMA buffer; the device wrote it
        // before returning the chain, and we read it through a volatile load
        // because the compiler cannot see that write.
        let st = unsafe { core::ptr::read_volatile(self.req.as_ptr().add(16)) };
        match st {
            0 => Ok(()),
            1 => Err(BlockError::IoErr),
            2 => Err(BlockError::Unsupported),
            other => Err(BlockError::BadStatus(other)),
        }
    }
}

fn check_len(len: usize) -> Result<(), BlockError> {
    if len == 0 || !len.is_multiple_of(SECTOR_SIZE) || u32::try_from(len).is_err() {
        return Err(BlockError::BadLength(len));
    }
    Ok(())
}
