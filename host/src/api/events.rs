//! HTTP side of asynchronous invocation: accepting an `Event` invoke (202
//! once durable), `Put/Get/Update/Delete/ListFunctionEventInvokeConfig(s)`
//! (`/2019-09-25/functions/{name}/event-invoke-config`), and emberd's own
//! routes for destination queues (`/ember/queues...`) and the queue's state
//! and attempt log (`/ember/async...`).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::invoke::InvokeBody;
use super::{function_name, ApiError, App, Reply, Req};
use crate::events::model::{AttemptRecord, InvokeConfig};
use crate::events::{dest, DbError, EventsError, MAX_EVENT_PAYLOAD};
use crate::store::StoreError;
use crate::util::{function_arn, scoped_name, split_scoped};

/// The routes this module serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    PutConfig(String),
    UpdateConfig(String),
    GetConfig(String),
    DeleteConfig(String),
    ListConfigs(String),
    ListQueues,
    ReadQueue(String),
    DeleteQueue(String),
    Attempts,
    Status,
}

pub fn route(method: &hyper::Method, s: &[&str]) -> Option<Route> {
    use hyper::Method as M;
    let f = |i: usize| s[i].to_string();
    Some(match (method, s) {
        (&M::PUT, ["2019-09-25", "functions", _, "event-invoke-config"]) => Route::PutConfig(f(2)),
        (&M::POST, ["2019-09-25", "functions", _, "event-invoke-config"]) => {
            Route::UpdateConfig(f(2))
        }
        (&M::GET, ["2019-09-25", "functions", _, "event-invoke-config"]) => Route::GetConfig(f(2)),
        (&M::DELETE, ["2019-09-25", "functions", _, "event-invoke-config"]) => {
            Route::DeleteConfig(f(2))
        }
        (&M::GET, ["2019-09-25", "functions", _, "event-invoke-config", "list"]) => {
            Route::ListConfigs(f(2))
        }
        (&M::GET, ["ember", "queues"]) => Route::ListQueues,
        (&M::GET, ["ember", "queues", _]) => Route::ReadQueue(f(2)),
        (&M::DELETE, ["ember", "queues", _]) => Route::DeleteQueue(f(2)),
        (&M::GET, ["ember", "async", "attempts"]) => Route::Attempts,
        (&M::GET, ["ember", "async"]) => Route::Status,
        _ => return None,
    })
}

/// The operation name and function of a route (for the audit trail).
pub fn operation(route: &Route) -> (&'static str, Option<&String>) {
    match route {
        Route::PutConfig(f) => ("PutFunctionEventInvokeConfig", Some(f)),
        Route::UpdateConfig(f) => ("UpdateFunctionEventInvokeConfig", Some(f)),
        Route::GetConfig(f) => ("GetFunctionEventInvokeConfig", Some(f)),
        Route::DeleteConfig(f) => ("DeleteFunctionEventInvokeConfig", Some(f)),
        Route::ListConfigs(f) => ("ListFunctionEventInvokeConfigs", Some(f)),
        Route::ListQueues => ("ListQueues", None),
        Route::ReadQueue(_) => ("ReadQueue", None),
        Route::DeleteQueue(_) => ("DeleteQueueMessages", None),
        Route::Attempts => ("ListAsyncAttempts", None),
        Route::Status => ("GetAsyncStatus", None),
    }
}

/// Runs one of this module's operations (blocking: store transactions).
pub fn dispatch(app: &App, route: Route, req: &Req) -> Result<Reply, ApiError> {
    match route {
        Route::PutConfig(n) => put_config(app, req, &n, false),
        Route::UpdateConfig(n) => put_config(app, req, &n, true),
        Route::GetConfig(n) => get_config(app, req, &n),
        Route::DeleteConfig(n) => delete_config(app, req, &n),
        Route::ListConfigs(n) => list_configs(app, req, &n),
        Route::ListQueues => list_queues(app, req),
        Route::ReadQueue(q) => read_queue(app, req, &q),
        Route::DeleteQueue(q) => delete_queue(app, req, &q),
        Route::Attempts => attempts(app, req),
        Route::Status => status(app, req),
    }
}

fn service(e: impl std::error::Error) -> ApiError {
    eprintln!("emberd: event store: {}", crate::util::error_chain(&e));
    ApiError::Service("An internal error occurred in the event store.".into())
}

