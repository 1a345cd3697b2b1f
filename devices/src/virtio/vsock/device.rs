//! The virtio-vsock device: three queues (rx 0, tx 1, event 2), config space
//! = the guest CID (le64), and the event-loop glue. On activation it
//! registers the queue notify eventfds and the backend's fds (through its
//! activate eventfd, on the event-loop thread); TX chains are parsed by
//! `packet.rs` and handed to the backend; backend packets fill RX chains.
//! A ring the guest broke (avail index ahead by more than the queue size)
//! stops the device with DEVICE_NEEDS_RESET. Snapshots keep the CID and
//! acked features (`VsockState`); a restored device, once active again,
//! posts VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (as soon as
//! the driver has a buffer there): no host connection survives a snapshot.

use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::packet::{collect, read_tx, write_rx, MAX_PKT_LEN};
use super::{
    check_cid, VsockBackend, VsockError, EVENT_QUEUE, HDR_LEN, HOST_CID, QUEUE_SIZE, RX_QUEUE,
    TX_QUEUE,
};
use crate::virtio::log_limit::LogLimiter;
use crate::virtio::state::{DeviceState, RingPosition, StateError, VsockState};
use crate::virtio::{
    device_type, ActivateError, ActivateEvent, ActivationContext, VirtioDevice, VirtioInterrupt,
    VIRTIO_F_VERSION_1,
};
use crate::warn_limited;

/// Most TX chains one pass takes (the net device's approach): a guest that
/// keeps its TX ring full cannot keep the event loop to itself. A pass that
/// stops at the budget re-arms the queue's eventfd, so the rest is taken on
/// the next turn, after every other ready fd had its own.
pub(crate) const TX_BUDGET: usize = 32;
/// `struct virtio_vsock_event { le32 id; }` id: every connection is gone
/// (virtio 1.x §5.10.6.7).
pub const EVENT_TRANSPORT_RESET: u32 = 0;

struct Active {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    evts: Vec<EventFd>,
    interrupt: Arc<dyn VirtioInterrupt>,
    broken: bool,
}

#[derive(Default)]
struct Complaints {
    bad_packet: LogLimiter,
    bad_ring: LogLimiter,
    spoofed: LogLimiter,
}

/// A virtio-vsock device in front of backend `B`.
pub struct Vsock<B: VsockBackend> {
    cid: u64,
    acked: u64,
    activate_evt: ActivateEvent,
    active: Option<Active>,
    queues_registered: bool,
    retired: Vec<EventFd>,
    reset_pending: bool,
    /// Restored from a snapshot: tell the driver its connections are gone.
    transport_reset_pending: bool,
    backend: B,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    descs: Vec<(GuestAddress, usize)>,
    complaints: Complaints,
}

/// False when the driver published more buffers than the queue holds: the
/// ring is corrupt and popping from it would only log errors forever.
fn ring_sane(q: &Queue, mem: &GuestMemoryMmap) -> bool {
    match q.avail_idx(mem, Ordering::Acquire) {
        Ok(avail) => (avail - Wrapping(q.next_avail())).0 <= q.size(),
        Err(_) => false,
    }
}

impl<B: VsockBackend> Vsock<B> {
    /// A vsock device for guest `cid` with `backend` as its host side.
    pub fn new(cid: u64, backend: B) -> Result<Self, VsockError> {
        check_cid(cid)?;
        Ok(Vsock {
            cid,
            acked: 0,
            activate_evt: ActivateEvent::new().map_err(VsockError::EventFd)?,
            active: None,
            queues_registered: false,
            retired: Vec::new(),
            reset_pending: false,
            transport_reset_pending: false,
            backend,
            rx_buf: vec![0; MAX_PKT_LEN],
            tx_buf: Vec::with_capacity(MAX_PKT_LEN),
            descs: Vec::new(),
            complaints: Complaints::default(),
        })
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// The backend (tests inspect it).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn mark_broken(&mut self, what: &str) {
        warn_limited!(
            self.complaints.bad_ring,
            "vsock: guest broke the {what} ring; device needs reset"
        );
        if let Some(a) = self.active.as_mut() {
            a.broken = true;
            a.interrupt.set_needs_reset();
        }
    }

