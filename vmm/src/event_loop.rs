//! The VM's one event-loop thread: runs the event manager (device
//! subscribers) until the VM stops. The stop eventfd is registered so that the
//! loop wakes when the VM stops.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};

use crate::devices::EventMgr;
use crate::exit::{ExitNotifier, StopState, VmExit};

struct StopWatch(Arc<StopState>);

impl MutEventSubscriber for StopWatch {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // Nothing to do: the loop checks `is_stopping` after every round.
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.0.stop_evt, EventSet::IN)) {
            crate::log_error!("event loop: cannot watch the stop event: {e:?}");
        }
    }
}

/// Starts the event-loop thread.
pub fn start(mut em: EventMgr, exits: ExitNotifier) -> std::io::Result<JoinHandle<()>> {
    let state = exits.state().clone();
    em.add_subscriber(Arc::new(Mutex::new(StopWatch(state.clone()))));
    std::thread::Builder::new()
        .name("events".into())
        .stack_size(512 * 1024)
        .spawn(move || {
            crate::sandbox::enter_or_exit(crate::sandbox::ThreadKind::EventLoop);
            while !state.is_stopping() {
                if let Err(e) = em.run() {
                    exits.notify(VmExit::Error(format!("event loop failed: {e:?}")));
                    break;
                }
            }
        })
}
