//! What the store lets one tenant, and all of them together, write: a
//! free-space floor on the data directory's file system (below it writes
//! are refused with a retryable error while reads go on), and per-account
//! byte quotas on function code and on layers (Lambda's code storage
//! quota, `CodeStorageExceededException`). The quota on queued async
//! events is the event store's (`--account-queue-mib`).

use std::path::Path;

use redb::ReadableTable;

use super::{Result, StoreError};
use crate::util::split_scoped;

const MIB: u64 = 1024 * 1024;

/// The `emberd` flags of the store's limits.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Below this many MiB free on the data directory's file system,
    /// writes (create/update/publish, event invokes) answer 503
    /// ServiceException; reads and synchronous invokes go on. 0 turns the
    /// floor off.
    #[arg(long, default_value_t = 128)]
    pub store_min_free_mib: u64,
    /// MiB of function code (deployment packages of $LATEST and every
    /// published version) one account may store; beyond it CreateFunction,
    /// UpdateFunctionCode and PublishVersion answer 400
    /// CodeStorageExceededException. 0 = no limit.
    #[arg(long, default_value_t = DEFAULT_CODE_MIB)]
    pub account_code_mib: u64,
    /// MiB of layer versions (live, and deleted ones functions still use)
    /// one account may store; beyond it PublishLayerVersion answers 400
    /// CodeStorageExceededException. 0 = no limit.
    #[arg(long, default_value_t = DEFAULT_LAYERS_MIB)]
    pub account_layers_mib: u64,
}

/// Default per-account code storage (Lambda's 75 GB per region is more
/// than one host's disk).
pub const DEFAULT_CODE_MIB: u64 = 8192;
/// Default per-account layer storage.
pub const DEFAULT_LAYERS_MIB: u64 = 2048;

impl Default for StoreArgs {
    fn default() -> Self {
        Self {
            store_min_free_mib: 128,
            account_code_mib: DEFAULT_CODE_MIB,
            account_layers_mib: DEFAULT_LAYERS_MIB,
        }
    }
}

/// The limits an open store enforces (bytes).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub min_free: u64,
    pub account_code: Option<u64>,
    pub account_layers: Option<u64>,
}

impl From<&StoreArgs> for Limits {
    fn from(a: &StoreArgs) -> Self {
        Self {
            min_free: a.store_min_free_mib * MIB,
            account_code: (a.account_code_mib > 0).then(|| a.account_code_mib * MIB),
            account_layers: (a.account_layers_mib > 0).then(|| a.account_layers_mib * MIB),
        }
    }
}

/// Bytes available to unprivileged writers on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs writes only into `st`, a zeroed plain-data struct we
    // own; `c` is a valid NUL-terminated path that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses a write while `dir`'s file system has less than `min_free`
/// bytes available (0: never). A failing statvfs refuses too.
pub fn check_space(dir: &Path, min_free: u64) -> Result<()> {
    if min_free == 0 {
        return Ok(());
    }
    match free_bytes(dir) {
        Ok(free) if free >= min_free => Ok(()),
        Ok(free) => Err(StoreError::Unavailable(format!(
            "The function store is low on disk space ({} MiB free, {} MiB required for writes). Retry later.",
            free / MIB,
            min_free / MIB
        ))),
        Err(e) => Err(StoreError::Io(dir.to_path_buf(), e)),
    }
}

/// The part of a stored record a quota needs (the rest of the JSON is
/// skipped unparsed).
#[derive(serde::Deserialize)]
struct Sized {
    code: Size,
}

#[derive(serde::Deserialize)]
struct Size {
    size: u64,
}

/// Sum of `code.size` over the records of `account` in `table`, whose keys
/// start with a stored (account-scoped) name: `account:name...` for every
/// account but the default one, whose names carry no prefix. Other
/// accounts' records are a range apart and are not read; for the default
/// account the keys of the others are skipped without parsing.
fn account_bytes(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    account: &str,
) -> Result<u64> {
    let prefix = crate::util::scoped_name(account, "");
    let mut n = 0u64;
    for item in table.range::<&str>(prefix.as_str()..)? {
        let (k, v) = item?;
        let key = k.value();
        if !key.starts_with(&prefix) {
            break;
        }
        let owner = key.split('/').next().unwrap_or_default();
        if split_scoped(owner).0 != account {
            continue;
        }
        let r: Sized = serde_json::from_slice(v.value())?;
        n = n.saturating_add(r.code.size);
    }
    Ok(n)
}

/// Bytes of function code `account` stores: $LATEST and every version.
pub(super) fn code_bytes(
    functions: &impl ReadableTable<&'static str, &'static [u8]>,
    versions: &impl ReadableTable<&'static str, &'static [u8]>,
    account: &str,
) -> Result<u64> {
    Ok(account_bytes(functions, account)?.saturating_add(account_bytes(versions, account)?))
}

/// Bytes of layer versions `account` stores (live and retired).
pub(super) fn layer_bytes(
    live: &impl ReadableTable<&'static str, &'static [u8]>,
    retired: &impl ReadableTable<&'static str, &'static [u8]>,
    account: &str,
) -> Result<u64> {
    Ok(account_bytes(live, account)?.saturating_add(account_bytes(retired, account)?))
}

/// `CodeStorageExceededException` unless `used` bytes fit in `limit`.
pub(super) fn within(used: u64, limit: Option<u64>, account: &str, what: &str) -> Result<()> {
    match limit {
        Some(limit) if used > limit => Err(StoreError::Quota(format!(
            "Code storage limit exceeded: account {account} would store {used} bytes of {what}; its limit is {limit} bytes. Delete unused versions or {what} to free space."
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_refuses_when_free_space_is_short() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_space(dir.path(), 0).is_ok());
        assert!(check_space(dir.path(), 1).is_ok());
        assert!(matches!(
            check_space(dir.path(), u64::MAX),
            Err(StoreError::Unavailable(_))
        ));
    }
}
