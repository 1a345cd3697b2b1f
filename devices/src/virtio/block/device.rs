//! The virtio-block `VirtioDevice` and its event-loop glue.
//!
//! Fds registered with the event manager: the activate eventfd and the rate
//! limiter's timer fd (in `init`, for the device's lifetime), and the queue's
//! notify eventfd (from activation until reset). The queue is processed on
//! the event-loop thread only; vCPU threads just signal eventfds.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO};
use virtio_queue::QueueT;

use super::activation::Activation;
use super::handler::{process_queue, BlockMetrics};
use super::{BlockConfig, CacheType, Disk, DiskError, QUEUE_SIZE};
use crate::rate_limiter::{RateLimiter, RateLimiterError};
use crate::virtio::log_limit::LogLimiter;
use crate::virtio::{
    device_type, ActivateError, ActivateEvent, ActivationContext, ActiveQueue, VirtioDevice,
    VIRTIO_F_VERSION_1,
};
use crate::warn_limited;

/// Errors building a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The backing file could not be opened.
    #[error("drive {id}")]
    Disk {
        id: String,
        #[source]
        source: DiskError,
    },
    /// The rate limiter's timer could not be created.
    #[error("drive rate limiter")]
    RateLimiter(#[source] RateLimiterError),
    /// The activate eventfd could not be created.
    #[error("drive activate eventfd")]
    EventFd(#[source] std::io::Error),
}

const EV_ACTIVATE: u32 = 0;
const EV_QUEUE: u32 = 1;
const EV_TIMER: u32 = 2;

/// A virtio-block device.
pub struct Block {
    disk: Disk,
    limiter: RateLimiter,
    avail_features: u64,
    acked_features: u64,
    activate_evt: ActivateEvent,
    activation: Activation,
    broken: bool,
    metrics: BlockMetrics,
    complaints: LogLimiter,
    id: String,
}

impl Block {
    /// Opens the drive described by `cfg`.
    pub fn new(cfg: &BlockConfig) -> Result<Self, BlockError> {
        let disk = Disk::open(&cfg.path, cfg.read_only, cfg.cache_type, &cfg.drive_id).map_err(
            |source| BlockError::Disk {
                id: cfg.drive_id.clone(),
                source,
            },
        )?;
        let limiter = RateLimiter::new(&cfg.rate_limiter).map_err(BlockError::RateLimiter)?;
        let mut avail_features = VIRTIO_F_VERSION_1;
        if cfg.cache_type == CacheType::Writeback {
            avail_features |= 1 << VIRTIO_BLK_F_FLUSH;
        }
        if cfg.read_only {
            avail_features |= 1 << VIRTIO_BLK_F_RO;
        }
        Ok(Block {
            disk,
            limiter,
            avail_features,
            acked_features: 0,
            activate_evt: ActivateEvent::new().map_err(BlockError::EventFd)?,
            activation: Activation::default(),
            broken: false,
            metrics: BlockMetrics::default(),
            complaints: LogLimiter::new(),
            id: cfg.drive_id.clone(),
        })
    }

    /// Counters so far.
    pub fn metrics(&self) -> BlockMetrics {
        self.metrics
    }

    /// The 8-byte config space: capacity in sectors.
    fn config_space(&self) -> [u8; 8] {
        self.disk.geometry().sectors.to_le_bytes()
    }

    fn run_queue(&mut self) {
        if self.broken {
            return;
        }
        let Some(ctx) = self.activation.ctx_mut() else {
            return;
        };
        let Some(q) = ctx.queues.first_mut() else {
            return;
        };
        let run = process_queue(
            &mut q.queue,
            &ctx.mem,
            &mut self.disk,
            &mut self.limiter,
            &mut self.metrics,
        );
        if let Some(e) = &run.first_error {
            warn_limited!(
                self.complaints,
                "virtio-block {}: request refused: {e}",
                self.id
            );
        }
        if run.broken {
            warn_limited!(
                self.complaints,
                "virtio-block {}: used ring not writable; queue stopped",
                self.id
            );
            self.broken = true;
        }
        // Without EVENT_IDX this honours the driver's NO_INTERRUPT flag.
        if run.completed > 0 && q.queue.needs_notification(&ctx.mem).unwrap_or(true) {
            ctx.interrupt.signal_used_queue(0);
        }
    }

    fn sync_registration(&mut self, ops: &mut EventOps) {
        let (fresh, err) = self.activation.sync(ops, &[EV_QUEUE]);
        if let Some(e) = err {
            warn_limited!(
                self.complaints,
                "virtio-block {}: cannot register queue fd: {e}",
                self.id
            );
        }
        if fresh {
            // Requests queued before the fd was watched.
            self.run_queue();
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Capacity is read-only; virtio-blk has no driver-writable fields we offer.
    }

    fn activate(&mut self, ctx: ActivationContext) -> Result<(), ActivateError> {
        self.activation.activate(ctx, 1, &self.activate_evt)?;
        self.broken = false;
        Ok(())
    }

    fn reset(&mut self) {
        let signalled = self.activation.reset(&self.activate_evt);
        self.limiter.force_unblock();
        self.acked_features = 0;
        self.broken = false;
        if let Err(e) = signalled {
            warn_limited!(
                self.complaints,
                "virtio-block {}: cannot signal reset: {e}",
                self.id
            );
        }
    }
}

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        let timer = self.limiter.timer_fd();
        for ev in [
            Events::with_data(self.activate_evt.fd(), EV_ACTIVATE, EventSet::IN),
            Events::with_data_raw(timer, EV_TIMER, EventSet::IN),
        ] {
            if let Err(e) = ops.add(ev) {
                warn_limited!(
                    self.complaints,
                    "virtio-block {}: cannot register fd: {e}",
                    self.id
                );
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            EV_ACTIVATE => {
                self.activate_evt.drain();
                self.sync_registration(ops);
            }
            EV_QUEUE => {
                if let Some(q) = self.activation.ctx().and_then(|c| c.queues.first()) {
                    drain_notify(q);
                }
                if !self.limiter.is_blocked() {
                    self.run_queue();
                }
            }
            EV_TIMER if self.limiter.on_timer() => self.run_queue(),
            _ => {}
        }
    }
}

/// Copies config-space bytes at `offset` into `data`; bytes past the end read
/// as 0 (virtio-mmio leaves them undefined; zero is the safe answer).
pub(crate) fn read_config_bytes(cfg: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        let at = offset
            .checked_add(i as u64)
            .and_then(|a| usize::try_from(a).ok());
        *b = at.and_then(|a| cfg.get(a)).copied().unwrap_or(0);
    }
}

/// Consumes a queue notification (EAGAIN when there was none is fine).
fn drain_notify(q: &ActiveQueue) {
    let _ = q.notify.read();
}
