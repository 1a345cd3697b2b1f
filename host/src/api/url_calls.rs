//! Calls through function URLs (the `--url-listen` listener): finds the
//! URL, answers CORS preflights, checks the URL's auth type (`AWS_IAM`: a
//! SigV4 signature) and the function's resource policy, invokes the
//! function with the payload format 2.0 event and turns its answer into the
//! HTTP response. Errors are Lambda's `{"Message": …}` bodies. A call to
//! a URL that exists is handed to the audit trail (`api::audit`), which
//! keeps the refused ones, and all of them with `--audit-data-events`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::invoke::MAX_PAYLOAD;
use super::{audit, App};
use crate::auth::sigv4::RequestParts;
use crate::env::InvokeRequest;
use crate::invoker::CallResult;
use crate::store::{FunctionRecord, UrlConfig};
use crate::urls::event::{Answer, Iam, UrlRequest};
use crate::urls::{cors, event};
use crate::util::uuid4;

/// Serves one request of the URL listener.
pub async fn handle(
    app: Arc<App>,
    source: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let request_id = uuid4();
    let (parts, body) = req.into_parts();
    let answer = call(&app, source, &parts, body, &request_id)
        .await
        .unwrap_or_else(|a| a);
    Ok(respond(answer, &request_id))
}

fn respond(a: Answer, request_id: &str) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(a.status);
    for (k, v) in &a.headers {
        // A function's header that HTTP cannot carry is dropped, not fatal.
        let ok = hyper::header::HeaderName::from_bytes(k.as_bytes()).is_ok()
            && hyper::header::HeaderValue::from_str(v).is_ok();
        if ok {
            b = b.header(k.as_str(), v.as_str());
        }
    }
    b = b.header("x-amzn-RequestId", request_id);
    b.body(Full::new(Bytes::from(a.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn forbidden() -> Answer {
    Answer::message(403, "Forbidden")
}

async fn call(
    app: &Arc<App>,
    source: SocketAddr,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    request_id: &str,
) -> Result<Answer, Answer> {
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(parts.uri.host());
    let (id, path) = crate::urls::route(host, parts.uri.path())
        .ok_or_else(|| Answer::message(404, "No function URL is served at this address"))?;
    let (f, cfg) = match app.urls.find(app.functions.store(), id) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Err(Answer::message(
                404,
                "No function URL is served at this address",
            ))
        }
        Err(e) => {
            eprintln!("emberd: function URL {id}: {e}");
            return Err(Answer::message(500, "Internal Server Error"));
        }
    };
    let resource = crate::util::function_arn(&f.name, cfg.qualifier.as_deref());
    let mut draft = audit::Draft::function_url(parts, source, resource);
    let out = serve(
        app,
        source,
        parts,
        body,
        (id, path),
        f,
        cfg,
        request_id,
        &mut draft,
    )
    .await;
    // Only emberd's own answers (`Err`) carry a message for the trail:
    // what the function answered, whatever its status, is never recorded.
    let (status, message) = match &out {
        Ok(a) => (a.status, None),
        Err(a) => {
            if a.status == 403 {
                draft.refused();
            }
            let message = serde_json::from_slice::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| v["Message"].as_str().map(str::to_string));
            (a.status, message)
        }
    };
    audit::record_status(app, draft, status, message).await;
    out
}

