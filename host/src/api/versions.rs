//! Versions and aliases: PublishVersion, ListVersionsByFunction,
//! Create/Get/Update/Delete/ListAliases, and qualifier resolution
//! (`$LATEST`, a version number or an alias) shared with Invoke.

use serde_json::{json, Value};

use super::wire::{self, AliasIn, PublishVersionIn};
use super::{function_name, ApiError, App, Reply, Req};
use crate::pool::VersionKey;
use crate::store::{AliasRecord, CodeRef, FunctionConfig};
use crate::util::{uuid4, valid_name};

/// A qualifier resolved to the version it runs.
pub struct Resolved {
    pub name: String,
    /// `$LATEST` or the version number.
    pub version: String,
    pub config: FunctionConfig,
    pub code: CodeRef,
    pub revision_id: String,
    pub last_modified: String,
}

impl Resolved {
    /// The pool key: environments are reused only within this exact revision.
    pub fn key(&self) -> VersionKey {
        VersionKey {
            function: self.name.clone(),
            version: self.version.clone(),
            revision: self.revision_id.clone(),
        }
    }

    pub fn configuration(&self, app: &App) -> Result<Value, ApiError> {
        let sizes = super::functions::layer_sizes(app, &self.config.layers).unwrap_or_default();
        Ok(wire::function_configuration(
            &self.name,
            &self.version,
            &self.config,
            &self.code,
            &self.revision_id,
            &self.last_modified,
            &sizes,
        ))
    }
}

pub fn resolve(app: &App, name: &str, qualifier: Option<&str>) -> Result<Resolved, ApiError> {
    let q = qualifier.unwrap_or("$LATEST");
    if q == "$LATEST" {
        let f = app.store.get_function(name)?;
        return Ok(Resolved {
            name: name.into(),
            version: "$LATEST".into(),
            config: f.config,
            code: f.code,
            revision_id: f.revision_id,
            last_modified: f.last_modified,
        });
    }
    let version = match q.parse::<u64>() {
        Ok(v) => v,
        Err(_) => {
            if !valid_name(q) {
                return Err(ApiError::InvalidParameter(format!(
                    "Qualifier {q:?} is invalid"
                )));
            }
            let a = app.store.get_alias(name, q)?;
            if a.function_version == "$LATEST" {
                return resolve(app, name, None);
            }
            a.function_version
                .parse::<u64>()
                .map_err(|_| ApiError::Service("alias points at a malformed version".into()))?
        }
    };
    let v = app.store.get_version(name, version)?;
    Ok(Resolved {
        name: name.into(),
        version: version.to_string(),
        config: v.config,
        code: v.code,
        revision_id: v.revision_id,
        last_modified: v.last_modified,
    })
}

pub fn publish(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let input: PublishVersionIn = req.json()?;
    let (name, _) = function_name(raw, req.account())?;
    if let Some(r) = &input.revision_id {
        if app.store.get_function(&name)?.revision_id != *r {
            return Err(ApiError::PreconditionFailed(
                "The Revision Id provided does not match the latest Revision Id.".into(),
            ));
        }
    }
    let v = app.store.publish_version(
        &name,
        input.description.as_deref(),
        input.code_sha256.as_deref(),
    )?;
    let sizes = super::functions::layer_sizes(app, &v.config.layers).unwrap_or_default();
    Ok(Reply::json(
        201,
        wire::version_configuration(&name, &v, &sizes),
    ))
}

pub fn list(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    let f = app.store.get_function(&name)?;
    let mut all = vec![wire::latest_configuration(
        &f,
        &super::functions::layer_sizes(app, &f.config.layers).unwrap_or_default(),
    )];
    for v in app.store.list_versions(&name)? {
        all.push(wire::version_configuration(
            &name,
            &v,
            &super::functions::layer_sizes(app, &v.config.layers).unwrap_or_default(),
        ));
    }
    page_reply("Versions", all, req)
}

/// A 200 listing one page of `all` under `key`, with `NextMarker` when
/// more follow (see [`paginate`]).
pub fn page_reply(key: &str, all: Vec<Value>, req: &Req) -> Result<Reply, ApiError> {
    let (page, next) = paginate(all, req)?;
    let mut body = json!({ (key): page });
    if let Some(m) = next {
        body["NextMarker"] = Value::from(m);
    }
    Ok(Reply::json(200, body))
}

/// Index-based pagination for small per-function lists: the marker is the
/// position of the next item.
pub fn paginate(all: Vec<Value>, req: &Req) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let start = match req.q("Marker") {
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| ApiError::InvalidParameter("Marker is invalid".into()))?,
        None => 0,
    };
    let max = req.max_items()?;
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(start).take(max).collect();
    let next = (start + page.len() < total).then(|| (start + page.len()).to_string());
    Ok((page, next))
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
    app.store.put_alias(&name, &rec, true)?;
    Ok(Reply::json(201, wire::alias_configuration(&name, &rec)))
}

pub fn get_alias(app: &App, req: &Req, raw: &str, alias: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    check_alias_name(alias)?;
    app.store.get_function(&name)?;
    Ok(Reply::json(
        200,
        wire::alias_configuration(&name, &app.store.get_alias(&name, alias)?),
    ))
}

pub fn list_aliases(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    app.store.get_function(&name)?;
    let all: Vec<Value> = app
        .store
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
    let mut rec = app.store.get_alias(&name, alias)?;
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
    app.store.put_alias(&name, &rec, false)?;
    super::provisioned::reconcile(app)?;
    Ok(Reply::json(200, wire::alias_configuration(&name, &rec)))
}

pub fn delete_alias(app: &App, req: &Req, raw: &str, alias: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    check_alias_name(alias)?;
    app.store.delete_alias(&name, alias)?;
    super::provisioned::reconcile(app)?;
    Ok(Reply::empty(204))
}
