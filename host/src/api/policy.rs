//! Resource-based policies: AddPermission, RemovePermission, GetPolicy,
//! [`allows_invoke`], which lets another account invoke a function only
//! where a statement grants it, and [`allows_url`], which decides who may
//! call a function URL. Statements are kept on the function record; only
//! invoke actions grant anything across accounts (the control plane stays
//! the owner's alone).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{function_name, ApiError, App, Reply, Req};
use crate::store::{FunctionRecord, PolicyStatement, StoreError};
use crate::util::{function_arn, uuid4};

/// Lambda's limit on a function's policy document.
const MAX_POLICY_BYTES: usize = 20 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct AddPermissionIn {
    statement_id: String,
    action: String,
    principal: String,
    source_arn: Option<String>,
    source_account: Option<String>,
    revision_id: Option<String>,
    function_url_auth_type: Option<String>,
    invoked_via_function_url: Option<bool>,
    // Accepted and refused by name below when set.
    event_source_token: Option<String>,
    principal_org_i_d: Option<String>,
}

fn valid_sid(sid: &str) -> bool {
    (1..=100).contains(&sid.len())
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `lambda:Xxx`, `lambda:*` or `*`.
fn valid_action(a: &str) -> bool {
    a == "*"
        || a.strip_prefix("lambda:").is_some_and(|rest| {
            rest == "*" || (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphabetic()))
        })
}

fn grants_invoke(action: &str) -> bool {
    matches!(action, "*" | "lambda:*" | "lambda:InvokeFunction")
}

fn grants_url(action: &str) -> bool {
    matches!(action, "*" | "lambda:*" | "lambda:InvokeFunctionUrl")
}

/// The policy document's `Principal` for what AddPermission was given: an
/// account id or IAM ARN (`{"AWS": …}`), a service (`{"Service": …}`), `*`.
fn principal_json(p: &str) -> Result<Value, ApiError> {
    if p == "*" {
        return Ok(Value::from("*"));
    }
    if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(json!({ "AWS": format!("arn:aws:iam::{p}:root") }));
    }
    if iam_account(p).is_some() {
        return Ok(json!({ "AWS": p }));
    }
    if p.ends_with(".amazonaws.com") && !p.contains(char::is_whitespace) {
        return Ok(json!({ "Service": p }));
    }
    Err(ApiError::InvalidParameter(format!(
        "The provided principal {p:?} is not valid: give an account id, an IAM ARN, a service principal or *"
    )))
}

/// The account of `arn:aws:iam::ACCOUNT:…`.
fn iam_account(p: &str) -> Option<&str> {
    match p.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "iam", "", a, _] if a.len() == 12 => Some(a),
        _ => None,
    }
}

/// Whether `st`'s principal is the caller's account (services never are:
/// they cannot call emberd).
fn principal_is(st: &PolicyStatement, account: &str) -> bool {
    st.principal == "*" || st.principal == account || iam_account(&st.principal) == Some(account)
}

/// Whether `f`'s policy lets `account` invoke it at `qualifier` (`None` or
/// `$LATEST`: the unqualified function). A statement conditioned on a
/// source ARN never matches a direct call (the call has no source).
pub fn allows_invoke(f: &FunctionRecord, account: &str, qualifier: Option<&str>) -> bool {
    let q = qualifier.filter(|q| *q != "$LATEST");
    f.policy.iter().any(|st| {
        grants_invoke(&st.action)
            && principal_is(st, account)
            && st.qualifier.as_deref() == q
            && st.source_arn.is_none()
            && st.source_account.as_deref().is_none_or(|a| a == account)
            && !st.invoked_via_function_url
            && st.function_url_auth_type.is_none()
    })
}

