//! A virtio-mmio v2 window seen from the guest: probe by magic / version /
//! device id, the §3.1.1 initialisation sequence with feature negotiation,
//! queue setup, notify, and interrupt status / ACK. Every register access is
//! a volatile 32-bit load or store (each one exits to the VMM).

use super::queue::VirtQueue;
use super::{DriverError, VIRTIO_F_VERSION_1};

const MAGIC: usize = 0x00;
const VERSION: usize = 0x04;
const DEVICE_ID: usize = 0x08;
const DEVICE_FEATURES: usize = 0x10;
const DEVICE_FEATURES_SEL: usize = 0x14;
const DRIVER_FEATURES: usize = 0x20;
const DRIVER_FEATURES_SEL: usize = 0x24;
const QUEUE_SEL: usize = 0x30;
const QUEUE_NUM_MAX: usize = 0x34;
const QUEUE_NUM: usize = 0x38;
const QUEUE_READY: usize = 0x44;
const QUEUE_NOTIFY: usize = 0x50;
const INTERRUPT_STATUS: usize = 0x60;
const INTERRUPT_ACK: usize = 0x64;
const STATUS: usize = 0x70;
const QUEUE_DESC_LOW: usize = 0x80;
const QUEUE_DESC_HIGH: usize = 0x84;
const QUEUE_AVAIL_LOW: usize = 0x90;
const QUEUE_AVAIL_HIGH: usize = 0x94;
const QUEUE_USED_LOW: usize = 0xa0;
const QUEUE_USED_HIGH: usize = 0xa4;
const CONFIG: usize = 0x100;

const MMIO_MAGIC: u32 = 0x7472_6976;

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// One virtio-mmio register window.
#[derive(Debug)]
pub struct MmioTransport {
    base: usize,
}

impl MmioTransport {
    /// Opens the window at `base` and checks it holds a modern device of type `device_id`.
    ///
    /// # Safety
    /// `base` must be the address of a virtio-mmio register window (4 KiB,
    /// identity-mapped, e.g. from the start-info page) that nothing else in
    /// this guest drives.
    pub unsafe fn probe(base: usize, device_id: u32) -> Result<Self, DriverError> {
        let t = MmioTransport { base };
        let magic = t.read(MAGIC);
        if magic != MMIO_MAGIC {
            return Err(DriverError::BadMagic(magic));
        }
        let version = t.read(VERSION);
        if version != 2 {
            return Err(DriverError::BadVersion(version));
        }
        let found = t.read(DEVICE_ID);
        if found != device_id {
            return Err(DriverError::WrongDevice {
                expected: device_id,
                found,
            });
        }
        Ok(t)
    }

    fn read(&self, off: usize) -> u32 {
        // SAFETY: `probe`'s contract: base..base+4K is a virtio-mmio window,
        // and every offset used here is a 4-byte-aligned register in it.
        unsafe { core::ptr::read_volatile((self.base + off) as *const u32) }
    }

    fn write(&self, off: usize, v: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u32, v) }
    }

    /// Resets the device, then runs §3.1.1 steps 2-6: ACKNOWLEDGE, DRIVER,
    /// accepts `wanted & offered` (plus VERSION_1), FEATURES_OK. Returns the
    /// accepted features.
    pub fn negotiate(&mut self, wanted: u64) -> Result<u64, DriverError> {
        self.write(STATUS, 0);
        self.write(STATUS, status::ACKNOWLEDGE);
        self.write(STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.write(DEVICE_FEATURES_SEL, 0);
        let low = u64::from(self.read(DEVICE_FEATURES));
        self.write(DEVICE_FEATURES_SEL, 1);
        let offered = low | u64::from(self.read(DEVICE_FEATURES)) << 32;
        if offered & VIRTIO_F_VERSION_1 == 0 {
            self.write(STATUS, self.read(STATUS) | status::FAILED);
            return Err(DriverError::NotModern);
        }
        let accepted = (wanted & offered) | VIRTIO_F_VERSION_1;
        self.write(DRIVER_FEATURES_SEL, 0);
        self.write(DRIVER_FEATURES, accepted as u32);
        self.write(DRIVER_FEATURES_SEL, 1);
        self.write(DRIVER_FEATURES, (accepted >> 32) as u32);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write(STATUS, s);
        if self.read(STATUS) & status::FEATURES_OK == 0 {
            self.write(STATUS, s | status::FAILED);
            return Err(DriverError::FeaturesRefused(accepted));
        }
        Ok(accepted)
    }

    /// Tells the device where queue `index` lives (§4.2.3.2).
    pub fn setup_queue(&mut self, index: u16, q: &VirtQueue) -> Result<(), DriverError> {
        self.write(QUEUE_SEL, u32::from(index));
        let max = self.read(QUEUE_NUM_MAX);
        if max < u32::from(q.size()) || self.read(QUEUE_READY) != 0 {
            return Err(DriverError::QueueSize {
                index,
                max,
                asked: q.size(),
            });
        }
        self.write(QUEUE_NUM, u32::from(q.size()));
        let (d, a, u) = (q.desc_addr(), q.avail_addr(), q.used_addr());
        self.write(QUEUE_DESC_LOW, d as u32);
        self.write(QUEUE_DESC_HIGH, (d >> 32) as u32);
        self.write(QUEUE_AVAIL_LOW, a as u32);
        self.write(QUEUE_AVAIL_HIGH, (a >> 32) as u32);
        self.write(QUEUE_USED_LOW, u as u32);
        self.write(QUEUE_USED_HIGH, (u >> 32) as u32);
        self.write(QUEUE_READY, 1);
        Ok(())
    }

    /// Sets DRIVER_OK (§3.1.1 step 8) and checks the device accepted it.
    pub fn driver_ok(&mut self) -> Result<(), DriverError> {
        let s = self.read(STATUS) | status::DRIVER_OK;
        self.write(STATUS, s);
        let now = self.read(STATUS);
        if now & (status::DEVICE_NEEDS_RESET | status::FAILED) != 0 || now & status::DRIVER_OK == 0
        {
            return Err(DriverError::DeviceFailed(now));
        }
        Ok(())
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.read(STATUS)
    }

    /// Notifies the device that queue `index` has new buffers.
    pub fn notify(&self, index: u16) {
        self.write(QUEUE_NOTIFY, u32::from(index));
    }

    /// Reads and acknowledges InterruptStatus; returns the bits that were set.
    /// Kernel-less guests that poll used rings need not call it.
    pub fn ack_interrupt(&self) -> u32 {
        let s = self.read(INTERRUPT_STATUS);
        if s != 0 {
            self.write(INTERRUPT_ACK, s);
        }
        s
    }

    /// Reads a 32-bit config-space field at `offset`.
    pub fn config_u32(&self, offset: usize) -> u32 {
        self.read(CONFIG + offset)
    }

    /// Reads a 64-bit config-space field as two 32-bit halves (low first).
    pub fn config_u64(&self, offset: usize) -> u64 {
        u64::from(self.config_u32(offset)) | u64::from(self.config_u32(offset + 4)) << 32
    }

    /// Resets the device (status 0): it forgets its queues.
    pub fn reset(&mut self) {
        self.write(STATUS, 0);
    }
}