/// `InvocationType: Event`: the event is committed (fsync'd) before the
/// 202, whose `x-amzn-RequestId` is the event's request id.
pub async fn accept(
    app: &Arc<App>,
    target: &crate::catalog::Resolved,
    qualifier: Option<&str>,
    content_length: Option<u64>,
    body: InvokeBody,
) -> Result<Reply, ApiError> {
    let too_large = || {
        ApiError::TooLarge(format!(
            "Request must be smaller than {MAX_EVENT_PAYLOAD} bytes for the InvokeAsync operation"
        ))
    };
    if content_length.is_some_and(|n| n > MAX_EVENT_PAYLOAD as u64) {
        if let InvokeBody::Stream(b, _) = body {
            crate::server::body::drain(b, 8 * MAX_EVENT_PAYLOAD).await;
        }
        return Err(too_large());
    }
    let payload = super::invoke::read_payload(body, MAX_EVENT_PAYLOAD)
        .await
        .map_err(|e| match e {
            ApiError::TooLarge(_) => too_large(),
            other => other,
        })?;
    // Below the free-space floor events are refused (503); synchronous
    // invokes go on.
    app.functions.store().check_space()?;
    let id = app
        .events
        .accept(&target.name, qualifier, payload)
        .await
        .map_err(|e| match e {
            // A full disk or an I/O error: 503, retryable (the store reopens).
            // or the account's queue quota: 429.
            EventsError::Db(DbError::Store(s)) | EventsError::Store(s)
                if s.is_storage() || matches!(s, StoreError::QueueQuota(_)) =>
            {
                ApiError::from(s)
            }
            other => service(other),
        })?;
    app.metrics
        .async_event_received(&target.name, &target.version);
    let mut reply = Reply::empty(202);
    reply.headers.push((super::REQUEST_ID, id));
    Ok(reply)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ConfigIn {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationsIn>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct DestinationsIn {
    on_success: Option<DestinationIn>,
    on_failure: Option<DestinationIn>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct DestinationIn {
    destination: Option<String>,
}

/// A destination as given: validated (a queue of the caller's own
/// account), `""` meaning none.
fn destination(
    d: &Option<DestinationIn>,
    which: &str,
    account: &str,
) -> Result<Option<String>, ApiError> {
    let arn = match d.as_ref().and_then(|d| d.destination.as_deref()) {
        None | Some("") => return Ok(None),
        Some(arn) => arn,
    };
    let queue =
        dest::queue_of(arn).map_err(|m| ApiError::InvalidParameter(format!("{which}: {m}")))?;
    if split_scoped(&queue).0 != account {
        return Err(ApiError::InvalidParameter(format!(
            "{which}: the destination {arn} belongs to another account"
        )));
    }
    Ok(Some(arn.to_string()))
}

fn in_range(v: i64, lo: i64, hi: i64, field: &str) -> Result<u32, ApiError> {
    if (lo..=hi).contains(&v) {
        Ok(v as u32)
    } else {
        Err(ApiError::InvalidParameter(format!(
            "1 validation error detected: Value '{v}' at '{field}' failed to satisfy constraint: Member must have value {} {}",
            if v < lo { "greater than or equal to" } else { "less than or equal to" },
            if v < lo { lo } else { hi }
        )))
    }
}

/// The function name and qualifier (query or ARN suffix; default
/// `$LATEST`), checked to exist.
fn target(app: &App, req: &Req, raw: &str) -> Result<(String, String), ApiError> {
    let (name, q) = function_name(raw, req.account())?;
    let q = req
        .q("Qualifier")
        .map(str::to_string)
        .or(q)
        .unwrap_or_else(|| "$LATEST".into());
    crate::catalog::resolve(app.functions.store(), &name, Some(&q))?;
    Ok((name, q))
}

fn not_configured(name: &str, q: &str) -> ApiError {
    ApiError::NotFound(format!(
        "The function {} doesn't have an EventInvokeConfig",
        function_arn(name, Some(q))
    ))
}

/// Put (replace; omitted fields take their defaults) or Update (merge).
fn put_config(app: &App, req: &Req, raw: &str, merge: bool) -> Result<Reply, ApiError> {
    let input: ConfigIn = req.json()?;
    let (name, q) = target(app, req, raw)?;
    let old = app.events.db().get_config(&name, &q).map_err(service)?;
    let mut c = match (merge, old) {
        (true, Some(old)) => old,
        _ => InvokeConfig::default_for(&name, &q),
    };
    if let Some(n) = input.maximum_retry_attempts {
        c.maximum_retry_attempts = in_range(n, 0, 2, "maximumRetryAttempts")?;
    }
    if let Some(n) = input.maximum_event_age_in_seconds {
        c.maximum_event_age_in_seconds = in_range(n, 60, 21600, "maximumEventAgeInSeconds")?;
    }
    if let Some(d) = &input.destination_config {
        if !merge || d.on_success.is_some() {
            c.on_success = destination(&d.on_success, "OnSuccess", req.account())?;
        }
        if !merge || d.on_failure.is_some() {
            c.on_failure = destination(&d.on_failure, "OnFailure", req.account())?;
        }
    }
    if !merge && input.destination_config.is_none() {
        (c.on_success, c.on_failure) = (None, None);
    }
    c.last_modified = crate::events::now_ms() as f64 / 1000.0;
    app.events.db().put_config(&c).map_err(service)?;
    Ok(Reply::json(200, c.wire()))
}

fn get_config(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, q) = target(app, req, raw)?;
    match app.events.db().get_config(&name, &q).map_err(service)? {
        Some(c) => Ok(Reply::json(200, c.wire())),
        None => Err(not_configured(&name, &q)),
    }
}

fn delete_config(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, q) = target(app, req, raw)?;
    match app
        .events
        .db()
        .delete_configs(&name, Some(&q))
        .map_err(service)?
    {
        0 => Err(not_configured(&name, &q)),
        _ => Ok(Reply::empty(204)),
    }
}

fn list_configs(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    app.functions.store().get_function(&name)?;
    let max = match req.q("MaxItems") {
        None => 50,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=50).contains(m))
            .ok_or_else(|| ApiError::InvalidParameter("MaxItems must be 1..50".into()))?,
    };
    let all = app.events.db().list_configs(&name).map_err(service)?;
    let start = match req.q("Marker") {
        Some(m) => all
            .iter()
            .position(|c| c.qualifier == m)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::InvalidParameter("Marker is not valid".into()))?,
        None => 0,
    };
    let page: Vec<&InvokeConfig> = all.iter().skip(start).take(max).collect();
    let mut v = json!({
        "FunctionEventInvokeConfigs": page.iter().map(|c| c.wire()).collect::<Vec<Value>>(),
    });
    if start + page.len() < all.len() {
        if let Some(last) = page.last() {
            v["NextMarker"] = Value::from(last.qualifier.clone());
        }
    }
    Ok(Reply::json(200, v))
}

