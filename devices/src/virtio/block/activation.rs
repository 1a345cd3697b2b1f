//! Activation bookkeeping shared by the block and net devices: the live
//! activation context, and the ones a reset retired whose queue eventfds the
//! event loop must still unregister. `activate`/`reset` run on a vCPU thread
//! and only signal the activate eventfd; `sync` runs on the event loop.

use event_manager::{EventOps, EventSet, Events};

use crate::virtio::{ActivateError, ActivateEvent, ActivationContext};

/// Most retired activations kept for cleanup: a guest resetting in a loop
/// faster than the event loop runs must not grow this without bound (the
/// oldest then just loses its unregistration, which costs a spurious wake-up).
const MAX_RETIRED: usize = 16;

/// The live activation (if any) and the retired ones.
#[derive(Default)]
pub(crate) struct Activation {
    live: Option<(ActivationContext, bool)>,
    retired: Vec<(ActivationContext, bool)>,
}

impl Activation {
    /// The live context.
    pub(crate) fn ctx(&self) -> Option<&ActivationContext> {
        self.live.as_ref().map(|(c, _)| c)
    }

    /// The live context, mutably.
    pub(crate) fn ctx_mut(&mut self) -> Option<&mut ActivationContext> {
        self.live.as_mut().map(|(c, _)| c)
    }

    /// Takes `ctx` if the device is idle and it has `queues` queues, then
    /// wakes the event loop.
    pub(crate) fn activate(
        &mut self,
        ctx: ActivationContext,
        queues: usize,
        evt: &ActivateEvent,
    ) -> Result<(), ActivateError> {
        if self.live.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if ctx.queues.len() != queues {
            return Err(ActivateError::QueueCount {
                expected: queues,
                got: ctx.queues.len(),
            });
        }
        self.live = Some((ctx, false));
        evt.signal().map_err(ActivateError::Signal)
    }

    /// Retires the live context and wakes the event loop to unregister it.
    pub(crate) fn reset(&mut self, evt: &ActivateEvent) -> std::io::Result<()> {
        if let Some(live) = self.live.take() {
            if self.retired.len() >= MAX_RETIRED {
                self.retired.remove(0);
            }
            self.retired.push(live);
        }
        evt.signal()
    }

    /// On the activate event: unregisters retired queue fds and registers
    /// the live ones (queue `i` with event data `data[i]`). Returns whether
    /// the live queues were just registered (the device should then look at
    /// them: the driver may have queued work before) and the first error.
    pub(crate) fn sync(
        &mut self,
        ops: &mut EventOps,
        data: &[u32],
    ) -> (bool, Option<std::io::Error>) {
        for (old, registered) in self.retired.drain(..) {
            if registered {
                for q in &old.queues {
                    // The fd may already be gone from the set; nothing to do then.
                    let _ = ops.remove(Events::empty(&q.notify));
                }
            }
        }
        let Some((ctx, registered)) = self.live.as_mut() else {
            return (false, None);
        };
        if *registered {
            return (false, None);
        }
        let mut first_error = None;
        for (q, &d) in ctx.queues.iter().zip(data) {
            if let Err(e) = ops.add(Events::with_data(&q.notify, d, EventSet::IN)) {
                first_error.get_or_insert(std::io::Error::other(e.to_string()));
            }
        }
        *registered = true;
        (true, first_error)
    }
}
