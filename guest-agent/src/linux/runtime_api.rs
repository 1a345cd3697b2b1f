//! The Lambda Runtime API (version 2018-06-01) served to the function's
//! runtime on 127.0.0.1:9001: `GET /runtime/invocation/next` blocks until the
//! agent hands over an invocation; `POST .../{id}/response` and `.../{id}/error`
//! complete it; `POST /runtime/init/error` reports a failed init. Everything
//! the runtime does becomes an [`ApiEvent`] for the agent's event loop; the
//! invocation hand-off is [`ApiState`]. One thread per connection, at most
//! [`MAX_CONNECTIONS`] at once.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use super::http::{Conn, Head, HttpError};
use ember_abi::protocol::MAX_PAYLOAD;

/// Concurrent Runtime API connections served; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest error document a runtime may post (`/error`, `/init/error`).
pub const MAX_ERROR_BODY: usize = 1024 * 1024;
const PREFIX: &str = "/2018-06-01/runtime/";
/// How often a blocked `next` checks whether its caller is still there.
const HANGUP_CHECK: Duration = Duration::from_millis(250);

/// Why the Runtime API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One invocation as the runtime sees it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Vec<u8>,
    pub deadline_ms: u64,
    pub invoked_function_arn: String,
    pub trace_id: String,
    pub client_context: String,
    pub cognito_identity: String,
}

/// What the runtime did, for the agent's event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiEvent {
    /// The runtime is waiting for work (its first call ends init).
    Next,
    Response {
        request_id: String,
        body: Vec<u8>,
    },
    /// The runtime tried to return more than 6 MiB.
    ResponseTooLarge {
        request_id: String,
    },
    Error {
        request_id: String,
        error: ReportedError,
    },
    InitError(ReportedError),
}

/// An error the runtime posted to `/invocation/{id}/error` or `/init/error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedError {
    pub error_type: String,
    pub message: String,
    /// The body when it is JSON: the caller gets it unchanged, as from AWS
    /// (`errorMessage`, `errorType`, `stackTrace`...); empty otherwise.
    pub document: Vec<u8>,
}

impl ReportedError {
    /// AWS's rules: the body's `errorType` names the error; the
    /// `Lambda-Runtime-Function-Error-Type` header only when the body names
    /// none; `Unhandled` when neither does. The message is the body's
    /// `errorMessage`, else the body as text.
    pub fn from_post(header_type: Option<&str>, body: Vec<u8>) -> Self {
        let doc = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let field = |name: &str| {
            doc.as_ref()
                .and_then(|v| v.get(name)?.as_str().map(str::to_string))
        };
        let error_type = field("errorType")
            .or_else(|| header_type.map(str::to_string))
            .unwrap_or_else(|| "Unhandled".to_string());
        let message =
            field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let document = if doc.is_some() { body } else { Vec::new() };
        ReportedError {
            error_type,
            message,
            document,
        }
    }
}

/// Receives [`ApiEvent`]s (the agent forwards them into its event channel).
pub type EventSink = Arc<dyn Fn(ApiEvent) + Send + Sync>;

#[derive(Default)]
struct Inner {
    /// Bumped when the runtime is replaced: waiters of the old one give up.
    generation: u64,
    /// A `next` call is blocked waiting for work.
    waiting: bool,
    pending: Option<Invocation>,
    /// The invocation handed out and not yet answered.
    current: Option<String>,
}

/// The hand-off between the agent (offers invocations) and `next` callers.
#[derive(Default)]
pub struct ApiState {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl ApiState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A handler thread that panicked cannot leave Inner half-updated
        // (every update is a plain field store), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `inv` the answer to the current or next `next` call.
    pub fn offer(&self, inv: Invocation) {
        self.lock().pending = Some(inv);
        self.cv.notify_all();
    }

    /// The invocation is over (answered, failed or timed out).
    pub fn finish(&self) {
        let mut g = self.lock();
        g.current = None;
        g.pending = None;
    }

    /// The runtime was replaced: blocked `next` calls of the old one return.
    pub fn reset(&self) {
        let mut g = self.lock();
        g.generation += 1;
        g.waiting = false;
        g.current = None;
        g.pending = None;
        drop(g);
        self.cv.notify_all();
    }

