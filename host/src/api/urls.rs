//! Function URL configurations: Create/Get/Update/Delete/ListFunctionUrlConfig(s)
//! as botocore's Lambda model shapes them. A URL serves `$LATEST` or an
//! alias (never a version number); at most one per qualifier. The calls
//! themselves go through the URL listener (`super::url_calls`).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{function_name, ApiError, App, Reply, Req};
use crate::store::{Cors, FunctionRecord, UrlConfig};
use crate::util::{function_arn, now_lambda};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct CorsIn {
    allow_credentials: Option<bool>,
    allow_headers: Option<Vec<String>>,
    allow_methods: Option<Vec<String>>,
    allow_origins: Option<Vec<String>>,
    expose_headers: Option<Vec<String>>,
    max_age: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct UrlIn {
    auth_type: Option<String>,
    cors: Option<CorsIn>,
    invoke_mode: Option<String>,
}

fn enum_error(value: &str, field: &str, allowed: &str) -> ApiError {
    ApiError::InvalidParameter(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must satisfy enum value set: [{allowed}]"
    ))
}

fn check_auth(t: &str) -> Result<(), ApiError> {
    match t {
        "NONE" | "AWS_IAM" => Ok(()),
        other => Err(enum_error(other, "authType", "AWS_IAM, NONE")),
    }
}

fn check_mode(m: &str) -> Result<(), ApiError> {
    match m {
        "BUFFERED" | "RESPONSE_STREAM" => Ok(()),
        other => Err(enum_error(other, "invokeMode", "BUFFERED, RESPONSE_STREAM")),
    }
}

fn list_of(
    field: &str,
    items: Option<Vec<String>>,
    max_len: usize,
) -> Result<Vec<String>, ApiError> {
    let items = items.unwrap_or_default();
    if items.len() > 100 {
        return Err(ApiError::InvalidParameter(format!(
            "Cors.{field} has {} items; at most 100 are allowed",
            items.len()
        )));
    }
    if let Some(bad) = items.iter().find(|i| i.is_empty() || i.len() > max_len) {
        return Err(ApiError::InvalidParameter(format!(
            "Cors.{field} item {bad:?} must be 1 to {max_len} characters long"
        )));
    }
    Ok(items)
}

fn cors_of(c: CorsIn) -> Result<Cors, ApiError> {
    if c.max_age.is_some_and(|a| a > 86_400) {
        return Err(ApiError::InvalidParameter(
            "Cors.MaxAge must be between 0 and 86400".into(),
        ));
    }
    let methods = list_of("AllowMethods", c.allow_methods, 6)?;
    if let Some(bad) = methods.iter().find(|m| {
        !matches!(
            m.as_str(),
            "*" | "GET" | "PUT" | "HEAD" | "POST" | "PATCH" | "DELETE" | "OPTIONS"
        )
    }) {
        return Err(ApiError::InvalidParameter(format!(
            "Cors.AllowMethods item {bad:?} is not an HTTP method (or *)"
        )));
    }
    Ok(Cors {
        allow_credentials: c.allow_credentials.unwrap_or(false),
        allow_headers: list_of("AllowHeaders", c.allow_headers, 1024)?,
        allow_methods: methods,
        allow_origins: list_of("AllowOrigins", c.allow_origins, 253)?,
        expose_headers: list_of("ExposeHeaders", c.expose_headers, 1024)?,
        max_age: c.max_age,
    })
}

fn cors_json(c: &Cors) -> Value {
    let mut v = json!({
        "AllowCredentials": c.allow_credentials,
        "AllowHeaders": c.allow_headers,
        "AllowMethods": c.allow_methods,
        "AllowOrigins": c.allow_origins,
        "ExposeHeaders": c.expose_headers,
    });
    if let Some(a) = c.max_age {
        v["MaxAge"] = Value::from(a);
    }
    v
}

fn config_json(app: &App, f: &FunctionRecord, u: &UrlConfig, with_modified: bool) -> Value {
    let mut v = json!({
        "FunctionUrl": app.urls.url(&u.url_id),
        "FunctionArn": function_arn(&f.name, u.qualifier.as_deref()),
        "AuthType": u.auth_type,
        "CreationTime": u.creation_time,
        "InvokeMode": u.invoke_mode,
    });
    if let Some(c) = &u.cors {
        v["Cors"] = cors_json(c);
    }
    if with_modified {
        v["LastModifiedTime"] = Value::from(u.last_modified_time.clone());
    }
    v
}