/// The caller's queue `q`, as stored.
fn queue_name(req: &Req, q: &str) -> Result<String, ApiError> {
    if dest::valid_queue(q) {
        Ok(scoped_name(req.account(), q))
    } else {
        Err(ApiError::InvalidParameter(format!(
            "Queue name {q:?} must be 1-80 characters of [A-Za-z0-9_-]"
        )))
    }
}

/// `GET /ember/queues`: the caller's account's queues (every account's for
/// an operator; reading one still takes the caller's own account's name).
fn list_queues(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let queues: Vec<Value> = app.events.db()
        .queues()
        .map_err(service)?
        .into_iter()
        .filter(|(scoped, _)| req.caller.sees(split_scoped(scoped).0))
        .map(|(scoped, n)| {
            let (account, name) = split_scoped(&scoped);
            json!({"Name": name, "Account": account, "Arn": dest::queue_arn(&scoped), "Messages": n})
        })
        .collect();
    Ok(Reply::json(200, json!({ "Queues": queues })))
}

/// `GET /ember/queues/{q}?MaxItems=&Marker=`: messages, oldest first.
fn read_queue(app: &App, req: &Req, q: &str) -> Result<Reply, ApiError> {
    let q = queue_name(req, q)?;
    let max = req.max_items()?;
    let marker = match req.q("Marker") {
        None => None,
        Some(m) => Some(m.parse::<u64>().map_err(|_| {
            ApiError::InvalidParameter("Marker must come from a previous page".into())
        })?),
    };
    let (msgs, next) = app
        .events
        .db()
        .read_queue(&q, marker, max)
        .map_err(service)?;
    let mut v = json!({ "Messages": msgs.iter().map(|m| m.wire()).collect::<Vec<Value>>() });
    if let Some(n) = next {
        v["NextMarker"] = Value::from(n.to_string());
    }
    Ok(Reply::json(200, v))
}

/// `DELETE /ember/queues/{q}[?MessageId=]`: one message, or all of them.
fn delete_queue(app: &App, req: &Req, q: &str) -> Result<Reply, ApiError> {
    let q = queue_name(req, q)?;
    let id = req.q("MessageId");
    let n = app.events.db().delete_messages(&q, id).map_err(service)?;
    if n == 0 && id.is_some() {
        return Err(ApiError::NotFound(format!(
            "Message {} not found in queue {}",
            id.unwrap_or_default(),
            split_scoped(&q).1
        )));
    }
    Ok(Reply::json(200, json!({ "Deleted": n })))
}

/// `GET /ember/async/attempts?RequestId=&After=&MaxItems=`: the attempt
/// log of the caller's account's functions (every account's for an operator).
fn attempts(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let after = match req.q("After") {
        None => 0,
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| ApiError::InvalidParameter("After must be an attempt id".into()))?,
    };
    let max = req.max_items()?;
    let rid = req.q("RequestId");
    let own = |a: &AttemptRecord| {
        req.caller.sees(split_scoped(&a.function).0) && rid.is_none_or(|r| a.request_id == r)
    };
    let list = app.events.db().attempts(own, after, max).map_err(service)?;
    let mut v = json!({ "Attempts": list.iter().map(|a| a.wire()).collect::<Vec<Value>>() });
    if list.len() == max {
        if let Some(last) = list.last() {
            v["NextAfter"] = Value::from(last.id);
        }
    }
    Ok(Reply::json(200, v))
}

/// `GET /ember/async`: this run's boot number and the queue's depth: the
/// caller's account's events (every account's for an operator, with
/// `Stored` read from the event store).
fn status(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let (waiting, in_flight, stored) = if req.caller.operator {
        let (w, f) = app.events.depth();
        (w, f, app.events.db().pending_count().map_err(service)?)
    } else {
        // Every stored event is queued or in flight from recovery on.
        let (w, f) = app.events.depth_of(req.account());
        (w, f, (w + f) as u64)
    };
    Ok(Reply::json(
        200,
        json!({
            "Boot": app.events.boot(),
            "Waiting": waiting,
            "InFlight": in_flight,
            "Stored": stored,
        }),
    ))
}
