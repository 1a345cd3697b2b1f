//! Reads from a KV bucket that outlive its stream leader: a key's latest
//! entry and a bucket's keys.
//!
//! A read first asks the stream's leader (up to date with every write
//! acknowledged so far). When the leader does not answer within
//! [`LEADER_WAIT`] (it was killed and the replicas have not elected another
//! yet: 4.4-7.7 s measured on nats-server 2.9 after `kill -9`; or it is
//! slow), the read is answered by any replica with a direct get (the
//! bucket's streams allow them). A replica may lag the leader by the last
//! few writes, so a read during an election may miss a write made just
//! before it; writes themselves always go through the leader, which checks
//! the revision they were based on ([`super::checked`]).
//!
//! Before this, a request to a dead leader went unanswered and waited the
//! connection's request timeout, 10 s: one ListFunctions after `kill -9` of
//! the NATS server leading `KV_ember-functions` took 10.0 s (4 of 4 runs).
//!
//! Keys are listed from one stream info request with a subject filter, not
//! with `kv.keys()`, which makes an ordered consumer for every listing
//! through the meta leader (after `kill -9` of the meta leader listings
//! timed out for 31-52 s while reads and writes worked).

use std::future::Future;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;

use super::FleetError;

/// How long a read waits for the stream leader before it asks any replica
/// (then, for [`SUSPECT_FOR`], reads of that stream ask a replica first).
pub const LEADER_WAIT: Duration = Duration::from_secs(1);
/// How long a read waits for a replica's answer.
const REPLICA_WAIT: Duration = Duration::from_secs(3);

/// A key's latest message: a value, or a delete/purge marker.
pub struct Entry {
    pub value: Bytes,
    pub revision: u64,
    /// A value (not a delete or purge marker).
    pub live: bool,
}

impl Entry {
    fn from(m: StreamMessage) -> Self {
        // A message without the KV operation header is a put.
        let op = m
            .headers
            .get("KV-Operation")
            .and_then(|v| kv::Operation::from_str(v.as_str()).ok())
            .unwrap_or(kv::Operation::Put);
        Entry {
            value: m.payload,
            revision: m.sequence,
            live: op == kv::Operation::Put,
        }
    }
}

/// How long reads of a stream whose leader did not answer go to a replica
/// first (a listing reads every key: each would wait [`LEADER_WAIT`]).
const SUSPECT_FOR: Duration = Duration::from_secs(3);

/// Streams whose leader did not answer, and since when.
static SUSPECT: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());

/// Whether reads of `stream` should skip its leader for now.
fn suspect(stream: &str) -> bool {
    let mut s = SUSPECT.lock().unwrap_or_else(|p| p.into_inner());
    s.retain(|(_, at)| at.elapsed() < SUSPECT_FOR);
    s.iter().any(|(n, _)| n == stream)
}

/// Marks `stream`'s leader as silent (`true`) or answering (`false`).
fn set_suspect(stream: &str, silent: bool) {
    let mut s = SUSPECT.lock().unwrap_or_else(|p| p.into_inner());
    s.retain(|(n, _)| n != stream);
    if silent {
        s.push((stream.to_string(), Instant::now()));
    }
}

/// The leader's answer to `fut` (`None`: none within [`LEADER_WAIT`], or
/// the leader is suspect; the caller then asks a replica).
async fn from_leader_of<T, E>(
    stream: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Option<Result<T, E>> {
    if suspect(stream) {
        return None;
    }
    let got = within(LEADER_WAIT, fut).await;
    set_suspect(stream, got.is_none());
    got
}

/// `fut`, or `None` if it took longer than `wait`.
async fn within<T>(wait: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(wait, fut).await.ok()
}

/// The latest entry of `key` in `kv` (`None`: never written, or gone).
pub async fn entry(kv: &kv::Store, key: &str) -> Result<Option<Entry>, FleetError> {
    let subject = format!("{}{key}", kv.prefix);
    let leader = from_leader_of(
        &kv.stream_name,
        kv.stream.get_last_raw_message_by_subject(&subject),
    )
    .await;
    match leader {
        Some(Ok(m)) => return Ok(Some(Entry::from(m))),
        Some(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Some(Err(e)) if e.kind() == LastRawMessageErrorKind::InvalidSubject => {
            return Err(FleetError::kv("get", key, e))
        }
        // No answer in time, or an error from a cluster without a leader.
        _ => {}
    }
    let replica = within(REPLICA_WAIT, kv.stream.direct_get_last_for_subject(subject))
        .await
        .ok_or(FleetError::TimedOut(REPLICA_WAIT))?;
    match replica {
        Ok(m) => Ok(Some(Entry::from(m))),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(FleetError::kv("get", key, e)),
    }
}

/// The keys of `kv` starting with `prefix` (live and deleted ones: a delete
/// is a marker message, so callers read each key), sorted.
pub async fn keys(kv: &kv::Store, prefix: &str) -> Result<Vec<String>, FleetError> {
    // Record prefixes end at a token (`name.`) or are empty; the filter
    // then selects exactly them, and the check below keeps any other exact.
    let filter = match prefix {
        p if p.is_empty() || p.ends_with('.') => format!("{}{p}>", kv.prefix),
        _ => format!("{}>", kv.prefix),
    };
    let subjects = match from_leader_of(&kv.stream_name, from_leader(kv, &filter, prefix)).await {
        Some(Ok(s)) => s,
        _ => within(REPLICA_WAIT, from_replica(kv, &filter, prefix))
            .await
            .ok_or(FleetError::TimedOut(REPLICA_WAIT))??,
    };
    let mut out: Vec<String> = subjects
        .iter()
        .filter_map(|s| s.strip_prefix(kv.prefix.as_str()))
        .filter(|k| k.starts_with(prefix))
        .map(str::to_string)
        .collect();
    out.sort();
    Ok(out)
}

/// The subjects matching `filter`, from the stream leader's info.
async fn from_leader(
    kv: &kv::Store,
    filter: &str,
    prefix: &str,
) -> Result<Vec<String>, FleetError> {
    let err = |e| FleetError::kv("keys", prefix, e);
    let mut subjects = kv.stream.info_with_subjects(filter).await.map_err(err)?;
    let mut out = Vec::new();
    while let Some(s) = subjects.next().await {
        out.push(s.map_err(err)?.0);
    }
    Ok(out)
}

/// The subjects matching `filter`, from any replica: each key of a bucket
/// has one message (a bucket keeps one per key), read one after the other
/// in stream order with direct gets.
async fn from_replica(
    kv: &kv::Store,
    filter: &str,
    prefix: &str,
) -> Result<Vec<String>, FleetError> {
    let mut out = Vec::new();
    let mut seq = 1;
    loop {
        match kv
            .stream
            .direct_get_next_for_subject(filter, Some(seq))
            .await
        {
            Ok(m) => {
                seq = m.sequence + 1;
                out.push(m.subject.to_string());
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(FleetError::kv("keys", prefix, e)),
        }
    }
}
