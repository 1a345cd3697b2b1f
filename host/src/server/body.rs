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
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = next_frame(&mut body).await? {
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
