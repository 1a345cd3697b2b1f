//! GetAccountSettings: the caller's limits on this host and what its account
//! uses, computed from the store and the pool (not Lambda's defaults).

use serde_json::json;

use super::{ApiError, App, Reply, Req};

/// The largest package a `ZipFile` can carry: a base64 body within
/// [`super::MAX_CONTROL_BODY`].
const MAX_ZIPPED: usize = super::MAX_CONTROL_BODY / 4 * 3;

pub fn get(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let usage = app.functions.store().account_usage(req.account())?;
    // With quotas configured they are the account's code storage; without,
    // the storage is what the data directory can still take plus what the
    // account already stores.
    let total = match app.functions.store().account_quotas() {
        (None, None) => usage
            .total_code_bytes
            .saturating_add(app.functions.store().writable_bytes()?),
        (code, layers) => code.unwrap_or(0).saturating_add(layers.unwrap_or(0)),
    };
    let limit = app.functions.pool().host_limit();
    let reserved = app.functions.store().reserved_total("")?;
    Ok(Reply::json(
        200,
        json!({
            "AccountLimit": {
                "TotalCodeSize": total,
                "CodeSizeUnzipped": crate::code::MAX_MODULE,
                "CodeSizeZipped": MAX_ZIPPED,
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": u64::from(limit).saturating_sub(reserved),
            },
            "AccountUsage": {
                "TotalCodeSize": usage.total_code_bytes,
                "FunctionCount": usage.function_count,
            },
        }),
    ))
}
