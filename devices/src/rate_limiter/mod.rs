//! Rate limiters for virtio queues: a bandwidth bucket and an ops bucket
//! ([`bucket::TokenBucket`]) plus a timer fd that fires when a blocked limiter
//! can go again. A device registers [`RateLimiter::timer_fd`] with its event
//! loop; while the limiter is blocked the device leaves requests on the queue
//! and retries them from the timer event, so a throttled queue never spins.
//!
//! The configuration has Firecracker's JSON shape:
//! `{"bandwidth": {"size": .., "one_time_burst": .., "refill_time": ..}, "ops": {..}}`
//! (`refill_time` in milliseconds; a missing bucket or a zero size means no limit).

pub mod bucket;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucket::TokenBucket;
use vmm_sys_util::timerfd::TimerFd;

/// Errors from the rate limiter's timer.
#[derive(Debug, thiserror::Error)]
pub enum RateLimiterError {
    /// Creating or configuring the timer fd failed.
    #[error("rate limiter timer fd")]
    Timer(#[source] std::io::Error),
}

/// One bucket's configuration (Firecracker's `TokenBucket` object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// Bucket capacity: bytes for bandwidth, requests for ops.
    pub size: u64,
    /// Extra tokens usable once, before the bucket starts limiting.
    #[serde(default)]
    pub one_time_burst: u64,
    /// Milliseconds to refill a full bucket.
    pub refill_time: u64,
}

/// A rate limiter's configuration (Firecracker's `RateLimiter` object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Byte budget.
    #[serde(default)]
    pub bandwidth: Option<TokenBucketConfig>,
    /// Request budget.
    #[serde(default)]
    pub ops: Option<TokenBucketConfig>,
}

impl RateLimiterConfig {
    /// True when the configuration limits nothing.
    pub fn is_unlimited(&self) -> bool {
        let off =
            |b: &Option<TokenBucketConfig>| b.is_none_or(|b| b.size == 0 || b.refill_time == 0);
        off(&self.bandwidth) && off(&self.ops)
    }
}

/// A monotonic clock in nanoseconds. Tests inject a manual one.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The real clock: nanoseconds since the first call in this process.
pub fn monotonic_clock() -> Clock {
    let origin = Instant::now();
    Arc::new(move || u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// What a device asks to spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// Bytes.
    Bytes,
    /// Requests.
    Ops,
}

/// A bandwidth bucket and an ops bucket behind one timer.
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    /// Set while the timer is armed: every consume fails until it fires, so
    /// requests stay in order and nobody polls.
    blocked_for: Option<Duration>,
    clock: Clock,
}

impl RateLimiter {
    /// A limiter from its configuration, on the real clock.
    pub fn new(cfg: &RateLimiterConfig) -> Result<Self, RateLimiterError> {
        Self::with_clock(cfg, monotonic_clock())
    }

    /// A limiter from its configuration, on `clock`.
    pub fn with_clock(cfg: &RateLimiterConfig, clock: Clock) -> Result<Self, RateLimiterError> {
        let now = clock();
        let make = |b: &Option<TokenBucketConfig>| {
            b.and_then(|b| TokenBucket::new(b.size, b.one_time_burst, b.refill_time, now))
        };
        let timer = TimerFd::new().map_err(|e| RateLimiterError::Timer(e.into()))?;
        // A nonblocking timer fd: reading it after a spurious wake-up must not
        // stall the device thread.
        // SAFETY: fcntl on a file descriptor we own, with plain integer flags.
        let rc = unsafe {
            let fd = timer.as_raw_fd();
            libc::fcntl(
                fd,
                libc::F_SETFL,
                libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
            )
        };
        if rc < 0 {
            return Err(RateLimiterError::Timer(std::io::Error::last_os_error()));
        }
        Ok(RateLimiter {
            bandwidth: make(&cfg.bandwidth),
            ops: make(&cfg.ops),
            timer,
            blocked_for: None,
            clock,
        })
    }

