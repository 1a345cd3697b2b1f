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

use async_nats::header::{NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;

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
    let mut stream = kv.stream.clone();
    for _ in 0..RETRIES {
        // The stream's last sequence first, then the key: if the key's
        // revision is not after it, the key was at that revision when the
        // stream was at that sequence.
        let last = stream
            .info()
            .await
            .map_err(|e| FleetError::kv("info", key, e))?
            .state
            .last_sequence;
        let now = kv
            .entry(key)
            .await
            .map_err(|e| FleetError::kv("get", key, e))?;
        let (live, rev) = match &now {
            Some(e) => (e.operation == kv::Operation::Put, e.revision),
            None => (false, 0),
        };
        match revision {
            Some(r) if !live || rev != r => return Ok(false),
            None if live => return Ok(false),
            _ => {}
        }
        if rev > last {
            continue;
        }
        if last == 0 {
            kv.put(SEED, Bytes::new())
                .await
                .map_err(|e| FleetError::kv("put", SEED, e))?;
            continue;
        }
        let mut headers = HeaderMap::new();
        headers.insert(NATS_EXPECTED_LAST_SEQUENCE, HeaderValue::from(last));
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(rev));
        let sent = js
            .publish_with_headers(subject.clone(), headers, value.clone())
            .await
            .map_err(|e| FleetError::kv("put", key, e))?;
        match sent.await {
            Ok(_) => return Ok(true),
            // Something was written since `last`: this key (the next read
            // says so) or another one (try again).
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
            Err(e) => return Err(FleetError::kv("put", key, e).into()),
        }
    }
    Ok(false)
}