    /// Blocks until an invocation is offered. `Err(true)` when another `next`
    /// is already waiting, `Err(false)` when the runtime was replaced.
    /// `gone` tells whether the caller hung up: a `next` whose client died
    /// must not block every later `next` as "concurrent".
    fn next(&self, sink: &EventSink, gone: &dyn Fn() -> bool) -> Result<Invocation, bool> {
        let mut g = self.lock();
        if g.waiting {
            return Err(true);
        }
        g.waiting = true;
        let generation = g.generation;
        sink(ApiEvent::Next);
        loop {
            if g.generation != generation {
                return Err(false);
            }
            if let Some(inv) = g.pending.take() {
                g.waiting = false;
                g.current = Some(inv.request_id.clone());
                return Ok(inv);
            }
            if gone() {
                g.waiting = false;
                return Err(false);
            }
            g = match self.cv.wait_timeout(g, HANGUP_CHECK) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Ends the invocation `id` if it is the current one.
    fn complete(&self, id: &str) -> bool {
        let mut g = self.lock();
        if g.current.as_deref() == Some(id) {
            g.current = None;
            true
        } else {
            false
        }
    }
}

/// Binds the Runtime API and serves it on background threads; returns the
/// bound address (tests bind port 0).
pub fn serve(
    addr: SocketAddr,
    state: Arc<ApiState>,
    sink: EventSink,
) -> Result<SocketAddr, ApiError> {
    let listener = TcpListener::bind(addr).map_err(|source| ApiError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ApiError::Bind { addr, source })?;
    let active = Arc::new(AtomicUsize::new(0));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                continue; // dropped: closes the connection
            }
            let (state, sink, active) = (state.clone(), sink.clone(), active.clone());
            let spawned = thread::Builder::new().spawn(move || {
                serve_conn(stream, &state, &sink);
                active.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                // The closure (and its counter decrement) was dropped unrun.
                // The counter leaks one slot; the connection is closed.
                continue;
            }
        }
    });
    Ok(local)
}