    /// Takes every TX chain the guest published and gives it to the backend.
    fn process_tx(&mut self, ops: &mut EventOps) {
        let Some(a) = self.active.as_mut().filter(|a| !a.broken) else {
            return;
        };
        let mut used = false;
        let mut broken = false;
        let mut taken = 0;
        let mut more = false;
        'pass: loop {
            if !ring_sane(&a.queues[TX_QUEUE], &a.mem) {
                broken = true;
                break;
            }
            let _ = a.queues[TX_QUEUE].disable_notification(&a.mem);
            while let Some(chain) = a.queues[TX_QUEUE].pop_descriptor_chain(&a.mem) {
                if taken >= TX_BUDGET {
                    a.queues[TX_QUEUE].go_to_previous_position();
                    more = true;
                    break 'pass;
                }
                taken += 1;
                let head = chain.head_index();
                let parsed = collect(chain, false, &mut self.descs)
                    .and_then(|_| read_tx(&a.mem, &self.descs, &mut self.tx_buf));
                match parsed {
                    Ok(h) if h.src_cid == self.cid && h.dst_cid == HOST_CID => {
                        self.backend.send_pkt(&h, &self.tx_buf, ops)
                    }
                    Ok(h) => warn_limited!(
                        self.complaints.spoofed,
                        "vsock: dropped packet {} -> {} (guest is {})",
                        h.src_cid,
                        h.dst_cid,
                        self.cid
                    ),
                    Err(e) => warn_limited!(self.complaints.bad_packet, "vsock: bad tx chain: {e}"),
                }
                if a.queues[TX_QUEUE].add_used(&a.mem, head, 0).is_err() {
                    broken = true;
                }
                used = true;
            }
            match a.queues[TX_QUEUE].enable_notification(&a.mem) {
                Ok(true) => continue,
                _ => break,
            }
        }
        if used
            && a.queues[TX_QUEUE]
                .needs_notification(&a.mem)
                .unwrap_or(true)
        {
            a.interrupt.signal_used_queue(TX_QUEUE as u16);
        }
        if more {
            // Come back after the other fds had their turn.
            let _ = a.evts[TX_QUEUE].write(1);
        }
        if broken {
            self.mark_broken("tx");
        }
    }

    /// Fills RX chains with what the backend has for the guest.
    fn process_rx(&mut self, ops: &mut EventOps) {
        let Some(a) = self.active.as_mut().filter(|a| !a.broken) else {
            return;
        };
        let mut used = false;
        let mut broken = false;
        while self.backend.has_pending_rx() {
            if !ring_sane(&a.queues[RX_QUEUE], &a.mem) {
                broken = true;
                break;
            }
            let Some(chain) = a.queues[RX_QUEUE].pop_descriptor_chain(&a.mem) else {
                // Out of buffers: ask the driver to notify us when it adds some.
                match a.queues[RX_QUEUE].enable_notification(&a.mem) {
                    Ok(true) => continue,
                    _ => break,
                }
            };
            let _ = a.queues[RX_QUEUE].disable_notification(&a.mem);
            let head = chain.head_index();
            let written = match collect(chain, true, &mut self.descs) {
                Ok(cap) if cap >= HDR_LEN => {
                    let max = (cap - HDR_LEN).min(MAX_PKT_LEN);
                    let Some((hdr, n)) = self.backend.recv_pkt(&mut self.rx_buf[..max], ops) else {
                        a.queues[RX_QUEUE].go_to_previous_position();
                        break;
                    };
                    let n = n.min(max);
                    log::trace!(
                        "vsock: host -> guest op {} port {} -> {} len {n}",
                        hdr.op,
                        hdr.src_port,
                        hdr.dst_port
                    );
                    write_rx(&a.mem, &self.descs, &hdr, &self.rx_buf[..n]).unwrap_or_else(|e| {
                        warn_limited!(self.complaints.bad_packet, "vsock: bad rx chain: {e}");
                        0
                    })
                }
                Ok(cap) => {
                    warn_limited!(
                        self.complaints.bad_packet,
                        "vsock: rx buffer of {cap} bytes < header"
                    );
                    0
                }
                Err(e) => {
                    warn_limited!(self.complaints.bad_packet, "vsock: bad rx chain: {e}");
                    0
                }
            };
            if a.queues[RX_QUEUE].add_used(&a.mem, head, written).is_err() {
                broken = true;
                break;
            }
            used = true;
        }
        if used
            && a.queues[RX_QUEUE]
                .needs_notification(&a.mem)
                .unwrap_or(true)
        {
            a.interrupt.signal_used_queue(RX_QUEUE as u16);
        }
        if broken {
            self.mark_broken("rx");
        }
    }

    /// Posts VIRTIO_VSOCK_EVENT_TRANSPORT_RESET in the driver's next
    /// event buffer; stays pending while the driver has none posted.
    fn send_transport_reset(&mut self) {
        let Some(a) = self.active.as_mut().filter(|a| !a.broken) else {
            return;
        };
        if !self.transport_reset_pending {
            return;
        }
        if !ring_sane(&a.queues[EVENT_QUEUE], &a.mem) {
            self.mark_broken("event");
            return;
        }
        let Some(chain) = a.queues[EVENT_QUEUE].pop_descriptor_chain(&a.mem) else {
            return;
        };
        self.transport_reset_pending = false;
        let head = chain.head_index();
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        let written = match collect(chain, true, &mut self.descs) {
            Ok(_) => match self.descs.first() {
                Some(&(addr, len)) if len >= event.len() => match a.mem.write_slice(&event, addr) {
                    Ok(()) => event.len() as u32,
                    Err(_) => 0,
                },
                _ => 0,
            },
            Err(_) => 0,
        };
        if written == 0 {
            warn_limited!(
                self.complaints.bad_packet,
                "vsock: event buffer cannot hold the transport reset event"
            );
        }
        if a.queues[EVENT_QUEUE]
            .add_used(&a.mem, head, written)
            .is_err()
        {
            self.mark_broken("event");
            return;
        }
        a.interrupt.signal_used_queue(EVENT_QUEUE as u16);
    }

    /// On the event-loop thread: apply a reset and/or an activation.
    fn handle_activate(&mut self, ops: &mut EventOps) {
        self.activate_evt.drain();
        if self.reset_pending {
            self.reset_pending = false;
            for evt in self.retired.drain(..) {
                // Never registered if the reset came before the loop saw the activation.
                let _ = ops.remove(Events::empty(&evt));
            }
            self.backend.reset(ops);
        }
        let Some(a) = self.active.as_ref() else {
            return;
        };
        if self.queues_registered {
            return;
        }
        for (i, evt) in a.evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                log::error!("vsock: cannot register queue {i} eventfd: {e:?}");
            }
        }
        self.queues_registered = true;
        self.backend.activate(ops);
        self.send_transport_reset();
        self.process_tx(ops);
        self.process_rx(ops);
    }
}

