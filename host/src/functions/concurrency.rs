//! Reserved and provisioned concurrency: the store holds the settings, the
//! pool enforces them (reservations directly, provisioned targets through
//! [`crate::catalog::reconcile`]).

use super::{Functions, FunctionsError};
use crate::catalog::resolve;
use crate::store::ProvisionedRecord;

impl Functions {
    /// Reserves `n` of the host's concurrency for `function` (None: takes
    /// the reservation back).
    pub fn reserve(&self, function: &str, n: Option<u32>) -> Result<(), FunctionsError> {
        if let Some(n) = n {
            if !self.pool.can_reserve(function, n) {
                return Err(FunctionsError::ReservedAboveLimit {
                    host_limit: self.pool.host_limit(),
                });
            }
        }
        self.store.update_function(function, |r| {
            r.reserved_concurrency = n;
            Ok(())
        })?;
        self.pool.set_reserved(function, n);
        Ok(())
    }

    /// Stores a provisioned-concurrency config (its qualifier must resolve)
    /// and moves the pool's targets to it.
    pub fn provision(&self, rec: &ProvisionedRecord) -> Result<(), FunctionsError> {
        let host_limit = self.pool.host_limit();
        if rec.requested == 0 || rec.requested > host_limit {
            return Err(FunctionsError::ProvisionedOutOfRange { host_limit });
        }
        resolve(&self.store, &rec.function, Some(&rec.qualifier))?;
        self.store.put_provisioned(rec)?;
        Ok(self.reconcile()?)
    }

    /// Deletes a function's provisioned-concurrency config for `qualifier`.
    pub fn unprovision(&self, function: &str, qualifier: &str) -> Result<(), FunctionsError> {
        self.store.get_function(function)?;
        self.store.delete_provisioned(function, qualifier)?;
        Ok(self.reconcile()?)
    }

    /// How many of `rec`'s environments are ready, and how many it asks for.
    pub fn provisioned_status(&self, rec: &ProvisionedRecord) -> (u32, u32) {
        self.pool
            .target_status(&rec.function, &rec.qualifier)
            .unwrap_or((0, rec.requested))
    }
}
