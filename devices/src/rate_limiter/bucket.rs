//! A token bucket with an explicit clock: every method takes "now" in
//! nanoseconds, so the arithmetic is pure and tests drive time by hand.
//!
//! Semantics (close to Firecracker's, see its `rate_limiter` crate docs): the
//! bucket holds up to `size` tokens and refills linearly, `size` tokens per
//! `refill_time`. A one-time burst is spent first and never comes back. A
//! request larger than the whole bucket is let through once the bucket is full
//! and leaves the bucket in debt, so large requests are neither starved nor
//! allowed to exceed the average rate.

/// Nanoseconds per millisecond.
const NS_PER_MS: u128 = 1_000_000;

/// A token bucket. Build it with [`TokenBucket::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// Capacity in tokens (> 0).
    size: u64,
    /// Time to refill `size` tokens, in ns (> 0).
    refill_ns: u128,
    /// Remaining one-time burst tokens.
    burst: u64,
    /// Current tokens; negative while a request larger than the bucket is
    /// being paid back.
    budget: i128,
    /// Refill progress below one token, in units of token·ns / refill_ns, so
    /// that many small refills add up exactly to the long-run rate.
    carry: u128,
    /// When the budget was last brought up to date.
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket, or `None` when `size` or `refill_time_ms` is 0 (which
    /// means "no limit", as in Firecracker's configuration).
    pub fn new(size: u64, one_time_burst: u64, refill_time_ms: u64, now_ns: u64) -> Option<Self> {
        if size == 0 || refill_time_ms == 0 {
            return None;
        }
        Some(TokenBucket {
            size,
            refill_ns: u128::from(refill_time_ms) * NS_PER_MS,
            burst: one_time_burst,
            budget: i128::from(size),
            carry: 0,
            last_ns: now_ns,
        })
    }

    /// The bucket's capacity.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Tokens available now (the one-time burst excluded); may be negative.
    pub fn budget(&self) -> i128 {
        self.budget
    }

    /// One-time burst tokens left.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Adds the tokens earned since the last update.
    fn refill(&mut self, now_ns: u64) {
        // A clock that goes backwards earns nothing (and must not underflow).
        let elapsed = u128::from(now_ns.saturating_sub(self.last_ns));
        self.last_ns = self.last_ns.max(now_ns);
        if self.budget >= i128::from(self.size) {
            self.carry = 0;
            return;
        }
        let units = elapsed * u128::from(self.size) + self.carry;
        let earned = units / self.refill_ns;
        self.carry = units % self.refill_ns;
        // earned is bounded by elapsed*size/refill; clamp keeps i128 safe.
        let earned = i128::try_from(earned).unwrap_or(i128::MAX);
        self.budget = self
            .budget
            .saturating_add(earned)
            .min(i128::from(self.size));
        if self.budget == i128::from(self.size) {
            self.carry = 0;
        }
    }

    /// Takes `tokens` if the bucket allows it now. Returns false (taking
    /// nothing) otherwise.
    pub fn reduce(&mut self, tokens: u64, now_ns: u64) -> bool {
        self.refill(now_ns);
        let from_burst = tokens.min(self.burst);
        let rest = tokens - from_burst;
        if rest > 0 && self.budget < i128::from(rest.min(self.size)) {
            return false;
        }
        self.burst -= from_burst;
        self.budget -= i128::from(rest);
        true
    }

    /// Gives back tokens taken for work that was not done (at most up to a
    /// full bucket).
    pub fn replenish(&mut self, tokens: u64, now_ns: u64) {
        self.refill(now_ns);
        self.budget = self
            .budget
            .saturating_add(i128::from(tokens))
            .min(i128::from(self.size));
    }

    /// How long until `reduce(tokens)` can succeed (0 if it can now).
    pub fn wait_ns(&mut self, tokens: u64, now_ns: u64) -> u64 {
        self.refill(now_ns);
        let rest = tokens.saturating_sub(self.burst).min(self.size);
        let missing = i128::from(rest) - self.budget;
        if missing <= 0 {
            return 0;
        }
        // missing > 0 and bounded by size + debt; both fit u128.
        let missing = missing.unsigned_abs();
        let units = (missing * self.refill_ns).saturating_sub(self.carry);
        let size = u128::from(self.size);
        let ns = units.div_ceil(size);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn zero_size_or_refill_means_unlimited() {
        assert!(TokenBucket::new(0, 10, 100, 0).is_none());
        assert!(TokenBucket::new(10, 10, 0, 0).is_none());
    }

    #[test]
    fn spends_burst_first_then_budget_then_refills_linearly() {
        let mut b = TokenBucket::new(1000, 500, 1000, 0).unwrap();
        assert!(b.reduce(1200, 0));
        assert_eq!((b.burst(), b.budget()), (0, 300));
        assert!(!b.reduce(400, 0));
        assert_eq!(b.budget(), 300, "a refused request takes nothing");
        assert_eq!(b.wait_ns(400, 0), 100 * MS);
        assert!(!b.reduce(400, 99 * MS));
        assert!(b.reduce(400, 100 * MS));
        assert_eq!(b.budget(), 0);
        // Refill never exceeds the capacity.
        assert!(!b.reduce(1, 0), "time going backwards earns nothing");
        b.refill(10_000 * MS);
        assert_eq!(b.budget(), 1000);
    }

    #[test]
    fn fractional_refills_add_up_exactly() {
        // 3 tokens per 1000 ms: one token every 333.33 ms.
        let mut b = TokenBucket::new(3, 0, 1000, 0).unwrap();
        assert!(b.reduce(3, 0));
        let mut now = 0;
        for _ in 0..3000 {
            now += MS; // 1 ms steps, each earning 0.003 tokens
            b.refill(now);
        }
        assert_eq!(b.budget(), 3);
        assert!(b.reduce(3, now));
        assert_eq!(b.wait_ns(1, now), 333_333_334);
    }

    #[test]
    fn oversize_request_waits_for_full_bucket_then_leaves_debt() {
        let mut b = TokenBucket::new(100, 0, 100, 0).unwrap();
        assert!(b.reduce(50, 0));
        assert!(!b.reduce(250, 0));
        assert_eq!(b.wait_ns(250, 0), 50 * MS);
        assert!(b.reduce(250, 50 * MS));
        assert_eq!(b.budget(), -150);
        // The debt is paid back at the configured rate: 250 ms for a full bucket.
        assert_eq!(b.wait_ns(1, 50 * MS), 151 * MS);
        assert_eq!(b.wait_ns(100, 50 * MS), 250 * MS);
    }

    #[test]
    fn long_run_rate_matches_configuration() {
        // 10 MiB/s in 100 ms buckets; spend 4 KiB whenever allowed for 5 s.
        let size = 1 << 20;
        let mut b = TokenBucket::new(size, 0, 100, 0).unwrap();
        let (mut now, mut sent) = (0u64, 0u64);
        while now < 5_000 * MS {
            if b.reduce(4096, now) {
                sent += 4096;
            } else {
                now += b.wait_ns(4096, now);
            }
        }
        let expect = 10 * size * 5 + size; // rate * time + the initial full bucket
        assert!(
            sent.abs_diff(expect) <= 4096,
            "sent {sent}, expected {expect}"
        );
    }

    #[test]
    fn replenish_is_capped() {
        let mut b = TokenBucket::new(10, 0, 1000, 0).unwrap();
        assert!(b.reduce(8, 0));
        b.replenish(5, 0);
        assert_eq!(b.budget(), 7);
        b.replenish(500, 0);
        assert_eq!(b.budget(), 10);
    }
}
