//! Invoke and InvokeWithResponseStream (RequestResponse and DryRun; Event
//! is handed to [`crate::events`]) and emberd's environment listing.
//! The environment is checked out (warm, or started cold) in a task that
//! runs while the request body is still being read, so a cold start
//! overlaps the upload.

use std::sync::Arc;

use hyper::body::Incoming;
use serde_json::json;

use super::error::{REASON_ACCOUNT, REASON_RESERVED};
use super::{function_name, ApiError, App, Reply};
use crate::env::{FunctionError, InvokeRequest};
use crate::invoker::CallResult;
use crate::pool::policy::Throttle;
use crate::util::uuid4;

/// Lambda's synchronous payload limit (request and response).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// How the response goes back: whole (`Invoke`) or as an event stream
/// (`InvokeWithResponseStream`, see [`super::stream`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Whole,
    Stream,
}

pub struct InvokeReq {
    pub function: String,
    pub qualifier: Option<String>,
    pub invocation_type: Option<String>,
    pub log_type: Option<String>,
    pub client_context: Option<String>,
    pub content_length: Option<u64>,
    /// Who sent it.
    pub caller: crate::auth::Caller,
    pub answer: Answer,
    /// The request as the client sent it, kept on a fleet host so that
    /// placement can forward it (see [`super::forward`]).
    pub original: Option<super::forward::Original>,
}

pub fn throttled(t: Throttle) -> ApiError {
    match t {
        Throttle::Reserved => ApiError::TooManyRequests {
            reason: REASON_RESERVED,
            message: "Rate Exceeded.".into(),
        },
        Throttle::Host => ApiError::TooManyRequests {
            reason: REASON_ACCOUNT,
            message: "Rate Exceeded.".into(),
        },
        Throttle::Memory => ApiError::TooManyRequests {
            reason: REASON_ACCOUNT,
            message:
                "Rate Exceeded. (no memory left on this host for another execution environment)"
                    .into(),
        },
    }
}

pub fn too_large() -> ApiError {
    ApiError::TooLarge(format!(
        "Request must be smaller than {MAX_PAYLOAD} bytes for the InvokeFunction operation"
    ))
}

/// The Invoke payload: still arriving (with the signed hash it must have,
/// if the client declared one), or already read and verified by the front
/// door.
pub enum InvokeBody {
    Stream(Incoming, Option<String>),
    Read(bytes::Bytes),
}

/// The stored function an Invoke names. Another account's function (named
/// by ARN) only where its resource-based policy lets the caller's account
/// invoke it; otherwise AccessDeniedException, whether it exists or not.
fn invoke_target(app: &App, req: &InvokeReq) -> Result<(String, Option<String>), ApiError> {
    let account = req.caller.account();
    let Some(owner) = crate::util::arn_account(&req.function).filter(|o| *o != account) else {
        return function_name(&req.function, account);
    };
    let (name, q) = function_name(&req.function, owner)?;
    let qualifier = req.qualifier.as_deref().or(q.as_deref());
    let allowed = app
        .functions
        .store()
        .get_function(&name)
        .is_ok_and(|f| super::policy::allows_invoke(&f, account, qualifier));
    if !allowed {
        return Err(ApiError::AccessDenied(format!(
            "User: arn:aws:iam::{account}:root is not authorized to perform: lambda:InvokeFunction on resource: {} because no resource-based policy allows the lambda:InvokeFunction action",
            req.function
        )));
    }
    Ok((name, q))
}

pub async fn handle(app: Arc<App>, req: InvokeReq, body: InvokeBody) -> Result<Reply, ApiError> {
    let (name, q) = invoke_target(&app, &req)?;
    let qualifier = req.qualifier.or(q);
    let tail = match req.log_type.as_deref() {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "LogType {other:?} must be None or Tail"
            )))
        }
    };
    let body = match body {
        InvokeBody::Stream(b, _) if req.content_length.is_some_and(|n| n > MAX_PAYLOAD as u64) => {
            crate::server::body::drain(b, 64 * 1024 * 1024).await;
            return Err(too_large());
        }
        other => other,
    };
    let r = crate::catalog::resolve(app.functions.store(), &name, qualifier.as_deref())?;
    ready(&r)?;
    match req.invocation_type.as_deref() {
        None | Some("RequestResponse") => {}
        Some("DryRun") => {
            let mut reply = Reply::empty(204);
            reply
                .headers
                .push(("X-Amz-Executed-Version", r.version.clone()));
            return Ok(reply);
        }
        Some("Event") if req.answer == Answer::Whole => {
            let q = qualifier.as_deref();
            return super::events::accept(&app, &r, q, req.content_length, body).await;
        }
        Some(other) => {
            let allowed = match req.answer {
                Answer::Whole => "RequestResponse, Event or DryRun",
                Answer::Stream => "RequestResponse or DryRun",
            };
            return Err(ApiError::InvalidParameter(format!(
                "InvocationType {other:?} must be {allowed}"
            )));
        }
    }
    // In a fleet, a call with no idle warm environment here may run on
    // another host (which has one, or is less busy).
    let body = match super::forward::place(&app, req.original.as_ref(), &r, body).await? {
        super::forward::Placed::Done(reply) => return Ok(reply),
        super::forward::Placed::Here(body) => body,
    };
    // The environment starts while the payload is still being read; an
    // early return drops `pending`, which gives the environment back.
    let pending = app
        .invoker
        .begin(r, qualifier.as_deref())
        .map_err(throttled)?;
    let payload = read_payload(body, MAX_PAYLOAD).await?;
    let out = pending
        .run(InvokeRequest {
            request_id: uuid4(),
            payload,
            client_context: req.client_context.unwrap_or_default(),
            ..Default::default()
        })
        .await;
    let mut log_tail =
        tail.then(|| crate::logs::frame::tail_base64(&crate::logs::frame::lines(&out)));
    let mut reply = match (&out.result, req.answer) {
        (CallResult::ServiceError(m), _) => return Err(ApiError::Service(m.clone())),
        (CallResult::SnapStartError(m), _) => return Err(ApiError::SnapStart(m.clone())),
        (result, Answer::Stream) => super::stream::reply(&out.version, result, log_tail.take()),
        (CallResult::Success(payload), Answer::Whole) => success(&out.version, payload),
        (CallResult::FunctionError(f), Answer::Whole) => function_error(&out.version, f),
    };
    reply
        .headers
        .push((super::REQUEST_ID, out.request_id.clone()));
    // A failed Init's lines are tailed too, as on Lambda.
    if let (Some(t), Answer::Whole) = (log_tail, req.answer) {
        reply.headers.push(("X-Amz-Log-Result", t));
    }
    // An environment that failed to start has no id.
    let Some(env_id) = out.env_id else {
        return Ok(reply);
    };
    reply
        .headers
        .push(("X-Amz-Ember-Environment", env_id.to_string()));
    reply
        .headers
        .push(("X-Amz-Ember-Cold-Start", out.cold.to_string()));
    Ok(reply)
}

