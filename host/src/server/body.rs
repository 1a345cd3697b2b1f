//! Request bodies: read whole up to a limit, or thrown away up to a cap,
//! and in both cases given up when the client stops sending for
//! [`BODY_STALL`] (a body that trickles in holds a connection, never forever).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};

/// Longest pause between two pieces of a request body, by default.
pub const BODY_STALL: Duration = Duration::from_secs(30);

/// The process's body stall timeout in milliseconds (`--http-body-timeout`).
static STALL_MS: AtomicU64 = AtomicU64::new(BODY_STALL.as_millis() as u64);

/// Sets the body stall timeout of every later read (at startup).
pub fn set_stall(stall: Duration) {
    STALL_MS.store(stall.as_millis().max(1) as u64, Ordering::Relaxed);
}

fn stall() -> Duration {
    Duration::from_millis(STALL_MS.load(Ordering::Relaxed))
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body too large")]
    TooLarge,
    #[error("reading the request body: {0}")]
    Read(String),
    #[error("the request body stalled: nothing arrived for {0:?}")]
    Stalled(Duration),
}

/// How much of an oversized (but authenticated) body is read and thrown
/// away so the client gets the 413 instead of a connection reset mid-upload.
pub const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// The body's next frame; `Err` when the client sent nothing for [`stall`].
async fn next_frame(
    body: &mut Incoming,
) -> Result<Option<Result<Frame<Bytes>, hyper::Error>>, BodyError> {
    let stall = stall();
    tokio::time::timeout(stall, body.frame())
        .await
        .map_err(|_| BodyError::Stalled(stall))
}

/// Collects a body of at most `limit` bytes. An oversized body is drained
/// (up to [`DRAIN_CAP`]) before `TooLarge` is returned.
pub async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    use hyper::body::Body as _;
    // A body that arrives in one data frame is kept as hyper handed it (no
    // copy); one in several frames is joined once into a buffer sized by
    // its Content-Length (when declared), so joining never regrows it.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = next_frame(&mut body).await? {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if seen + data.len() > limit {
                let seen = seen + data.len();
                drop((first, buf));
                drain(body, DRAIN_CAP.saturating_sub(seen)).await;
                return Err(BodyError::TooLarge);
            }
            seen += data.len();
            match first.take() {
                None if buf.is_empty() => first = Some(data),
                earlier => {
                    if let Some(earlier) = earlier {
                        // hyper's hint is what is still to come.
                        let rest = body.size_hint().exact().unwrap_or(0);
                        let total = (seen as u64).saturating_add(rest);
                        buf.reserve(total.min(limit as u64) as usize);
                        buf.extend_from_slice(&earlier);
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Reads and discards up to `cap` bytes of `body` (stopping at a stall).
pub async fn drain(mut body: Incoming, cap: usize) {
    let mut seen = 0usize;
    while let Ok(Some(Ok(frame))) = next_frame(&mut body).await {
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > cap {
                return;
            }
        }
    }
}
