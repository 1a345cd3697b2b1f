//! The event queue's durable state, in its own redb file (`events.redb`, so
//! queue traffic never waits on control-plane commits): queued events and
//! their payloads, event invoke configs, the attempt log and the destination
//! queues. The hot path (accept, attempt start, settle) goes through one
//! writer thread that commits whatever is pending in a single fsync'd
//! transaction ("group commit"): many concurrent requests share one fsync,
//! and a caller hears back only after its change is on disk.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use super::model::{AttemptRecord, EventRecord, InvokeConfig, QueueMessage};
use crate::store::dbfile::DbFile;
use crate::util::split_scoped;
use queued::Queued;
pub use queued::Reservation;

mod queued;
use crate::store::{scan_prefix, StoreError};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const PAYLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("event_payloads");
/// `function/qualifier` → config.
const CONFIGS: TableDefinition<&str, &[u8]> = TableDefinition::new("event_invoke_configs");
const ATTEMPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("attempts");
/// `queue/{id:020}` → message.
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("queue_messages");
/// queue → messages in it.
const QUEUES: TableDefinition<&str, u64> = TableDefinition::new("queues");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The attempt log keeps this many newest entries.
pub const ATTEMPT_LOG_CAP: u64 = 200_000;
/// Most operations folded into one commit.
const MAX_BATCH: usize = 512;

/// Why a hot-path commit did not happen (the store's own errors are
/// [`StoreError`]s, shared with the function store).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("event store")]
    Store(#[from] StoreError),
    #[error("event store commit failed: {0}")]
    Commit(String),
    #[error("the event store writer has stopped")]
    WriterGone,
}

type Result<T> = crate::store::Result<T>;

/// How an event leaves a settle: rewritten (retry later) or removed.
#[derive(Clone, Debug)]
pub enum Settled {
    Keep(EventRecord),
    Remove(u64),
}

/// A destination record on its way to its queue, serialised once: the
/// quota is reserved on these bytes and the same bytes are stored.
#[derive(Clone, Debug)]
pub struct Record {
    pub queue: String,
    bytes: Vec<u8>,
}

impl Record {
    pub fn new(queue: String, msg: &QueueMessage) -> Result<Self> {
        Ok(Self {
            queue,
            bytes: to_vec(msg)?,
        })
    }
}

/// The end of an attempt-log entry.
#[derive(Clone, Debug)]
pub struct AttemptEnd {
    pub id: u64,
    pub end_ms: u64,
    pub env_id: Option<u64>,
    pub result: String,
}

/// One hot-path change; all of it commits or none.
#[derive(Clone, Debug)]
pub enum Op {
    /// Stores a new event (its `seq` is assigned here) and its payload.
    Enqueue(EventRecord, bytes::Bytes),
    /// Logs the start of an attempt (its id is assigned here) and marks the
    /// event as having it open.
    Start(EventRecord, AttemptRecord),
    /// Ends an attempt (if any), rewrites or removes the event, and sends a
    /// destination record (if any) — atomically, so a record is never sent
    /// twice for one outcome.
    Settle {
        event: Settled,
        end: Option<AttemptEnd>,
        message: Option<Record>,
    },
}

type Reply = oneshot::Sender<std::result::Result<u64, DbError>>;