/// Refuses a version that cannot run yet (SnapStart `Pending`) or at all
/// (`Failed`).
pub fn ready(r: &crate::catalog::Resolved) -> Result<(), ApiError> {
    match &r.state {
        crate::store::VersionState::Active => Ok(()),
        crate::store::VersionState::Pending => Err(ApiError::SnapStartNotReady(format!(
            "Lambda is initializing your function. It will be ready to invoke once your function state is Active: {}",
            crate::util::function_arn(&r.name, Some(&r.version))
        ))),
        crate::store::VersionState::Failed { .. } => Err(ApiError::Conflict(
            "The operation cannot be performed at this time. The function is currently in the following state: Failed".into(),
        )),
    }
}

/// `Invoke`'s answer to a success: the response as the body.
fn success(version: &str, payload: &[u8]) -> Reply {
    let mut reply = Reply {
        status: 200,
        headers: vec![],
        body: bytes::Bytes::copy_from_slice(payload),
        json: true,
    };
    reply
        .headers
        .push(("X-Amz-Executed-Version", version.to_string()));
    reply
}

/// The payload, capped at `limit`; non-empty payloads must be JSON.
/// A streamed payload must hash to the signed `x-amz-content-sha256`.
pub async fn read_payload(body: InvokeBody, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let payload = match body {
        InvokeBody::Read(b) if b.len() > limit => return Err(too_large()),
        InvokeBody::Read(b) => b,
        InvokeBody::Stream(body, signed_sha256) => {
            let payload =
                crate::server::body::read_body(body, limit)
                    .await
                    .map_err(|e| match e {
                        crate::server::body::BodyError::TooLarge => too_large(),
                        other => ApiError::InvalidRequestContent(other.to_string()),
                    })?;
            let actual = crate::digest::sha256_hex(&payload);
            if signed_sha256.is_some_and(|h| !h.eq_ignore_ascii_case(&actual)) {
                return Err(crate::auth::payload_mismatch().into());
            }
            payload
        }
    };
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
        return Err(ApiError::InvalidRequestContent(
            "Could not parse request body into json: Could not parse payload into json".into(),
        ));
    }
    Ok(payload)
}

/// 200 with `X-Amz-Function-Error: Unhandled` and the error payload: the
/// runtime's own document unchanged, or Lambda's shape made from the error.
fn function_error(version: &str, f: &FunctionError) -> Reply {
    let mut reply = Reply {
        status: 200,
        headers: vec![],
        body: f.payload().into(),
        json: true,
    };
    reply
        .headers
        .push(("X-Amz-Executed-Version", version.to_string()));
    reply
        .headers
        .push(("X-Amz-Function-Error", "Unhandled".into()));
    reply
}

/// `GET /ember/environments`: the caller's account's environments (every
/// account's for an operator).
pub fn list_environments(app: &App, caller: &crate::auth::Caller) -> Reply {
    let envs: Vec<serde_json::Value> = app
        .functions
        .pool()
        .list()
        .iter()
        .filter(|e| caller.sees(crate::util::split_scoped(&e.key.function).0))
        .map(|e| {
            let (account, function) = crate::util::split_scoped(&e.key.function);
            json!({
                "Id": e.id,
                "Account": account,
                "Function": function,
                "Version": e.key.version,
                "State": e.state.as_str(),
                "AgeSeconds": e.created.elapsed().as_secs_f64(),
                "Invocations": e.invocations,
                "Pid": e.pid,
                "Provisioned": e.provisioned,
            })
        })
        .collect();
    Reply::json(200, json!({ "Environments": envs }))
}
