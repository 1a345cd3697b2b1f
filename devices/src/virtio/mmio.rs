//! The virtio-mmio v2 ("modern") transport, virtio 1.x §4.2.2: one 4 KiB
//! register window per device, implementing [`BusDevice`]. It owns the
//! register state (feature selection and negotiation, queue setup, the status
//! state machine of §2.1 / §3.1, InterruptStatus, config generation) and
//! hands a [`VirtioDevice`] validated queues at DRIVER_OK. It owns one notify
//! eventfd per queue: the VMM registers them as ioeventfds on QueueNotify
//! (offset [`NOTIFY_OFFSET`], datamatch = queue index); a QueueNotify write
//! that still reaches the bus is forwarded to the same eventfd.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use log::warn;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::log_limit::LogLimiter;
use super::{
    int_status, status, ActivateError, ActivationContext, ActiveQueue, VirtioDevice,
    VirtioInterrupt, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use crate::bus::BusDevice;
use crate::irq::IrqLine;
use crate::warn_limited;

/// Size of one device's register window.
pub const MMIO_WINDOW: u64 = 0x1000;
/// Offset of QueueNotify, where the VMM puts its ioeventfds.
pub const NOTIFY_OFFSET: u64 = 0x50;
/// "virt" in little-endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The modern (virtio 1.x) transport version.
pub const MMIO_VERSION: u32 = 2;
/// Our vendor id: "EMBR".
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"EMBR");

// Register offsets (virtio 1.x §4.2.2, table "MMIO Device Register Layout").
const MAGIC: u64 = 0x00;
const VERSION: u64 = 0x04;
const DEVICE_ID: u64 = 0x08;
const VENDOR: u64 = 0x0c;
const DEVICE_FEATURES: u64 = 0x10;
const DEVICE_FEATURES_SEL: u64 = 0x14;
const DRIVER_FEATURES: u64 = 0x20;
const DRIVER_FEATURES_SEL: u64 = 0x24;
const QUEUE_SEL: u64 = 0x30;
const QUEUE_NUM_MAX: u64 = 0x34;
const QUEUE_NUM: u64 = 0x38;
const QUEUE_READY: u64 = 0x44;
const INTERRUPT_STATUS: u64 = 0x60;
const INTERRUPT_ACK: u64 = 0x64;
const STATUS: u64 = 0x70;
const QUEUE_DESC_LOW: u64 = 0x80;
const QUEUE_DESC_HIGH: u64 = 0x84;
const QUEUE_AVAIL_LOW: u64 = 0x90;
const QUEUE_AVAIL_HIGH: u64 = 0x94;
const QUEUE_USED_LOW: u64 = 0xa0;
const QUEUE_USED_HIGH: u64 = 0xa4;
const CONFIG_GENERATION: u64 = 0xfc;
const CONFIG: u64 = 0x100;

/// Errors building a transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// A queue notify eventfd could not be created.
    #[error("cannot create a queue eventfd")]
    EventFd(#[source] std::io::Error),
    /// The device asked for a queue size that is zero, too big or not a power of two.
    #[error("device queue {0} has an invalid maximum size {1}")]
    BadMaxSize(usize, u16),
}

/// The interrupt state shared by the transport (which reads and acks it) and
/// the device (which raises it through [`VirtioInterrupt`]).
pub struct MmioInterrupt {
    status: AtomicU32,
    config_generation: AtomicU32,
    needs_reset: AtomicBool,
    line: Arc<dyn IrqLine>,
    trigger_errors: LogLimiter,
}

impl MmioInterrupt {
    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.line.trigger() {
            warn_limited!(
                self.trigger_errors,
                "virtio-mmio: interrupt trigger failed: {e}"
            );
        }
    }

    /// The current InterruptStatus value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }
}

impl VirtioInterrupt for MmioInterrupt {
    fn signal_used_queue(&self, _queue: u16) {
        self.raise(int_status::USED_RING);
    }

    fn signal_config_change(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.raise(int_status::CONFIG_CHANGE);
    }

    fn set_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        self.signal_config_change();
    }
}

