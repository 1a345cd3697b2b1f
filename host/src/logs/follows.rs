//! The cap on waiting log reads (`wait` > 0, i.e. `ember logs --follow`)
//! an account may have open at once, and the limits of one read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most lines in one answer (the rest follow with `NextToken`).
pub const MAX_LIMIT: usize = 10_000;
/// Longest `wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Default for the most waiting reads (`wait` > 0, i.e. `ember logs
/// --follow`) one account may have open at once.
pub const FOLLOWS_PER_ACCOUNT: usize = 16;

/// Waiting reads in progress, per account.
pub struct Follows {
    cap: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One account's place among [`Follows`], given back on drop.
pub struct FollowPermit {
    follows: Arc<Follows>,
    account: String,
}

impl Follows {
    /// At most `cap` waiting reads per account.
    pub fn new(cap: usize) -> Self {
        Follows {
            cap,
            open: Mutex::default(),
        }
    }

    /// The most waiting reads one account may have open.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more waiting read of `account`, if it has fewer
    /// than the cap open.
    pub fn acquire(self: &Arc<Self>, account: &str) -> Option<FollowPermit> {
        let mut open = self.lock();
        let n = open.entry(account.to_string()).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(FollowPermit {
            follows: self.clone(),
            account: account.to_string(),
        })
    }
}

impl Drop for FollowPermit {
    fn drop(&mut self) {
        let mut open = self.follows.lock();
        if let Some(n) = open.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.account);
            }
        }
    }
}
