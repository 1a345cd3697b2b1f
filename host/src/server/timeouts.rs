//! What each connection is doing and since when ([`Activity`]), recorded by
//! the I/O wrapper [`Tracked`] and the request guard, and the deadlines a
//! reaper enforces from it: a request head must arrive whole within the
//! header timeout (counted from the accept, or from its first byte on a
//! kept-alive connection), and a kept-alive connection with no traffic is
//! closed after the idle timeout. While a request is being handled the
//! connection has no deadline here: its body has its own stall timeout
//! (`body.rs`) and the handler its own bounds (function timeout, long-poll).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The connection deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From accept (or a kept-alive request's first byte) to a whole head.
    pub header: Duration,
    /// Longest silence of a kept-alive connection between requests.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// Milliseconds since the first call (a monotonic clock cheap to store).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Where a connection is in its request cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Accepted; no byte of a request yet.
    Fresh = 0,
    /// Between requests (a response may still be flowing out).
    Idle = 1,
    /// Part of a request head has arrived.
    Header = 2,
    /// A request is being handled.
    Request = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Fresh,
            1 => Phase::Idle,
            2 => Phase::Header,
            _ => Phase::Request,
        }
    }
}

/// One connection's phase and the time it entered it (or last made
/// progress in it, for an idle connection still writing its response).
pub struct Activity {
    phase: AtomicU8,
    since_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            phase: AtomicU8::new(Phase::Fresh as u8),
            since_ms: AtomicU64::new(now_ms()),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// When the connection entered its phase.
    pub fn since_ms(&self) -> u64 {
        self.since_ms.load(Ordering::Acquire)
    }

    /// Bytes arrived: an idle connection starts a request head (whose
    /// header deadline counts from now; a fresh one's from its accept).
    fn on_read(&self) {
        let idle = Phase::Idle as u8;
        let header = Phase::Header as u8;
        if self
            .phase
            .compare_exchange(idle, header, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.since_ms.store(now_ms(), Ordering::Release);
        } else {
            let _ = self.phase.compare_exchange(
                Phase::Fresh as u8,
                header,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Bytes left: an idle connection still sending a response is busy.
    fn on_write(&self) {
        if self.phase() == Phase::Idle {
            self.since_ms.store(now_ms(), Ordering::Release);
        }
    }

    /// The head is complete and the request handed to its handler.
    pub fn request_started(&self) {
        self.phase.store(Phase::Request as u8, Ordering::Release);
    }

    /// The handler answered; the connection idles until the next request.
    pub fn request_done(&self) {
        self.since_ms.store(now_ms(), Ordering::Release);
        self.phase.store(Phase::Idle as u8, Ordering::Release);
    }

    /// Whether the connection is past its phase's deadline at `now`.
    pub fn expired(&self, now: u64, t: &Timeouts) -> bool {
        let age = Duration::from_millis(now.saturating_sub(self.since_ms()));
        match self.phase() {
            Phase::Fresh | Phase::Header => age > t.header,
            Phase::Idle => age > t.idle,
            Phase::Request => false,
        }
    }

    /// Whether closing the connection loses no request in progress.
    pub fn sheddable(&self) -> bool {
        self.phase() != Phase::Request
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks a request as handled when dropped (also if its future is dropped).
pub struct RequestGuard(pub Arc<Activity>);

impl RequestGuard {
    pub fn start(activity: Arc<Activity>) -> Self {
        activity.request_started();
        RequestGuard(activity)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// A stream whose reads and writes are recorded in an [`Activity`].
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_phase() {
        let t = Timeouts {
            header: Duration::from_millis(100),
            idle: Duration::from_millis(1000),
        };
        let a = Activity::new();
        let t0 = a.since_ms();
        assert!(!a.expired(t0 + 100, &t));
        assert!(a.expired(t0 + 101, &t), "a silent fresh connection");
        a.on_read();
        assert_eq!(a.phase(), Phase::Header);
        assert!(
            a.expired(t0 + 101, &t),
            "the head deadline counts from accept"
        );
        a.request_started();
        assert!(!a.expired(t0 + 1_000_000, &t), "a request is never reaped");
        assert!(!a.sheddable());
        a.request_done();
        let t1 = a.since_ms();
        assert!(!a.expired(t1 + 1000, &t));
        assert!(a.expired(t1 + 1001, &t), "idle keep-alive");
        assert!(a.sheddable());
    }
}
