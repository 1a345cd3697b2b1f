//! Concurrency controls: Put/Get/DeleteFunctionConcurrency (reserved) and
//! Put/Get/Delete/ListProvisionedConcurrencyConfig(s). The pool's targets
//! follow the stored configs (see [`crate::functions::Functions::provision`]).

use serde_json::json;

use super::wire::{ProvisionedIn, ReservedIn};
use super::{function_name, ApiError, App, Reply, Req};
use crate::store::ProvisionedRecord;
use crate::util::now_lambda;

pub fn put_reserved(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let input: ReservedIn = req.json()?;
    let (name, _) = function_name(raw, req.account())?;
    let n = input.reserved_concurrent_executions;
    app.functions.reserve(&name, Some(n))?;
    Ok(Reply::json(
        200,
        json!({ "ReservedConcurrentExecutions": n }),
    ))
}

pub fn get_reserved(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    let f = app.functions.store().get_function(&name)?;
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
    app.functions.reserve(&name, None)?;
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
    let (ready, requested) = app.functions.provisioned_status(rec);
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
    let rec = ProvisionedRecord {
        function: name,
        qualifier: q,
        requested: input.provisioned_concurrent_executions,
        last_modified: now_lambda(),
    };
    app.functions.provision(&rec)?;
    Ok(Reply::json(202, status_body(app, &rec)))
}

pub fn get(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    // ListProvisionedConcurrencyConfigs shares the path (`?List=ALL`).
    if req.q("List") == Some("ALL") {
        return list(app, req, raw);
    }
    let (name, q) = qualifier(req, raw)?;
    app.functions.store().get_function(&name)?;
    let rec = app
        .functions
        .store()
        .get_provisioned(&name, &q)?
        .ok_or_else(|| {
            ApiError::NotFound("No Provisioned Concurrency Config found for this function".into())
        })?;
    Ok(Reply::json(200, status_body(app, &rec)))
}

/// ListProvisionedConcurrencyConfigs: every qualifier of one function.
fn list(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    app.functions.store().get_function(&name)?;
    let all: Vec<serde_json::Value> = app
        .functions
        .store()
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
    app.functions.unprovision(&name, &q)?;
    Ok(Reply::empty(204))
}
