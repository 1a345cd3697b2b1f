//! The virtio-rng `VirtioDevice` and its event-loop glue.
//!
//! Fds registered with the event manager: the activate eventfd and the rate
//! limiter's timer fd (in `init`, for the device's lifetime), and the queue's
//! notify eventfd (from activation until reset). The queue is processed on
//! the event-loop thread only; vCPU threads just signal eventfds.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::QueueT;

use super::handler::{host_random, process_queue, EntropyMetrics, RandomSource};
use super::{EntropyConfig, QUEUE_SIZE};
use crate::rate_limiter::{RateLimiter, RateLimiterError};
use crate::virtio::block::activation::Activation;
use crate::virtio::log_limit::LogLimiter;
use crate::virtio::state::{DeviceState, EntropyState, RingPosition, StateError};
use crate::virtio::{
    device_type, ActivateError, ActivateEvent, ActivationContext, VirtioDevice, VIRTIO_F_VERSION_1,
};
use crate::warn_limited;

/// Errors building an entropy device.
#[derive(Debug, thiserror::Error)]
pub enum EntropyError {
    /// The rate limiter's timer could not be created.
    #[error("entropy rate limiter")]
    RateLimiter(#[source] RateLimiterError),
    /// The activate eventfd could not be created.
    #[error("entropy activate eventfd")]
    EventFd(#[source] std::io::Error),
}

const EV_ACTIVATE: u32 = 0;
const EV_QUEUE: u32 = 1;
const EV_TIMER: u32 = 2;

/// A virtio-rng device.
pub struct Entropy {
    limiter: RateLimiter,
    source: RandomSource,
    acked_features: u64,
    activate_evt: ActivateEvent,
    activation: Activation,
    broken: bool,
    metrics: EntropyMetrics,
    complaints: LogLimiter,
}

impl Entropy {
    /// A device fed by the host's `getrandom(2)`.
    pub fn new(cfg: &EntropyConfig) -> Result<Self, EntropyError> {
        Self::with_source(cfg, host_random)
    }

    /// A device fed by `source` (tests: a failing one).
    pub fn with_source(cfg: &EntropyConfig, source: RandomSource) -> Result<Self, EntropyError> {
        Ok(Entropy {
            limiter: RateLimiter::new(&cfg.rate_limiter).map_err(EntropyError::RateLimiter)?,
            source,
            acked_features: 0,
            activate_evt: ActivateEvent::new().map_err(EntropyError::EventFd)?,
            activation: Activation::default(),
            broken: false,
            metrics: EntropyMetrics::default(),
            complaints: LogLimiter::new(),
        })
    }

    /// Counters so far.
    pub fn metrics(&self) -> EntropyMetrics {
        self.metrics
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
            &mut self.limiter,
            self.source,
            &mut self.metrics,
        );
        let interrupt = ctx.interrupt.clone();
        let notify = run.completed > 0 && q.queue.needs_notification(&ctx.mem).unwrap_or(true);
        if let Some(e) = &run.first_error {
            warn_limited!(self.complaints, "virtio-rng: request refused: {e}");
        }
        if run.broken {
            warn_limited!(
                self.complaints,
                "virtio-rng: used ring not writable; queue stopped"
            );
            self.broken = true;
            interrupt.set_needs_reset();
        }
        if notify {
            interrupt.signal_used_queue(0);
        }
    }

    fn sync_registration(&mut self, ops: &mut EventOps) {
        let (fresh, err) = self.activation.sync(ops, &[EV_QUEUE]);
        if let Some(e) = err {
            warn_limited!(self.complaints, "virtio-rng: cannot register queue fd: {e}");
        }
        if fresh {
            // Requests queued before the fd was watched.
            self.run_queue();
        }
    }
}

impl VirtioDevice for Entropy {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no config space.
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

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
            warn_limited!(self.complaints, "virtio-rng: cannot signal reset: {e}");
        }
    }

    fn save_state(&self) -> Option<(DeviceState, Vec<RingPosition>)> {
        let positions = self
            .activation
            .ctx()
            .map(|c| {
                c.queues
                    .iter()
                    .map(|q| RingPosition {
                        next_avail: q.queue.next_avail(),
                        next_used: q.queue.next_used(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let state = EntropyState {
            acked_features: self.acked_features,
        };
        Some((DeviceState::Entropy(state), positions))
    }

    fn restore_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Entropy(s) = state else {
            return Err(StateError::DeviceKind);
        };
        if s.acked_features & !self.avail_features() != 0 {
            return Err(StateError::Features {
                acked: s.acked_features,
                offered: self.avail_features(),
            });
        }
        self.acked_features = s.acked_features;
        Ok(())
    }
}

impl MutEventSubscriber for Entropy {
    fn init(&mut self, ops: &mut EventOps) {
        let timer = self.limiter.timer_fd();
        for ev in [
            Events::with_data(self.activate_evt.fd(), EV_ACTIVATE, EventSet::IN),
            Events::with_data_raw(timer, EV_TIMER, EventSet::IN),
        ] {
            if let Err(e) = ops.add(ev) {
                warn_limited!(self.complaints, "virtio-rng: cannot register fd: {e}");
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
                    // EAGAIN when there was no notification is fine.
                    let _ = q.notify.read();
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