/// Handle to the event store.
pub struct Db {
    /// Reopened after I/O errors (see `store::dbfile`).
    db: Arc<DbFile>,
    /// Payload bytes each account has queued, and its quota.
    queued: Queued,
    /// None only while dropping (closing it stops the writer).
    tx: Option<mpsc::Sender<(Op, Reply)>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Db {
    /// Stops the writer after it has committed what it holds, so the file
    /// is closed when this returns (and can be opened again).
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn get_json<T: DeserializeOwned>(
    v: Option<redb::AccessGuard<'_, &'static [u8]>>,
) -> Result<Option<T>> {
    v.map(|g| serde_json::from_slice(g.value()).map_err(StoreError::from))
        .transpose()
}

fn to_vec<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

fn config_key(function: &str, qualifier: &str) -> String {
    format!("{function}/{qualifier}")
}

fn message_key(queue: &str, id: u64) -> String {
    format!("{queue}/{id:020}")
}

/// Takes the next value of counter `name` (starting at 1).
fn next(w: &WriteTransaction, name: &str) -> Result<u64> {
    let mut t = w.open_table(META)?;
    let n = t.get(name)?.map(|g| g.value()).unwrap_or(1);
    t.insert(name, n + 1)?;
    Ok(n)
}

fn apply(w: &WriteTransaction, op: &Op) -> Result<u64> {
    match op {
        Op::Enqueue(ev, payload) => {
            let mut ev = ev.clone();
            ev.seq = next(w, "next_seq")?;
            w.open_table(PAYLOADS)?.insert(ev.seq, payload.as_ref())?;
            w.open_table(EVENTS)?
                .insert(ev.seq, to_vec(&ev)?.as_slice())?;
            Ok(ev.seq)
        }
        Op::Start(ev, attempt) => {
            let mut attempt = attempt.clone();
            attempt.id = next(w, "next_attempt")?;
            let mut ev = ev.clone();
            ev.open_attempt = Some(attempt.id);
            w.open_table(EVENTS)?
                .insert(ev.seq, to_vec(&ev)?.as_slice())?;
            let mut log = w.open_table(ATTEMPTS)?;
            log.insert(attempt.id, to_vec(&attempt)?.as_slice())?;
            if attempt.id > ATTEMPT_LOG_CAP && attempt.id.is_multiple_of(1024) {
                let keep_from = attempt.id - ATTEMPT_LOG_CAP;
                log.retain_in(..keep_from, |_, _| false)?;
            }
            Ok(attempt.id)
        }
        Op::Settle {
            event,
            end,
            message,
        } => {
            if let Some(end) = end {
                end_attempt(w, end)?;
            }
            match event {
                Settled::Keep(ev) => {
                    w.open_table(EVENTS)?
                        .insert(ev.seq, to_vec(ev)?.as_slice())?;
                }
                Settled::Remove(seq) => {
                    w.open_table(EVENTS)?.remove(seq)?;
                    w.open_table(PAYLOADS)?.remove(seq)?;
                }
            }
            if let Some(Record { queue, bytes }) = message {
                let id = next(w, "next_message")?;
                w.open_table(MESSAGES)?
                    .insert(message_key(queue, id).as_str(), bytes.as_slice())?;
                let mut q = w.open_table(QUEUES)?;
                let n = q.get(queue.as_str())?.map(|g| g.value()).unwrap_or(0);
                q.insert(queue.as_str(), n + 1)?;
            }
            Ok(0)
        }
    }
}

fn end_attempt(w: &WriteTransaction, end: &AttemptEnd) -> Result<()> {
    let mut log = w.open_table(ATTEMPTS)?;
    let rec: Option<AttemptRecord> = get_json(log.get(end.id)?)?;
    // Pruned already (a very old attempt): nothing to close.
    if let Some(mut rec) = rec {
        rec.end_ms = Some(end.end_ms);
        rec.env_id = end.env_id.or(rec.env_id);
        rec.result = Some(end.result.clone());
        log.insert(end.id, to_vec(&rec)?.as_slice())?;
    }
    Ok(())
}

/// The writer thread: take everything pending, apply it in one transaction,
/// commit (fsync), answer. If the batch fails as a whole, each op is retried
/// alone so one bad op cannot fail the others.
fn writer(db: Arc<DbFile>, rx: mpsc::Receiver<(Op, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        match commit(&db, batch.iter().map(|(op, _)| op)) {
            Ok(ids) => {
                for ((_, reply), id) in batch.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(_) if batch.len() > 1 => {
                for (op, reply) in batch {
                    let r = commit(&db, std::iter::once(&op)).map(|ids| ids[0]);
                    let _ = reply.send(r.map_err(DbError::from));
                }
            }
            Err(e) => {
                // One op (a larger batch was retried op by op above): its
                // caller gets the store's own error (a full disk, say).
                let mut e = Some(DbError::Store(e));
                for (_, reply) in batch {
                    let err = e
                        .take()
                        .unwrap_or_else(|| DbError::Commit("batch failed".into()));
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}

fn commit<'a>(db: &DbFile, ops: impl Iterator<Item = &'a Op>) -> Result<Vec<u64>> {
    let w = db.begin_write()?;
    let mut ids = Vec::new();
    for op in ops {
        ids.push(apply(&w, op)?);
    }
    w.commit()?;
    Ok(ids)
}

impl Db {
    /// Opens (or creates) the event store at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Arc::new(DbFile::open(path)?);
        let w = db.begin_write()?;
        w.open_table(EVENTS)?;
        w.open_table(PAYLOADS)?;
        w.open_table(CONFIGS)?;
        w.open_table(ATTEMPTS)?;
        w.open_table(MESSAGES)?;
        w.open_table(QUEUES)?;
        w.open_table(META)?;
        w.commit()?;
        let (tx, rx) = mpsc::channel();
        let wdb = db.clone();
        let writer = std::thread::Builder::new()
            .name("event-store".into())
            .spawn(move || writer(wdb, rx))
            .map_err(|e| StoreError::Io(path.to_path_buf(), e))?;
        Ok(Self {
            db,
            queued: Queued::default(),
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Commits `op` (with whatever else is pending) and returns its id:
    /// the new event's seq, the new attempt's id, or 0.
    /// A new event's payload counts against its account's queue quota
    /// (refused with [`StoreError::QueueQuota`]) until it is removed.
    pub async fn submit(&self, op: Op) -> std::result::Result<u64, DbError> {
        let reservation = match &op {
            Op::Enqueue(ev, payload) => Some(
                self.queued
                    .reserve(split_scoped(&ev.function).0, payload.len() as u64)?,
            ),
            _ => None,
        };
        let removes = match &op {
            Op::Settle {
                event: Settled::Remove(seq),
                ..
            } => Some(*seq),
            _ => None,
        };
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(DbError::WriterGone)?;
        tx.send((op, reply)).map_err(|_| DbError::WriterGone)?;
        let id = rx.await.map_err(|_| DbError::WriterGone)??;
        if let Some(r) = reservation {
            self.queued.stored(r, id);
        }
        if let Some(seq) = removes {
            self.queued.removed(seq);
        }
        Ok(id)
    }

    /// Admits a destination record for `queue` under its account's quota:
    /// its bytes are held until the settle that writes it commits
    /// ([`Db::kept`]) or the returned reservation is dropped. Refused with
    /// [`StoreError::QueueQuota`] when the account's queued events and
    /// unread records would exceed it.
    pub fn admit_record(&self, record: &Record) -> Result<Reservation<'_>> {
        self.queued
            .reserve(split_scoped(&record.queue).0, record.bytes.len() as u64)
    }

    /// The admitted record was committed.
    pub fn kept(&self, r: Reservation<'_>) {
        self.queued.kept(r);
    }

    /// Sets the per-account quota on queued payload bytes (None: none).
    pub fn with_queue_quota(mut self, bytes: Option<u64>) -> Self {
        self.queued = Queued::new(bytes);
        self
    }

    /// Starts a new emberd run: bumps the boot counter, closes attempts left
    /// open by the previous run as `Interrupted` (their VMs are gone: emberd
    /// kills its predecessor's leftovers before opening the store) and
    /// returns (boot, every queued event).
    pub fn recover(&self, now_ms: u64) -> Result<(u64, Vec<EventRecord>)> {
        let w = self.db.begin_write()?;
        let boot = next(&w, "boot")?;
        let mut events: Vec<EventRecord> = Vec::new();
        {
            let t = w.open_table(EVENTS)?;
            for item in t.iter()? {
                let (_, v) = item?;
                events.push(serde_json::from_slice(v.value())?);
            }
        }
        {
            // Unread destination records count against their account too.
            let messages = w.open_table(MESSAGES)?;
            for item in messages.iter()? {
                let (k, v) = item?;
                let queue = k.value().rsplit_once('/').map_or(k.value(), |(q, _)| q);
                self.queued
                    .restore_records(split_scoped(queue).0, v.value().len() as u64);
            }
        }
        {
            let payloads = w.open_table(PAYLOADS)?;
            for ev in &events {
                let bytes = payloads.get(ev.seq)?.map_or(0, |g| g.value().len() as u64);
                self.queued
                    .restore(ev.seq, split_scoped(&ev.function).0, bytes);
            }
        }
        for ev in events.iter_mut() {
            if let Some(id) = ev.open_attempt.take() {
                end_attempt(
                    &w,
                    &AttemptEnd {
                        id,
                        end_ms: now_ms,
                        env_id: None,
                        result: "Interrupted".into(),
                    },
                )?;
                ev.not_before_ms = now_ms;
                w.open_table(EVENTS)?
                    .insert(ev.seq, to_vec(ev)?.as_slice())?;
            }
        }
        w.commit()?;
        Ok((boot, events))
    }

    pub fn payload(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        self.db.read(|r| {
            let t = r.open_table(PAYLOADS)?;
            let v = t.get(seq)?.map(|g| g.value().to_vec());
            Ok(v)
        })
    }

    pub fn pending_count(&self) -> Result<u64> {
        self.db.read(|r| Ok(r.open_table(EVENTS)?.len()?))
    }

    // ---- event invoke configs (control plane: direct transactions) ------

    pub fn get_config(&self, function: &str, qualifier: &str) -> Result<Option<InvokeConfig>> {
        self.db.read(|r| {
            let t = r.open_table(CONFIGS)?;
            get_json(t.get(config_key(function, qualifier).as_str())?)
        })
    }

    pub fn put_config(&self, c: &InvokeConfig) -> Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(CONFIGS)?.insert(
            config_key(&c.function, &c.qualifier).as_str(),
            to_vec(c)?.as_slice(),
        )?;
        w.commit()?;
        Ok(())
    }

    /// Deletes one config (`Some(qualifier)`) or all of a function's.
    /// Returns how many were removed.
    pub fn delete_configs(&self, function: &str, qualifier: Option<&str>) -> Result<usize> {
        let w = self.db.begin_write()?;
        let n = {
            let mut t = w.open_table(CONFIGS)?;
            let keys: Vec<String> = match qualifier {
                Some(q) => vec![config_key(function, q)],
                None => prefix_keys(&t, &config_key(function, ""))?,
            };
            let mut n = 0;
            for k in keys {
                n += usize::from(t.remove(k.as_str())?.is_some());
            }
            n
        };
        w.commit()?;
        Ok(n)
    }

    pub fn list_configs(&self, function: &str) -> Result<Vec<InvokeConfig>> {
        self.db.read(|r| {
            let t = r.open_table(CONFIGS)?;
            scan_prefix(&t, &config_key(function, ""))
        })
    }

    // ---- attempt log -----------------------------------------------------

    /// Attempts with id > `after` that `keep` accepts, oldest first, at
    /// most `max`.
    pub fn attempts(
        &self,
        keep: impl Fn(&AttemptRecord) -> bool,
        after: u64,
        max: usize,
    ) -> Result<Vec<AttemptRecord>> {
        self.db.read(|r| {
            let t = r.open_table(ATTEMPTS)?;
            let mut out = Vec::new();
            for item in t.range(after.saturating_add(1)..)? {
                let (_, v) = item?;
                let a: AttemptRecord = serde_json::from_slice(v.value())?;
                if keep(&a) {
                    out.push(a);
                    if out.len() == max {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    // ---- destination queues ---------------------------------------------

    /// (queue, messages) for every queue that has held a message.
    pub fn queues(&self) -> Result<Vec<(String, u64)>> {
        self.db.read(|r| {
            let t = r.open_table(QUEUES)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })
    }

    /// Messages of `queue` after message number `after` (a previous page's
    /// marker), oldest first; returns them with the next marker.
    pub fn read_queue(
        &self,
        queue: &str,
        after: Option<u64>,
        max: usize,
    ) -> Result<(Vec<QueueMessage>, Option<u64>)> {
        self.db.read(|r| {
            let t = r.open_table(MESSAGES)?;
            let prefix = format!("{queue}/");
            // Keys sort by their zero-padded id: the page starts after `after`.
            let start = message_key(queue, after.map_or(0, |a| a.saturating_add(1)));
            let mut out = Vec::new();
            let mut last = None;
            for item in t.range(start.as_str()..)? {
                let (k, v) = item?;
                let Some(id) = k.value().strip_prefix(&prefix) else {
                    break;
                };
                if out.len() == max {
                    return Ok((out, last));
                }
                out.push(serde_json::from_slice(v.value())?);
                last = id.parse().ok();
            }
            Ok((out, None))
        })
    }

    /// Deletes the message `message_id` of `queue` (None: every message).
    /// Returns how many were removed.
    pub fn delete_messages(&self, queue: &str, message_id: Option<&str>) -> Result<u64> {
        let w = self.db.begin_write()?;
        let mut freed = 0u64;
        let removed = {
            let mut t = w.open_table(MESSAGES)?;
            let prefix = format!("{queue}/");
            let mut victims = Vec::new();
            for item in t.range(prefix.as_str()..)? {
                let (k, v) = item?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                let m: QueueMessage = serde_json::from_slice(v.value())?;
                if message_id.is_none_or(|id| m.message_id == id) {
                    victims.push(k.value().to_string());
                    freed += v.value().len() as u64;
                }
            }
            for k in &victims {
                t.remove(k.as_str())?;
            }
            let mut q = w.open_table(QUEUES)?;
            let n = q.get(queue)?.map(|g| g.value()).unwrap_or(0);
            let left = n.saturating_sub(victims.len() as u64);
            if left == 0 && message_id.is_none() {
                q.remove(queue)?;
            } else if n > 0 {
                q.insert(queue, left)?;
            }
            victims.len() as u64
        };
        w.commit()?;
        self.queued.release(split_scoped(queue).0, freed);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;

fn prefix_keys(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in t.range(prefix..)? {
        let (k, _) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(k.value().to_string());
    }
    Ok(out)
}

/// A message body's JSON, for callers that build records.
pub fn message(body: Value) -> QueueMessage {
    QueueMessage {
        message_id: crate::util::uuid4(),
        sent_ms: super::now_ms(),
        body,
    }
}
