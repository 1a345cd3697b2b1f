//! The HTTP front door, shaped like mini-redis: [`run`] serves a listener
//! until the shutdown signal fires, every connection is shut down
//! gracefully and in-flight requests drain. Hostile clients are bounded by
//! [`limits`] (connection caps with shedding) and [`timeouts`] (header and
//! idle deadlines); bodies by [`body`] (size and stall); a request whose
//! credentials fail on its headers is refused before its body is read.

pub mod body;
pub mod limits;
pub mod timeouts;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use body::{drain, read_body, BodyError};
use limits::{Caps, Conns, Slot};
use timeouts::{RequestGuard, Timeouts, Tracked};

use crate::api::audit;
use crate::api::invoke::InvokeBody;
use crate::api::{self, invoke_req, ApiError, App, Reply, Req, Route, REQUEST_ID};
use crate::auth::sigv4::RequestParts;
use crate::auth::{self, Caller, Unverified};

/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The front door's limits (`emberd` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Seconds a client has from connecting (or from the first byte of a
    /// request on a kept-alive connection) to send a whole request head.
    #[arg(long, default_value_t = 10)]
    pub http_header_timeout: u64,
    /// Seconds a kept-alive connection may stay silent between requests.
    #[arg(long, default_value_t = 60)]
    pub http_idle_timeout: u64,
    /// Seconds a request body may pause before the request is abandoned.
    #[arg(long, default_value_t = 30)]
    pub http_body_timeout: u64,
    /// Most connections open at once (lowered to fit RLIMIT_NOFILE).
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// Most connections open at once from one source address.
    #[arg(long, default_value_t = 1024)]
    pub max_connections_per_ip: usize,
}

impl Default for EdgeArgs {
    fn default() -> Self {
        EdgeArgs {
            http_header_timeout: 10,
            http_idle_timeout: 60,
            http_body_timeout: 30,
            max_connections: 4096,
            max_connections_per_ip: 1024,
        }
    }
}

impl EdgeArgs {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            header: Duration::from_secs(self.http_header_timeout.max(1)),
            idle: Duration::from_secs(self.http_idle_timeout.max(1)),
        }
    }

    fn caps(&self) -> Caps {
        Caps {
            total: self.max_connections.max(1),
            per_ip: self.max_connections_per_ip.max(1),
        }
    }
}

fn respond(result: Result<Reply, ApiError>) -> Response<Full<Bytes>> {
    let request_id = crate::util::uuid4();
    let close = matches!(result, Err(ApiError::Auth(_)));
    let (status, headers, body, json) = match result {
        Ok(r) => (r.status, r.headers, r.body, r.json),
        Err(e) => {
            let mut header = vec![("X-Amzn-ErrorType", e.error_type().to_string())];
            // Lambda's TooManyRequestsException carries `retryAfterSeconds`
            // in this header; a 503 asks for a retry the same way.
            if matches!(e.status(), 429 | 503) {
                header.push(("Retry-After", "1".to_string()));
            }
            (e.status(), header, Bytes::from(e.body().to_string()), true)
        }
    };
    let mut b = Response::builder().status(status);
    if close {
        // The body of a refused request may be unread: the connection
        // cannot carry another request.
        b = b.header("connection", "close");
    }
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
        other => ApiError::InvalidParameter(other.to_string()),
    })
}

/// Verifies the request's signature over its body (read here, up to
/// `limit`), so nothing runs for a refused request. With a signed
/// `x-amz-content-sha256` the signature is checked before the body is
/// read, and the body must then match that hash. Also the check of
/// `AWS_IAM` function URL calls (`api::url_calls`).
pub(crate) async fn authenticated_body(
    pending: Unverified,
    signed: &RequestParts<'_>,
    body: Incoming,
    limit: usize,
    too_large: fn() -> ApiError,
    app: &App,
    source: SocketAddr,
) -> Result<(Caller, Bytes), ApiError> {
    if let Some(declared) = pending.declared_sha256.clone() {
        let caller = app.auth.finish(pending, signed, &declared, source)?;
        let body = read_limited(body, limit, too_large).await?;
        if !declared.eq_ignore_ascii_case(&crate::digest::sha256_hex(&body)) {
            return Err(auth::payload_mismatch().into());
        }
        return Ok((caller, body));
    }
    let body = read_limited(body, limit, too_large).await?;
    let hash = crate::digest::sha256_hex(&body);
    Ok((app.auth.finish(pending, signed, &hash, source)?, body))
}