/// The function and qualifier a URL call names: `$LATEST` (as `None`) or
/// an alias that exists.
fn target(app: &App, req: &Req, raw: &str) -> Result<(String, Option<String>), ApiError> {
    let (name, q) = function_name(raw, req.account())?;
    let q = req.q("Qualifier").map(str::to_string).or(q);
    let q = q.filter(|q| q != "$LATEST");
    if let Some(q) = &q {
        let alias_like = q.len() <= 128
            && !q.bytes().all(|b| b.is_ascii_digit())
            && q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !alias_like {
            return Err(ApiError::InvalidParameter(format!(
                "1 validation error detected: Value '{q}' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: ((?!^\\d+$)^[0-9a-zA-Z-_]+$)"
            )));
        }
        app.functions.store().get_alias(&name, q)?;
    } else {
        app.functions.store().get_function(&name)?;
    }
    Ok((name, q))
}

fn not_found() -> ApiError {
    ApiError::NotFound("The resource you requested does not exist.".into())
}

pub fn create(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, qualifier) = target(app, req, raw)?;
    if !app.urls.served() {
        return Err(ApiError::InvalidParameter(
            "This emberd serves no function URLs: start it with --url-listen ADDR".into(),
        ));
    }
    let input: UrlIn = req.json()?;
    let auth_type = input
        .auth_type
        .ok_or_else(|| ApiError::InvalidParameter("AuthType is required".into()))?;
    check_auth(&auth_type)?;
    let invoke_mode = input.invoke_mode.unwrap_or_else(|| "BUFFERED".into());
    check_mode(&invoke_mode)?;
    let now = now_lambda();
    let cfg = UrlConfig {
        qualifier: qualifier.clone(),
        url_id: crate::urls::Urls::new_id(),
        auth_type,
        invoke_mode,
        cors: input.cors.map(cors_of).transpose()?,
        creation_time: now.clone(),
        last_modified_time: now,
    };
    let f = super::update_function(app, &name, |f| {
        if f.urls.iter().any(|u| u.qualifier == qualifier) {
            return Err(ApiError::Conflict(format!(
                "Failed to create function url config for [functionArn = {}]. Error message:  FunctionUrlConfig exists for this Lambda function",
                function_arn(&name, qualifier.as_deref())
            )));
        }
        f.urls.push(cfg.clone());
        Ok(())
    })?;
    app.urls.remember(&cfg.url_id, &name, qualifier.as_deref());
    Ok(Reply::json(201, config_json(app, &f, &cfg, false)))
}

pub fn get(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, qualifier) = target(app, req, raw)?;
    let f = app.functions.store().get_function(&name)?;
    current(app, &f, &qualifier)
}

/// 200 with the URL config of `qualifier` as `f` holds it.
fn current(app: &App, f: &FunctionRecord, qualifier: &Option<String>) -> Result<Reply, ApiError> {
    let u = f
        .urls
        .iter()
        .find(|u| &u.qualifier == qualifier)
        .ok_or_else(not_found)?;
    Ok(Reply::json(200, config_json(app, f, u, true)))
}

pub fn update_config(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, qualifier) = target(app, req, raw)?;
    let input: UrlIn = req.json()?;
    if let Some(t) = &input.auth_type {
        check_auth(t)?;
    }
    if let Some(m) = &input.invoke_mode {
        check_mode(m)?;
    }
    let cors = input.cors.map(cors_of).transpose()?;
    let f = super::update_function(app, &name, |f| {
        let u = f
            .urls
            .iter_mut()
            .find(|u| u.qualifier == qualifier)
            .ok_or_else(not_found)?;
        if let Some(t) = input.auth_type {
            u.auth_type = t;
        }
        if let Some(m) = input.invoke_mode {
            u.invoke_mode = m;
        }
        if cors.is_some() {
            u.cors = cors;
        }
        u.last_modified_time = now_lambda();
        Ok(())
    })?;
    current(app, &f, &qualifier)
}

pub fn delete(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, qualifier) = target(app, req, raw)?;
    super::update_function(app, &name, |f| {
        let before = f.urls.len();
        f.urls.retain(|u| u.qualifier != qualifier);
        if f.urls.len() == before {
            return Err(not_found());
        }
        Ok(())
    })?;
    Ok(Reply::empty(204))
}

pub fn list(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    let f = app.functions.store().get_function(&name)?;
    let all = f
        .urls
        .iter()
        .map(|u| config_json(app, &f, u, true))
        .collect();
    super::paging::page_reply("FunctionUrlConfigs", all, req)
}
