//! Group commit for call records: one thread (`ember-audit`) takes every
//! record waiting in its queue and appends them with one sync
//! ([`AuditLog::append_batch`]); each caller awaits its own outcome without
//! holding a thread. One call per record with two `fdatasync`s each, every
//! caller on a blocking thread in line for the log's mutex, let one
//! account's burst of cheap (even refused) calls delay every other
//! account's responses by seconds and fill tokio's blocking pool.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::{AuditLog, Call};

/// Most records appended with one sync.
const MAX_BATCH: usize = 512;

type Job = (Call, oneshot::Sender<Result<(), String>>);

/// The queue into the committer thread.
pub struct Group {
    tx: Sender<Job>,
}

impl Group {
    /// Starts the committer thread for `log`; it ends when the log is
    /// dropped (with it, this queue's sender).
    pub fn start(log: &Arc<AuditLog>) -> std::io::Result<Group> {
        let (tx, rx) = channel();
        let weak = Arc::downgrade(log);
        std::thread::Builder::new()
            .name("ember-audit".into())
            .spawn(move || run(weak, rx))?;
        Ok(Group { tx })
    }

    /// Appends `call`; returns once it is durable (or failed).
    pub async fn record(&self, call: Call) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((call, tx))
            .map_err(|_| "the audit committer has stopped".to_string())?;
        rx.await
            .map_err(|_| "the audit committer has stopped".to_string())?
    }
}

impl AuditLog {
    /// Appends `call` through the group commit (see the module doc); the
    /// record is durable when this returns `Ok`.
    pub async fn record(self: &Arc<Self>, call: Call) -> Result<(), String> {
        let group = self.group.get_or_init(|| match Group::start(self) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("emberd: audit: no group-commit thread ({e}); appending one by one");
                None
            }
        });
        match group {
            Some(g) => g.record(call).await,
            None => {
                let log = self.clone();
                tokio::task::spawn_blocking(move || log.record_call(call))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| crate::util::error_chain(&e))
            }
        }
    }
}

fn run(log: Weak<AuditLog>, rx: Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (calls, replies): (Vec<Call>, Vec<_>) = jobs.into_iter().unzip();
        let outcomes = match log.upgrade() {
            Some(log) => log.append_batch(calls),
            None => return,
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }
}
