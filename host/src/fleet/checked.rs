//! Revision-checked writes to a KV bucket that hold on nats-server 2.9
//! with replicated streams.
//!
//! A KV update sends `Nats-Expected-Last-Subject-Sequence`. nats-server
//! 2.9 checks that header on a clustered stream's leader before proposing
//! the write, and not again when it is applied. So two updates of one key
//! in flight at once both pass, and both are stored: one is lost (seen with
//! R3 buckets; 2.10 tracks per-subject writes in flight). The stream-wide
//! `Nats-Expected-Last-Sequence` is checked when the write is applied, in
//! stream order, on every replica. So each write here also names the
//! stream's last sequence, read together with the key's revision. A write
//! it refuses because *another* key of the bucket moved is retried; one
//! whose own key moved is a lost race.
//!
//! Writes go through a stream's leader. When it dies, the replicas elect
//! another within 4-8 s (measured on 2.9 after `kill -9`); a request sent
//! to the dead one is never answered. So each request here waits at most
//! [`ATTEMPT_WAIT`] and is sent again, for up to [`WRITE_FOR`], instead of
//! waiting out the connection's 10 s request timeout once (a create after
//! the functions leader's death took 12.2 s that way).

use async_nats::header::{NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use std::future::Future;
use std::time::{Duration, Instant};

use super::FleetError;
use crate::store::Result;

/// A key no record has (record keys are escaped names, where `=` is always
/// followed by two hex digits). Written once into an empty bucket, so that
/// its stream's last sequence is never 0, which the server reads as "no
/// check".
pub const SEED: &str = "==";

/// How often a write is retried when other keys of its bucket were written
/// between its read and its write.
const RETRIES: usize = 64;

/// How long one request to a stream's leader is waited for.
const ATTEMPT_WAIT: Duration = super::read::LEADER_WAIT;
/// How long a write keeps sending its requests again.
const WRITE_FOR: Duration = Duration::from_secs(8);

/// `f()`, sent again while it fails or is not answered within
/// [`ATTEMPT_WAIT`], for up to [`WRITE_FOR`]. Only for requests that may
/// be repeated: reads, and puts or deletes of one value.
pub async fn again<T, E, Fut>(
    op: &'static str,
    key: &str,
    mut f: impl FnMut() -> Fut,
) -> std::result::Result<T, FleetError>
where
    Fut: Future<Output = std::result::Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let start = Instant::now();
    loop {
        let got = tokio::time::timeout(ATTEMPT_WAIT, f()).await;
        match got {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if start.elapsed() >= WRITE_FOR => return Err(FleetError::kv(op, key, e)),
            Err(_) if start.elapsed() >= WRITE_FOR => return Err(FleetError::TimedOut(WRITE_FOR)),
            // An error answered at once (no leader yet): not in a busy loop.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => {}
        }
    }
}

/// Writes `value` at `key` of `kv` only if the key is at `revision` (a
/// live value of that revision) or, with `None`, has no live value. `true`
/// if written; `false` if the key was not as expected, or if other writes
/// to the bucket kept winning for [`RETRIES`] rounds (the caller answers
/// with a conflict either way: retrying is the client's to do).
pub async fn write(
    js: &jetstream::Context,
    kv: &kv::Store,
    key: &str,
    value: Bytes,
    revision: Option<u64>,
) -> Result<bool> {
    let subject = format!("{}{key}", kv.put_prefix.as_deref().unwrap_or(&kv.prefix));
    let stream = kv.stream.clone();
    let start = Instant::now();
    let mut unacked = false;
    for _ in 0..RETRIES {
        // The stream's last sequence first, then the key: if the key's
        // revision is not after it, the key was at that revision when the
        // stream was at that sequence.
        let last = again("info", key, || {
            let mut stream = stream.clone();
            async move { stream.info().await.map(|i| i.state.last_sequence) }
        })
        .await?;
        let now = super::read::entry(kv, key).await?;
        let (live, rev) = match &now {
            Some(e) => (e.live, e.revision),
            None => (false, 0),
        };
        match revision {
            // A write of ours that was not acknowledged in time may have
            // landed: the key then holds exactly its value.
            _ if unacked && live && now.as_ref().is_some_and(|e| e.value == value) => {
                return Ok(true)
            }
            Some(r) if !live || rev != r => return Ok(false),
            None if live => return Ok(false),
            _ => {}
        }
        if rev > last {
            continue;
        }
        if last == 0 {
            again("put", SEED, || kv.put(SEED, Bytes::new())).await?;
            continue;
        }
        let mut headers = HeaderMap::new();
        headers.insert(NATS_EXPECTED_LAST_SEQUENCE, HeaderValue::from(last));
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(rev));
        let sent = js
            .publish_with_headers(subject.clone(), headers, value.clone())
            .await
            .map_err(|e| FleetError::kv("put", key, e))?;
        match tokio::time::timeout(ATTEMPT_WAIT, sent).await {
            Ok(Ok(_)) => return Ok(true),
            // Something was written since `last`: this key (the next read
            // says so) or another one (try again).
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
            Ok(Err(e)) if start.elapsed() >= WRITE_FOR => {
                return Err(FleetError::kv("put", key, e).into())
            }
            Err(_) if start.elapsed() >= WRITE_FOR => {
                return Err(FleetError::TimedOut(WRITE_FOR).into())
            }
            // Not answered (the leader died?), or refused for now: read
            // again and send again.
            _ => unacked = true,
        }
    }
    Ok(false)
}
