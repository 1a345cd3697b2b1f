//! The audit trail's background tasks in emberd: the digest timer and the
//! watch on the credentials file.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::AuditLog;

/// Writes a digest whenever records are waiting and the configured
/// interval has passed, until shutdown.
pub async fn digest_timer(log: Arc<AuditLog>, mut shutdown: watch::Receiver<bool>) {
    let tick = (log.config().digest_interval / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        let l = log.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || l.digest_if_due()).await {
            eprintln!(
                "emberd: ERROR: audit digest not written: {}",
                crate::util::error_chain(&e)
            );
        }
    }
}

/// Access key id -> account.
type KeySet = std::collections::BTreeMap<String, String>;

/// The key ids and accounts of the credentials file (never the secrets).
fn key_set(path: &std::path::Path) -> Option<KeySet> {
    crate::auth::creds::list(path).ok().map(|keys| {
        keys.into_iter()
            .map(|k| (k.access_key_id, k.account))
            .collect()
    })
}

/// Records the credentials file's keys at start and every key added or
/// revoked afterwards (`ember creds` edits the file, not the API, so this
/// is where those changes become visible). Polls once a second: a key added
/// and revoked again within that second goes unrecorded.
pub async fn watch_credentials(
    log: Arc<AuditLog>,
    path: std::path::PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let describe = |m: &KeySet| {
        m.iter()
            .map(|(k, a)| format!("{k} (account {a})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut known = key_set(&path).unwrap_or_default();
    let l = log.clone();
    let detail = format!("{} key(s): {}", known.len(), describe(&known));
    let _ = tokio::task::spawn_blocking(move || l.event("credentials", &detail)).await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        let Some(now) = key_set(&path) else { continue };
        if now == known {
            continue;
        }
        let minus = |a: &KeySet, b: &KeySet| -> KeySet {
            a.iter()
                .filter(|(k, _)| !b.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let detail = format!(
            "added: [{}]; revoked: [{}]",
            describe(&minus(&now, &known)),
            describe(&minus(&known, &now))
        );
        let l = log.clone();
        match tokio::task::spawn_blocking(move || l.event("credentials-changed", &detail)).await {
            Ok(Ok(())) => known = now,
            Ok(Err(e)) => eprintln!(
                "emberd: ERROR: audit record not written: {}",
                crate::util::error_chain(&e)
            ),
            Err(_) => {}
        }
    }
}