/// The driver's view of one queue before activation.
#[derive(Clone, Debug, Default)]
struct QueueRegs {
    max_size: u16,
    size: u32,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

/// Guest-triggered complaints, each rate-limited on its own.
#[derive(Default)]
struct Complaints {
    bad_access: LogLimiter,
    unknown_register: LogLimiter,
    bad_state: LogLimiter,
    bad_queue: LogLimiter,
}

/// A virtio-mmio register window in front of one device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    device_id: u32,
    avail_features: u64,
    mem: GuestMemoryMmap,
    interrupt: Arc<MmioInterrupt>,
    queue_evts: Vec<EventFd>,
    queues: Vec<QueueRegs>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    driver_features_high_bits: bool,
    status: u32,
    activated: bool,
    complaints: Complaints,
}

impl MmioTransport {
    /// A transport for `device` over guest memory `mem`, raising `irq`.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
        irq: Arc<dyn IrqLine>,
    ) -> Result<Self, MmioError> {
        let (device_id, avail_features, max_sizes) = {
            let d = device.lock().unwrap_or_else(|e| e.into_inner());
            (
                d.device_type(),
                d.avail_features(),
                d.queue_max_sizes().to_vec(),
            )
        };
        let mut queues = Vec::with_capacity(max_sizes.len());
        let mut queue_evts = Vec::with_capacity(max_sizes.len());
        for (i, &max) in max_sizes.iter().enumerate() {
            if max == 0 || !max.is_power_of_two() || max > 32768 {
                return Err(MmioError::BadMaxSize(i, max));
            }
            queues.push(QueueRegs {
                max_size: max,
                size: u32::from(max),
                ..Default::default()
            });
            queue_evts.push(EventFd::new(EFD_NONBLOCK).map_err(MmioError::EventFd)?);
        }
        let interrupt = Arc::new(MmioInterrupt {
            status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            line: irq,
            trigger_errors: LogLimiter::new(),
        });
        Ok(MmioTransport {
            device,
            device_id,
            avail_features,
            mem,
            interrupt,
            queue_evts,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            driver_features_high_bits: false,
            status: 0,
            activated: false,
            complaints: Complaints::default(),
        })
    }

    /// One notify eventfd per queue, in index order: register each as an
    /// ioeventfd at `base + NOTIFY_OFFSET` with datamatch = its index.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The interrupt state (InterruptStatus) of this transport.
    pub fn interrupt(&self) -> Arc<MmioInterrupt> {
        self.interrupt.clone()
    }

    /// The device status register, as the driver reads it.
    pub fn device_status(&self) -> u32 {
        let mut s = self.status;
        if self.interrupt.needs_reset.load(Ordering::SeqCst) {
            s |= status::DEVICE_NEEDS_RESET;
        }
        s
    }

    fn lock_device(&self) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
        // A poisoned lock means the event-loop thread panicked while holding
        // the device; the register state is still usable.
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn selected_queue(&mut self) -> Option<&mut QueueRegs> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let sel = self.queues.get(self.queue_select as usize);
        match offset {
            MAGIC => MMIO_MAGIC,
            VERSION => MMIO_VERSION,
            DEVICE_ID => self.device_id,
            VENDOR => VENDOR_ID,
            DEVICE_FEATURES => match self.device_features_select {
                0 => self.avail_features as u32,
                1 => (self.avail_features >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => sel.map_or(0, |q| u32::from(q.max_size)),
            QUEUE_READY => sel.map_or(0, |q| u32::from(q.ready)),
            INTERRUPT_STATUS => self.interrupt.status(),
            STATUS => self.device_status(),
            CONFIG_GENERATION => self.interrupt.config_generation.load(Ordering::SeqCst),
            _ => {
                warn_limited!(
                    self.complaints.unknown_register,
                    "virtio-mmio: read of unknown/write-only register {offset:#x}"
                );
                0
            }
        }
    }

    /// Queue registers may be written after FEATURES_OK and before DRIVER_OK
    /// (§3.1.1 steps 5-8).
    fn queue_writable(&self) -> bool {
        self.status & (status::FEATURES_OK | status::DRIVER_OK) == status::FEATURES_OK
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_select = v,
            DRIVER_FEATURES_SEL => self.driver_features_select = v,
            DRIVER_FEATURES => self.write_driver_features(v),
            QUEUE_SEL => self.queue_select = v,
            QUEUE_NUM | QUEUE_READY | QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_AVAIL_LOW
            | QUEUE_AVAIL_HIGH | QUEUE_USED_LOW | QUEUE_USED_HIGH => {
                self.write_queue_reg(offset, v)
            }
            NOTIFY_OFFSET => self.notify(v),
            INTERRUPT_ACK => {
                self.interrupt.status.fetch_and(!v, Ordering::SeqCst);
            }
            STATUS => self.write_status(v),
            _ => warn_limited!(
                self.complaints.unknown_register,
                "virtio-mmio: write of unknown/read-only register {offset:#x}"
            ),
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        if self.status & (status::DRIVER | status::FEATURES_OK) != status::DRIVER {
            warn_limited!(
                self.complaints.bad_state,
                "virtio-mmio: DriverFeatures written in status {:#x}",
                self.status
            );
            return;
        }
        match self.driver_features_select {
            0 => set_low(&mut self.driver_features, v),
            1 => set_high(&mut self.driver_features, v),
            // Bits above 63 are never offered: setting one asks for
            // something the device did not offer, and FEATURES_OK will fail.
            _ => self.driver_features_high_bits |= v != 0,
        }
    }

    fn write_queue_reg(&mut self, offset: u64, v: u32) {
        if !self.queue_writable() {
            warn_limited!(
                self.complaints.bad_state,
                "virtio-mmio: queue register {offset:#x} written in status {:#x}",
                self.status
            );
            return;
        }
        let Some(q) = self.selected_queue() else {
            warn_limited!(
                self.complaints.bad_queue,
                "virtio-mmio: queue register written for a queue that does not exist"
            );
            return;
        };
        match offset {
            // The size is checked at activation: a bad one fails DRIVER_OK
            // with DEVICE_NEEDS_RESET instead of being silently changed.
            QUEUE_NUM => q.size = v,
            QUEUE_READY => q.ready = v == 1,
            QUEUE_DESC_LOW => set_low(&mut q.desc, v),
            QUEUE_DESC_HIGH => set_high(&mut q.desc, v),
            QUEUE_AVAIL_LOW => set_low(&mut q.avail, v),
            QUEUE_AVAIL_HIGH => set_high(&mut q.avail, v),
            QUEUE_USED_LOW => set_low(&mut q.used, v),
            QUEUE_USED_HIGH => set_high(&mut q.used, v),
            _ => {}
        }
    }

    fn notify(&mut self, v: u32) {
        // The notify value is the queue index (no VIRTIO_F_NOTIFICATION_DATA).
        match self.queue_evts.get(v as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    warn_limited!(
                        self.complaints.bad_queue,
                        "virtio-mmio: queue notify eventfd: {e}"
                    );
                }
            }
            None => warn_limited!(
                self.complaints.bad_queue,
                "virtio-mmio: notify of queue {v} that does not exist"
            ),
        }
    }

    /// The status state machine (§2.1, §3.1.1): bits are set one step at a
    /// time in order, never cleared except by writing 0 (reset).
    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        if v & old != old {
            warn_limited!(
                self.complaints.bad_state,
                "virtio-mmio: driver tried to clear status bits ({old:#x} -> {v:#x})"
            );
            return;
        }
        if v & status::FAILED != 0 {
            self.status |= status::FAILED;
        }
        for bit in [
            status::ACKNOWLEDGE,
            status::DRIVER,
            status::FEATURES_OK,
            status::DRIVER_OK,
        ] {
            if v & bit == 0 || self.status & bit != 0 {
                continue;
            }
            let ok = match bit {
                status::ACKNOWLEDGE => true,
                status::DRIVER => self.status & status::ACKNOWLEDGE != 0,
                status::FEATURES_OK => self.status & status::DRIVER != 0 && self.features_ok(),
                _ => self.status & status::FEATURES_OK != 0,
            };
            if !ok {
                warn_limited!(
                    self.complaints.bad_state,
                    "virtio-mmio: refused status {v:#x} from {old:#x}"
                );
                return;
            }
            self.status |= bit;
            if bit == status::DRIVER_OK {
                self.activate();
            }
        }
    }

    fn features_ok(&mut self) -> bool {
        let f = self.driver_features;
        if f & !self.avail_features != 0
            || f & VIRTIO_F_VERSION_1 == 0
            || self.driver_features_high_bits
        {
            warn_limited!(
                self.complaints.bad_state,
                "virtio-mmio: refused driver features {f:#x} (offered {:#x}, VERSION_1 required)",
                self.avail_features
            );
            return false;
        }
        self.lock_device().ack_features(f);
        true
    }

    /// The queue `regs` describe, or why it cannot run: size, alignment
    /// (§2.7: descriptor table 16, driver area 2, device area 4), rings
    /// inside guest memory.
    fn queue_from(&self, regs: &QueueRegs) -> Result<Queue, &'static str> {
        if !regs.ready {
            return Err("not ready");
        }
        if regs.size == 0 || !regs.size.is_power_of_two() || regs.size > u32::from(regs.max_size) {
            return Err("size is not a power of two up to the maximum");
        }
        if !(regs.desc.is_multiple_of(16)
            && regs.avail.is_multiple_of(2)
            && regs.used.is_multiple_of(4))
        {
            return Err("misaligned ring");
        }
        let mut q = Queue::new(regs.max_size).map_err(|_| "bad maximum size")?;
        q.try_set_size(regs.size as u16).map_err(|_| "bad size")?;
        q.set_desc_table_address(Some(regs.desc as u32), Some((regs.desc >> 32) as u32));
        q.set_avail_ring_address(Some(regs.avail as u32), Some((regs.avail >> 32) as u32));
        q.set_used_ring_address(Some(regs.used as u32), Some((regs.used >> 32) as u32));
        q.set_event_idx(self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0);
        q.set_ready(true);
        if !q.is_valid(&self.mem) {
            return Err("rings outside guest memory");
        }
        Ok(q)
    }

    fn activate(&mut self) {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, regs) in self.queues.iter().enumerate() {
            match self.queue_from(regs) {
                Ok(q) => queues.push(q),
                Err(why) => {
                    warn_limited!(
                        self.complaints.bad_queue,
                        "virtio-mmio: queue {i} is {why}: {regs:?}"
                    );
                    self.interrupt.set_needs_reset();
                    return;
                }
            }
        }
        match self.start_device(queues) {
            Ok(()) => self.activated = true,
            Err(e) => {
                warn!(
                    "virtio-mmio: device {} failed to activate: {e}",
                    self.device_id
                );
                self.interrupt.set_needs_reset();
            }
        }
    }

    /// Hands the device its queues (one per notify eventfd, in order).
    fn start_device(&mut self, queues: Vec<Queue>) -> Result<(), ActivateError> {
        let mut active = Vec::with_capacity(queues.len());
        for (queue, evt) in queues.into_iter().zip(&self.queue_evts) {
            let notify = evt.try_clone().map_err(ActivateError::EventFd)?;
            active.push(ActiveQueue { queue, notify });
        }
        let ctx = ActivationContext {
            mem: self.mem.clone(),
            queues: active,
            interrupt: self.interrupt.clone(),
            acked_features: self.driver_features,
        };
        self.lock_device().activate(ctx)
    }

    /// Device reset (status 0 written), §2.4: everything back to its initial value.
    fn reset(&mut self) {
        // Always reset the device: a failed activation may have left state behind.
        self.lock_device().reset();
        self.activated = false;
        self.status = 0;
        self.driver_features = 0;
        self.driver_features_high_bits = false;
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        for q in &mut self.queues {
            *q = QueueRegs {
                max_size: q.max_size,
                size: u32::from(q.max_size),
                ..Default::default()
            };
        }
        for evt in &self.queue_evts {
            // Drop notifications from before the reset; EAGAIN means none.
            let _ = evt.read();
        }
        self.interrupt.status.store(0, Ordering::SeqCst);
        self.interrupt.needs_reset.store(false, Ordering::SeqCst);
    }

    /// Whether the device is running (DRIVER_OK accepted and activation succeeded).
    pub fn is_activated(&self) -> bool {
        self.activated
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            self.lock_device().read_config(offset - CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            warn_limited!(
                self.complaints.bad_access,
                "virtio-mmio: {}-byte read at {offset:#x}",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG {
            if self.status & status::DRIVER == 0 {
                warn_limited!(
                    self.complaints.bad_state,
                    "virtio-mmio: config written before DRIVER"
                );
                return;
            }
            self.lock_device().write_config(offset - CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn_limited!(
                self.complaints.bad_access,
                "virtio-mmio: {}-byte write at {offset:#x}",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            warn_limited!(
                self.complaints.bad_access,
                "virtio-mmio: unaligned write at {offset:#x}"
            );
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[path = "mmio_state.rs"]
mod snapshot;

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
