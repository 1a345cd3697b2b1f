//! Unit tests for the virtio-mmio transport: a real transport over an
//! in-memory guest, with a recording device and a counting interrupt wire.

use std::sync::atomic::AtomicUsize;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::ActivateError;

const Q_MAX: u16 = 16;
const FEAT_OFFERED: u64 = VIRTIO_F_VERSION_1 | 1 << 3;

#[derive(Default)]
struct Wire(AtomicUsize);
impl IrqLine for Wire {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Default)]
struct Recorder {
    acked: u64,
    config: [u8; 8],
    ctx: Option<ActivationContext>,
    resets: usize,
}

impl VirtioDevice for Recorder {
    fn device_type(&self) -> u32 {
        super::super::device_type::VSOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[Q_MAX, Q_MAX]
    }
    fn avail_features(&self) -> u64 {
        FEAT_OFFERED
    }
    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(c) = self.config.get_mut(offset as usize + i) {
                *c = *b;
            }
        }
    }
    fn activate(&mut self, ctx: ActivationContext) -> Result<(), ActivateError> {
        if self.ctx.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        self.ctx = Some(ctx);
        Ok(())
    }
    fn reset(&mut self) {
        self.ctx = None;
        self.resets += 1;
    }
}

struct Rig {
    t: MmioTransport,
    dev: Arc<Mutex<Recorder>>,
    wire: Arc<Wire>,
    mem: GuestMemoryMmap,
}

