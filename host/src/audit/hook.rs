//! The front door's side of the audit trail: `server.rs` fills a
//! [`Pending`] as it parses a request, asks [`admit`] before running a
//! control-plane handler, and hands the outcome to [`record`]. Which calls
//! are recorded: every control-plane call, refused ones included; `Invoke`
//! (data plane) only when authentication refused it (403); `/metrics`
//! scrapes never. A record is durable before the response is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::http::request::Parts;
use tokio::sync::watch;

use super::{redact, AuditLog, Call, Who};
use crate::api::{ApiError, App, Reply, Route};
use crate::auth::Caller;

/// What is known about a request while it is handled.
pub struct Pending {
    method: String,
    path: String,
    query: Option<String>,
    claimed_key: Option<String>,
    caller: Caller,
    route: Option<Route>,
    body: Bytes,
}

impl Pending {
    /// Captures the request line and headers before anything consumes them.
    /// The route is worked out here too, so even a request refused before
    /// routing (403) is recorded under its operation.
    pub fn new(parts: &Parts, source: SocketAddr) -> Pending {
        let auth = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let route = crate::api::parse_target(parts.uri.path(), parts.uri.query())
            .ok()
            .and_then(|(segs, _)| crate::api::route(&parts.method, &segs).ok());
        Pending {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            claimed_key: redact::claimed_key(auth),
            caller: Caller::anonymous(source),
            route,
            body: Bytes::new(),
        }
    }

    /// The identity authentication established, and the control-plane body
    /// it read (a cheap reference-counted clone).
    pub fn caller(&mut self, caller: &Caller, body: &Bytes) {
        self.caller = caller.clone();
        self.body = body.clone();
    }

    fn recorded(&self, status: u16) -> bool {
        match &self.route {
            Some(Route::Invoke(_)) => status == 403,
            Some(Route::Metrics) => false,
            _ => true,
        }
    }
}

/// For control-plane routes: refuses to run the call while the trail cannot
/// be written (no unaudited changes).
pub async fn admit(app: &Arc<App>, route: &Route) -> Result<(), ApiError> {
    let Some(log) = app.audit.clone() else {
        return Ok(());
    };
    if matches!(route, Route::Invoke(_) | Route::Metrics) || !log.failing() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || log.ready())
        .await
        .map_err(|e| ApiError::Service(format!("audit check failed: {e}")))?
        .map_err(|e| {
            ApiError::Service(format!(
                "The audit trail cannot be written, so control-plane calls are refused: {}",
                crate::util::error_chain(&e)
            ))
        })
}

/// Bodies up to this size are redacted on the async runtime.
const INLINE_BODY: usize = 64 << 10;

/// Appends the record of a finished request through the group commit
/// (`group.rs`: durable before this returns, no thread held meanwhile). A write failure does not change the response: the
/// call's effect is already committed, and a 5xx would invite a retry
/// that applies it twice. It is logged, counted, and recorded as a gap by
/// the next append; until then [`admit`] refuses control-plane calls.
pub async fn record(app: &Arc<App>, p: Pending, result: &Result<Reply, ApiError>) {
    let Some(log) = app.audit.clone() else {
        return;
    };
    let (status, error, message) = match result {
        Ok(r) => (r.status, None, None),
        Err(e) => {
            let m = e.to_string();
            let m = redact::cut(&m, 300).to_string();
            (e.status(), Some(e.error_type().to_string()), Some(m))
        }
    };
    if !p.recorded(status) {
        return;
    }
    // Redacting a large body (code uploads) is real work: not on the
    // async runtime.
    let inline = p.body.len() <= INLINE_BODY;
    let build = move || {
        let (operation, resource) = match &p.route {
            Some(r) => redact::operation(r),
            None => ("Unknown".to_string(), None),
        };
        let query = crate::api::parse_target("/", p.query.as_deref())
            .map(|(_, q)| q)
            .unwrap_or_default();
        let who = Who {
            access_key_id: p.caller.access_key_id.clone(),
            account: p.caller.account.clone(),
            claimed_access_key_id: p
                .caller
                .access_key_id
                .is_none()
                .then_some(p.claimed_key)
                .flatten(),
            source: p.caller.source.to_string(),
        };
        let params = redact::params(&query, &p.body);
        // Create calls name their resource in the body.
        let resource = resource.or_else(|| {
            ["FunctionName", "LayerName"]
                .iter()
                .find_map(|k| params["body"][k].as_str().map(str::to_string))
        });
        Call {
            who,
            operation,
            resource,
            method: p.method,
            path: p.path,
            params,
            status,
            error,
            message,
        }
    };
    let call = if inline {
        Ok(build())
    } else {
        tokio::task::spawn_blocking(build).await
    };
    let r = match call {
        Ok(call) => log.record(call).await,
        Err(e) => Err(e.to_string()),
    };
    let Err(err) = r else { return };
    app.metrics.audit_write_error();
    eprintln!("emberd: ERROR: audit record not written: {err}");
}

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
