//! Asynchronous invocation (`InvocationType: Event`): the durable event
//! queue, its workers, event invoke configs and destination queues.
//!
//! An event is acknowledged (202) only after it is committed in the event
//! store ([`db`]). Workers ([`worker`]) take due events in order, accounts
//! in turn and each holding at most its share of the workers ([`sched`]), deliver
//! them through the same [`crate::invoker`] as synchronous calls (so they
//! queue behind reserved and host concurrency), and settle each outcome in
//! one commit with its attempt-log entry and destination record. The policy
//! is in [`retry`], the record shapes in [`model`], the HTTP routes in
//! `api::events` and `ember queue` in [`cli`].

pub mod db;
pub mod dest;
pub mod model;
pub mod retry;
mod sched;
mod worker;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use db::{Db, Op};
pub use db::{DbError, ATTEMPT_LOG_CAP};
use model::EventRecord;
pub use retry::Timing;
use sched::Sched;

/// Lambda's asynchronous payload limit as this product sets it.
pub const MAX_EVENT_PAYLOAD: usize = 1024 * 1024;

/// The `emberd` flags of the event queue.
#[derive(Debug, Clone, clap::Args)]
pub struct EventArgs {
    /// Workers delivering asynchronous events (each runs one invocation at a time).
    #[arg(long, default_value_t = 4)]
    pub async_workers: usize,
    /// Most async workers one account may hold at once (default: half of
    /// --async-workers, rounded up), so one tenant's slow events cannot
    /// hold every worker.
    #[arg(long)]
    pub async_account_workers: Option<usize>,
    /// Delays before the retries that follow function errors, in ms.
    #[arg(long, default_value = "60000,120000", value_delimiter = ',')]
    pub async_retry_delays_ms: Vec<u64>,
    /// First and largest backoff after a throttle or service error, in ms.
    #[arg(long, default_value = "1000,300000", value_delimiter = ',')]
    pub async_backoff_ms: Vec<u64>,
    /// Length of one second of MaximumEventAgeInSeconds, in ms (tests shorten it).
    #[arg(long, default_value_t = 1000)]
    pub async_age_unit_ms: u64,
    /// MiB of event payloads one account may have queued (stored and not
    /// yet delivered for good); beyond it Event invokes answer 429
    /// TooManyRequestsException. 0 = no limit.
    #[arg(long, default_value_t = 512)]
    pub account_queue_mib: u64,
}

impl Default for EventArgs {
    fn default() -> Self {
        Self {
            async_workers: 4,
            async_account_workers: None,
            async_retry_delays_ms: vec![60_000, 120_000],
            async_backoff_ms: vec![1000, 300_000],
            async_age_unit_ms: 1000,
            account_queue_mib: 512,
        }
    }
}

impl EventArgs {
    /// Most workers one account may hold at once.
    pub fn account_workers(&self) -> usize {
        let workers = self.async_workers.max(1);
        self.async_account_workers
            .unwrap_or(workers.div_ceil(2))
            .clamp(1, workers)
    }

    pub fn timing(&self) -> Timing {
        let ms = Duration::from_millis;
        let backoff = |i: usize, d: u64| ms(self.async_backoff_ms.get(i).copied().unwrap_or(d));
        Timing {
            retry_delays: self.async_retry_delays_ms.iter().map(|&d| ms(d)).collect(),
            backoff_base: backoff(0, 1000),
            backoff_max: backoff(1, 300_000),
            age_unit: ms(self.async_age_unit_ms.max(1)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("event store")]
    Store(#[from] crate::store::StoreError),
}

pub use crate::util::unix_ms as now_ms;

/// The event queue: durable state, the in-memory schedule, and the timing.
pub struct Events {
    db: Db,
    sched: Sched,
    timing: Timing,
    workers: usize,
    /// This emberd run (attempt-log entries carry it).
    boot: u64,
    /// Wakes idle workers when an event becomes due sooner.
    wake: Notify,
}

impl Events {
    /// Opens the event store at `path` and recovers its queue: attempts the
    /// previous run left open are closed as interrupted and their events are
    /// due again at once.
    pub fn open(path: &Path, args: &EventArgs) -> Result<Arc<Self>, EventsError> {
        let quota = (args.account_queue_mib > 0).then(|| args.account_queue_mib << 20);
        let db = Db::open(path)?.with_queue_quota(quota);
        let (boot, queued) = db.recover(now_ms())?;
        let sched = Sched::new(args.account_workers());
        for ev in queued {
            sched.push(ev);
        }
        Ok(Arc::new(Self {
            db,
            sched,
            timing: args.timing(),
            workers: args.async_workers.max(1),
            boot,
            wake: Notify::new(),
        }))
    }

    /// The event store: configs, destination queues, the attempt log.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// Stores a new event durably and queues it; returns its request id.
    pub async fn accept(
        &self,
        function: &str,
        qualifier: Option<&str>,
        payload: bytes::Bytes,
    ) -> Result<String, EventsError> {
        let now = now_ms();
        let mut ev = EventRecord {
            seq: 0,
            request_id: crate::util::uuid4(),
            function: function.into(),
            qualifier: qualifier.map(str::to_string),
            received_ms: now,
            not_before_ms: now,
            invocations: 0,
            errors: 0,
            transient: 0,
            open_attempt: None,
            last_error: None,
        };
        ev.seq = self.db.submit(Op::Enqueue(ev.clone(), payload)).await?;
        let id = ev.request_id.clone();
        self.requeue(ev);
        Ok(id)
    }

    /// Puts `ev` (back) on the schedule and wakes a worker.
    fn requeue(&self, ev: EventRecord) {
        self.sched.push(ev);
        self.wake.notify_one();
    }

    /// Starts the workers; they stop taking events when `shutdown` turns
    /// true and finish (or leave for the next run) the ones they hold.
    pub fn start(
        self: &Arc<Self>,
        invoker: Arc<crate::invoker::Invoker>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        (0..self.workers)
            .map(|_| tokio::spawn(worker::run(self.clone(), invoker.clone(), shutdown.clone())))
            .collect()
    }

    /// Events waiting (not in flight) and in flight.
    pub fn depth(&self) -> (usize, usize) {
        self.sched.depth()
    }

    /// `account`'s events waiting and in flight.
    pub fn depth_of(&self, account: &str) -> (usize, usize) {
        self.sched.depth_of(account)
    }

    /// Removes every event invoke config of `function` (it was deleted).
    pub fn forget_function(&self, function: &str) -> Result<(), EventsError> {
        self.db.delete_configs(function, None)?;
        Ok(())
    }
}

/// Waits up to `grace` for the workers to finish what they hold.
pub async fn drain(workers: Vec<JoinHandle<()>>, grace: Duration) {
    let all = async {
        for w in workers {
            let _ = w.await;
        }
    };
    let _ = tokio::time::timeout(grace, all).await;
}
