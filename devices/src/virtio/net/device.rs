//! The virtio-net `VirtioDevice` and its event-loop glue.
//!
//! Fds registered with the event manager: in `init`, the activate eventfd,
//! the TAP (edge-triggered `EPOLLIN`: the device reads until `EAGAIN`, or
//! keeps the frame when the guest has no buffer and resumes on the rx queue
//! notification) and both limiters' timer fds; from activation until reset,
//! the rx and tx queue notify eventfds. Work per event is bounded; a queue
//! with work left re-signals its own notify eventfd so other devices get
//! their turn.

use std::os::fd::{AsRawFd, RawFd};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC,
};
use virtio_queue::QueueT;

use super::handler::{process_rx, process_tx, NetMetrics, NetRun, RxPending};
use super::tap::{NetBackend, Tap, TapError};
use super::{NetConfig, QUEUE_SIZE};
use crate::rate_limiter::{RateLimiter, RateLimiterError};
use crate::virtio::block::activation::Activation;
use crate::virtio::block::device::read_config_bytes;
use crate::virtio::log_limit::LogLimiter;
use crate::virtio::{
    device_type, ActivateError, ActivateEvent, ActivationContext, VirtioDevice, VIRTIO_F_VERSION_1,
};
use crate::warn_limited;

/// Errors building a net device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TAP could not be opened.
    #[error("network interface {id}")]
    Tap {
        id: String,
        #[source]
        source: TapError,
    },
    /// A rate limiter's timer could not be created.
    #[error("network rate limiter")]
    RateLimiter(#[source] RateLimiterError),
    /// The activate eventfd could not be created.
    #[error("network activate eventfd")]
    EventFd(#[source] std::io::Error),
}

const RX: usize = 0;
const TX: usize = 1;
const EV_ACTIVATE: u32 = 0;
const EV_RXQ: u32 = 1;
const EV_TXQ: u32 = 2;
const EV_TAP: u32 = 3;
const EV_RX_TIMER: u32 = 4;
const EV_TX_TIMER: u32 = 5;
/// Frames handled per queue per event before yielding to the event loop.
const BUDGET: u32 = QUEUE_SIZE as u32;

/// Offload features that need the TAP's help, with the `TUN_F_*` flag each
/// needs when the guest accepts it (receive side).
const GUEST_OFFLOADS: [(u32, libc::c_uint); 3] = [
    (VIRTIO_NET_F_GUEST_CSUM, libc::TUN_F_CSUM),
    (VIRTIO_NET_F_GUEST_TSO4, libc::TUN_F_TSO4),
    (VIRTIO_NET_F_GUEST_TSO6, libc::TUN_F_TSO6),
];

/// A virtio-net device.
pub struct Net {
    id: String,
    backend: Box<dyn NetBackend>,
    backend_fd: RawFd,
    mac: Option<[u8; 6]>,
    avail_features: u64,
    acked_features: u64,
    rx_limiter: RateLimiter,
    tx_limiter: RateLimiter,
    rx_pending: RxPending,
    tx_buf: Vec<u8>,
    activate_evt: ActivateEvent,
    activation: Activation,
    broken: bool,
    metrics: NetMetrics,
    complaints: LogLimiter,
}

impl Net {
    /// Opens the TAP named in `cfg` and probes its offloads.
    pub fn new(cfg: &NetConfig) -> Result<Self, NetError> {
        let tap = Tap::open(&cfg.host_dev_name).map_err(|source| NetError::Tap {
            id: cfg.iface_id.clone(),
            source,
        })?;
        let all = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        let offloads = tap.set_offload(all).is_ok();
        // Until the guest accepts offloads, the TAP must hand us plain frames.
        let _ = tap.set_offload(0);
        let fd = tap.as_raw_fd();
        Self::build(cfg, Box::new(tap), fd, offloads)
    }

    /// A device on any backend whose readiness `fd` signals (tests).
    pub fn with_backend(
        cfg: &NetConfig,
        backend: Box<dyn NetBackend>,
        fd: RawFd,
    ) -> Result<Self, NetError> {
        Self::build(cfg, backend, fd, false)
    }

    fn build(
        cfg: &NetConfig,
        backend: Box<dyn NetBackend>,
        fd: RawFd,
        offloads: bool,
    ) -> Result<Self, NetError> {
        let mut avail_features = VIRTIO_F_VERSION_1;
        if cfg.guest_mac.is_some() {
            avail_features |= 1 << VIRTIO_NET_F_MAC;
        }
        if offloads {
            for f in [
                VIRTIO_NET_F_CSUM,
                VIRTIO_NET_F_HOST_TSO4,
                VIRTIO_NET_F_HOST_TSO6,
            ] {
                avail_features |= 1 << f;
            }
            for (f, _) in GUEST_OFFLOADS {
                avail_features |= 1 << f;
            }
        }
        Ok(Net {
            id: cfg.iface_id.clone(),
            backend,
            backend_fd: fd,
            mac: cfg.guest_mac,
            avail_features,
            acked_features: 0,
            rx_limiter: RateLimiter::new(&cfg.rx_rate_limiter).map_err(NetError::RateLimiter)?,
            tx_limiter: RateLimiter::new(&cfg.tx_rate_limiter).map_err(NetError::RateLimiter)?,
            rx_pending: RxPending::new(),
            tx_buf: Vec::with_capacity(super::handler::MAX_FRAME),
            activate_evt: ActivateEvent::new().map_err(NetError::EventFd)?,
            activation: Activation::default(),
            broken: false,
            metrics: NetMetrics::default(),
            complaints: LogLimiter::new(),
        })
    }

    /// Counters so far.
    pub fn metrics(&self) -> NetMetrics {
        self.metrics
    }

    /// Handles the outcome of one pass over queue `idx`.
    fn finish(&mut self, idx: usize, run: NetRun) {
        if let Some(e) = &run.first_error {
            warn_limited!(self.complaints, "virtio-net {}: {e}", self.id);
        }
        if run.broken {
            warn_limited!(
                self.complaints,
                "virtio-net {}: used ring not writable; device stopped",
                self.id
            );
            self.broken = true;
        }
        let Some(ctx) = self.activation.ctx_mut() else {
            return;
        };
        let Some(q) = ctx.queues.get_mut(idx) else {
            return;
        };
        if run.completed > 0 && q.queue.needs_notification(&ctx.mem).unwrap_or(true) {
            ctx.interrupt.signal_used_queue(idx as u16);
        }
        if run.more {
            // Come back after the other fds had their turn.
            let _ = q.notify.write(1);
        }
    }

    fn run_tx(&mut self) {
        if self.broken || self.tx_limiter.is_blocked() {
            return;
        }
        let Some(ctx) = self.activation.ctx_mut() else {
            return;
        };
        let Some(q) = ctx.queues.get_mut(TX) else {
            return;
        };
        let run = process_tx(
            &mut q.queue,
            &ctx.mem,
            self.backend.as_mut(),
            &mut self.tx_limiter,
            &mut self.tx_buf,
            &mut self.metrics,
            BUDGET,
        );
        self.finish(TX, run);
    }

    fn run_rx(&mut self) {
        if self.broken || self.rx_limiter.is_blocked() {
            return;
        }
        let Some(ctx) = self.activation.ctx_mut() else {
            return;
        };
        let Some(q) = ctx.queues.get_mut(RX) else {
            return;
        };
        let run = process_rx(
            &mut q.queue,
            &ctx.mem,
            self.backend.as_mut(),
            &mut self.rx_limiter,
            &mut self.rx_pending,
            &mut self.metrics,
            BUDGET,
        );
        self.finish(RX, run);
    }

    fn sync_registration(&mut self, ops: &mut EventOps) {
        let (fresh, err) = self.activation.sync(ops, &[EV_RXQ, EV_TXQ]);
        if let Some(e) = err {
            warn_limited!(
                self.complaints,
                "virtio-net {}: cannot register queue fd: {e}",
                self.id
            );
        }
        if !fresh {
            return;
        }
        // Offer the TAP only the offloads the guest accepted.
        let mut tun_flags = 0;
        for (f, flag) in GUEST_OFFLOADS {
            if self.acked_features & (1 << f) != 0 {
                tun_flags |= flag;
            }
        }
        if let Err(e) = self.backend.set_offload(tun_flags) {
            warn_limited!(self.complaints, "virtio-net {}: {e}", self.id);
        }
        // Work that arrived before the fds were watched.
        self.run_tx();
        self.run_rx();
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.mac.unwrap_or([0; 6]), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The MAC is set by the host; VIRTIO_NET_F_CTRL_MAC_ADDR is not offered.
    }

    fn activate(&mut self, ctx: ActivationContext) -> Result<(), ActivateError> {
        self.activation.activate(ctx, 2, &self.activate_evt)?;
        self.broken = false;
        Ok(())
    }

    fn reset(&mut self) {
        let signalled = self.activation.reset(&self.activate_evt);
        self.rx_limiter.force_unblock();
        self.tx_limiter.force_unblock();
        self.rx_pending.clear();
        self.acked_features = 0;
        self.broken = false;
        if let Err(e) = signalled {
            warn_limited!(
                self.complaints,
                "virtio-net {}: cannot signal reset: {e}",
                self.id
            );
        }
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        for ev in [
            Events::with_data(self.activate_evt.fd(), EV_ACTIVATE, EventSet::IN),
            Events::with_data_raw(
                self.backend_fd,
                EV_TAP,
                EventSet::IN | EventSet::EDGE_TRIGGERED,
            ),
            Events::with_data_raw(self.rx_limiter.timer_fd(), EV_RX_TIMER, EventSet::IN),
            Events::with_data_raw(self.tx_limiter.timer_fd(), EV_TX_TIMER, EventSet::IN),
        ] {
            if let Err(e) = ops.add(ev) {
                warn_limited!(
                    self.complaints,
                    "virtio-net {}: cannot register fd: {e}",
                    self.id
                );
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let drain = |net: &Net, idx: usize| {
            if let Some(q) = net.activation.ctx().and_then(|c| c.queues.get(idx)) {
                // EAGAIN (no pending notification) is fine.
                let _ = q.notify.read();
            }
        };
        match events.data() {
            EV_ACTIVATE => {
                self.activate_evt.drain();
                self.sync_registration(ops);
            }
            EV_RXQ => {
                drain(self, RX);
                self.run_rx();
            }
            EV_TXQ => {
                drain(self, TX);
                self.run_tx();
            }
            EV_TAP => self.run_rx(),
            EV_RX_TIMER if self.rx_limiter.on_timer() => self.run_rx(),
            EV_TX_TIMER if self.tx_limiter.on_timer() => self.run_tx(),
            _ => {}
        }
    }
}
