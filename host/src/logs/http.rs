//! `GET /ember/logs/{function}?version=&since=&next=&limit=&wait=`: a
//! function's log lines in time order, as JSON. `since` takes `10m` or an
//! RFC 3339 time (inclusive); `next` is the `NextToken` of an
//! earlier answer (exclusive) and wins over `since`; `wait` (seconds, at
//! most 20) holds an empty answer until new lines arrive, which is how
//! `ember logs --follow` tails without a streaming response.

use std::time::{Duration, Instant};

use serde_json::json;

use super::read::{read, Query};
use super::time::{format_us, now_us, parse_since};
use crate::api::{function_name, ApiError, App, Reply, Req};

/// Most lines in one answer (the rest follow with `NextToken`).
pub const MAX_LIMIT: usize = 10_000;
/// Longest `wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

fn bad(m: String) -> ApiError {
    ApiError::InvalidParameter(m)
}

/// Blocking (reads files, may wait): call on a blocking thread.
pub fn get(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    let version = req.q("version");
    if let Some(v) = version {
        if v != "$LATEST" && !(v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad(format!("version {v:?} must be $LATEST or a number")));
        }
    }
    let after = match (req.q("next"), req.q("since")) {
        (Some(t), _) => t
            .parse::<u64>()
            .map_err(|_| bad(format!("next {t:?} is not a NextToken")))?,
        (None, Some(s)) => parse_since(s, now_us()).map_err(bad)?.saturating_sub(1),
        (None, None) => 0,
    };
    let limit = match req.q("limit") {
        None => 1000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| bad(format!("limit must be 1..{MAX_LIMIT}")))?,
    };
    let wait = match req.q("wait") {
        None => Duration::ZERO,
        Some(w) => w
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .filter(|w| *w <= MAX_WAIT)
            .ok_or_else(|| bad(format!("wait must be 0..{} seconds", MAX_WAIT.as_secs())))?,
    };
    let root = app.logs.root();
    if !root.join(&name).is_dir() && app.store.get_function(&name).is_err() {
        return Err(ApiError::NotFound(format!(
            "Function not found and no logs kept for it: {name}"
        )));
    }
    let deadline = Instant::now() + wait;
    let shared = app.logs.shared();
    let mut until = shared.watermark();
    let (events, truncated) = loop {
        let q = Query {
            function: &name,
            version,
            after,
            until,
            limit,
        };
        let (events, truncated) = read(root, &q);
        if !events.is_empty() || Instant::now() >= deadline {
            break (events, truncated);
        }
        until = shared.wait_past(until.max(after), deadline);
    };
    let next = match events.last() {
        Some(e) if truncated => e.ts_us,
        _ => until.max(after),
    };
    let events: Vec<_> = events
        .into_iter()
        .map(|e| {
            json!({
                "Timestamp": format_us(e.ts_us),
                "TimestampMicros": e.ts_us,
                "Version": e.version,
                "Stream": e.stream,
                "Message": e.message,
            })
        })
        .collect();
    Ok(Reply::json(
        200,
        json!({ "Events": events, "NextToken": next.to_string(), "Truncated": truncated }),
    ))
}