impl<B: VsockBackend> VirtioDevice for Vsock<B> {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        let cfg = self.cid.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok());
            *b = at.and_then(|o| cfg.get(o)).copied().unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The CID is read-only.
    }

    fn has_undelivered_output(&self) -> bool {
        self.backend.undelivered_bytes() > 0
    }

    fn activate(&mut self, ctx: ActivationContext) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if ctx.queues.len() != 3 {
            return Err(ActivateError::QueueCount {
                expected: 3,
                got: ctx.queues.len(),
            });
        }
        let (queues, evts) = ctx.queues.into_iter().map(|q| (q.queue, q.notify)).unzip();
        self.active = Some(Active {
            mem: ctx.mem,
            queues,
            evts,
            interrupt: ctx.interrupt,
            broken: false,
        });
        self.activate_evt.signal().map_err(ActivateError::Signal)
    }

    fn save_state(&self) -> Option<(DeviceState, Vec<RingPosition>)> {
        let positions = self.active.as_ref().map_or_else(Vec::new, |a| {
            a.queues
                .iter()
                .map(|q| RingPosition {
                    next_avail: q.next_avail(),
                    next_used: q.next_used(),
                })
                .collect()
        });
        let state = VsockState {
            guest_cid: self.cid,
            acked_features: self.acked,
        };
        Some((DeviceState::Vsock(state), positions))
    }

    fn restore_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Vsock(v) = state else {
            return Err(StateError::DeviceKind);
        };
        if v.guest_cid != self.cid {
            return Err(StateError::Cid {
                saved: v.guest_cid,
                actual: self.cid,
            });
        }
        if v.acked_features & !self.avail_features() != 0 {
            return Err(StateError::Features {
                acked: v.acked_features,
                offered: self.avail_features(),
            });
        }
        self.acked = v.acked_features;
        self.transport_reset_pending = true;
        Ok(())
    }

    fn reset(&mut self) {
        self.transport_reset_pending = false;
        if let Some(a) = self.active.take() {
            if self.queues_registered {
                self.retired.extend(a.evts);
            }
        }
        self.queues_registered = false;
        self.reset_pending = true;
        if let Err(e) = self.activate_evt.signal() {
            log::error!("vsock: cannot signal reset to the event loop: {e}");
        }
    }
}

impl<B: VsockBackend> MutEventSubscriber for Vsock<B> {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.activate_evt.fd(), EventSet::IN)) {
            log::error!("vsock: cannot register the activate eventfd: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.activate_evt.fd().as_raw_fd() {
            self.handle_activate(ops);
            return;
        }
        let queue = self
            .active
            .as_ref()
            .and_then(|a| a.evts.iter().position(|e| e.as_raw_fd() == fd));
        if let Some(i) = queue {
            if let Some(a) = self.active.as_ref() {
                // EAGAIN: a notification already consumed; nothing to do.
                let _ = a.evts[i].read();
            }
            match i {
                TX_QUEUE => {
                    self.process_tx(ops);
                    self.process_rx(ops);
                }
                RX_QUEUE => self.process_rx(ops),
                EVENT_QUEUE => self.send_transport_reset(),
                _ => {}
            }
            return;
        }
        if self.backend.process(&events, ops) {
            self.process_rx(ops);
            // Freed socket space may let the backend take more guest TX.
            self.process_tx(ops);
            return;
        }
        // Not ours (a retired fd racing its removal): stop watching it.
        let _ = ops.remove(events);
    }
}