    /// True when neither bucket limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.bandwidth.is_none() && self.ops.is_none()
    }

    /// True while the limiter waits for its timer.
    pub fn is_blocked(&self) -> bool {
        self.blocked_for.is_some()
    }

    /// How long the armed timer was set for (tests check this rather than sleep).
    pub fn blocked_for(&self) -> Option<Duration> {
        self.blocked_for
    }

    /// The fd to register for `EPOLLIN`; call [`RateLimiter::on_timer`] when it fires.
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    fn bucket(&mut self, kind: TokenType) -> &mut Option<TokenBucket> {
        match kind {
            TokenType::Bytes => &mut self.bandwidth,
            TokenType::Ops => &mut self.ops,
        }
    }

    /// Spends `tokens` of one kind, or arms the timer and returns false.
    pub fn consume(&mut self, tokens: u64, kind: TokenType) -> bool {
        self.consume_both(match kind {
            TokenType::Bytes => (0, tokens),
            TokenType::Ops => (tokens, 0),
        })
    }

    /// Spends one request and `bytes` bytes together, or neither (arming the
    /// timer for when both will be available).
    pub fn consume_request(&mut self, bytes: u64) -> bool {
        self.consume_both((1, bytes))
    }

    fn consume_both(&mut self, (ops, bytes): (u64, u64)) -> bool {
        if self.blocked_for.is_some() {
            return false;
        }
        let now = (self.clock)();
        let ops_ok = ops == 0 || self.ops.as_mut().is_none_or(|b| b.reduce(ops, now));
        let bytes_ok =
            ops_ok && (bytes == 0 || self.bandwidth.as_mut().is_none_or(|b| b.reduce(bytes, now)));
        if bytes_ok {
            return true;
        }
        if ops_ok && ops > 0 {
            if let Some(b) = self.ops.as_mut() {
                b.replenish(ops, now);
            }
        }
        let wait_ops = self
            .ops
            .as_mut()
            .map_or(0, |b| if ops > 0 { b.wait_ns(ops, now) } else { 0 });
        let wait_bytes =
            self.bandwidth
                .as_mut()
                .map_or(0, |b| if bytes > 0 { b.wait_ns(bytes, now) } else { 0 });
        // At least 1 µs: a zero timerfd value would disarm rather than fire.
        let wait = Duration::from_nanos(wait_ops.max(wait_bytes).max(1_000));
        if self.timer.reset(wait, None).is_err() {
            // Without a timer nothing would wake the queue: let the request
            // through rather than stall the device forever.
            return true;
        }
        self.blocked_for = Some(wait);
        false
    }

    /// Gives back tokens spent on work that was not done.
    pub fn manual_replenish(&mut self, tokens: u64, kind: TokenType) {
        let now = (self.clock)();
        if let Some(b) = self.bucket(kind).as_mut() {
            b.replenish(tokens, now);
        }
    }

    /// Handles the timer fd's `EPOLLIN`: unblocks the limiter. Returns true
    /// when the device should retry its queue now.
    pub fn on_timer(&mut self) -> bool {
        // EAGAIN (nothing to read) is fine: the state below is what matters.
        let _ = self.timer.wait();
        self.blocked_for.take().is_some()
    }

    /// Unblocks without the fd (tests with a manual clock).
    pub fn force_unblock(&mut self) {
        let _ = self.timer.clear();
        self.blocked_for = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const MS: u64 = 1_000_000;

    fn manual() -> (Arc<AtomicU64>, Clock) {
        let t = Arc::new(AtomicU64::new(0));
        let c = t.clone();
        (t, Arc::new(move || c.load(Ordering::SeqCst)))
    }

    fn cfg(json: &str) -> RateLimiterConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn parses_firecracker_shape_and_refuses_unknown_fields() {
        let c = cfg(
            r#"{"bandwidth":{"size":1000,"one_time_burst":5,"refill_time":100},"ops":{"size":10,"refill_time":1000}}"#,
        );
        assert_eq!(
            c.bandwidth,
            Some(TokenBucketConfig {
                size: 1000,
                one_time_burst: 5,
                refill_time: 100
            })
        );
        assert_eq!(c.ops.map(|o| o.one_time_burst), Some(0));
        assert!(!c.is_unlimited());
        assert!(cfg("{}").is_unlimited());
        assert!(cfg(r#"{"ops":{"size":0,"refill_time":100}}"#).is_unlimited());
        assert!(serde_json::from_str::<RateLimiterConfig>(r#"{"bandwith":{}}"#).is_err());
        assert!(serde_json::from_str::<RateLimiterConfig>(r#"{"ops":{"size":1}}"#).is_err());
    }

    #[test]
    fn blocks_arms_timer_for_exact_refill_and_resumes() {
        let (t, clock) = manual();
        let c = cfg(r#"{"bandwidth":{"size":1000,"refill_time":1000}}"#);
        let mut rl = RateLimiter::with_clock(&c, clock).unwrap();
        assert!(rl.consume(600, TokenType::Bytes));
        assert!(rl.consume(5, TokenType::Ops), "no ops bucket: unlimited");
        assert!(!rl.consume(600, TokenType::Bytes));
        assert_eq!(rl.blocked_for(), Some(Duration::from_millis(200)));
        // While blocked, even a request that would fit waits its turn.
        t.store(500 * MS, Ordering::SeqCst);
        assert!(!rl.consume(1, TokenType::Bytes));
        rl.force_unblock();
        assert!(rl.consume(600, TokenType::Bytes));
    }

    #[test]
    fn request_takes_ops_and_bytes_together_or_neither() {
        let (t, clock) = manual();
        let c = cfg(
            r#"{"bandwidth":{"size":100,"refill_time":100},"ops":{"size":2,"refill_time":1000}}"#,
        );
        let mut rl = RateLimiter::with_clock(&c, clock).unwrap();
        assert!(rl.consume_request(90));
        assert!(!rl.consume_request(90));
        assert_eq!(rl.blocked_for(), Some(Duration::from_millis(80)));
        rl.force_unblock();
        // The refused request gave its op back: one op remains, enough now.
        t.store(80 * MS, Ordering::SeqCst);
        assert!(rl.consume_request(90));
        rl.manual_replenish(50, TokenType::Bytes);
        assert!(!rl.consume_request(1), "ops exhausted");
        // 0.16 op accrued over the 80 ms since the first request.
        assert_eq!(rl.blocked_for(), Some(Duration::from_millis(420)));
    }

    #[test]
    fn timer_fd_really_fires() {
        let c = cfg(r#"{"ops":{"size":1,"refill_time":20}}"#);
        let mut rl = RateLimiter::new(&c).unwrap();
        assert!(rl.consume(1, TokenType::Ops));
        assert!(!rl.consume(1, TokenType::Ops));
        let mut pfd = libc::pollfd {
            fd: rl.timer_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
        assert_eq!(n, 1);
        assert!(rl.on_timer());
        assert!(
            !rl.on_timer(),
            "a second event without blocking is spurious"
        );
        assert!(rl.consume(1, TokenType::Ops));
    }
}