/// Serves a call to the URL `cfg` of function `f` (`id`, and the path the
/// function sees); `draft` learns who signed it.
#[allow(clippy::too_many_arguments)]
async fn serve(
    app: &App,
    source: SocketAddr,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    (id, path): (&str, &str),
    f: FunctionRecord,
    cfg: UrlConfig,
    request_id: &str,
    draft: &mut audit::Draft,
) -> Result<Answer, Answer> {
    if let Some(c) = cfg.cors.as_ref() {
        if cors::is_preflight(&parts.method, &parts.headers) {
            let mut a = Answer::message(200, "");
            a.headers = cors::preflight(c, &parts.headers);
            a.body.clear();
            return Ok(a);
        }
    }
    let (caller, body) = authenticate(app, source, parts, body, &cfg, draft).await?;
    let account = caller.as_ref().map(|(_, a)| a.as_str());
    if !super::policy::allows_url(&f, account, &cfg.auth_type, cfg.qualifier.as_deref()) {
        return Err(forbidden());
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ev = event::request_event(&UrlRequest {
        method: parts.method.as_str(),
        path,
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
        source_ip: source.ip().to_string(),
        url_id: id,
        request_id,
        iam: caller.as_ref().map(|(key, account)| Iam {
            access_key: key,
            account,
        }),
        now_ms,
    });
    let payload = Bytes::from(ev.to_string());
    if payload.len() > MAX_PAYLOAD {
        return Err(Answer::message(413, "Request Entity Too Large"));
    }
    let mut a = invoke(app, f, &cfg, payload, request_id).await?;
    if let Some(c) = cfg.cors.as_ref() {
        // The URL's CORS configuration wins over the function's own headers.
        a.headers.retain(|(k, _)| !k.starts_with("access-control-"));
        a.headers.extend(cors::response(c, &parts.headers));
    }
    Ok(a)
}

/// The body, and who signed it (access key, account) for an `AWS_IAM` URL;
/// `NONE` URLs take anyone (the policy decides).
async fn authenticate(
    app: &App,
    source: SocketAddr,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    cfg: &UrlConfig,
    draft: &mut audit::Draft,
) -> Result<(Option<(String, String)>, Bytes), Answer> {
    let pending = if cfg.auth_type == "AWS_IAM" {
        // Refused on its headers: the body is never read.
        Some(app.auth.begin(&parts.headers).map_err(|_| forbidden())?)
    } else {
        None
    };
    let too_large = || Answer::message(413, "Request Entity Too Large");
    let Some(pending) = pending else {
        let body = crate::server::read_body(body, MAX_PAYLOAD)
            .await
            .map_err(|e| match e {
                crate::server::BodyError::TooLarge => too_large(),
                _ => Answer::message(400, "Bad Request"),
            })?;
        return Ok((None, body));
    };
    let signed = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    // The API's own check: a declared payload hash is verified with the
    // signature before the body is read, and the body must match it.
    let (caller, body) = crate::server::authenticated_body(
        pending,
        &signed,
        body,
        MAX_PAYLOAD,
        super::invoke::too_large,
        app,
        source,
    )
    .await
    .map_err(|e| match e {
        super::ApiError::TooLarge(_) => too_large(),
        super::ApiError::InvalidParameter(_) => Answer::message(400, "Bad Request"),
        _ => forbidden(),
    })?;
    draft.signed_by(&caller);
    match (caller.access_key_id, caller.account) {
        (Some(k), Some(a)) => Ok((Some((k, a)), body)),
        _ => Err(forbidden()),
    }
}

/// Runs the function the URL serves with `payload`; its answer as HTTP.
async fn invoke(
    app: &App,
    f: FunctionRecord,
    cfg: &UrlConfig,
    payload: Bytes,
    request_id: &str,
) -> Result<Answer, Answer> {
    let as_answer = |e: super::ApiError| Answer::message(e.status(), &e.to_string());
    let q = cfg.qualifier.as_deref();
    // The record the URL was found in serves `$LATEST`: not read again.
    let r = crate::catalog::resolve_record(app.functions.store(), f, q)
        .map_err(|e| as_answer(e.into()))?;
    super::invoke::ready(&r).map_err(as_answer)?;
    let pending = app
        .invoker
        .begin(r, q)
        .map_err(|t| as_answer(super::invoke::throttled(t)))?;
    let out = pending
        .run(InvokeRequest {
            request_id: request_id.to_string(),
            payload,
            ..Default::default()
        })
        .await;
    Ok(match &out.result {
        CallResult::Success(p) if cfg.invoke_mode == "RESPONSE_STREAM" => Answer::from_stream(p),
        CallResult::Success(p) => Answer::from_payload(p),
        // A failed restore (SnapStartException) is, to the URL's caller,
        // a function that could not answer, as a function error is.
        CallResult::FunctionError(_) | CallResult::SnapStartError(_) => Answer::bad_gateway(),
        CallResult::ServiceError(m) => {
            eprintln!("emberd: function URL call {request_id}: {m}");
            Answer::message(500, "Internal Server Error")
        }
    })
}
