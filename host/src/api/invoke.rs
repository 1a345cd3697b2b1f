//! Invoke (RequestResponse and DryRun) and emberd's environment listing.
//! The environment is checked out (warm, or started cold) in a task that
//! runs while the request body is still being read, so a cold start
//! overlaps the upload.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hyper::body::Incoming;
use serde_json::json;

use super::error::{REASON_ACCOUNT, REASON_RESERVED};
use super::{function_name, versions, ApiError, App, Reply};
use crate::invoker::{self, Call, CallResult};
use crate::pool::policy::Throttle;
use crate::pool::Report;
use crate::util::uuid4;

/// Lambda's synchronous payload limit (request and response).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
/// `X-Amz-Log-Result` carries at most the last 4 KB of the log.
const TAIL_BYTES: usize = 4096;

pub struct InvokeReq {
    pub function: String,
    pub qualifier: Option<String>,
    pub invocation_type: Option<String>,
    pub log_type: Option<String>,
    pub client_context: Option<String>,
    pub content_length: Option<u64>,
    /// Who sent it.
    pub caller: crate::auth::Caller,
}

fn throttled(t: Throttle) -> ApiError {
    match t {
        Throttle::Reserved => ApiError::TooManyRequests {
            reason: REASON_RESERVED,
            message: "Rate Exceeded.".into(),
        },
        Throttle::Host => ApiError::TooManyRequests {
            reason: REASON_ACCOUNT,
            message: "Rate Exceeded.".into(),
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

pub async fn handle(app: Arc<App>, req: InvokeReq, body: InvokeBody) -> Result<Reply, ApiError> {
    let (name, q) = function_name(&req.function, req.caller.account())?;
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
            crate::server::drain(b, 64 * 1024 * 1024).await;
            return Err(too_large());
        }
        other => other,
    };
    let r = versions::resolve(&app, &name, qualifier.as_deref())?;
    match req.invocation_type.as_deref() {
        None | Some("RequestResponse") => {}
        Some("DryRun") => {
            let mut reply = Reply::empty(204);
            reply
                .headers
                .push(("X-Amz-Executed-Version", r.version.clone()));
            return Ok(reply);
        }
        Some("Event") => return Err(ApiError::InvalidParameter(
            "InvocationType Event (asynchronous invocation) is not available in this emberd yet"
                .into(),
        )),
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "InvocationType {other:?} must be RequestResponse, Event or DryRun"
            )))
        }
    }
    // The environment starts while the payload is still being read; an
    // early return drops `pending`, which gives the environment back.
    let pending = invoker::begin(&app, r, qualifier.as_deref()).map_err(throttled)?;
    let payload = read_payload(body).await?;
    let out = pending
        .run(Call {
            request_id: uuid4(),
            payload: payload.to_vec(),
            client_context: req.client_context.unwrap_or_default(),
        })
        .await;
    let mut reply = match &out.result {
        CallResult::Success(payload) => {
            let mut reply = Reply {
                status: 200,
                headers: vec![],
                body: payload.clone().into(),
                json: true,
            };
            reply
                .headers
                .push(("X-Amz-Executed-Version", out.version.clone()));
            reply
        }
        CallResult::FunctionError {
            error_type,
            message,
        } => function_error(&out.version, error_type, message),
        CallResult::ServiceError(m) => return Err(ApiError::Service(m.clone())),
    };
    // An environment that failed to start has no id (and no log to tail).
    let Some(env_id) = out.env_id else {
        return Ok(reply);
    };
    reply
        .headers
        .push(("X-Amz-Ember-Environment", env_id.to_string()));
    reply
        .headers
        .push(("X-Amz-Ember-Cold-Start", out.cold.to_string()));
    if tail {
        reply.headers.push((
            "X-Amz-Log-Result",
            log_tail(
                &out.request_id,
                &out.version,
                &out.logs,
                out.report,
                out.elapsed,
                out.memory_size,
            ),
        ));
    }
    Ok(reply)
}

