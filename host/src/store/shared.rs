//! The seam a shared (multi-host) backend plugs into: where the records and
//! the sealed code blobs of a fleet live. [`super::Store`] keeps its embedded
//! single-host store as the default; with a [`SharedBackend`] it sends every
//! record operation there, and keeps its blob directory as a local cache of
//! the shared code (sealed blobs are uploaded byte for byte, so code is
//! encrypted exactly as on disk and the key never leaves the host).
//!
//! Every update is checked against the revision it read: a concurrent change
//! elsewhere makes it fail with [`super::StoreError::Conflict`] (Lambda's
//! `ResourceConflictException`), never overwrite silently.

use super::model::{
    AliasRecord, FunctionRecord, LayerVersionRecord, ProvisionedRecord, VersionRecord,
};
use super::Result;

/// A `$LATEST` edit: may refuse with an error, which aborts the update.
pub type Edit<'a> = &'a mut dyn FnMut(&mut FunctionRecord) -> Result<()>;

/// Records and code shared by several hosts.
pub trait SharedBackend: Send + Sync {
    /// Creates a function (name must be free); with `publish`, version 1 too.
    fn create_function(&self, rec: &FunctionRecord, publish: bool)
        -> Result<Option<VersionRecord>>;
    fn get_function(&self, name: &str) -> Result<FunctionRecord>;
    /// Read, `edit`, write back if nobody wrote in between (else Conflict).
    fn update_function(&self, name: &str, edit: Edit<'_>) -> Result<FunctionRecord>;
    /// Every function (any order).
    fn list_functions(&self) -> Result<Vec<FunctionRecord>>;
    /// The function and its versions, aliases and provisioned settings.
    fn delete_function(&self, name: &str) -> Result<()>;

    fn publish_version(
        &self,
        name: &str,
        description: Option<&str>,
        expected_sha: Option<&str>,
    ) -> Result<VersionRecord>;
    fn get_version(&self, name: &str, version: u64) -> Result<VersionRecord>;
    /// In version order.
    fn list_versions(&self, name: &str) -> Result<Vec<VersionRecord>>;
    fn delete_version(&self, name: &str, version: u64) -> Result<()>;

    fn put_alias(&self, function: &str, alias: &AliasRecord, create: bool) -> Result<()>;
    fn get_alias(&self, function: &str, alias: &str) -> Result<AliasRecord>;
    fn list_aliases(&self, function: &str) -> Result<Vec<AliasRecord>>;
    fn delete_alias(&self, function: &str, alias: &str) -> Result<()>;

    /// Assigns the layer's next version number and stores the record.
    fn publish_layer(&self, rec: LayerVersionRecord) -> Result<LayerVersionRecord>;
    fn get_layer(&self, layer: &str, version: u64) -> Result<LayerVersionRecord>;
    /// Every layer version, by layer name then version (`None`: all layers).
    fn list_layers(&self, layer: Option<&str>) -> Result<Vec<LayerVersionRecord>>;
    fn delete_layer(&self, layer: &str, version: u64) -> Result<()>;

    fn put_provisioned(&self, rec: &ProvisionedRecord) -> Result<()>;
    fn get_provisioned(&self, function: &str, qualifier: &str)
        -> Result<Option<ProvisionedRecord>>;
    fn delete_provisioned(&self, function: &str, qualifier: &str) -> Result<bool>;
    fn list_provisioned(&self) -> Result<Vec<ProvisionedRecord>>;

    /// Stores a sealed blob (the bytes of its encrypted file) at its address;
    /// idempotent.
    fn upload_code(&self, hex: &str, sealed: &[u8]) -> Result<()>;
    /// The sealed blob at `hex`, if the fleet has it.
    fn download_code(&self, hex: &str) -> Result<Option<Vec<u8>>>;
}

/// An `FnOnce` edit as the [`Edit`] a backend takes (a backend calls it at
/// most once: a lost race is a conflict, not a retry).
pub fn once<F>(edit: F) -> impl FnMut(&mut FunctionRecord) -> Result<()>
where
    F: FnOnce(&mut FunctionRecord) -> Result<()>,
{
    let mut edit = Some(edit);
    move |rec| match edit.take() {
        Some(f) => f(rec),
        None => Err(super::StoreError::Conflict(
            "The function changed while it was being updated. Retry.".into(),
        )),
    }
}

/// Every blob `backend`'s records name (what a host's blob cache keeps).
pub fn live_blobs(backend: &dyn SharedBackend) -> Result<std::collections::HashSet<String>> {
    let mut live = std::collections::HashSet::new();
    for f in backend.list_functions()? {
        for v in backend.list_versions(&f.name)? {
            live.insert(v.code.blob);
        }
        live.insert(f.code.blob);
    }
    for l in backend.list_layers(None)? {
        live.insert(l.code.blob);
    }
    Ok(live)
}
