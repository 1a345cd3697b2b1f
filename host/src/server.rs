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

use crate::api::{self, invoke_req, ApiError, App, Reply, Req, Route};
use crate::auth::Caller;

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
    let mut b = Response::builder()
        .status(status)
        .header("x-amzn-RequestId", request_id);
    if json {
        b = b.header("content-type", "application/json");
    }
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"{}"))))
}

async fn handle(
    app: Arc<App>,
    source: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let caller = Caller::anonymous(source);
    let result = async {
        let (segs, query) = api::parse_target(parts.uri.path(), parts.uri.query())?;
        let route = api::route(&parts.method, &segs)?;
        if let Route::Invoke(function) = route {
            let ireq = invoke_req(function, &query, &parts.headers, caller);
            return api::invoke::handle(app, ireq, body).await;
        }
        let body = read_body(body, api::MAX_CONTROL_BODY)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => ApiError::TooLarge(
                    "Request must be smaller than 69905067 bytes for this operation".into(),
                ),
                BodyError::Read(m) => ApiError::InvalidParameter(m),
            })?;
        let req = Req {
            method: parts.method,
            segs,
            query,
            headers: parts.headers,
            body,
            caller,
        };
        tokio::task::spawn_blocking(move || api::dispatch(&app, route, &req))
            .await
            .map_err(|e| ApiError::Service(format!("handler failed: {e}")))?
    }
    .await;
    Ok(respond(result))
}

/// Serves `listener` until `shutdown` becomes true, then stops accepting
/// and waits up to `drain` for open connections to finish.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
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
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(app.clone(), source, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { let _ = r; }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
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
