//! The VM's one event-loop thread: runs the event manager (device
//! subscribers) until the VM stops, then drains: it keeps serving device
//! events for a bounded time until no device holds guest data still bound
//! for a host peer, so a guest that exits right after sending loses nothing
//! the VMM accepted. The stop eventfd is registered so that the loop wakes
//! when the VM stops.

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_devices::virtio::VirtioDevice;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};

use crate::devices::EventMgr;
use crate::exit::{ExitNotifier, StopState, VmExit};

/// Longest the final drain may take: a host peer that does not read gets
/// this long, then its bytes are dropped with the VM. A reading peer ends
/// the drain as soon as the buffers are empty, so this only delays the exit
/// of a VM whose peer stopped reading.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// One wait of the drain loop, in milliseconds.
const DRAIN_POLL_MS: i32 = 10;

struct StopWatch(Arc<StopState>);

impl MutEventSubscriber for StopWatch {
    fn process(&mut self, _events: Events, ops: &mut EventOps) {
        // The loop checks `is_stopping` after every round. The eventfd stays
        // readable (others poll it too, so it is not read here): stop
        // watching it, or the final drain would never see a quiet round.
        let _ = ops.remove(Events::new(&self.0.stop_evt, EventSet::IN));
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.0.stop_evt, EventSet::IN)) {
            crate::log_error!("event loop: cannot watch the stop event: {e:?}");
        }
    }
}

/// Whether any device still holds guest data for a host peer. A device
/// whose lock is poisoned has nothing worth waiting for.
fn undelivered(devices: &[Arc<Mutex<dyn VirtioDevice>>]) -> bool {
    devices.iter().any(|d| {
        d.lock()
            .map(|d| d.has_undelivered_output())
            .unwrap_or(false)
    })
}

/// Serves events after the stop until the devices are drained and quiet, or
/// [`DRAIN_GRACE`] has passed.
fn drain(em: &mut EventMgr, devices: &[Arc<Mutex<dyn VirtioDevice>>]) {
    let deadline = Instant::now() + DRAIN_GRACE;
    loop {
        // Queue kicks the guest made just before it stopped are still
        // pending on their ioeventfds: serve them without waiting. Wait
        // (briefly) only while a host peer still has bytes coming.
        let pending = undelivered(devices);
        let wait = if pending { DRAIN_POLL_MS } else { 0 };
        let served = em.run_with_timeout(wait).unwrap_or(0);
        if served == 0 && !pending {
            return;
        }
        if Instant::now() >= deadline {
            if undelivered(devices) {
                crate::log_warn!(
                    "VM stopped with guest data a host peer did not read within {DRAIN_GRACE:?}; dropped"
                );
            }
            return;
        }
    }
}

/// Starts the event-loop thread. The receiver yields once the thread has
/// finished its final drain.
pub fn start(
    mut em: EventMgr,
    exits: ExitNotifier,
    devices: Vec<Arc<Mutex<dyn VirtioDevice>>>,
) -> std::io::Result<Receiver<()>> {
    let state = exits.state().clone();
    em.add_subscriber(Arc::new(Mutex::new(StopWatch(state.clone()))));
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("events".into())
        .stack_size(512 * 1024)
        .spawn(move || {
            crate::sandbox::enter_or_exit(crate::sandbox::ThreadKind::EventLoop);
            while !state.is_stopping() {
                if let Err(e) = em.run() {
                    exits.notify(VmExit::Error(format!("event loop failed: {e:?}")));
                    let _ = done_tx.send(());
                    return;
                }
            }
            drain(&mut em, &devices);
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}
