//! The HTTP front door, shaped like mini-redis: [`run`] serves a listener
//! until the shutdown signal fires, a semaphore bounds open connections,
//! every connection is shut down gracefully and in-flight requests drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::api::invoke::InvokeBody;
use crate::api::{self, invoke_req, ApiError, App, Reply, Req, Route};
use crate::audit::hook as audit;
use crate::auth::sigv4::{self, RequestParts};
use crate::auth::{self, Caller, Pending};

/// The response header carrying the request id.
pub const REQUEST_ID: &str = "x-amzn-RequestId";

/// Most connections served at once; more wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body too large")]
    TooLarge,
    #[error("reading the request body: {0}")]
    Read(String),
}

/// How much of an oversized body is read and thrown away so the client
/// gets the 413 instead of a connection reset mid-upload.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// Collects a body of at most `limit` bytes. An oversized body is drained
/// (up to [`DRAIN_CAP`]) before `TooLarge` is returned.
pub async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                let seen = buf.len() + data.len();
                drop(buf);
                drain(body, DRAIN_CAP.saturating_sub(seen)).await;
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and discards up to `cap` bytes of `body`.
pub async fn drain(mut body: Incoming, cap: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > cap {
                return;
            }
        }
    }
}

fn respond(result: Result<Reply, ApiError>) -> Response<Full<Bytes>> {
    let request_id = crate::util::uuid4();
    let (status, headers, body, json) = match result {
        Ok(r) => (r.status, r.headers, r.body, r.json),
        Err(e) => {
            let header = vec![("X-Amzn-ErrorType", e.error_type().to_string())];
            (e.status(), header, Bytes::from(e.body().to_string()), true)
        }
    };
    let mut b = Response::builder().status(status);
    // An Invoke answers with its invocation's request id (the one in its logs).
    if !headers.iter().any(|(k, _)| *k == REQUEST_ID) {
        b = b.header(REQUEST_ID, request_id);
    }
    if json {
        b = b.header("content-type", "application/json");
    }
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"{}"))))
}

/// The control-plane body limit's error.
fn control_too_large() -> ApiError {
    ApiError::TooLarge("Request must be smaller than 69905067 bytes for this operation".into())
}

/// Reads a whole body of at most `limit` bytes.
async fn read_limited(
    body: Incoming,
    limit: usize,
    too_large: fn() -> ApiError,
) -> Result<Bytes, ApiError> {
    read_body(body, limit).await.map_err(|e| match e {
        BodyError::TooLarge => too_large(),
        BodyError::Read(m) => ApiError::InvalidParameter(m),
    })
}

/// Verifies the request's signature over its body (read here, up to
/// `limit`), so nothing runs for a refused request. A signed
/// `x-amz-content-sha256` must match the body too.
async fn authenticated_body(
    pending: Pending,
    signed: &RequestParts<'_>,
    body: Incoming,
    limit: usize,
    too_large: fn() -> ApiError,
    app: &App,
    source: SocketAddr,
) -> Result<(Caller, Bytes), ApiError> {
    let declared = pending.declared_sha256.clone();
    let body = read_limited(body, limit, too_large).await?;
    let actual = sigv4::sha256_hex(&body);
    if declared
        .as_ref()
        .is_some_and(|d| !d.eq_ignore_ascii_case(&actual))
    {
        return Err(auth::payload_mismatch().into());
    }
    let hash = declared.unwrap_or(actual);
    Ok((app.auth.finish(pending, signed, &hash, source)?, body))
}

async fn handle(
    app: Arc<App>,
    source: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let mut audit = audit::Pending::new(&parts, source);
    let result = async {
        let exempt = app.auth.exempt(&parts.method, parts.uri.path(), &source);
        let pending = if exempt {
            None
        } else {
            match app.auth.begin(&parts.headers) {
                Ok(p) => Some(p),
                Err(e) => {
                    drain(body, DRAIN_CAP).await;
                    return Err(e.into());
                }
            }
        };
        let signed = RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
        };
        // Routing errors are reported only after the signature checked out,
        // so an unauthenticated caller learns nothing but 403.
        let routed = api::parse_target(parts.uri.path(), parts.uri.query())
            .and_then(|(segs, query)| Ok((api::route(&parts.method, &segs)?, segs, query)));
        let (caller, body, routed) = match (pending, routed) {
            (None, routed) => (
                Caller::anonymous(source),
                read_limited(body, api::MAX_CONTROL_BODY, control_too_large).await?,
                routed,
            ),
            (Some(p), Ok((Route::Invoke(function), _, query))) => {
                // A signed payload hash lets the signature be checked before
                // the body arrives, so the environment starts during the
                // upload; the body is checked against the hash as it is read.
                let (caller, body) = match p.declared_sha256.clone() {
                    Some(h) => (
                        app.auth.finish(p, &signed, &h, source)?,
                        InvokeBody::Stream(body, Some(h)),
                    ),
                    None => {
                        let (c, b) = authenticated_body(
                            p,
                            &signed,
                            body,
                            api::invoke::MAX_PAYLOAD,
                            api::invoke::too_large,
                            &app,
                            source,
                        )
                        .await?;
                        (c, InvokeBody::Read(b))
                    }
                };
                let ireq = invoke_req(function, &query, &parts.headers, caller);
                return api::invoke::handle(app.clone(), ireq, body).await;
            }
            (Some(p), routed) => {
                let (c, b) = authenticated_body(
                    p,
                    &signed,
                    body,
                    api::MAX_CONTROL_BODY,
                    control_too_large,
                    &app,
                    source,
                )
                .await?;
                (c, b, routed)
            }
        };
        audit.caller(&caller, &body);
        let (route, segs, query) = routed?;
        audit::admit(&app, &route).await?;
        let req = Req {
            method: parts.method,
            segs,
            query,
            headers: parts.headers,
            body,
            caller,
        };
        let app = app.clone();
        tokio::task::spawn_blocking(move || api::dispatch(&app, route, &req))
            .await
            .map_err(|e| ApiError::Service(format!("handler failed: {e}")))?
    }
    .await;
    audit::record(&app, audit, &result).await;
    Ok(respond(result))
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on one accepted (plain or TLS) stream until the client
/// closes it or `stop` fires (then in-flight requests finish first).
async fn serve_conn<S>(
    stream: S,
    app: Arc<App>,
    source: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(app.clone(), source, req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => { let _ = r; }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Serves `listener` (plain HTTP) until `shutdown` becomes true; see [`run_tls`].
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    run_tls(listener, app, shutdown, drain, None).await
}

/// Serves `listener` (over TLS when `tls` is given) until `shutdown`
/// becomes true, then stops accepting and waits up to `drain` for open
/// connections to finish.
pub async fn run_tls(
    listener: TcpListener,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (conn_done_tx, mut conn_done_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, source) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("emberd: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = shutdown.clone();
        let done = conn_done_tx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_conn(stream, app, source, stop).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream));
                    tokio::select! {
                        r = handshake => if let Ok(Ok(s)) = r {
                            serve_conn(s, app, source, stop).await
                        },
                        _ = stop.changed() => {}
                    }
                }
            }
            drop(permit);
            drop(done);
        });
    }
    drop(conn_done_tx);
    // Every connection task holds a sender; recv() returns None when all are gone.
    let _ = tokio::time::timeout(drain, conn_done_rx.recv()).await;
}
