//! `GET /ember/logs/{function}?version=&since=&next=&limit=&wait=`: a
//! function's log lines in time order, as JSON. `since` takes the `--since`
//! grammar of [`crate::since`] (inclusive); `next` is the `NextToken` of an
//! earlier answer (exclusive) and wins over `since`; `wait` (seconds, at
//! most 20) holds an empty answer until new lines arrive, which is how
//! `ember logs --follow` tails without a streaming response. Waiting holds
//! no thread (it awaits the writer's watermark), and an account may have
//! `--log-follows-per-account` (default [`FOLLOWS_PER_ACCOUNT`]) waits open
//! at once: more get 429 `TooManyRequestsException`, as Lambda answers
//! calls beyond a rate limit.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{function_name, ApiError, App, Reply, Req};
use crate::logs::follows::{MAX_LIMIT, MAX_WAIT};
use crate::logs::read::{read, Event, Query};
use crate::logs::time::{format_us, now_us};
use crate::since::parse_since;

fn bad(m: String) -> ApiError {
    ApiError::InvalidParameter(m)
}

/// A request's parameters, checked.
struct Params {
    name: String,
    version: Option<String>,
    after: u64,
    limit: usize,
    wait: Duration,
}

fn params(req: &Req, raw: &str) -> Result<Params, ApiError> {
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
        (None, Some(s)) => parse_since(s, now_us())
            .map_err(|e| bad(format!("since {e}")))?
            .saturating_sub(1),
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
    Ok(Params {
        name,
        version: version.map(str::to_string),
        after,
        limit,
        wait,
    })
}

/// Reads `(after, until]` on a blocking thread (file reads).
async fn read_blocking(
    app: &Arc<App>,
    p: &Params,
    until: u64,
) -> Result<(Vec<Event>, bool), ApiError> {
    let root = app.logs.root().to_path_buf();
    let (name, version, after, limit) = (p.name.clone(), p.version.clone(), p.after, p.limit);
    tokio::task::spawn_blocking(move || {
        let q = Query {
            function: &name,
            version: version.as_deref(),
            after,
            until,
            limit,
        };
        read(&root, &q)
    })
    .await
    .map_err(|e| ApiError::Service(format!("reading logs failed: {e}")))
}

/// Async: a waiting read holds no thread while it waits (the watermark is
/// a watch channel; only the file reads run on a blocking thread, briefly),
/// and an account has at most the cap of them open.
pub async fn get(app: Arc<App>, req: Req, raw: String) -> Result<Reply, ApiError> {
    let p = params(&req, &raw)?;
    let _permit = if p.wait.is_zero() {
        None
    } else {
        let follows = app.logs.follows();
        Some(follows.acquire(req.account()).ok_or_else(|| {
            ApiError::TooManyRequests {
                reason: "CallerRateLimitExceeded",
                message: format!(
                    "Rate exceeded: an account may have {} waiting log reads (wait > 0) open at once",
                    follows.cap()
                ),
            }
        })?)
    };
    let known = {
        let (app, name) = (app.clone(), p.name.clone());
        tokio::task::spawn_blocking(move || {
            app.logs.root().join(&name).is_dir()
                || app.functions.store().get_function(&name).is_ok()
        })
        .await
        .map_err(|e| ApiError::Service(format!("reading logs failed: {e}")))?
    };
    if !known {
        return Err(ApiError::NotFound(format!(
            "Function not found and no logs kept for it: {}",
            p.name
        )));
    }
    let deadline = tokio::time::Instant::now() + p.wait;
    let shared = app.logs.shared();
    let mut until = shared.watermark();
    let (events, truncated) = loop {
        let (events, truncated) = read_blocking(&app, &p, until).await?;
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            break (events, truncated);
        }
        until = shared.wait_past(until.max(p.after), deadline).await;
    };
    let next = match events.last() {
        Some(e) if truncated => e.ts_us,
        _ => until.max(p.after),
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
