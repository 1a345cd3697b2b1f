//! Concurrency controls: Put/Get/DeleteFunctionConcurrency (reserved) and
//! Put/Get/Delete/ListProvisionedConcurrencyConfig(s). The pool's targets
//! follow the stored configs through [`crate::catalog::reconcile`].

use serde_json::json;

use super::wire::{ProvisionedIn, ReservedIn};
use super::{function_name, ApiError, App, Reply, Req};
use crate::catalog::{reconcile, resolve};
use crate::store::ProvisionedRecord;
use crate::util::now_lambda;

pub fn put_reserved(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let input: ReservedIn = req.json()?;
    let (name, _) = function_name(raw, req.account())?;
    let n = input.reserved_concurrent_executions;
    if !app.pool.can_reserve(&name, n) {
        return Err(ApiError::InvalidParameter(format!(
            "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [0] (host limit {}).",
            app.pool.host_limit()
        )));
    }
    app.store.update_function(&name, |r| {
        r.reserved_concurrency = Some(n);
        Ok(())
    })?;
    app.pool.set_reserved(&name, Some(n));
    Ok(Reply::json(
        200,
        json!({ "ReservedConcurrentExecutions": n }),
    ))
}

pub fn get_reserved(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    let f = app.store.get_function(&name)?;
    Ok(Reply::json(
        200,
        match f.reserved_concurrency {
            Some(n) => json!({ "ReservedConcurrentExecutions": n }),
            None => json!({}),
        },
    ))
}

pub fn delete_reserved(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    app.store.update_function(&name, |r| {
        r.reserved_concurrency = None;
        Ok(())
    })?;
    app.pool.set_reserved(&name, None);
    Ok(Reply::empty(204))
}

/// Provisioned concurrency needs a published version or an alias.
fn qualifier(req: &Req, raw: &str) -> Result<(String, String), ApiError> {
    let (name, q) = function_name(raw, req.account())?;
    let q = req
        .q("Qualifier")
        .map(str::to_string)
        .or(q)
        .ok_or_else(|| ApiError::InvalidParameter("Qualifier is required".into()))?;
    if q == "$LATEST" {
        return Err(ApiError::InvalidParameter(
            "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
                .into(),
        ));
    }
    Ok((name, q))
}

fn status_body(app: &App, rec: &ProvisionedRecord) -> serde_json::Value {
    let (ready, requested) = app
        .pool
        .target_status(&rec.function, &rec.qualifier)
        .unwrap_or((0, rec.requested));
    let status = if ready >= requested {
        "READY"
    } else {
        "IN_PROGRESS"
    };
    json!({
        "RequestedProvisionedConcurrentExecutions": rec.requested,
        "AvailableProvisionedConcurrentExecutions": ready,
        "AllocatedProvisionedConcurrentExecutions": ready,
        "Status": status,
        "LastModified": rec.last_modified,
    })
}

pub fn put(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let input: ProvisionedIn = req.json()?;
    let (name, q) = qualifier(req, raw)?;
    let n = input.provisioned_concurrent_executions;
    if n == 0 || n > app.pool.host_limit() {
        return Err(ApiError::InvalidParameter(format!(
            "ProvisionedConcurrentExecutions must be 1..{}",
            app.pool.host_limit()
        )));
    }
    resolve(&app.store, &name, Some(&q))?;
    let rec = ProvisionedRecord {
        function: name,
        qualifier: q,
        requested: n,
        last_modified: now_lambda(),
    };
    app.store.put_provisioned(&rec)?;
    reconcile(&app.store, &app.pool)?;
    Ok(Reply::json(202, status_body(app, &rec)))
}

pub fn get(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    // ListProvisionedConcurrencyConfigs shares the path (`?List=ALL`).
    if req.q("List") == Some("ALL") {
        return list(app, req, raw);
    }
    let (name, q) = qualifier(req, raw)?;
    app.store.get_function(&name)?;
    let rec = app.store.get_provisioned(&name, &q)?.ok_or_else(|| {
        ApiError::NotFound("No Provisioned Concurrency Config found for this function".into())
    })?;
    Ok(Reply::json(200, status_body(app, &rec)))
}

/// ListProvisionedConcurrencyConfigs: every qualifier of one function.
fn list(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    app.store.get_function(&name)?;
    let all: Vec<serde_json::Value> = app
        .store
        .list_provisioned()?
        .iter()
        .filter(|r| r.function == name)
        .map(|r| {
            let mut item = status_body(app, r);
            item["FunctionArn"] = crate::util::function_arn(&name, Some(&r.qualifier)).into();
            item
        })
        .collect();
    super::paging::page_reply("ProvisionedConcurrencyConfigs", all, req)
}

pub fn delete(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, q) = qualifier(req, raw)?;
    app.store.get_function(&name)?;
    app.store.delete_provisioned(&name, &q)?;
    reconcile(&app.store, &app.pool)?;
    Ok(Reply::empty(204))
}
