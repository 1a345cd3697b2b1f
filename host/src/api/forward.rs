//! Invoke forwarding in a fleet: a synchronous Invoke that finds no idle
//! warm environment of its version on this host goes to the host that
//! [`crate::fleet::Placement`] chose, as the client sent it (method, path,
//! query, headers with the client's own SigV4 signature, body), plus the
//! hop header [`HOP_HEADER`]. The target verifies the client's signature as
//! for any request (the fleet shares its credentials) and never forwards a
//! request that carries the hop header again. Its answer (status, headers,
//! body) goes back to the client unchanged.
//!
//! A target that cannot be reached, or does not accept the connection
//! within [`CONNECT_TIMEOUT`], leaves the call to this host (a cold start
//! here). Once the request has been sent it may run there, so a failure
//! after that is never run again here: the caller gets a ServiceException.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::invoke::{read_payload, InvokeBody, MAX_PAYLOAD};
use super::{ApiError, App, Reply};
use crate::catalog::Resolved;
use crate::fleet::{Members, Target};
use crate::metrics::Forward;

/// The request header a forwarding host adds (its node id). A host that
/// receives it runs the call itself; it changes nothing else (a client
/// that sets it only keeps its call on the host it called).
pub const HOP_HEADER: &str = "x-ember-forwarded-by";

/// The response header naming the host that ran a forwarded call.
pub const FORWARDED_TO: &str = "X-Ember-Forwarded-To";

/// How long the target has to accept the connection (TCP connect and the
/// HTTP/1.1 handshake) before the call runs here instead.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How much longer than the function's timeout the answer may take (a
/// cold start and its Init on the target, the transfer).
const ANSWER_MARGIN: Duration = Duration::from_secs(20);

/// How often a forwarded call in flight checks that its target still beats.
const LIVENESS_CHECK: Duration = Duration::from_millis(250);

/// The largest answer taken from a target: the payload limit plus room for
/// headers of an event stream and an error document.
const MAX_ANSWER: usize = MAX_PAYLOAD + 256 * 1024;

/// The headers of the target's answer that are passed back (every header
/// emberd's Invoke answers with); hop-by-hop ones (`connection`,
/// `content-length`, ...) are the front door's own.
const ANSWER_HEADERS: &[&str] = &[
    "content-type",
    super::REQUEST_ID,
    "X-Amz-Executed-Version",
    "X-Amz-Function-Error",
    "X-Amz-Log-Result",
    "X-Amz-Ember-Environment",
    "X-Amz-Ember-Cold-Start",
    "X-Amzn-ErrorType",
    "Retry-After",
];

/// Request headers that belong to the client's connection to this host,
/// not to the request: not forwarded (the body is sent whole, with its
/// length).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "expect",
    "proxy-connection",
];

/// The client's request line and headers, as received.
#[derive(Clone, Debug)]
pub struct Original {
    pub method: hyper::Method,
    pub uri: hyper::Uri,
    pub headers: hyper::HeaderMap,
}

impl Original {
    pub fn of(parts: &hyper::http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }

