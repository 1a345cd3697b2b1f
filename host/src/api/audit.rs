//! The HTTP side of the audit trail ([`crate::audit`]): `server.rs` fills a
//! [`Draft`] as it parses a request, asks [`admit`] before running a
//! control-plane handler, and hands the outcome to [`record`]. Which calls
//! are recorded: every control-plane call, refused ones included; the data
//! plane (`Invoke`, `InvokeWithResponseStream` and calls through function
//! URLs, `url_calls.rs`) when authentication or the resource policy refused
//! it (403), and every call with `--audit-data-events` (CloudTrail's data
//! events, off by default there too), never its payload; `/metrics` scrapes
//! never. A record is durable before the response is sent.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::http::request::Parts;

use super::{redact, ApiError, App, Reply, Route};
use crate::audit::{Call, Who};
use crate::auth::Caller;

/// What is known about a request while it is handled.
pub struct Draft {
    method: String,
    path: String,
    query: Option<String>,
    claimed_key: Option<String>,
    caller: Caller,
    target: Target,
    body: Bytes,
}

/// What a request is for.
enum Target {
    /// An API request, and its operation if it names one.
    Api(Option<Route>),
    /// A call through a function URL of this function (`name[:alias]`),
    /// and whether emberd refused it (authentication or the resource
    /// policy; a 403 the function itself answered is not a refusal).
    FunctionUrl { function: String, refused: bool },
}

impl Draft {
    /// Captures the request line and headers before anything consumes them.
    /// The route is worked out here too, so even a request refused before
    /// routing (403) is recorded under its operation.
    pub fn new(parts: &Parts, source: SocketAddr) -> Draft {
        let route = super::parse_target(parts.uri.path(), parts.uri.query())
            .ok()
            .and_then(|(segs, _)| super::route(&parts.method, &segs).ok());
        Draft::with_target(parts, source, Target::Api(route))
    }

    /// A call through a function URL of `function` (`name[:alias]`).
    pub fn function_url(parts: &Parts, source: SocketAddr, function: String) -> Draft {
        let target = Target::FunctionUrl {
            function,
            refused: false,
        };
        Draft::with_target(parts, source, target)
    }

    fn with_target(parts: &Parts, source: SocketAddr, target: Target) -> Draft {
        let auth = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Draft {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            claimed_key: redact::claimed_key(auth),
            caller: Caller::anonymous(source),
            target,
            body: Bytes::new(),
        }
    }

    /// The identity authentication established, and the control-plane body
    /// it read (a cheap reference-counted clone).
    pub fn caller(&mut self, caller: &Caller, body: &Bytes) {
        self.signed_by(caller);
        self.body = body.clone();
    }

    /// The identity authentication established (a data-plane body is
    /// never recorded).
    pub fn signed_by(&mut self, caller: &Caller) {
        self.caller = caller.clone();
    }

    /// A URL call emberd refused (authentication or the resource policy).
    pub fn refused(&mut self) {
        if let Target::FunctionUrl { refused, .. } = &mut self.target {
            *refused = true;
        }
    }

    /// Whether a call that ended in `status` goes into the trail;
    /// `data_events`: `--audit-data-events`.
    fn recorded(&self, status: u16, data_events: bool) -> bool {
        match &self.target {
            Target::Api(Some(Route::Invoke(..))) => status == 403 || data_events,
            Target::FunctionUrl { refused, .. } => *refused || data_events,
            Target::Api(Some(Route::Metrics)) => false,
            Target::Api(_) => true,
        }
    }
}

/// For control-plane routes: refuses to run the call while the trail cannot
/// be written (no unaudited changes).
pub async fn admit(app: &Arc<App>, route: &Route) -> Result<(), ApiError> {
    let Some(log) = app.audit.clone() else {
        return Ok(());
    };
    if matches!(route, Route::Invoke(..) | Route::Metrics) || !log.failing() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || log.ready())
        .await
        .map_err(|e| ApiError::Service(format!("audit check failed: {e}")))?
        .map_err(|e| {
            // Retryable: the trail heals by itself when its disk does.
            ApiError::Unavailable(format!(
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
pub async fn record(app: &Arc<App>, p: Draft, result: &Result<Reply, ApiError>) {
    if app.audit.is_none() {
        return;
    }
    let (status, error, message) = match result {
        Ok(r) => (r.status, None, None),
        Err(e) => (
            e.status(),
            Some(e.error_type().to_string()),
            Some(e.to_string()),
        ),
    };
    record_outcome(app, p, status, error, message).await
}

/// [`record`] for a call answered outside the API's error shapes (a
/// function URL's `{"Message": …}` answers): its status and message.
pub async fn record_status(app: &Arc<App>, p: Draft, status: u16, message: Option<String>) {
    record_outcome(app, p, status, None, message).await
}

async fn record_outcome(
    app: &Arc<App>,
    p: Draft,
    status: u16,
    error: Option<String>,
    message: Option<String>,
) {
    let Some(log) = app.audit.clone() else {
        return;
    };
    let message = message.map(|m| redact::cut(&m, 300).to_string());
    if !p.recorded(status, log.config().data_events) {
        return;
    }
    // Redacting a large body (code uploads) is real work: not on the
    // async runtime.
    let inline = p.body.len() <= INLINE_BODY;
    let build = move || {
        let (operation, resource) = match &p.target {
            Target::Api(Some(r)) => redact::operation(r),
            Target::Api(None) => ("Unknown".to_string(), None),
            Target::FunctionUrl { function, .. } => {
                ("InvokeFunctionUrl".to_string(), Some(function.clone()))
            }
        };
        let query = super::parse_target("/", p.query.as_deref())
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
