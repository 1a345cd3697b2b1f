//! Bytes each account holds in the event store — payloads of queued events
//! (stored, not yet settled for good) and destination records not yet read
//! from its queues — and the per-account quota on them
//! (`--account-queue-mib`): one tenant cannot fill the disk through the
//! async queue or its destinations. Bytes are reserved before their commit
//! (so concurrent writers cannot overshoot together) and released when the
//! commit fails, the event is removed or the record is deleted.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::store::StoreError;

#[derive(Default)]
struct Inner {
    by_account: HashMap<String, u64>,
    by_seq: HashMap<u64, (String, u64)>,
}

/// Queued payload bytes per account.
#[derive(Default)]
pub struct Queued {
    /// None: no quota (bytes are still counted).
    limit: Option<u64>,
    inner: Mutex<Inner>,
}

/// Bytes reserved for one event until its commit; dropping it without
/// [`Queued::stored`] gives them back.
pub struct Reservation<'a> {
    queued: &'a Queued,
    account: String,
    bytes: u64,
    done: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.queued
                .sub(&mut self.queued.lock(), &self.account, self.bytes);
        }
    }
}

impl Queued {
    pub fn new(limit: Option<u64>) -> Self {
        Self {
            limit,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sub(&self, inner: &mut Inner, account: &str, bytes: u64) {
        if let Some(n) = inner.by_account.get_mut(account) {
            *n = n.saturating_sub(bytes);
            if *n == 0 {
                inner.by_account.remove(account);
            }
        }
    }

    /// Reserves `bytes` for a new event of `account`, or refuses it if the
    /// account's queue would then exceed the quota.
    pub fn reserve(&self, account: &str, bytes: u64) -> Result<Reservation<'_>, StoreError> {
        let mut inner = self.lock();
        let used = inner.by_account.get(account).copied().unwrap_or(0);
        if let Some(limit) = self.limit {
            if used.saturating_add(bytes) > limit {
                return Err(StoreError::QueueQuota(format!(
                    "Too many bytes queued for account {account}: {used} of its {limit} are held by asynchronous events queued for delivery and by destination records not yet read. Retry later."
                )));
            }
        }
        *inner.by_account.entry(account.to_string()).or_default() += bytes;
        Ok(Reservation {
            queued: self,
            account: account.to_string(),
            bytes,
            done: false,
        })
    }

    /// The reserved event committed as `seq`.
    pub fn stored(&self, mut r: Reservation<'_>, seq: u64) {
        r.done = true;
        self.lock()
            .by_seq
            .insert(seq, (std::mem::take(&mut r.account), r.bytes));
    }

    /// The reserved destination record committed: its bytes stay counted
    /// until [`Queued::release`].
    pub fn kept(&self, mut r: Reservation<'_>) {
        r.done = true;
    }

    /// Destination records of `account` (`bytes` in all) were deleted.
    pub fn release(&self, account: &str, bytes: u64) {
        self.sub(&mut self.lock(), account, bytes);
    }

    /// Destination records of `account` found in the store at open.
    pub fn restore_records(&self, account: &str, bytes: u64) {
        *self
            .lock()
            .by_account
            .entry(account.to_string())
            .or_default() += bytes;
    }

    /// An event found in the store at open.
    pub fn restore(&self, seq: u64, account: &str, bytes: u64) {
        let mut inner = self.lock();
        *inner.by_account.entry(account.to_string()).or_default() += bytes;
        inner.by_seq.insert(seq, (account.to_string(), bytes));
    }

    /// Event `seq` was removed from the store.
    pub fn removed(&self, seq: u64) {
        let mut inner = self.lock();
        if let Some((account, bytes)) = inner.by_seq.remove(&seq) {
            self.sub(&mut inner, &account, bytes);
        }
    }

    /// Bytes `account` has queued.
    #[cfg(test)]
    pub fn used(&self, account: &str) -> u64 {
        self.lock().by_account.get(account).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_reservations_and_frees_on_removal_or_failure() {
        let q = Queued::new(Some(100));
        let a = q.reserve("a", 60).unwrap();
        // A concurrent reservation sees the first one.
        assert!(matches!(q.reserve("a", 50), Err(StoreError::QueueQuota(_))));
        // Another account is not affected.
        q.stored(q.reserve("b", 100).unwrap(), 2);
        q.stored(a, 1);
        assert_eq!((q.used("a"), q.used("b")), (60, 100));
        // A failed commit gives its bytes back.
        drop(q.reserve("a", 40).unwrap());
        assert_eq!(q.used("a"), 60);
        q.removed(1);
        q.removed(1);
        assert_eq!(q.used("a"), 0);
        q.restore(7, "a", 90);
        assert!(q.reserve("a", 20).is_err());
        q.removed(7);
        assert!(q.reserve("a", 100).is_ok());
    }
}
