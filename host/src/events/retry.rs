//! The asynchronous retry policy, pure (no clock, no I/O): what happens to an
//! event after each delivery outcome. Function errors are retried after the
//! configured delays (Lambda: 1 min, then 2 min) up to `MaximumRetryAttempts`;
//! throttles and service errors are retried with exponential backoff and do
//! not use up retry attempts; nothing is delivered once the event is older
//! than `MaximumEventAgeInSeconds`.

use std::time::Duration;

/// The longest an event waits to retry after emberd's own store failed to
/// record it (a full disk, say): the store heals by itself once space
/// returns, so delivery resumes within this of it, not after the throttle
/// backoff's minutes.
pub const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

/// The timing knobs (emberd flags; tests shorten them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Delay before retry n+1 after the n-th function error (the last entry
    /// repeats).
    pub retry_delays: Vec<Duration>,
    /// First backoff after a throttle or service error; doubles each time.
    pub backoff_base: Duration,
    /// Cap of the exponential backoff.
    pub backoff_max: Duration,
    /// The length of one "second" of `MaximumEventAgeInSeconds` (1 s; tests
    /// shorten it so the 60 s minimum age can expire quickly).
    pub age_unit: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            retry_delays: vec![Duration::from_secs(60), Duration::from_secs(120)],
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            age_unit: Duration::from_secs(1),
        }
    }
}

/// How one delivery attempt ended, as far as retries care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Success,
    FunctionError,
    /// Throttled, or no environment could be started: not the function's fault.
    Transient,
}

/// What to do with the event next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Delivered: done (on-success destination, if any).
    Done,
    /// Try again `after` from now.
    RetryAfter(Duration),
    /// Give up: retries exhausted (on-failure destination, if any).
    RetriesExhausted,
    /// Give up: too old (on-failure destination, if any).
    AgeExceeded,
}

/// The part of an event's history that decides its fate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Function errors so far (including the one just seen).
    pub errors: u32,
    /// Consecutive throttles/service errors so far (including the one just seen).
    pub transient: u32,
}

impl Timing {
    /// The maximum age as a duration.
    pub fn max_age(&self, seconds: u32) -> Duration {
        self.age_unit.saturating_mul(seconds)
    }

    /// Exponential backoff after the n-th consecutive transient failure (n ≥ 1).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// Backoff after the n-th consecutive failure to record the event in
    /// emberd's own store (n ≥ 1): the throttle backoff, capped at
    /// [`STORE_RETRY_MAX`].
    pub fn store_retry(&self, n: u32) -> Duration {
        self.backoff(n).min(STORE_RETRY_MAX)
    }

    /// Delay before the retry that follows the n-th function error (n ≥ 1).
    pub fn retry_delay(&self, n: u32) -> Duration {
        let i = (n.saturating_sub(1) as usize).min(self.retry_delays.len().saturating_sub(1));
        self.retry_delays.get(i).copied().unwrap_or_default()
    }

    /// Decides what follows `attempt`, for an event of age `age` (at the time
    /// the retry would be scheduled) with `max_retries` and `max_age_s`.
    pub fn next(
        &self,
        attempt: Attempt,
        h: History,
        age: Duration,
        max_retries: u32,
        max_age_s: u32,
    ) -> Next {
        let delay = match attempt {
            Attempt::Success => return Next::Done,
            Attempt::FunctionError if h.errors > max_retries => return Next::RetriesExhausted,
            Attempt::FunctionError => self.retry_delay(h.errors),
            Attempt::Transient => self.backoff(h.transient),
        };
        // A retry that could only start after the event is too old is not
        // worth waiting for.
        if age.saturating_add(delay) > self.max_age(max_age_s) {
            return Next::AgeExceeded;
        }
        Next::RetryAfter(delay)
    }

    /// Whether an event of age `age` may still be delivered.
    pub fn fresh(&self, age: Duration, max_age_s: u32) -> bool {
        age <= self.max_age(max_age_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fast() -> Timing {
        Timing {
            retry_delays: vec![ms(200), ms(400)],
            backoff_base: ms(10),
            backoff_max: ms(100),
            age_unit: ms(10),
        }
    }

    #[test]
    fn function_errors_follow_the_delays_then_exhaust() {
        let t = Timing::default();
        let h = |errors| History {
            errors,
            transient: 0,
        };
        let e = Attempt::FunctionError;
        assert_eq!(
            t.next(e, h(1), ms(0), 2, 21600),
            Next::RetryAfter(Duration::from_secs(60))
        );
        assert_eq!(
            t.next(e, h(2), ms(0), 2, 21600),
            Next::RetryAfter(Duration::from_secs(120))
        );
        assert_eq!(t.next(e, h(3), ms(0), 2, 21600), Next::RetriesExhausted);
        assert_eq!(t.next(e, h(1), ms(0), 0, 21600), Next::RetriesExhausted);
        assert_eq!(t.next(Attempt::Success, h(2), ms(0), 2, 60), Next::Done);
    }

    #[test]
    fn transient_failures_back_off_exponentially_without_using_retries() {
        let t = fast();
        let got: Vec<Duration> = (1..=6).map(|n| t.backoff(n)).collect();
        assert_eq!(got, vec![ms(10), ms(20), ms(40), ms(80), ms(100), ms(100)]);
        let h = History {
            errors: 0,
            transient: 40,
        };
        // Many throttles, still retried (only age ends it), never "exhausted".
        assert_eq!(
            t.next(Attempt::Transient, h, ms(0), 0, 60),
            Next::RetryAfter(ms(100))
        );
        assert_eq!(Timing::default().backoff(1000), Duration::from_secs(300));
    }

    #[test]
    fn age_limits_retries() {
        let t = fast(); // 60 "seconds" = 600 ms
        let h = History {
            errors: 1,
            transient: 1,
        };
        assert_eq!(
            t.next(Attempt::FunctionError, h, ms(300), 2, 60),
            Next::RetryAfter(ms(200))
        );
        assert_eq!(
            t.next(Attempt::FunctionError, h, ms(401), 2, 60),
            Next::AgeExceeded
        );
        assert_eq!(
            t.next(Attempt::Transient, h, ms(595), 2, 60),
            Next::AgeExceeded
        );
        assert!(t.fresh(ms(600), 60) && !t.fresh(ms(601), 60));
        assert_eq!(t.retry_delay(7), ms(400), "the last delay repeats");
    }

    /// Regression (issue 13): after a long full-disk outage event delivery
    /// resumed only after the throttle backoff's 300 s ceiling; store
    /// failures now back off to at most STORE_RETRY_MAX.
    #[test]
    fn store_failures_back_off_at_most_five_seconds() {
        let t = Timing::default();
        assert_eq!(t.store_retry(1), Duration::from_secs(1));
        assert_eq!(t.store_retry(3), Duration::from_secs(4));
        assert_eq!(t.store_retry(4), STORE_RETRY_MAX);
        assert_eq!(t.store_retry(40), STORE_RETRY_MAX);
        assert_eq!(t.backoff(40), Duration::from_secs(300));
    }
}
