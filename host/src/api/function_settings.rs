//! Per-function settings emberd has nothing to configure, answered in
//! Lambda's shapes so deploy tools that read them work: code signing (no
//! code-signing config exists here, so none can be attached) and runtime
//! management (one runtime version per runtime: `Auto`).

use serde::Deserialize;
use serde_json::json;

use super::{function_name, ApiError, App, Reply, Req};
use crate::util::{function_arn, split_scoped};

/// GetFunctionCodeSigningConfig: none attached.
pub fn get_code_signing(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    app.functions.store().get_function(&name)?;
    Ok(Reply::json(
        200,
        json!({ "CodeSigningConfigArn": "", "FunctionName": split_scoped(&name).1 }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeSigningIn {
    #[serde(rename = "CodeSigningConfigArn")]
    arn: String,
}

/// PutFunctionCodeSigningConfig: whatever config it names does not exist.
pub fn put_code_signing(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    app.functions.store().get_function(&name)?;
    let input: CodeSigningIn = req.json()?;
    Err(ApiError::CodeSigningConfigNotFound(format!(
        "Code signing config {} not found (emberd verifies no code signatures, so it has no code signing configs)",
        input.arn
    )))
}

/// DeleteFunctionCodeSigningConfig: nothing is attached, so nothing to do.
pub fn delete_code_signing(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    app.functions.store().get_function(&name)?;
    Ok(Reply::empty(204))
}

/// ListCodeSigningConfigs: there are none.
pub fn list_code_signing_configs() -> Reply {
    Reply::json(200, json!({ "CodeSigningConfigs": [] }))
}

/// The function (and qualifier) a runtime-management call names, checked
/// to exist; its ARN as the response reports it.
fn runtime_target(app: &App, req: &Req, raw: &str) -> Result<String, ApiError> {
    let (name, q) = function_name(raw, req.account())?;
    let q = req.q("Qualifier").map(str::to_string).or(q);
    crate::catalog::resolve(app.functions.store(), &name, q.as_deref())?;
    Ok(function_arn(&name, q.as_deref()))
}

pub fn get_runtime_management(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let arn = runtime_target(app, req, raw)?;
    Ok(Reply::json(
        200,
        json!({ "UpdateRuntimeOn": "Auto", "FunctionArn": arn }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeManagementIn {
    #[serde(rename = "UpdateRuntimeOn")]
    update_runtime_on: String,
    #[serde(rename = "RuntimeVersionArn")]
    runtime_version_arn: Option<String>,
}

/// PutRuntimeManagementConfig: `Auto` (what every function has) is
/// accepted; pinning a runtime version is refused by name.
pub fn put_runtime_management(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let arn = runtime_target(app, req, raw)?;
    let input: RuntimeManagementIn = req.json()?;
    if input.update_runtime_on != "Auto" || input.runtime_version_arn.is_some() {
        return Err(ApiError::InvalidParameter(format!(
            "UpdateRuntimeOn {:?} is not available: emberd has one version of each runtime, so only Auto applies",
            input.update_runtime_on
        )));
    }
    Ok(Reply::json(
        200,
        json!({ "UpdateRuntimeOn": "Auto", "FunctionArn": arn }),
    ))
}
