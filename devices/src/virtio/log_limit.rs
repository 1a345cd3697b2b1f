//! Rate-limited logging for guest-triggered events: a hostile guest can hit a
//! bad path millions of times a second, so each kind of complaint is logged
//! the 1st, 2nd, 4th, 8th... time it happens, with the running count.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts occurrences of one kind of event and says when to log it.
#[derive(Debug, Default)]
pub struct LogLimiter(AtomicU64);

impl LogLimiter {
    /// A limiter that has seen nothing yet.
    pub const fn new() -> Self {
        LogLimiter(AtomicU64::new(0))
    }

    /// Records one occurrence; returns `Some(count)` when this one should be
    /// logged (the count is a power of two), `None` otherwise.
    pub fn hit(&self) -> Option<u64> {
        let n = self.0.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        n.is_power_of_two().then_some(n)
    }

    /// How many occurrences so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Logs a warning through `limiter`: `warn_limited!(limiter, "fmt", args...)`.
#[macro_export]
macro_rules! warn_limited {
    ($limiter:expr, $($arg:tt)+) => {
        if let Some(n) = $limiter.hit() {
            log::warn!("{} (seen {} times)", format_args!($($arg)+), n);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_powers_of_two() {
        let l = LogLimiter::new();
        let logged: Vec<u64> = (0..100).filter_map(|_| l.hit()).collect();
        assert_eq!(logged, vec![1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(l.count(), 100);
    }
}