type Reply = (u16, Vec<(&'static str, String)>, Vec<u8>);

fn error_doc(status: u16, error_type: &str, message: &str) -> Reply {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    (status, Vec::new(), body.to_string().into_bytes())
}

fn accepted() -> Reply {
    (202, Vec::new(), br#"{"status":"OK"}"#.to_vec())
}

fn serve_conn(stream: TcpStream, state: &ApiState, sink: &EventSink) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    loop {
        let head = match conn.read_head() {
            Ok(h) => h,
            Err(HttpError::Closed) | Err(HttpError::Io(_)) => return,
            Err(e) => {
                let (s, _, b) = error_doc(400, "InvalidRequest", &e.to_string());
                let _ = conn.respond(s, &[], &b);
                return;
            }
        };
        let (status, headers, body, keep) = route(&mut conn, &head, state, sink);
        let hdrs: Vec<(&str, &str)> = std::iter::once(("Content-Type", "application/json"))
            .chain(headers.iter().map(|(n, v)| (*n, v.as_str())))
            .collect();
        if conn.respond(status, &hdrs, &body).is_err() || !keep || head.wants_close() {
            return;
        }
    }
}

/// Handles one request; the last field says whether the connection stays usable.
fn route(
    conn: &mut Conn<TcpStream>,
    head: &Head,
    state: &ApiState,
    sink: &EventSink,
) -> (u16, Vec<(&'static str, String)>, Vec<u8>, bool) {
    let path = head.path.split('?').next().unwrap_or("");
    let Some(rest) = path.strip_prefix(PREFIX) else {
        let (s, h, b) = error_doc(404, "NotFound", "unknown path");
        return (s, h, b, drain(conn, head));
    };
    let cap = if rest.ends_with("/response") {
        MAX_PAYLOAD
    } else {
        MAX_ERROR_BODY
    };
    let body = if head.method == "POST" {
        match conn.read_body(head, cap) {
            Ok(b) => b,
            Err(HttpError::BodyTooLarge { .. }) => {
                // Swallow a declared body of sane size first, so the client
                // reads our 413 instead of a reset connection.
                conn.discard_body(head, 4 * MAX_PAYLOAD);
                if let Some(id) = invocation_id(rest, "/response") {
                    if state.complete(id) {
                        sink(ApiEvent::ResponseTooLarge {
                            request_id: id.to_string(),
                        });
                    }
                }
                let msg = format!("Exceeded maximum allowed payload size ({cap} bytes).");
                let (s, h, b) = error_doc(413, "RequestEntityTooLarge", &msg);
                return (s, h, b, false);
            }
            Err(e) => {
                let (s, h, b) = error_doc(400, "InvalidRequest", &e.to_string());
                return (s, h, b, false);
            }
        }
    } else {
        Vec::new()
    };
    let (s, h, b) = handle(head, rest, body, state, sink, conn.stream());
    (s, h, b, true)
}

/// Reads and discards the body of a request we refuse, so keep-alive holds.
fn drain(conn: &mut Conn<TcpStream>, head: &Head) -> bool {
    conn.read_body(head, MAX_PAYLOAD).is_ok()
}

fn invocation_id<'a>(rest: &'a str, suffix: &str) -> Option<&'a str> {
    rest.strip_prefix("invocation/")?
        .strip_suffix(suffix)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

fn reported_error(head: &Head, body: Vec<u8>) -> ReportedError {
    ReportedError::from_post(head.header("lambda-runtime-function-error-type"), body)
}

fn handle(
    head: &Head,
    rest: &str,
    body: Vec<u8>,
    state: &ApiState,
    sink: &EventSink,
    stream: &TcpStream,
) -> Reply {
    let method = head.method.as_str();
    let known = rest == "invocation/next"
        || rest == "init/error"
        || invocation_id(rest, "/response").is_some()
        || invocation_id(rest, "/error").is_some();
    if !known {
        return error_doc(404, "NotFound", "unknown path");
    }
    if rest == "invocation/next" {
        if method != "GET" {
            return error_doc(405, "MethodNotAllowed", "use GET");
        }
        return match state.next(sink, &|| peer_gone(stream)) {
            Ok(inv) => next_reply(inv),
            Err(true) => error_doc(
                400,
                "InvalidStateTransition",
                "another /invocation/next request is already waiting",
            ),
            Err(false) => error_doc(500, "RuntimeReplaced", "this runtime instance was stopped"),
        };
    }
    if method != "POST" {
        return error_doc(405, "MethodNotAllowed", "use POST");
    }
    if rest == "init/error" {
        sink(ApiEvent::InitError(reported_error(head, body)));
        return accepted();
    }
    if let Some(id) = invocation_id(rest, "/response") {
        if !state.complete(id) {
            return error_doc(400, "InvalidRequestID", "no such invocation in progress");
        }
        sink(ApiEvent::Response {
            request_id: id.to_string(),
            body,
        });
        return accepted();
    }
    if let Some(id) = invocation_id(rest, "/error") {
        if !state.complete(id) {
            return error_doc(400, "InvalidRequestID", "no such invocation in progress");
        }
        sink(ApiEvent::Error {
            request_id: id.to_string(),
            error: reported_error(head, body),
        });
        return accepted();
    }
    error_doc(404, "NotFound", "unknown path")
}

/// Whether the client closed its end (EOF or error on a non-blocking peek;
/// pipelined bytes mean it is still there).
fn peer_gone(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let gone = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    gone
}

fn next_reply(inv: Invocation) -> Reply {
    let mut headers = vec![
        ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
        ("Lambda-Runtime-Deadline-Ms", inv.deadline_ms.to_string()),
        (
            "Lambda-Runtime-Invoked-Function-Arn",
            inv.invoked_function_arn,
        ),
        ("Lambda-Runtime-Trace-Id", inv.trace_id),
    ];
    if !inv.client_context.is_empty() {
        headers.push(("Lambda-Runtime-Client-Context", inv.client_context));
    }
    if !inv.cognito_identity.is_empty() {
        headers.push(("Lambda-Runtime-Cognito-Identity", inv.cognito_identity));
    }
    (200, headers, inv.payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get_next(port: u16) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n")
            .unwrap();
        s
    }

    /// A `next` caller that hung up frees the slot; the next caller gets work.
    #[test]
    fn a_hung_up_next_caller_does_not_block_the_next_one() {
        let state = Arc::new(ApiState::default());
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let sink: EventSink = Arc::new(move |e| ev.lock().unwrap().push(e));
        let addr = serve("127.0.0.1:0".parse().unwrap(), state.clone(), sink).unwrap();
        let first = get_next(addr.port());
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while events.lock().unwrap().is_empty() && std::time::Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        drop(first); // the runtime's HTTP client died mid-wait
        thread::sleep(HANGUP_CHECK * 3);
        let mut second = get_next(addr.port());
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        while events.lock().unwrap().len() < 2 && std::time::Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        state.offer(Invocation {
            request_id: "r1".into(),
            payload: b"{}".to_vec(),
            deadline_ms: 1,
            invoked_function_arn: String::new(),
            trace_id: String::new(),
            client_context: String::new(),
            cognito_identity: String::new(),
        });
        let mut reply = [0u8; 512];
        let n = second.read(&mut reply).unwrap();
        let text = String::from_utf8_lossy(&reply[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("Lambda-Runtime-Aws-Request-Id: r1"), "{text}");
    }
}
