//! The fleet client's own tokio runtime, and the blocking calls into it.
//! The store is synchronous (control-plane handlers run on blocking threads,
//! the invoke path resolves records inline), while async-nats is async and
//! bound to the runtime it connected on: so the client lives on a small
//! runtime of its own and [`Bridge::call`] runs a future there and waits
//! for it, bounded by a timeout, without ever nesting `block_on`.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use super::FleetError;

/// A runtime for the NATS client and a way to call into it from sync code.
pub struct Bridge {
    /// Some until drop (shut down in the background: dropping a runtime
    /// inside emberd's async code would block there).
    rt: Option<Runtime>,
    handle: Handle,
    timeout: Duration,
}

impl Bridge {
    pub fn new(timeout: Duration) -> Result<Self, FleetError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ember-fleet")
            .enable_all()
            .build()
            .map_err(FleetError::Runtime)?;
        let handle = rt.handle().clone();
        Ok(Self {
            rt: Some(rt),
            handle,
            timeout,
        })
    }

    /// Runs `fut` on the fleet runtime and waits for its result (at most the
    /// bridge's timeout). On a tokio worker thread the wait is announced
    /// with `block_in_place`, so that worker's other tasks move elsewhere.
    pub fn call<T, F>(&self, fut: F) -> Result<T, FleetError>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let task = self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let wait = || rx.recv_timeout(self.timeout);
        let got = match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        got.map_err(|_| {
            task.abort();
            FleetError::TimedOut(self.timeout)
        })
    }

    /// Spawns a background task on the fleet runtime.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(fut);
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