/// Whether a call through `f`'s function URL (of `auth_type`, serving
/// `qualifier`) is allowed for `caller` (`None`: an unsigned call). As in
/// Lambda since October 2025, it takes two grants: `lambda:InvokeFunctionUrl`
/// (conditioned on the URL's auth type, if at all) and `lambda:InvokeFunction`
/// (direct, or conditioned on `InvokedViaFunctionUrl`). The owner's account
/// needs no statement for a signed call (emberd has no identity policies).
pub fn allows_url(
    f: &FunctionRecord,
    caller: Option<&str>,
    auth_type: &str,
    qualifier: Option<&str>,
) -> bool {
    let owner = crate::util::split_scoped(&f.name).0;
    if caller == Some(owner) {
        return true;
    }
    let who = |st: &PolicyStatement| match caller {
        Some(account) => principal_is(st, account),
        None => st.principal == "*",
    };
    let fits = |st: &PolicyStatement| {
        who(st)
            && st.qualifier.as_deref() == qualifier
            && st.source_arn.is_none()
            && st.source_account.is_none()
    };
    let url = f.policy.iter().any(|st| {
        fits(st)
            && grants_url(&st.action)
            && st
                .function_url_auth_type
                .as_deref()
                .is_none_or(|t| t == auth_type)
    });
    let invoke = f
        .policy
        .iter()
        .any(|st| fits(st) && grants_invoke(&st.action) && st.function_url_auth_type.is_none());
    url && invoke
}

fn statement_json(f: &FunctionRecord, st: &PolicyStatement) -> Value {
    let mut v = json!({
        "Sid": st.sid,
        "Effect": "Allow",
        "Principal": principal_json(&st.principal).unwrap_or_else(|_| Value::from(st.principal.clone())),
        "Action": st.action,
        "Resource": function_arn(&f.name, st.qualifier.as_deref()),
    });
    let mut cond = serde_json::Map::new();
    if let Some(a) = &st.source_account {
        cond.insert("StringEquals".into(), json!({ "AWS:SourceAccount": a }));
    }
    if let Some(a) = &st.source_arn {
        cond.insert("ArnLike".into(), json!({ "AWS:SourceArn": a }));
    }
    if let Some(t) = &st.function_url_auth_type {
        let eq = cond.entry("StringEquals").or_insert_with(|| json!({}));
        eq["lambda:FunctionUrlAuthType"] = Value::from(t.clone());
    }
    if st.invoked_via_function_url {
        cond.insert(
            "Bool".into(),
            json!({ "lambda:InvokedViaFunctionUrl": "true" }),
        );
    }
    if !cond.is_empty() {
        v["Condition"] = Value::Object(cond);
    }
    v
}

fn document(f: &FunctionRecord, qualifier: Option<&str>) -> Value {
    let statements: Vec<Value> = f
        .policy
        .iter()
        .filter(|st| st.qualifier.as_deref() == qualifier)
        .map(|st| statement_json(f, st))
        .collect();
    json!({ "Version": "2012-10-17", "Id": "default", "Statement": statements })
}

/// The function and the qualifier (version or alias, checked to exist) a
/// policy call names; `$LATEST` is the unqualified function.
fn target(app: &App, req: &Req, raw: &str) -> Result<(String, Option<String>), ApiError> {
    let (name, q) = function_name(raw, req.account())?;
    let q = req.q("Qualifier").map(str::to_string).or(q);
    crate::catalog::resolve(app.functions.store(), &name, q.as_deref())?;
    Ok((name, q.filter(|q| q != "$LATEST")))
}

fn check_revision(f: &FunctionRecord, wanted: Option<&str>) -> Result<(), StoreError> {
    match wanted {
        Some(r) if r != f.policy_revision && r != f.revision_id => Err(StoreError::Conflict(
            "The RevisionId provided does not match the latest RevisionId for the Lambda function or alias. Call the GetFunction or the GetAlias API to retrieve the latest RevisionId for your resource.".into(),
        )),
        _ => Ok(()),
    }
}

