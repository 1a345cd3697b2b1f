//! What one account stores, for GetAccountSettings and ListLayers: its code
//! and layer bytes, its function count, its live layer versions.

use super::{limits, retired, scan_prefix, Result, Store, FUNCTIONS, LAYERS, VERSIONS};
use crate::store::model::{FunctionRecord, LayerVersionRecord};
use crate::util::split_scoped;

/// An account's share of the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of function code ($LATEST and every version) and layers.
    pub total_code_bytes: u64,
    pub function_count: u64,
}

impl Store {
    /// What `account` stores, read in one snapshot.
    pub fn account_usage(&self, account: &str) -> Result<Usage> {
        if let Some(shared) = &self.shared {
            return shared_usage(shared.as_ref(), account);
        }
        self.db.read(|r| {
            let functions = r.open_table(FUNCTIONS)?;
            let code = limits::code_bytes(&functions, &r.open_table(VERSIONS)?, account)?;
            let layers = limits::layer_bytes(
                &r.open_table(LAYERS)?,
                &r.open_table(retired::LAYERS_RETIRED)?,
                account,
            )?;
            let function_count = scan_prefix::<FunctionRecord>(&functions, "")?
                .iter()
                .filter(|f| split_scoped(&f.name).0 == account)
                .count() as u64;
            Ok(Usage {
                total_code_bytes: code.saturating_add(layers),
                function_count,
            })
        })
    }

    /// Every live layer version of `account`, by layer name then version.
    pub fn account_layer_versions(&self, account: &str) -> Result<Vec<LayerVersionRecord>> {
        let all: Vec<LayerVersionRecord> = match &self.shared {
            Some(shared) => shared.list_layers(None)?,
            None => self.db.read(|r| scan_prefix(&r.open_table(LAYERS)?, ""))?,
        };
        Ok(all
            .into_iter()
            .filter(|l| split_scoped(&l.layer_name).0 == account)
            .collect())
    }

    /// The configured per-account quotas (code, layers), if any.
    pub fn account_quotas(&self) -> (Option<u64>, Option<u64>) {
        (self.limits.account_code, self.limits.account_layers)
    }

    /// Bytes the data directory can still take above the free-space floor.
    pub fn writable_bytes(&self) -> Result<u64> {
        let free = limits::free_bytes(&self.dir)
            .map_err(|e| super::StoreError::Io(self.dir.clone(), e))?;
        Ok(free.saturating_sub(self.limits.min_free))
    }
}

/// [`Store::account_usage`] from a fleet's shared records.
fn shared_usage(shared: &dyn super::SharedBackend, account: &str) -> Result<Usage> {
    let mut usage = Usage::default();
    for f in shared.list_functions()? {
        if split_scoped(&f.name).0 != account {
            continue;
        }
        usage.function_count += 1;
        usage.total_code_bytes = usage.total_code_bytes.saturating_add(f.code.size);
        for v in shared.list_versions(&f.name)? {
            usage.total_code_bytes = usage.total_code_bytes.saturating_add(v.code.size);
        }
    }
    for l in shared.list_layers(None)? {
        if split_scoped(&l.layer_name).0 == account {
            usage.total_code_bytes = usage.total_code_bytes.saturating_add(l.code.size);
        }
    }
    Ok(usage)
}