fn rig() -> Rig {
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let dev = Arc::new(Mutex::new(Recorder::default()));
    let wire = Arc::new(Wire::default());
    let t = MmioTransport::new(mem.clone(), dev.clone(), wire.clone()).unwrap();
    Rig { t, dev, wire, mem }
}

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// Drives the §3.1.1 sequence up to FEATURES_OK with `features`.
fn negotiate(t: &mut MmioTransport, features: u64) -> u32 {
    wr(t, STATUS, status::ACKNOWLEDGE);
    wr(t, STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(t, DRIVER_FEATURES_SEL, 0);
    wr(t, DRIVER_FEATURES, features as u32);
    wr(t, DRIVER_FEATURES_SEL, 1);
    wr(t, DRIVER_FEATURES, (features >> 32) as u32);
    wr(
        t,
        STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    rd(t, STATUS)
}

fn setup_queue(t: &mut MmioTransport, idx: u32, size: u32, base: u64) {
    wr(t, QUEUE_SEL, idx);
    wr(t, QUEUE_NUM, size);
    wr(t, QUEUE_DESC_LOW, base as u32);
    wr(t, QUEUE_DESC_HIGH, (base >> 32) as u32);
    let (avail, used) = (base.wrapping_add(0x1000), base.wrapping_add(0x2000));
    wr(t, QUEUE_AVAIL_LOW, avail as u32);
    wr(t, QUEUE_AVAIL_HIGH, (avail >> 32) as u32);
    wr(t, QUEUE_USED_LOW, used as u32);
    wr(t, QUEUE_USED_HIGH, (used >> 32) as u32);
    wr(t, QUEUE_READY, 1);
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

#[test]
fn identifies_itself() {
    let mut r = rig();
    assert_eq!(rd(&mut r.t, MAGIC), 0x7472_6976);
    assert_eq!(rd(&mut r.t, VERSION), 2);
    assert_eq!(rd(&mut r.t, DEVICE_ID), 19);
    assert_eq!(rd(&mut r.t, VENDOR), VENDOR_ID);
    wr(&mut r.t, DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&mut r.t, DEVICE_FEATURES), 1);
    wr(&mut r.t, DEVICE_FEATURES_SEL, 0);
    assert_eq!(rd(&mut r.t, DEVICE_FEATURES), 1 << 3);
    wr(&mut r.t, DEVICE_FEATURES_SEL, 7);
    assert_eq!(rd(&mut r.t, DEVICE_FEATURES), 0);
    wr(&mut r.t, QUEUE_SEL, 1);
    assert_eq!(rd(&mut r.t, QUEUE_NUM_MAX), 16);
    wr(&mut r.t, QUEUE_SEL, 2);
    assert_eq!(rd(&mut r.t, QUEUE_NUM_MAX), 0);
}

#[test]
fn refuses_features_not_offered_or_without_version_1() {
    let mut r = rig();
    let s = negotiate(&mut r.t, FEAT_OFFERED | 1 << 5);
    assert_eq!(s & status::FEATURES_OK, 0, "unoffered bit 5 accepted");
    wr(&mut r.t, STATUS, 0);
    let s = negotiate(&mut r.t, 1 << 3);
    assert_eq!(
        s & status::FEATURES_OK,
        0,
        "driver without VERSION_1 accepted"
    );
    wr(&mut r.t, STATUS, 0);
    wr(&mut r.t, STATUS, status::ACKNOWLEDGE);
    wr(&mut r.t, STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(&mut r.t, DRIVER_FEATURES_SEL, 2);
    wr(&mut r.t, DRIVER_FEATURES, 1);
    let s = negotiate(&mut r.t, VIRTIO_F_VERSION_1);
    assert_eq!(s & status::FEATURES_OK, 0, "feature bit above 63 accepted");
    wr(&mut r.t, STATUS, 0);
    let s = negotiate(&mut r.t, VIRTIO_F_VERSION_1);
    assert_ne!(s & status::FEATURES_OK, 0);
    assert_eq!(r.dev.lock().unwrap().acked, VIRTIO_F_VERSION_1);
    // Features are frozen once FEATURES_OK is set.
    wr(&mut r.t, DRIVER_FEATURES_SEL, 0);
    wr(&mut r.t, DRIVER_FEATURES, 1 << 3);
    assert_eq!(r.t.driver_features, VIRTIO_F_VERSION_1);
}

#[test]
fn status_bits_go_in_order_and_never_clear() {
    let mut r = rig();
    wr(&mut r.t, STATUS, status::DRIVER);
    assert_eq!(rd(&mut r.t, STATUS), 0, "DRIVER before ACKNOWLEDGE");
    wr(&mut r.t, STATUS, status::ACKNOWLEDGE);
    wr(
        &mut r.t,
        STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    );
    assert_eq!(
        rd(&mut r.t, STATUS),
        status::ACKNOWLEDGE | status::DRIVER,
        "DRIVER_OK before FEATURES_OK"
    );
    wr(&mut r.t, STATUS, status::DRIVER);
    assert_eq!(
        rd(&mut r.t, STATUS),
        status::ACKNOWLEDGE | status::DRIVER,
        "bit cleared"
    );
    wr(
        &mut r.t,
        STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FAILED,
    );
    assert_ne!(rd(&mut r.t, STATUS) & status::FAILED, 0);
    assert!(r.dev.lock().unwrap().ctx.is_none());
}

#[test]
fn activates_with_valid_queues_and_forwards_notifies_and_interrupts() {
    let mut r = rig();
    negotiate(&mut r.t, FEAT_OFFERED);
    // Queue registers before FEATURES_OK were refused above; now accepted.
    setup_queue(&mut r.t, 0, 8, 0x1000);
    setup_queue(&mut r.t, 1, 16, 0x4000);
    wr(&mut r.t, STATUS, ALL_OK);
    assert_eq!(rd(&mut r.t, STATUS), ALL_OK);
    assert!(r.t.is_activated());
    let interrupt = {
        let d = r.dev.lock().unwrap();
        let ctx = d.ctx.as_ref().unwrap();
        assert_eq!(ctx.queues.len(), 2);
        assert_eq!(ctx.queues[0].queue.size(), 8);
        assert_eq!(ctx.queues[1].queue.desc_table(), 0x4000);
        assert_eq!(ctx.acked_features, FEAT_OFFERED);
        ctx.interrupt.clone()
    };
    // Queue writes after DRIVER_OK are ignored.
    wr(&mut r.t, QUEUE_SEL, 0);
    wr(&mut r.t, QUEUE_NUM, 4);
    assert_eq!(r.t.queues[0].size, 8);
    // QueueNotify reaches the device's notify eventfd; a bad index is ignored.
    wr(&mut r.t, NOTIFY_OFFSET, 1);
    wr(&mut r.t, NOTIFY_OFFSET, 9);
    {
        let d = r.dev.lock().unwrap();
        let ctx = d.ctx.as_ref().unwrap();
        assert_eq!(ctx.queues[1].notify.read().unwrap(), 1);
        assert!(ctx.queues[0].notify.read().is_err());
    }
    // Interrupts: the device signals, the wire fires, the driver reads and acks.
    interrupt.signal_used_queue(0);
    assert_eq!(r.wire.0.load(Ordering::SeqCst), 1);
    assert_eq!(rd(&mut r.t, INTERRUPT_STATUS), int_status::USED_RING);
    let gen = rd(&mut r.t, CONFIG_GENERATION);
    interrupt.signal_config_change();
    assert_eq!(rd(&mut r.t, CONFIG_GENERATION), gen + 1);
    assert_eq!(rd(&mut r.t, INTERRUPT_STATUS), 3);
    wr(&mut r.t, INTERRUPT_ACK, int_status::USED_RING);
    assert_eq!(rd(&mut r.t, INTERRUPT_STATUS), int_status::CONFIG_CHANGE);
    // Reset returns everything to the start and the device can run again.
    wr(&mut r.t, STATUS, 0);
    assert_eq!(rd(&mut r.t, STATUS), 0);
    assert_eq!(rd(&mut r.t, INTERRUPT_STATUS), 0);
    assert!(!r.t.is_activated());
    assert_eq!(r.dev.lock().unwrap().resets, 1);
    negotiate(&mut r.t, FEAT_OFFERED);
    setup_queue(&mut r.t, 0, 8, 0x1000);
    setup_queue(&mut r.t, 1, 16, 0x4000);
    wr(&mut r.t, STATUS, ALL_OK);
    assert!(r.t.is_activated());
}

fn activation_fails(size0: u32, base0: u64) {
    let mut r = rig();
    negotiate(&mut r.t, FEAT_OFFERED);
    setup_queue(&mut r.t, 0, size0, base0);
    setup_queue(&mut r.t, 1, 16, 0x4000);
    wr(&mut r.t, STATUS, ALL_OK);
    let s = rd(&mut r.t, STATUS);
    assert_ne!(
        s & status::DEVICE_NEEDS_RESET,
        0,
        "size {size0} base {base0:#x}: status {s:#x}"
    );
    assert!(!r.t.is_activated());
    assert!(r.dev.lock().unwrap().ctx.is_none());
    assert_ne!(
        rd(&mut r.t, INTERRUPT_STATUS) & int_status::CONFIG_CHANGE,
        0
    );
    wr(&mut r.t, STATUS, 0);
    assert_eq!(rd(&mut r.t, STATUS), 0);
}

#[test]
fn bad_queues_fail_driver_ok_with_needs_reset() {
    activation_fails(6, 0x1000); // not a power of two
    activation_fails(32, 0x1000); // above the maximum
    activation_fails(0, 0x1000);
    activation_fails(0x1_0008, 0x1000); // wraps to 8 if truncated
    activation_fails(8, 0x1008); // misaligned descriptor table
    activation_fails(8, 0xf000); // rings outside guest memory
    activation_fails(8, u64::MAX - 0xfff); // wraps around
    activation_fails(8, 1 << 32); // high half honoured
}

#[test]
fn a_queue_not_set_ready_fails_activation() {
    let mut r = rig();
    negotiate(&mut r.t, FEAT_OFFERED);
    setup_queue(&mut r.t, 0, 8, 0x1000);
    wr(&mut r.t, STATUS, ALL_OK);
    assert_ne!(rd(&mut r.t, STATUS) & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn config_space_and_odd_accesses() {
    let mut r = rig();
    // Config writes before DRIVER are refused.
    r.t.write(CONFIG, &[9]);
    assert_eq!(r.dev.lock().unwrap().config[0], 0);
    wr(&mut r.t, STATUS, status::ACKNOWLEDGE);
    wr(&mut r.t, STATUS, status::ACKNOWLEDGE | status::DRIVER);
    r.t.write(CONFIG + 2, &[1, 2]);
    let mut b = [0u8; 4];
    r.t.read(CONFIG, &mut b);
    assert_eq!(b, [0, 0, 1, 2]);
    r.t.read(CONFIG + 0xe00, &mut b);
    assert_eq!(b, [0; 4]);
    // Odd widths, misalignment and unknown registers change nothing and read 0.
    let mut two = [0xffu8; 2];
    r.t.read(MAGIC, &mut two);
    assert_eq!(two, [0, 0]);
    r.t.write(STATUS, &[0]);
    r.t.write(STATUS + 1, &[0, 0, 0, 0]);
    wr(&mut r.t, 0xc0, 5);
    assert_eq!(rd(&mut r.t, 0xc0), 0);
    assert_eq!(rd(&mut r.t, STATUS), status::ACKNOWLEDGE | status::DRIVER);
    assert!(r.t.complaints.bad_access.count() >= 3);
    assert!(r.t.complaints.unknown_register.count() >= 2);
}

#[test]
fn memory_is_the_guests() {
    // The activation context carries the same guest memory the transport was given.
    let mut r = rig();
    r.mem.write_obj(0xabcdu32, GuestAddress(0x8000)).unwrap();
    negotiate(&mut r.t, FEAT_OFFERED);
    setup_queue(&mut r.t, 0, 8, 0x1000);
    setup_queue(&mut r.t, 1, 16, 0x4000);
    wr(&mut r.t, STATUS, ALL_OK);
    let d = r.dev.lock().unwrap();
    let v: u32 = d
        .ctx
        .as_ref()
        .unwrap()
        .mem
        .read_obj(GuestAddress(0x8000))
        .unwrap();
    assert_eq!(v, 0xabcd);
}
