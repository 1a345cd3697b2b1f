//! Function logs, CloudWatch-style but on local disk: per function version
//! a log stream per execution environment under `<data>/logs/<function>/
//! <version>/<stream>.<seq>.log`, each invocation framed by START / END /
//! REPORT ([`frame`]), every line timestamped. One writer thread
//! ([`writer`]) does all file IO, so an invocation only formats its lines
//! and hands them over without waiting: when the writer is behind or the
//! disk fails, lines are dropped and counted (`ember_log_lines_dropped_total`),
//! never returned as an error. Read back by `GET /ember/logs/{function}`
//! (`api::logs`, waits capped by [`follows`]) and `ember logs` ([`cli`]).

pub mod follows;
pub mod frame;
pub mod read;
pub mod time;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::invoker::call::Outcome;
use crate::metrics::Metrics;
use writer::{Block, Msg, Writer};

/// Invocations whose lines may wait for the writer before new ones are dropped.
const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("starting the log writer thread")]
    Spawn(#[source] std::io::Error),
}

/// Rotation and retention.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A stream file is rotated before it would pass this size.
    pub max_file_bytes: u64,
    /// Per function version, the oldest files go beyond this total.
    pub retention_bytes: u64,
    /// Files not written for this long go.
    pub retention_age: Duration,
    /// Most waiting reads (`ember logs --follow`) one account may have
    /// open at once; more get 429.
    pub follows_per_account: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 << 20,
            retention_bytes: 64 << 20,
            retention_age: Duration::from_secs(7 * 86_400),
            follows_per_account: follows::FOLLOWS_PER_ACCOUNT,
        }
    }
}

/// `emberd`'s flags for [`LogConfig`].
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Function log files are rotated before they pass this size (bytes).
    #[arg(long, default_value_t = 4 << 20)]
    pub log_max_file_bytes: u64,
    /// Per function version, the oldest log files are deleted beyond this
    /// total (bytes).
    #[arg(long, default_value_t = 64 << 20)]
    pub log_retention_bytes: u64,
    /// Log files not written for this many seconds are deleted.
    #[arg(long, default_value_t = 7 * 86_400)]
    pub log_retention_secs: u64,
    /// Most waiting log reads (`ember logs --follow`) one account may have
    /// open at once; more get 429 TooManyRequestsException.
    #[arg(long, default_value_t = follows::FOLLOWS_PER_ACCOUNT)]
    pub log_follows_per_account: usize,
}

impl LogArgs {
    pub fn config(&self) -> LogConfig {
        LogConfig {
            max_file_bytes: self.log_max_file_bytes.max(1),
            retention_bytes: self.log_retention_bytes,
            retention_age: Duration::from_secs(self.log_retention_secs),
            follows_per_account: self.log_follows_per_account,
        }
    }
}

/// State shared by the writer and the readers: the watermark (every line
/// stamped at or before it is on disk), in a watch channel long-polls wait
/// on without holding a thread.
pub struct Shared {
    watermark: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    /// Starting from `watermark`.
    pub fn new(watermark: u64) -> Self {
        Shared {
            watermark: tokio::sync::watch::Sender::new(watermark),
        }
    }

    pub fn watermark(&self) -> u64 {
        *self.watermark.borrow()
    }

    fn publish(&self, ts: u64) {
        self.watermark.send_replace(ts);
    }

    /// Waits until the watermark passes `than` or `until` comes; returns it.
    pub async fn wait_past(&self, than: u64, until: tokio::time::Instant) -> u64 {
        let mut rx = self.watermark.subscribe();
        let _ = tokio::time::timeout_at(until, rx.wait_for(|w| *w > than)).await;
        self.watermark()
    }
}

/// The log store of one emberd.
pub struct Logs {
    root: PathBuf,
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    follows: Arc<follows::Follows>,
}

impl Logs {
    /// Starts the writer thread for logs under `root`.
    pub fn start(root: PathBuf, cfg: LogConfig, metrics: Arc<Metrics>) -> Result<Self, LogError> {
        // Lines already on disk from earlier runs are all visible.
        let shared = Arc::new(Shared::new(time::now_us()));
        let (tx, rx) = sync_channel(QUEUE);
        let follows = Arc::new(follows::Follows::new(cfg.follows_per_account));
        let w = Writer::new(root.clone(), cfg, shared.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("ember-logs".into())
            .spawn(move || w.run(rx))
            .map_err(LogError::Spawn)?;
        Ok(Self {
            root,
            tx,
            shared,
            metrics,
            follows,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The waiting reads (`--follow`) open per account.
    pub fn follows(&self) -> &Arc<follows::Follows> {
        &self.follows
    }

    /// Hands one finished invocation's framed lines ([`frame::lines`], the
    /// same text `LogType: Tail` returns) to the writer. Never blocks; a
    /// full queue drops the lines (counted).
    pub fn record(&self, o: &Outcome) {
        let lines = frame::lines(o);
        let end = time::now_us();
        let start = end.saturating_sub(o.elapsed.as_micros() as u64);
        let n = lines.len();
        let stamped = lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| (if i == 0 { start } else { end }, l))
            .collect();
        let block = Block {
            function: o.function.clone(),
            version: o.version.clone(),
            env: o.env_id,
            lines: stamped,
        };
        match self.tx.try_send(Msg::Block(block)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.log_lines_dropped(n as u64);
            }
        }
    }

    /// Waits (up to `timeout`) until everything recorded so far is on disk.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = sync_channel(1);
        let until = Instant::now() + timeout;
        let mut msg = Msg::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < until => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

#[cfg(test)]
mod tests;