pub fn add(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, qualifier) = target(app, req, raw)?;
    let input: AddPermissionIn = req.json()?;
    if !valid_sid(&input.statement_id) {
        return Err(ApiError::InvalidParameter(format!(
            "StatementId {:?} must be 1-100 letters, digits, '-' or '_'",
            input.statement_id
        )));
    }
    if !valid_action(&input.action) {
        return Err(ApiError::InvalidParameter(format!(
            "Action {:?} must be lambda:<Operation>, lambda:* or *",
            input.action
        )));
    }
    principal_json(&input.principal)?;
    if input.event_source_token.is_some() || input.principal_org_i_d.is_some() {
        return Err(ApiError::InvalidParameter(
            "EventSourceToken and PrincipalOrgID conditions are not supported by emberd".into(),
        ));
    }
    if let Some(t) = &input.function_url_auth_type {
        if t != "NONE" && t != "AWS_IAM" {
            return Err(ApiError::InvalidParameter(format!(
                "1 validation error detected: Value '{t}' at 'functionUrlAuthType' failed to satisfy constraint: Member must satisfy enum value set: [AWS_IAM, NONE]"
            )));
        }
        if !grants_url(&input.action) {
            return Err(ApiError::InvalidParameter(
                "FunctionUrlAuthType is only supported for lambda:InvokeFunctionUrl action".into(),
            ));
        }
    }
    let via_url = input.invoked_via_function_url.unwrap_or(false);
    if via_url && !grants_invoke(&input.action) {
        return Err(ApiError::InvalidParameter(
            "InvokedViaFunctionUrl is only supported for lambda:InvokeFunction action".into(),
        ));
    }
    let st = PolicyStatement {
        sid: input.statement_id,
        action: input.action,
        principal: input.principal,
        qualifier,
        source_account: input.source_account,
        source_arn: input.source_arn,
        function_url_auth_type: input.function_url_auth_type,
        invoked_via_function_url: via_url,
    };
    let f = super::update_function(app, &name, |f| {
        check_revision(f, input.revision_id.as_deref()).map_err(revision_error)?;
        if f.policy
            .iter()
            .any(|s| s.sid == st.sid && s.qualifier == st.qualifier)
        {
            return Err(ApiError::Conflict(format!(
                "The statement id ({}) provided already exists. Please provide a new statement id, or remove the existing statement.",
                st.sid
            )));
        }
        f.policy.push(st.clone());
        if document(f, st.qualifier.as_deref()).to_string().len() > MAX_POLICY_BYTES {
            return Err(ApiError::PolicyLengthExceeded(format!(
                "The final policy size is bigger than the limit ({MAX_POLICY_BYTES} bytes)."
            )));
        }
        f.policy_revision = uuid4();
        Ok(())
    })?;
    Ok(Reply::json(
        201,
        json!({ "Statement": statement_json(&f, &st).to_string() }),
    ))
}

/// A RevisionId mismatch is PreconditionFailedException, as in Lambda.
fn revision_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) if m.starts_with("The RevisionId") => {
            ApiError::PreconditionFailed(m)
        }
        e => e.into(),
    }
}

pub fn remove(app: &App, req: &Req, raw: &str, sid: &str) -> Result<Reply, ApiError> {
    let (name, qualifier) = target(app, req, raw)?;
    super::update_function(app, &name, |f| {
        check_revision(f, req.q("RevisionId")).map_err(revision_error)?;
        let before = f.policy.len();
        f.policy
            .retain(|s| !(s.sid == sid && s.qualifier == qualifier));
        if f.policy.len() == before {
            return Err(ApiError::NotFound(format!(
                "Statement {sid} is not found in resource policy."
            )));
        }
        f.policy_revision = uuid4();
        Ok(())
    })?;
    Ok(Reply::empty(204))
}

pub fn get(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, qualifier) = target(app, req, raw)?;
    let f = app.functions.store().get_function(&name)?;
    if !f.policy.iter().any(|s| s.qualifier == qualifier) {
        return Err(ApiError::NotFound(
            "The resource you requested does not exist.".into(),
        ));
    }
    let revision = if f.policy_revision.is_empty() {
        f.revision_id.clone()
    } else {
        f.policy_revision.clone()
    };
    Ok(Reply::json(
        200,
        json!({
            "Policy": document(&f, qualifier.as_deref()).to_string(),
            "RevisionId": revision,
        }),
    ))
}
