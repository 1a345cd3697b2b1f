//! A KV bucket's keys, listed from its stream's subjects: one stream info
//! request (`subjects_filter`) answered by the stream's leader. Not with
//! `kv.keys()`, which makes an ordered consumer for every listing: after
//! `kill -9` of one NATS server those consumers were created through a
//! meta leader that was gone or being elected, and a listing then timed out
//! (10 s a call) for 31-52 s while reads and writes worked.

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use super::FleetError;

/// The keys of `kv` starting with `prefix` (live and deleted ones: a delete
/// is a marker message, so callers read each key), sorted.
pub async fn keys(kv: &kv::Store, prefix: &str) -> Result<Vec<String>, FleetError> {
    let err = |e| FleetError::kv("keys", prefix, e);
    // Record prefixes end at a token (`name.`) or are empty; the filter
    // then selects exactly them, and the check below keeps any other exact.
    let filter = match prefix {
        p if p.is_empty() || p.ends_with('.') => format!("{}{p}>", kv.prefix),
        _ => format!("{}>", kv.prefix),
    };
    let mut subjects = kv.stream.info_with_subjects(filter).await.map_err(err)?;
    let mut out = Vec::new();
    while let Some(s) = subjects.next().await {
        let (subject, _) = s.map_err(err)?;
        if let Some(key) = subject.strip_prefix(kv.prefix.as_str()) {
            if key.starts_with(prefix) {
                out.push(key.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}