    /// Whether another host already forwarded it here.
    pub fn forwarded(&self) -> bool {
        self.headers.contains_key(HOP_HEADER)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{0:?} is not an http:// address")]
    Url(String),
    #[error("connecting to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("{0} did not accept a connection within {1:?}")]
    ConnectTimeout(String, Duration),
    #[error("HTTP handshake with {0}")]
    Handshake(String, #[source] hyper::Error),
    #[error("building the forwarded request")]
    Request(#[source] hyper::http::Error),
    #[error("the exchange with {0} failed after the call was sent")]
    Exchange(String, #[source] hyper::Error),
    #[error("{0} stopped beating while it had the call")]
    TargetLost(String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("reading {0}'s answer")]
    Answer(String, #[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ForwardError {
    /// Whether the call may have reached the target (and so may have run
    /// there): then it must not run here too.
    pub fn sent(&self) -> bool {
        matches!(
            self,
            ForwardError::Exchange(..)
                | ForwardError::TargetLost(_)
                | ForwardError::Timeout(..)
                | ForwardError::Answer(..)
        )
    }
}

/// What placement decided for one Invoke.
pub enum Placed {
    /// Another host ran it: its answer.
    Done(Reply),
    /// It runs here (with its body, read or not).
    Here(InvokeBody),
}

/// Runs the client's `original` request elsewhere when this host is part of a fleet, has no idle
/// warm environment of `r`'s version, the request was not forwarded here
/// already, and placement names another host; see the module doc.
pub async fn place(
    app: &App,
    original: Option<&Original>,
    r: &Resolved,
    body: InvokeBody,
) -> Result<Placed, ApiError> {
    let (Some(members), Some(original)) = (&app.fleet, original) else {
        return Ok(Placed::Here(body));
    };
    if original.forwarded() {
        return Ok(Placed::Here(body));
    }
    let key = r.key();
    let (idle, busy) = app.functions.pool().local_load(&key);
    if idle {
        return Ok(Placed::Here(body));
    }
    let Some((target, in_flight)) = members
        .placement()
        .choose(&key.function, &key.version, busy)
    else {
        return Ok(Placed::Here(body));
    };
    let payload = read_payload(body, MAX_PAYLOAD).await?;
    let wait = Duration::from_secs(r.config.timeout.into()) + ANSWER_MARGIN;
    let result = forward(members, &target, original, payload.clone(), wait).await;
    drop(in_flight);
    match result {
        Ok(reply) => {
            app.metrics.forwarded(Forward::Sent);
            Ok(Placed::Done(reply))
        }
        Err(e) if !e.sent() => {
            app.metrics.forwarded(Forward::Fallback);
            eprintln!(
                "emberd: invoke of {} not forwarded, run here: {}",
                r.name,
                crate::util::error_chain(&e)
            );
            Ok(Placed::Here(InvokeBody::Read(payload)))
        }
        Err(e) => {
            app.metrics.forwarded(Forward::Failed);
            Err(ApiError::Service(format!(
                "The invocation was handed to fleet host {} and did not complete: {}",
                target.node_id,
                crate::util::error_chain(&e)
            )))
        }
    }
}

/// Sends `original` with `body` to `target` and returns its answer. Waits
/// at most `wait` for it, and gives up early if the target stops beating
/// while this host still hears its own beats.
pub async fn forward(
    members: &Members,
    target: &Target,
    original: &Original,
    body: Bytes,
    wait: Duration,
) -> Result<Reply, ForwardError> {
    let node = target.node_id.clone();
    let authority = target
        .url
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| ForwardError::Url(target.url.clone()))?;
    let connect = async {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| ForwardError::Connect(node.clone(), e))?;
        let _ = stream.set_nodelay(true);
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| ForwardError::Handshake(node.clone(), e))
    };
    let (mut sender, conn) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| ForwardError::ConnectTimeout(node.clone(), CONNECT_TIMEOUT))??;
    tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .method(original.method.clone())
        .uri(original.uri.path_and_query().map_or("/", |p| p.as_str()));
    for (k, v) in &original.headers {
        if !HOP_BY_HOP
            .iter()
            .any(|h| k.as_str().eq_ignore_ascii_case(h))
        {
            b = b.header(k, v);
        }
    }
    let request = b
        .header(HOP_HEADER, members.node_id())
        .body(Full::new(body))
        .map_err(ForwardError::Request)?;
    let exchange = async {
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| ForwardError::Exchange(node.clone(), e))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| ForwardError::Answer(node.clone(), e))?
            .to_bytes();
        Ok::<_, ForwardError>((parts, body))
    };
    let placement = members.placement().clone();
    let watch = async {
        loop {
            tokio::time::sleep(LIVENESS_CHECK).await;
            if placement.lost(&node) {
                return ForwardError::TargetLost(node.clone());
            }
        }
    };
    let (parts, body) = tokio::select! {
        r = tokio::time::timeout(wait, exchange) => {
            r.map_err(|_| ForwardError::Timeout(node.clone(), wait))??
        }
        e = watch => return Err(e),
    };
    let mut headers = Vec::new();
    for (k, v) in &parts.headers {
        let known = ANSWER_HEADERS
            .iter()
            .find(|h| k.as_str().eq_ignore_ascii_case(h));
        if let (Some(name), Ok(v)) = (known, v.to_str()) {
            headers.push((*name, v.to_string()));
        }
    }
    headers.push((FORWARDED_TO, node));
    Ok(Reply {
        status: parts.status.as_u16(),
        headers,
        body,
        json: false,
    })
}
