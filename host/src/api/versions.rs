//! Versions and aliases: PublishVersion, ListVersionsByFunction,
//! Create/Get/Update/Delete/ListAliases.

use serde_json::{json, Value};

use super::paging::page_reply;
use super::wire::{self, AliasIn, PublishVersionIn};
use super::{function_name, ApiError, App, Reply, Req};
use crate::catalog::{layer_sizes, Resolved};
use crate::store::AliasRecord;
use crate::util::{uuid4, valid_name};

/// The `FunctionConfiguration` document of a resolved version.
pub fn configuration(app: &App, r: &Resolved) -> Value {
    let sizes = layer_sizes(app.functions.store(), &r.config.layers).unwrap_or_default();
    let mut c = wire::function_configuration(
        &r.name,
        &r.version,
        &r.config,
        &r.code,
        &r.revision_id,
        &r.last_modified,
        &r.state,
        &sizes,
    );
    with_guest(app, &mut c, &r.config.runtime, &r.code.native);
    c
}

/// Adds `EmberGuest` to a `FunctionConfiguration`: which guest runs the
/// function here (`wasm`: the kernel-less guest; `linux`; `none` when no
/// guest can, e.g. emberd restarted with another `--python-guest`). Not an
/// AWS member: SDKs parse by shape and skip it (botocore does).
pub fn with_guest(app: &App, c: &mut Value, runtime: &str, native: &[String]) {
    let guest = app.functions.caps().guest(runtime, native);
    c["EmberGuest"] = json!(guest.map(|g| g.name()).unwrap_or("none"));
}

pub fn publish(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let input: PublishVersionIn = req.json()?;
    let (name, _) = function_name(raw, req.account())?;
    if let Some(r) = &input.revision_id {
        if app.functions.store().get_function(&name)?.revision_id != *r {
            return Err(ApiError::PreconditionFailed(
                "The Revision Id provided does not match the latest Revision Id.".into(),
            ));
        }
    }
    let v = app.functions.publish(
        &name,
        input.description.as_deref(),
        input.code_sha256.as_deref(),
    )?;
    let sizes = layer_sizes(app.functions.store(), &v.config.layers).unwrap_or_default();
    Ok(Reply::json(
        201,
        wire::version_configuration(&name, &v, &sizes),
    ))
}

pub fn list(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    let f = app.functions.store().get_function(&name)?;
    let mut all = vec![wire::latest_configuration(
        &f,
        &layer_sizes(app.functions.store(), &f.config.layers).unwrap_or_default(),
    )];
    for v in app.functions.store().list_versions(&name)? {
        all.push(wire::version_configuration(
            &name,
            &v,
            &layer_sizes(app.functions.store(), &v.config.layers).unwrap_or_default(),
        ));
    }
    page_reply("Versions", all, req)
}

fn check_alias_name(alias: &str) -> Result<(), ApiError> {
    if !valid_name(alias) || alias.chars().all(|c| c.is_ascii_digit()) || alias == "$LATEST" {
        return Err(ApiError::InvalidParameter(format!(
            "Alias name {alias:?} is invalid (letters, digits, '-' and '_', not all digits)"
        )));
    }
    Ok(())
}

pub fn create_alias(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let input: AliasIn = req.json()?;
    let (name, _) = function_name(raw, req.account())?;
    let alias = input
        .name
        .ok_or_else(|| ApiError::InvalidParameter("Name is required".into()))?;
    check_alias_name(&alias)?;
    let version = input
        .function_version
        .ok_or_else(|| ApiError::InvalidParameter("FunctionVersion is required".into()))?;
    let rec = AliasRecord {
        name: alias,
        function_version: version,
        description: input.description.unwrap_or_default(),
        revision_id: uuid4(),
    };
    app.functions.store().put_alias(&name, &rec, true)?;
    Ok(Reply::json(201, wire::alias_configuration(&name, &rec)))
}

pub fn get_alias(app: &App, req: &Req, raw: &str, alias: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    check_alias_name(alias)?;
    app.functions.store().get_function(&name)?;
    Ok(Reply::json(
        200,
        wire::alias_configuration(&name, &app.functions.store().get_alias(&name, alias)?),
    ))
}

pub fn list_aliases(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    app.functions.store().get_function(&name)?;
    let all: Vec<Value> = app
        .functions
        .store()
        .list_aliases(&name)?
        .iter()
        .map(|a| wire::alias_configuration(&name, a))
        .collect();
    Ok(Reply::json(200, json!({ "Aliases": all })))
}

pub fn update_alias(app: &App, req: &Req, raw: &str, alias: &str) -> Result<Reply, ApiError> {
    let input: AliasIn = req.json()?;
    let (name, _) = function_name(raw, req.account())?;
    check_alias_name(alias)?;
    let mut rec = app.functions.store().get_alias(&name, alias)?;
    if input
        .revision_id
        .as_deref()
        .is_some_and(|r| r != rec.revision_id)
    {
        return Err(ApiError::PreconditionFailed(
            "The Revision Id provided does not match the latest Revision Id.".into(),
        ));
    }
    if let Some(v) = input.function_version {
        rec.function_version = v;
    }
    if let Some(d) = input.description {
        rec.description = d;
    }
    rec.revision_id = uuid4();
    app.functions.update_alias(&name, &rec)?;
    Ok(Reply::json(200, wire::alias_configuration(&name, &rec)))
}

pub fn delete_alias(app: &App, req: &Req, raw: &str, alias: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    check_alias_name(alias)?;
    app.functions.delete_alias(&name, alias)?;
    Ok(Reply::empty(204))
}