async fn handle(
    app: Arc<App>,
    source: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let mut audit = audit::Draft::new(&parts, source);
    let result = async {
        let exempt = app
            .auth
            .exempt(&parts.method, parts.uri.path(), &source, &parts.headers);
        let pending = if exempt {
            None
        } else {
            // Refused on its headers: the body is never read (the
            // connection closes after the 403).
            Some(app.auth.begin(&parts.headers)?)
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
            // Exempt: `GET /metrics` from loopback, which the operator
            // opened with --metrics-no-auth-on-loopback for a local scraper,
            // or with the --metrics-token-file bearer token.
            (None, routed) => (
                Caller {
                    operator: true,
                    ..Caller::anonymous(source)
                },
                read_limited(body, api::MAX_CONTROL_BODY, control_too_large).await?,
                routed,
            ),
            (Some(p), Ok((Route::Invoke(function, answer), _, query))) => {
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
                audit.signed_by(&caller);
                // Kept for forwarding only on a fleet host.
                let original = app
                    .fleet
                    .is_some()
                    .then(|| api::forward::Original::of(&parts));
                let ireq = invoke_req(function, answer, &query, &parts.headers, caller, original);
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
        match route {
            // Async: a long-poll must not hold a blocking thread.
            Route::GetLogs(name) => api::logs::get(app, req, name).await,
            route => tokio::task::spawn_blocking(move || api::dispatch(&app, route, &req))
                .await
                .map_err(|e| ApiError::Service(format!("handler failed: {e}")))?,
        }
    }
    .await;
    audit::record(&app, audit, &result).await;
    Ok(respond(result))
}

/// Which requests a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// The Lambda API (`--listen`).
    Api,
    /// Calls through function URLs (`--url-listen`).
    FunctionUrls,
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on one accepted (plain or TLS) stream until the client
/// closes it, the limits close it (`slot.kill`: a deadline passed or it was
/// shed), or `stop` fires (then in-flight requests finish first).
async fn serve_conn<S>(
    stream: S,
    app: Arc<App>,
    source: SocketAddr,
    slot: &Slot,
    mut stop: watch::Receiver<bool>,
    door: Door,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = slot.activity.clone();
    let svc = service_fn(move |req| {
        let guard = RequestGuard::start(activity.clone());
        let app = app.clone();
        async move {
            let r = match door {
                Door::Api => handle(app, source, req).await,
                Door::FunctionUrls => api::url_calls::handle(app, source, req).await,
            };
            drop(guard);
            r
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => { let _ = r; }
        _ = slot.kill.notified() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = slot.kill.notified() => {}
            }
        }
    }
}

/// Serves `listener` (plain HTTP, default limits) until `shutdown` becomes
/// true; see [`run_tls`].
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    run_tls(listener, app, shutdown, drain, None, EdgeArgs::default()).await
}

/// Serves `listener` as the function URL listener (plain HTTP, the same
/// connection limits as the API) until `shutdown` becomes true.
pub async fn run_urls(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    edge: EdgeArgs,
) {
    serve(
        listener,
        app,
        shutdown,
        drain,
        None,
        edge,
        Door::FunctionUrls,
    )
    .await
}

/// Serves `listener` (over TLS when `tls` is given) until `shutdown`
/// becomes true, then stops accepting and waits up to `drain` for open
/// connections to finish.
pub async fn run_tls(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    edge: EdgeArgs,
) {
    serve(listener, app, shutdown, drain, tls, edge, Door::Api).await
}

async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    edge: EdgeArgs,
    door: Door,
) {
    body::set_stall(Duration::from_secs(edge.http_body_timeout.max(1)));
    let caps = limits::fit(edge.caps(), limits::raise_nofile());
    let conns = Conns::new(caps);
    tokio::spawn(limits::reaper(
        conns.clone(),
        edge.timeouts(),
        shutdown.clone(),
    ));
    let refusing = Arc::new(Semaphore::new(limits::MAX_REFUSING));
    let (conn_done_tx, mut conn_done_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
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
        let Some(slot) = conns.admit(source.ip()) else {
            conns
                .stats
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            limits::refuse(stream, tls.is_some(), &refusing);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = Tracked::new(stream, slot.activity.clone());
        let app = app.clone();
        let mut stop = shutdown.clone();
        let done = conn_done_tx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_conn(stream, app, source, &slot, stop, door).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream));
                    tokio::select! {
                        r = handshake => if let Ok(Ok(s)) = r {
                            serve_conn(s, app, source, &slot, stop, door).await
                        },
                        _ = slot.kill.notified() => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            drop(slot);
            drop(done);
        });
    }
    drop(conn_done_tx);
    // Every connection task holds a sender; recv() returns None when all are gone.
    let _ = tokio::time::timeout(drain, conn_done_rx.recv()).await;
}