/// The payload, capped at 6 MB; non-empty payloads must be JSON.
/// A streamed payload must hash to the signed `x-amz-content-sha256`.
async fn read_payload(body: InvokeBody) -> Result<bytes::Bytes, ApiError> {
    let payload = match body {
        InvokeBody::Read(b) => b,
        InvokeBody::Stream(body, signed_sha256) => {
            let payload =
                crate::server::read_body(body, MAX_PAYLOAD)
                    .await
                    .map_err(|e| match e {
                        crate::server::BodyError::TooLarge => too_large(),
                        crate::server::BodyError::Read(m) => ApiError::InvalidRequestContent(m),
                    })?;
            let actual = crate::auth::sigv4::sha256_hex(&payload);
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

/// 200 with `X-Amz-Function-Error: Unhandled` and Lambda's error payload.
fn function_error(version: &str, error_type: &str, message: &str) -> Reply {
    let mut reply = Reply::json(
        200,
        json!({ "errorMessage": message, "errorType": error_type }),
    );
    reply
        .headers
        .push(("X-Amz-Executed-Version", version.to_string()));
    reply
        .headers
        .push(("X-Amz-Function-Error", "Unhandled".into()));
    reply
}

/// Base64 of the last 4 KB of START / log lines / END / REPORT. Duration is
/// the agent's measurement (the host's round trip if it gave none); Max
/// Memory Used appears only when the agent measured it.
fn log_tail(
    request_id: &str,
    version: &str,
    logs: &[String],
    report: Report,
    elapsed: Duration,
    memory: u32,
) -> String {
    let ms = report
        .duration_us
        .map(|us| us as f64 / 1000.0)
        .unwrap_or(elapsed.as_secs_f64() * 1000.0);
    let mut text = format!("START RequestId: {request_id} Version: {version}\n");
    for l in logs {
        text.push_str(l);
        if !l.ends_with('\n') {
            text.push('\n');
        }
    }
    text.push_str(&format!("END RequestId: {request_id}\n"));
    text.push_str(&format!(
        "REPORT RequestId: {request_id}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {memory} MB\t",
        (ms.ceil() as u64).max(1)
    ));
    if let Some(kib) = report.max_memory_kib {
        text.push_str(&format!("Max Memory Used: {} MB\t", kib.div_ceil(1024)));
    }
    if let Some(us) = report.init_us {
        text.push_str(&format!("Init Duration: {:.2} ms\t", us as f64 / 1000.0));
    }
    text.push('\n');
    let mut start = text.len().saturating_sub(TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&text.as_bytes()[start..])
}

/// `GET /ember/environments`: the caller's account's environments.
pub fn list_environments(app: &App, account: &str) -> Reply {
    let envs: Vec<serde_json::Value> = app
        .pool
        .list()
        .iter()
        .filter(|e| crate::util::split_scoped(&e.key.function).0 == account)
        .map(|e| {
            json!({
                "Id": e.id,
                "Function": crate::util::split_scoped(&e.key.function).1,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_bounded_base64_of_framed_log() {
        let logs = vec!["hello".to_string(); 2000];
        let t = log_tail(
            "rid",
            "$LATEST",
            &logs,
            Report::default(),
            Duration::from_micros(1500),
            128,
        );
        let raw = base64::engine::general_purpose::STANDARD.decode(t).unwrap();
        assert!(raw.len() <= TAIL_BYTES);
        let text = String::from_utf8(raw).unwrap();
        assert!(text.contains("END RequestId: rid") && text.contains("Billed Duration: 2 ms"));
        let measured = Report {
            duration_us: Some(2_500),
            max_memory_kib: Some(3_000),
            init_us: Some(1_250),
        };
        let short = log_tail("r", "1", &["x".into()], measured, Duration::ZERO, 128);
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(short)
                .unwrap(),
        )
        .unwrap();
        assert!(text.starts_with("START RequestId: r Version: 1\nx\nEND"));
        assert!(
            text.contains("Duration: 2.50 ms\tBilled Duration: 3 ms")
                && text.contains("Max Memory Used: 3 MB")
                && text.contains("Init Duration: 1.25 ms"),
            "{text}"
        );
    }
}
